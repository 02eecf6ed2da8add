//! The steering service's store: snapshots of each institution's aggregates.

use crate::sql::query;
use chrono::{DateTime, Utc};
use passerelle_domain::statistics::{CubeKey, measure_named};
use passerelle_domain::{Indicators, Institution};

use crate::audit::AuditLog;
use crate::{Database, Result, Schema, StoreError, from_micros, to_micros, values_placeholders};

#[derive(Debug, Clone)]
pub struct PilotageStore {
    db: Database,
    audit: AuditLog,
}

/// Separates the parts of a count's key in `cell_key`.
const SEP: char = '\u{1f}';
/// The metric holding the counsellors' working time.
const FTE: &str = "counsellor_fte_per_mille";
/// Rows per multi-row insert.
const INSERT_CHUNK: usize = 1_000;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PilotageStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let db = Database::connect(url, Schema::Pilotage, max_connections).await?;
        let audit = AuditLog::new(db.clone());
        Ok(PilotageStore { db, audit })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Keeps the counts just received from `indicators.source`, in place of
    /// the previous ones: the last snapshot stands in when a source is down.
    pub async fn save_snapshot(
        &self,
        indicators: &Indicators,
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let id: i64 = query(
            "INSERT INTO indicator_snapshots (source, computed_at, fetched_at, entry_delay_days_sum, entry_delay_count)
             VALUES ($1, $2, $3, 0, 0) RETURNING id",
        )
        .bind(indicators.source.code())
        .bind(to_micros(indicators.computed_at))
        .bind(to_micros(fetched_at))
        .fetch_one(&mut tx)
        .await?
        .try_get("id")?;
        let cells: Vec<(String, String, i64)> = std::iter::once((
            FTE.to_owned(),
            String::new(),
            to_i64(indicators.counsellor_fte_per_mille),
        ))
        .chain(indicators.counts.iter().map(|(k, n)| {
            (
                k.measure.clone(),
                format!(
                    "{}{SEP}{}{SEP}{}{SEP}{}",
                    k.month, k.office, k.network, k.key
                ),
                *n,
            )
        }))
        .collect();
        for chunk in cells.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO indicator_cells (snapshot_id, metric, cell_key, count) VALUES {}",
                values_placeholders(chunk.len(), 4)
            );
            let mut insert = query(sql);
            for (metric, key, n) in chunk {
                insert = insert
                    .bind(id)
                    .bind(metric.clone())
                    .bind(key.clone())
                    .bind(*n);
            }
            insert.execute(&mut tx).await?;
        }
        // Older snapshots of this source are of no more use.
        query(
            "DELETE FROM indicator_cells WHERE snapshot_id IN
               (SELECT id FROM indicator_snapshots WHERE source = $1 AND id <> $2)",
        )
        .bind(indicators.source.code())
        .bind(id)
        .execute(&mut tx)
        .await?;
        query("DELETE FROM indicator_snapshots WHERE source = $1 AND id <> $2")
            .bind(indicators.source.code())
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The most recent snapshot received from `source`.
    pub async fn latest_snapshot(&self, source: Institution) -> Result<Option<Indicators>> {
        let Some(row) = query(
            "SELECT id, computed_at FROM indicator_snapshots
             WHERE source = $1 ORDER BY fetched_at DESC, id DESC LIMIT 1",
        )
        .bind(source.code())
        .fetch_optional(&self.db)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let mut indicators = Indicators {
            source,
            computed_at: from_micros(row.try_get("computed_at")?)?,
            counts: vec![],
            counsellor_fte_per_mille: 0,
        };
        let cells = query(
            "SELECT metric, cell_key, count FROM indicator_cells WHERE snapshot_id = $1 ORDER BY metric, cell_key",
        )
        .bind(id)
        .large().fetch_all(&self.db)
        .await?;
        for cell in &cells {
            let metric: String = cell.try_get("metric")?;
            let key: String = cell.try_get("cell_key")?;
            let count: i64 = cell.try_get("count")?;
            if metric == FTE {
                indicators.counsellor_fte_per_mille = u64::try_from(count).unwrap_or(0);
                continue;
            }
            if measure_named(&metric).is_none() {
                // A snapshot of an older format: unusable, wait for a fresh one.
                return Ok(None);
            }
            let parts: Vec<&str> = key.split(SEP).collect();
            let [month, office, network, breakdown] = parts[..] else {
                return Err(StoreError::Corrupt(format!("count key {key:?}")));
            };
            indicators.counts.push((
                CubeKey {
                    measure: metric,
                    month: month.to_owned(),
                    office: office.to_owned(),
                    network: network.to_owned(),
                    key: breakdown.to_owned(),
                },
                count,
            ));
        }
        Ok(Some(indicators))
    }
}
