//! The append-only, hash-chained audit log (same table in every service).

use std::sync::Arc;

use passerelle_boundary::audit::{AuditEntry, AuditRecord, GENESIS_HASH, chain_hash, verify_chain};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::{Backend, Database, Result, StoreError, to_micros};

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
    // One writer at a time keeps the chain linear within a process; on
    // PostgreSQL a table lock does the same across replicas.
    writer: Arc<Mutex<()>>,
}

impl AuditLog {
    pub fn new(db: Database) -> Self {
        AuditLog {
            db,
            writer: Arc::new(Mutex::new(())),
        }
    }

    /// Appends durably (committed before this returns).
    pub async fn append(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let _writer = self.writer.lock().await;
        let mut tx = self.db.begin_write().await?;
        if self.db.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, prev_hash) = match last {
            Some(row) => (
                row.try_get::<i64, _>("seq")? + 1,
                row.try_get::<String, _>("hash")?,
            ),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let entry_json = entry.canonical_json();
        let hash = chain_hash(&prev_hash, &entry_json);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, method, case_id, decision, entry_json, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(seq)
        .bind(to_micros(entry.at))
        .bind(&entry.method)
        .bind(entry.case_id.as_deref())
        .bind(match entry.decision {
            passerelle_boundary::Decision::Allowed => "allowed",
            passerelle_boundary::Decision::Denied => "denied",
        })
        .bind(&entry_json)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AuditRecord {
            seq,
            entry_json,
            prev_hash,
            hash,
        })
    }

    pub async fn records(&self) -> Result<Vec<AuditRecord>> {
        let rows =
            sqlx::query("SELECT seq, entry_json, prev_hash, hash FROM audit_log ORDER BY seq")
                .fetch_all(self.db.pool())
                .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    entry_json: row.try_get("entry_json")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Every entry, decoded, in order.
    pub async fn entries(&self) -> Result<Vec<AuditEntry>> {
        self.records()
            .await?
            .iter()
            .map(|r| {
                serde_json::from_str(&r.entry_json)
                    .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", r.seq)))
            })
            .collect()
    }

    /// Closes the underlying pool (at shutdown).
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Checks the whole chain; the error names the first broken record.
    pub async fn verify(&self) -> Result<()> {
        verify_chain(&self.records().await?)
            .map_err(|seq| StoreError::Corrupt(format!("audit chain broken at record {seq}")))
    }
}

/// The boundary's audit port.
impl passerelle_boundary::AuditSink for AuditLog {
    fn append(
        &self,
        entry: AuditEntry,
    ) -> passerelle_boundary::layer::BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(async move {
            AuditLog::append(self, &entry)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
