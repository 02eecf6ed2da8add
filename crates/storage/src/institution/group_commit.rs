//! Group commit of business transactions: the changes of concurrent calls
//! share one transaction and one durable commit (one fsync) instead of one
//! each, and each caller is answered only once the commit holding its change
//! is durable.
//!
//! Each change runs inside its own savepoint of the open batch, one after
//! the other: a change that fails is rolled back to its savepoint and leaves
//! the others untouched. The batch stays open while calls are waiting to
//! join it; a committer task closes it as soon as none is. On SQLite that
//! replaces waiting for the database's write lock (one writer at a time
//! anyway) with waiting in line here; on PostgreSQL the row locks taken by
//! a change are held until the batch commits, as they would be by its own
//! transaction.
//!
//! The institution's audit records are written in the same batches: a
//! crossing's record with the change it asks for (kept even when the change
//! fails), a record on its own (a replay, a read) beside them. They are
//! chained in the order their calls joined and appended in one statement
//! just before the commit, so on PostgreSQL the chain's lock (one linear
//! chain across replicas) is held only for that statement and the commit.
//!
//! The committee's counts likewise: the batch's changes add up their
//! differences, written in one statement just before the chain's. The count
//! rows every case of a month and office shares are locked only for the
//! commit: another replica's changes to them are not held up (and given up
//! as busy) for as long as a batch runs.
//!
//! A change's savepoint is released in the same statement that sets the
//! next one's (or by the commit): one round trip per change fewer.
//!
//! A call cancelled midway (its client went away) cannot leave half a
//! change behind: the next one to hold the batch rolls it back to its
//! savepoint first (one cancelled while its savepoint was being set or
//! released, or during the read that carries them, breaks the batch
//! instead: none of it commits, and its members are told to try again). A
//! commit whose outcome is unknown (the committer was stopped) is reported
//! as busy: the caller retries under the same idempotency key and finds its
//! answer if the commit went through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use passerelle_boundary::PendingRecord;
use passerelle_boundary::audit::{AuditEntry, AuditRecord};
use passerelle_domain::Institution;
use tokio::sync::{Mutex, MutexGuard, Notify, watch};

use super::case_cache::KeptCases;
use super::{InstitutionStore, Savepoint, Tx};
use crate::{Backend, Database, Result, StoreError};

/// Most changes in one batch: a bound on how long the first waits. On
/// PostgreSQL each change is a subtransaction, and past 64 of them in one
/// transaction every reader's snapshot gets slower (subtransaction cache
/// overflow).
const MOST_CHANGES_SQLITE: usize = 256;
const MOST_CHANGES_POSTGRES: usize = 60;
/// Most audit records in one batch (they need no subtransaction).
const MOST_RECORDS: usize = 256;

/// A batch's outcome as its members hear it: the records it appended to
/// the audit chain, in the order they joined, or `Err((busy, message))`.
type Outcome = std::result::Result<Arc<Vec<AuditRecord>>, (bool, String)>;

pub(crate) struct GroupCommit {
    db: Database,
    own: Institution,
    /// What the store keeps of the cases between calls ([`Tx::case`]).
    kept: Arc<KeptCases>,
    /// The open batch, if any; whoever holds it is the only writer.
    open: Mutex<Option<Batch>>,
    /// Calls waiting for the batch: while some are, it stays open for them.
    queued: AtomicUsize,
    /// Rings each time a call is done with the batch (or gave up waiting).
    done_with_batch: Notify,
    /// Batches committed, and the changes they held (for metrics and tests).
    batches: AtomicU64,
    changes: AtomicU64,
}

/// How the batching went so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitCounts {
    /// Batches committed.
    pub batches: u64,
    /// Changes those batches held (failed changes are not counted).
    pub changes: u64,
    /// Calls waiting for their turn at the open batch right now.
    pub waiting: usize,
}

struct Batch {
    tx: Tx,
    /// Changes that ran in the batch (kept or rolled back), and those kept.
    changes: usize,
    kept: usize,
    most_changes: usize,
    /// A call was cancelled inside its savepoint: rolled back before anything else.
    abandoned: bool,
    /// The transaction can no longer commit (a savepoint could not be
    /// released or rolled back): every member is told it failed.
    broken: Option<String>,
    outcome: watch::Sender<Option<Outcome>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("own", &self.own)
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts a call in the queue until it holds the batch or gives up.
struct Queued<'a>(&'a GroupCommit);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        // A call cancelled while waiting may have been the one the
        // committer was holding the batch open for.
        self.0.done_with_batch.notify_one();
    }
}

/// A call's turn at the batch; dropped before it is settled (the call
/// cancelled), it marks what it left to be undone.
struct Turn<'a> {
    open: MutexGuard<'a, Option<Batch>>,
    group: &'a GroupCommit,
    settled: bool,
}

