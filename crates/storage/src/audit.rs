//! The append-only, hash-chained audit log (same table in every service).

use std::sync::Arc;

use crate::sql::{Conn, Row, query};
use passerelle_boundary::audit::{
    AuditEntry, AuditRecord, Decision, GENESIS_HASH, chain_hash, verify_chain,
};
use std::sync::OnceLock;
use tokio::sync::{mpsc, oneshot};

use crate::institution::group_commit::GroupCommit;
use crate::{Backend, Database, Result, StoreError, to_micros};

/// Most records written in one transaction (one fsync) by the group commit.
const GROUP_COMMIT_MAX: usize = 256;

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Database,
    // Appends go to one writer task, which commits whatever is waiting in one
    // transaction (group commit): one fsync for many records, one linear
    // chain within a process. On PostgreSQL a table lock keeps the chain
    // linear across replicas; on SQLite the write lock does.
    writer: Arc<OnceLock<mpsc::UnboundedSender<Waiting>>>,
    /// An institution's log is written in the batches of its business
    /// changes instead: one writer, one commit for both.
    batched: Option<Arc<GroupCommit>>,
}

/// An entry waiting for the writer, and who to tell once it is durable.
struct Waiting {
    entry: AuditEntry,
    done: oneshot::Sender<Result<AuditRecord>>,
}

impl AuditLog {
    pub fn new(db: Database) -> Self {
        AuditLog {
            db,
            writer: Arc::new(OnceLock::new()),
            batched: None,
        }
    }

    /// A log whose records join `group`'s batches.
    pub(crate) fn batched(db: Database, group: Arc<GroupCommit>) -> Self {
        AuditLog {
            batched: Some(group),
            ..AuditLog::new(db)
        }
    }

