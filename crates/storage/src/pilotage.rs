//! The steering service's store: snapshots of each institution's aggregates.

use chrono::{DateTime, Utc};
use passerelle_domain::indicators::RawTable;
use passerelle_domain::{CaseFlow, Indicators, Institution};
use sqlx::Row;

use crate::audit::AuditLog;
use crate::{Database, Result, Schema, StoreError, from_micros, to_micros};

#[derive(Debug, Clone)]
pub struct PilotageStore {
    db: Database,
    audit: AuditLog,
}

const EXITS: &str = "exits_by_type";
const REFUSALS: &str = "refusals_by_reason";
const TABLE: &str = "table:";
const SENSITIVE: &str = "table_sensitive:";
/// Separates a table cell's row and column in `cell_key`.
const SEP: char = '\u{1f}';

fn table<'a>(indicators: &'a mut Indicators, name: &str) -> &'a mut RawTable {
    let tables = &mut indicators.flow.tables;
    match tables.iter().position(|t| t.name == name) {
        Some(i) => &mut tables[i],
        None => {
            tables.push(RawTable::new(name, false));
            tables.last_mut().expect("pushed")
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
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

    pub async fn save_snapshot(
        &self,
        indicators: &Indicators,
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO indicator_snapshots (source, computed_at, fetched_at, entry_delay_days_sum, entry_delay_count)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(indicators.source.code())
        .bind(to_micros(indicators.computed_at))
        .bind(to_micros(fetched_at))
        .bind(to_i64(indicators.entry_delay_days_sum))
        .bind(to_i64(indicators.entry_delay_count))
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        let scalars = [
            ("referrals_sent", indicators.referrals_sent),
            ("entries", indicators.entries),
            ("in_progress", indicators.in_progress),
            ("referrals_received", indicators.flow.referrals_received),
            ("referrals_accepted", indicators.flow.referrals_accepted),
            ("referrals_refused", indicators.flow.referrals_refused),
            ("referrals_expired", indicators.flow.referrals_expired),
            (
                "diagnoses_awaiting_validation",
                indicators.flow.diagnoses_awaiting_validation,
            ),
            (
                "not_entered_at_diagnosis",
                indicators.flow.not_entered_at_diagnosis,
            ),
            ("queued", indicators.flow.queued),
            (
                "exclusive_support_entries",
                indicators.flow.exclusive_support_entries,
            ),
            (
                "exclusive_support_in_progress",
                indicators.flow.exclusive_support_in_progress,
            ),
            (
                "followed_up_in_employment",
                indicators.flow.followed_up_in_employment,
            ),
        ];
        let cells = scalars
            .iter()
            .map(|(metric, n)| (*metric, String::new(), *n))
            .chain(
                indicators
                    .exits_by_type
                    .iter()
                    .map(|(k, n)| (EXITS, k.clone(), *n)),
            )
            .chain(
                indicators
                    .flow
                    .refusals_by_reason
                    .iter()
                    .map(|(k, n)| (REFUSALS, k.clone(), *n)),
            )
            .map(|(metric, key, n)| (metric.to_owned(), key, n))
            .chain(indicators.flow.tables.iter().flat_map(|t| {
                // A table's cells, and a marker that keeps its sensitivity.
                let metric = format!("{TABLE}{}", t.name);
                std::iter::once((
                    format!("{SENSITIVE}{}", t.name),
                    String::new(),
                    u64::from(t.sensitive),
                ))
                .chain(
                    t.counts
                        .iter()
                        .map(move |(r, c, n)| (metric.clone(), format!("{r}{SEP}{c}"), *n)),
                )
            }))
            // Collected before the inserts: nothing borrowed is held across them.
            .collect::<Vec<(String, String, u64)>>();
        for (metric, key, count) in cells {
            sqlx::query("INSERT INTO indicator_cells (snapshot_id, metric, cell_key, count) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(&metric)
                .bind(key)
                .bind(to_i64(count))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The most recent snapshot received from `source`.
    pub async fn latest_snapshot(&self, source: Institution) -> Result<Option<Indicators>> {
        let Some(row) = sqlx::query(
            "SELECT id, computed_at, entry_delay_days_sum, entry_delay_count FROM indicator_snapshots
             WHERE source = $1 ORDER BY fetched_at DESC, id DESC LIMIT 1",
        )
        .bind(source.code())
        .fetch_optional(self.db.pool())
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let mut indicators = Indicators {
            source,
            computed_at: from_micros(row.try_get("computed_at")?)?,
            referrals_sent: 0,
            entries: 0,
            in_progress: 0,
            entry_delay_days_sum: to_u64(row.try_get("entry_delay_days_sum")?)?,
            entry_delay_count: to_u64(row.try_get("entry_delay_count")?)?,
            exits_by_type: vec![],
            flow: CaseFlow::default(),
        };
        let cells = sqlx::query("SELECT metric, cell_key, count FROM indicator_cells WHERE snapshot_id = $1 ORDER BY metric, cell_key")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?;
        for cell in &cells {
            let metric: String = cell.try_get("metric")?;
            let key: String = cell.try_get("cell_key")?;
            let count = to_u64(cell.try_get("count")?)?;
            match metric.as_str() {
                "referrals_sent" => indicators.referrals_sent = count,
                "entries" => indicators.entries = count,
                "in_progress" => indicators.in_progress = count,
                EXITS => indicators.exits_by_type.push((key, count)),
                REFUSALS => indicators.flow.refusals_by_reason.push((key, count)),
                "referrals_received" => indicators.flow.referrals_received = count,
                "referrals_accepted" => indicators.flow.referrals_accepted = count,
                "referrals_refused" => indicators.flow.referrals_refused = count,
                "referrals_expired" => indicators.flow.referrals_expired = count,
                "diagnoses_awaiting_validation" => {
                    indicators.flow.diagnoses_awaiting_validation = count;
                }
                "not_entered_at_diagnosis" => indicators.flow.not_entered_at_diagnosis = count,
                "queued" => indicators.flow.queued = count,
                "exclusive_support_entries" => indicators.flow.exclusive_support_entries = count,
                "exclusive_support_in_progress" => {
                    indicators.flow.exclusive_support_in_progress = count;
                }
                "followed_up_in_employment" => indicators.flow.followed_up_in_employment = count,
                m if m.starts_with(SENSITIVE) => {
                    table(&mut indicators, &m[SENSITIVE.len()..]).sensitive = count == 1;
                }
                m if m.starts_with(TABLE) => {
                    let (row, column) = key
                        .split_once(SEP)
                        .ok_or_else(|| StoreError::Corrupt(format!("table cell {key}")))?;
                    table(&mut indicators, &m[TABLE.len()..]).add(row, column, count);
                }
                other => return Err(StoreError::Corrupt(format!("unknown metric {other}"))),
            }
        }
        Ok(Some(indicators))
    }
}