impl Turn<'_> {
    fn batch(&mut self) -> &mut Batch {
        self.open.as_mut().expect("a turn holds an open batch")
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.settled
            && let Some(batch) = self.open.as_mut()
        {
            batch.abandoned = true;
        }
        self.group.done_with_batch.notify_one();
    }
}

impl Batch {
    /// Rolls back what a cancelled call left inside its savepoint.
    async fn tidy(&mut self) {
        if std::mem::take(&mut self.abandoned) {
            self.tx.touched.clear();
            match self.tx.savepoint_state() {
                Savepoint::Set => {
                    if let Err(e) = self.tx.rollback_to_savepoint().await {
                        self.broken = Some(e.to_string());
                    }
                }
                Savepoint::Unknown => {
                    self.broken = Some(
                        "a call was cancelled while the batch's savepoint was being set or released"
                            .into(),
                    );
                }
                // The call was cancelled before its change began.
                Savepoint::None | Savepoint::Kept => {}
            }
        }
    }

    fn full(&self) -> bool {
        self.changes >= self.most_changes || self.tx.audits.len() >= MOST_RECORDS
    }

    async fn commit(mut self) -> Outcome {
        self.tidy().await;
        // Nothing of a broken batch commits, and its members' calls, tried
        // again under the same keys, will go through: a busy failure.
        if let Some(broken) = self.broken {
            return Err((true, broken));
        }
        let records = self
            .tx
            .commit_with_records()
            .await
            .map_err(|e| (e.is_busy(), e.to_string()))?;
        Ok(Arc::new(records))
    }
}

fn busy(message: String) -> StoreError {
    StoreError::Batch {
        busy: true,
        message,
    }
}

/// What a call appends to the audit chain before its change.
enum ToRecord<'a> {
    Nothing,
    /// A record written on its own ([`crate::audit::AuditLog::append`]).
    Entry(AuditEntry),
    /// A crossing's record, taken once the call holds the batch.
    Pending(&'a PendingRecord),
}

/// No change: a call that only appends an audit record.
type NoChange = fn(&mut Tx) -> std::future::Ready<Result<()>>;

impl InstitutionStore {
    /// Runs `change` in the open batch (opening one if none is) and answers
    /// once the batch holding it has committed. A change that fails is
    /// rolled back alone and its error returned at once.
    pub async fn write<T, E, F>(&self, change: F) -> std::result::Result<T, E>
    where
        E: From<StoreError>,
        F: AsyncFnOnce(&mut Tx) -> std::result::Result<T, E>,
    {
        let (_, answer) = self.group.run(ToRecord::Nothing, Some(change)).await?;
        Ok(answer.expect("a change ran"))
    }

    /// Like [`InstitutionStore::write`], with the audit record of the
    /// crossing that asks for the change appended to the chain in the same
    /// batch, outside the change's savepoint: one durable commit holds
    /// both, and the record is kept even when the change fails. Either way
    /// the caller is answered only once the record is durable.
    ///
    /// The record is taken from `record` only once the call holds the
    /// batch: a call cancelled or refused before that leaves it there, to
    /// be written on its own ([`PendingRecord`]).
    pub async fn write_recorded<T, E, F>(
        &self,
        record: &PendingRecord,
        change: F,
    ) -> std::result::Result<T, E>
    where
        E: From<StoreError>,
        F: AsyncFnOnce(&mut Tx) -> std::result::Result<T, E>,
    {
        let (_, answer) = self
            .group
            .run(ToRecord::Pending(record), Some(change))
            .await?;
        Ok(answer.expect("a change ran"))
    }

    /// How the batching of changes went so far.
    pub fn group_commit_counts(&self) -> GroupCommitCounts {
        GroupCommitCounts {
            batches: self.group.batches.load(Ordering::Relaxed),
            changes: self.group.changes.load(Ordering::Relaxed),
            waiting: self.group.queued.load(Ordering::Relaxed),
        }
    }
}

impl GroupCommit {
    pub(crate) fn new(db: Database, own: Institution, kept: Arc<KeptCases>) -> Arc<Self> {
        Arc::new(GroupCommit {
            db,
            own,
            kept,
            open: Mutex::default(),
            queued: AtomicUsize::new(0),
            done_with_batch: Notify::new(),
            batches: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        })
    }

    /// Appends `entry` to the audit chain in the open batch and answers
    /// once it is durable: the institution's records and changes share one
    /// writer and one commit.
    pub(crate) async fn record(self: &Arc<Self>, entry: AuditEntry) -> Result<AuditRecord> {
        let (record, _) = self.run(ToRecord::Entry(entry), None::<NoChange>).await?;
        Ok(record.expect("a record was appended"))
    }