    /// Appends durably: answers only once the record is committed, with
    /// whatever else was waiting in the same transaction.
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditRecord> {
        if let Some(group) = &self.batched {
            // Written by a task of its own: a caller that goes away while
            // the record waits for its batch (its client cancelled) does
            // not take the record with it, as with the writer task below.
            let group = group.clone();
            return tokio::spawn(async move { group.record(entry).await })
                .await
                .map_err(|e| StoreError::Config(format!("the audit write stopped: {e}")))?;
        }
        let (done, committed) = oneshot::channel();
        self.writer()
            .send(Waiting { entry, done })
            .map_err(|_| StoreError::Config("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| StoreError::Config("the audit writer has stopped".into()))?
    }

    /// The writer task, started on first use (inside the runtime); it ends
    /// when the last handle on this log is dropped.
    fn writer(&self) -> &mpsc::UnboundedSender<Waiting> {
        self.writer.get_or_init(|| {
            let (send, receive) = mpsc::unbounded_channel();
            tokio::spawn(group_commit(self.db.clone(), receive));
            send
        })
    }

    pub async fn records(&self) -> Result<Vec<AuditRecord>> {
        let rows = query("SELECT seq, entry_json, prev_hash, hash FROM audit_log ORDER BY seq")
            .large()
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(record_of).collect()
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

    /// Records matching `filter`, in order, at most `filter.limit`. The case,
    /// period and decision narrow the scan in SQL; agent and purpose live in
    /// the hashed entry and are matched on it.
    pub async fn search(&self, filter: &AuditFilter) -> Result<Vec<(AuditRecord, AuditEntry)>> {
        const PAGE: i64 = 1_000;
        let mut found = vec![];
        let mut after = filter.after_seq;
        loop {
            let rows = query(
                "SELECT seq, entry_json, prev_hash, hash FROM audit_log
                 WHERE seq > $1
                   AND ($2 = '' OR case_id = $2)
                   AND ($3 = '' OR decision = $3)
                   AND at >= $4 AND at < $5
                 ORDER BY seq LIMIT $6",
            )
            .bind(after)
            .bind(filter.case_id.as_deref().unwrap_or(""))
            .bind(filter.decision.map(decision_code).unwrap_or(""))
            .bind(filter.from.map(to_micros).unwrap_or(i64::MIN))
            .bind(filter.to.map(to_micros).unwrap_or(i64::MAX))
            .bind(PAGE)
            .fetch_all(&self.db)
            .await?;
            let exhausted = (rows.len() as i64) < PAGE;
            for row in &rows {
                let record = record_of(row)?;
                after = record.seq;
                let entry: AuditEntry = serde_json::from_str(&record.entry_json)
                    .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", record.seq)))?;
                let agent_matches = filter
                    .agent
                    .as_deref()
                    .is_none_or(|a| entry.agent.as_deref() == Some(a));
                let purpose_matches = filter.purpose.is_none_or(|p| entry.purpose == Some(p));
                if agent_matches && purpose_matches {
                    found.push((record, entry));
                    if found.len() >= filter.limit {
                        return Ok(found);
                    }
                }
            }
            if exhausted {
                return Ok(found);
            }
        }
    }

    /// The chain's head: its last sequence number and hash.
    pub async fn head(&self) -> Result<Option<(i64, String)>> {
        let row = query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.db)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    /// The last record that is not itself about anchoring: an anchor is due
    /// only when something else was recorded since the last one.
    pub async fn last_substantive_seq(&self) -> Result<i64> {
        let row = query(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_log WHERE method NOT LIKE '%AuditAnchor%'",
        )
        .fetch_one(&self.db)
        .await?;
        row.try_get("seq")
    }

    /// The hash of each record among `seqs` this log holds (`None` for a
    /// record it no longer has), read in one pass over their range.
    pub async fn hashes_at(&self, seqs: &[i64]) -> Result<Vec<(i64, Option<String>)>> {
        let (Some(first), Some(last)) = (seqs.iter().min(), seqs.iter().max()) else {
            return Ok(vec![]);
        };
        let rows = query("SELECT seq, hash FROM audit_log WHERE seq >= $1 AND seq <= $2")
            .bind(*first)
            .bind(*last)
            .fetch_all(&self.db)
            .await?;
        let mut held = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            held.insert(r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?);
        }
        Ok(seqs.iter().map(|s| (*s, held.get(s).cloned())).collect())
    }

    /// Keeps a head of the partner's log (the same one twice is a no-op).
    pub async fn keep_partner_anchor(
        &self,
        anchor: &AuditAnchor,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        query(
            "INSERT INTO partner_audit_anchors (seq, hash, anchored_at, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(anchor.seq)
        .bind(&anchor.hash)
        .bind(to_micros(anchor.at))
        .bind(to_micros(received_at))
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// The partner's heads kept here, oldest first.
    pub async fn partner_anchors(&self) -> Result<Vec<AuditAnchor>> {
        let rows = query("SELECT seq, hash, anchored_at FROM partner_audit_anchors ORDER BY seq")
            .fetch_all(&self.db)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditAnchor {
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                    at: crate::from_micros(r.try_get("anchored_at")?)?,
                })
            })
            .collect()
    }

    /// The last own head sent to the partner (its sequence number), 0 if none.
    pub async fn last_sent_anchor(&self) -> Result<i64> {
        let row = query("SELECT seq FROM own_audit_anchor WHERE id = 1")
            .fetch_optional(&self.db)
            .await?;
        Ok(row.map(|r| r.try_get("seq")).transpose()?.unwrap_or(0))
    }

    pub async fn record_sent_anchor(
        &self,
        seq: i64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        query(
            "INSERT INTO own_audit_anchor (id, seq, sent_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, sent_at = excluded.sent_at",
        )
        .bind(seq)
        .bind(to_micros(at))
        .execute(&self.db)
        .await?;
        Ok(())
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

/// Columns of one audit row, in the order [`append_all_in`] binds them.
const AUDIT_COLUMNS: usize = 8;

/// Appends `entries` to the chain within `tx`, in order: they commit with
/// whatever else `tx` writes (a purge and its record, say), or not at all.
/// The head is read once the transaction holds the chain (SQLite's write
/// lock, or the table lock taken here on PostgreSQL, held until the
/// commit), the hashes chained in memory, the rows written in one statement.
/// Called once per transaction, just before its commit.
pub(crate) async fn append_all_in(
    tx: &mut Conn,
    backend: Backend,
    entries: &[&AuditEntry],
) -> Result<Vec<AuditRecord>> {
    if entries.is_empty() {
        return Ok(vec![]);
    }
    if backend == Backend::Postgres {
        // Only transactions committing hold the chain, briefly: wait for
        // them whatever a batch's changes may wait.
        crate::sql::batch(
            tx,
            "SET LOCAL lock_timeout = 0; LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE",
        )
        .await?;
    }
    let last = query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut seq, mut prev_hash) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")?,
            row.try_get::<String, _>("hash")?,
        ),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry_json = entry.canonical_json();
        let hash = chain_hash(&prev_hash, &entry_json);
        seq += 1;
        records.push(AuditRecord {
            seq,
            entry_json,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    // Only placeholders are formatted in; every value is bound.
    let sql = format!(
        "INSERT INTO audit_log (seq, at, method, case_id, decision, entry_json, prev_hash, hash) VALUES {}",
        crate::values_placeholders(records.len(), AUDIT_COLUMNS)
    );
    let mut insert = query(sql);
    for (entry, record) in entries.iter().zip(&records) {
        insert = insert
            .bind(record.seq)
            .bind(to_micros(entry.at))
            .bind(entry.method.clone())
            .bind(entry.case_id.as_deref().map(str::to_owned))
            .bind(decision_code(entry.decision))
            .bind(record.entry_json.clone())
            .bind(record.prev_hash.clone())
            .bind(record.hash.clone());
    }
    insert.execute(&mut *tx).await?;
    Ok(records)
}

/// Commits every entry waiting, in arrival order, one transaction per batch;
/// each caller hears of its own record (or of the batch's failure).
async fn group_commit(db: Database, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while waiting.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        let entries: Vec<&AuditEntry> = batch.iter().map(|w| &w.entry).collect();
        match append_batch(&db, &entries).await {
            Ok(records) => {
                for (w, record) in batch.drain(..).zip(records) {
                    // A caller that went away (its call cancelled) still has its record.
                    let _ = w.done.send(Ok(record));
                }
            }
            Err(e) => {
                let busy = e.is_busy();
                let message = e.to_string();
                for w in batch.drain(..) {
                    let _ = w.done.send(Err(StoreError::Batch {
                        busy,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}

async fn append_batch(db: &Database, entries: &[&AuditEntry]) -> Result<Vec<AuditRecord>> {
    let mut tx = db.begin_write().await?;
    let records = append_all_in(&mut tx, db.backend(), entries).await?;
    tx.commit().await?;
    Ok(records)
}

fn record_of(row: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        entry_json: row.try_get("entry_json")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn decision_code(d: Decision) -> &'static str {
    match d {
        Decision::Allowed => "allowed",
        Decision::Denied => "denied",
    }
}

/// What a data protection officer searches the log for; unset means any.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub case_id: Option<String>,
    pub agent: Option<String>,
    pub purpose: Option<passerelle_domain::Purpose>,
    pub decision: Option<Decision>,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub after_seq: i64,
    pub limit: usize,
}

/// A head of an institution's audit chain, as kept by its partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: i64,
    pub hash: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The boundary's audit port.
impl passerelle_boundary::AuditSink for AuditLog {
    fn append(
        &self,
        entry: AuditEntry,
    ) -> passerelle_boundary::layer::BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(async move {
            AuditLog::append(self, entry)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