    /// One call's turn at the batch: its record queued for the batch's
    /// commit, then its change run in a savepoint; answered once the batch
    /// has committed (at once if the change failed and no record waits for
    /// the commit).
    async fn run<T, E, F>(
        self: &Arc<Self>,
        record: ToRecord<'_>,
        change: Option<F>,
    ) -> std::result::Result<(Option<AuditRecord>, Option<T>), E>
    where
        E: From<StoreError>,
        F: AsyncFnOnce(&mut Tx) -> std::result::Result<T, E>,
    {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(self);
        let open = self.open.lock().await;
        drop(queued);
        let mut turn = Turn {
            open,
            group: self,
            settled: false,
        };
        if turn.open.is_none() {
            *turn.open = Some(self.open_batch().await?);
        }
        let batch = turn.batch();
        batch.tidy().await;
        if let Some(broken) = batch.broken.clone() {
            turn.settled = true;
            // This call never ran: trying again will open a new batch.
            return Err(busy(broken).into());
        }
        let mut record_durable = None;
        let recorded = match record {
            ToRecord::Nothing => None,
            ToRecord::Entry(entry) => Some(entry),
            ToRecord::Pending(pending) => pending.take().inspect(|entry| {
                // Counted in the metrics once durable, as a record written
                // alone is (by whoever asked for it).
                record_durable = Some(passerelle_boundary::ports::count(entry));
            }),
        }
        .map(|entry| {
            // Before the change's savepoint: kept if the change fails.
            batch.tx.audits.push(entry);
            batch.tx.audits.len() - 1
        });
        let result = match change {
            Some(change) => {
                batch.tx.savepoint().await?;
                let result = change(&mut batch.tx).await;
                match &result {
                    Ok(_) => batch.tx.keep_savepoint(),
                    Err(_) => {
                        batch.tx.touched.clear();
                        if let Err(e) = batch.tx.rollback_to_savepoint().await {
                            batch.broken = Some(e.to_string());
                        }
                    }
                }
                batch.changes += 1;
                batch.kept += usize::from(result.is_ok());
                Some(result)
            }
            None => None,
        };
        let mut outcome = batch.outcome.subscribe();
        turn.settled = true;
        drop(turn);
        let answer = match result {
            // A failed change was rolled back: unless its record waits for
            // the commit, nothing of it does.
            Some(Err(e)) if recorded.is_none() => return Err(e),
            other => other,
        };
        let heard = outcome.wait_for(Option::is_some).await;
        match heard.as_deref() {
            Ok(Some(Ok(records))) => {
                if let Some(counted) = record_durable {
                    counted();
                }
                let appended = recorded.and_then(|i| records.get(i).cloned());
                match answer {
                    Some(Ok(answer)) => Ok((appended, Some(answer))),
                    Some(Err(e)) => Err(e),
                    None => Ok((appended, None)),
                }
            }
            Ok(Some(Err((busy, message)))) => Err(StoreError::Batch {
                busy: *busy,
                message: message.clone(),
            }
            .into()),
            // The committer stopped before telling: the outcome is unknown,
            // and a retry under the same key will find out.
            Ok(None) | Err(_) => Err(busy("the commit's outcome is unknown".into()).into()),
        }
    }

    /// Begins a batch and the task that will commit it.
    async fn open_batch(self: &Arc<Self>) -> Result<Batch> {
        let tx = Tx::begin(&self.db, self.own, self.kept.clone()).await?;
        let (outcome, _) = watch::channel(None);
        tokio::spawn(commit_when_no_one_waits(self.clone()));
        Ok(Batch {
            tx,
            changes: 0,
            kept: 0,
            most_changes: match self.db.backend() {
                Backend::Sqlite => MOST_CHANGES_SQLITE,
                Backend::Postgres => MOST_CHANGES_POSTGRES,
            },
            abandoned: false,
            broken: None,
            outcome,
        })
    }
}

/// Commits the open batch once no call is waiting to join it (or it is
/// full), holding it meanwhile: calls arriving during the commit queue for
/// the next batch. (Letting the next batch run beside the commit on
/// PostgreSQL was measured: no gain, the commit being a small part of a
/// batch's time.)
async fn commit_when_no_one_waits(group: Arc<GroupCommit>) {
    loop {
        group.done_with_batch.notified().await;
        let mut open = group.open.lock().await;
        let Some(batch) = open.as_ref() else {
            return;
        };
        let full = batch.full();
        if group.queued.load(Ordering::Acquire) > 0 && !full && batch.broken.is_none() {
            continue;
        }
        let batch = open.take().expect("checked above");
        let outcome = batch.outcome.clone();
        let changes = batch.kept as u64;
        let committed = batch.commit().await;
        match &committed {
            Ok(_) => {
                group.batches.fetch_add(1, Ordering::Relaxed);
                group.changes.fetch_add(changes, Ordering::Relaxed);
            }
            Err((_, message)) => {
                tracing::warn!(error = %message, "a batch of changes failed to commit; its callers are told");
            }
        }
        outcome.send_replace(Some(committed));
        return;
    }
}
