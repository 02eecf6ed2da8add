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
//! A call cancelled midway (its client went away) cannot leave half a
//! change behind: the next one to hold the batch rolls it back to its
//! savepoint first (one cancelled while its savepoint was being set or
//! released breaks the batch instead: none of it commits, and its members
//! are told to try again). A commit whose outcome is unknown (the committer
//! was stopped) is reported as busy: the caller retries under the same
//! idempotency key and finds its answer if the commit went through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard, Notify, watch};

use super::{InstitutionStore, Tx};
use crate::{Backend, Result, StoreError};

/// Most changes in one batch: a bound on how long the first waits. On
/// PostgreSQL each change is a subtransaction, and past 64 of them in one
/// transaction every reader's snapshot gets slower (subtransaction cache
/// overflow).
const MOST_CHANGES_SQLITE: usize = 256;
const MOST_CHANGES_POSTGRES: usize = 60;

/// A batch's outcome as its members hear it: `Err((busy, message))`.
type Outcome = std::result::Result<(), (bool, String)>;

#[derive(Default)]
pub(crate) struct GroupCommit {
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

/// A call's turn at the batch; dropped before its change is settled (the
/// call cancelled), it marks the change to be rolled back.
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
            if let Err(e) = self.tx.rollback_to_savepoint().await {
                self.broken = Some(e.to_string());
            }
        }
    }

    async fn commit(mut self) -> Outcome {
        self.tidy().await;
        // Nothing of a broken batch commits, and its members' calls, tried
        // again under the same keys, will go through: a busy failure.
        if let Some(broken) = self.broken {
            return Err((true, broken));
        }
        self.tx
            .commit()
            .await
            .map_err(|e| (e.is_busy(), e.to_string()))
    }
}

impl InstitutionStore {
    /// Runs `change` in the open batch (opening one if none is) and answers
    /// once the batch holding it has committed. A change that fails is
    /// rolled back alone and its error returned at once.
    pub async fn write<T, E, F>(&self, change: F) -> std::result::Result<T, E>
    where
        E: From<StoreError>,
        F: AsyncFnOnce(&mut Tx) -> std::result::Result<T, E>,
    {
        let group = &*self.group;
        group.queued.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(group);
        let open = group.open.lock().await;
        drop(queued);
        let mut turn = Turn {
            open,
            group,
            settled: false,
        };
        if turn.open.is_none() {
            *turn.open = Some(self.open_batch().await?);
        }
        let batch = turn.batch();
        batch.tidy().await;
        if let Some(broken) = batch.broken.clone() {
            turn.settled = true;
            // This call's change never ran: trying again will open a new batch.
            return Err(StoreError::Batch {
                busy: true,
                message: broken,
            }
            .into());
        }
        batch.tx.savepoint().await?;
        let result = change(&mut batch.tx).await;
        let settled = match &result {
            Ok(_) => batch.tx.release_savepoint().await,
            Err(_) => {
                batch.tx.touched.clear();
                batch.tx.rollback_to_savepoint().await
            }
        };
        if let Err(e) = settled {
            batch.broken = Some(e.to_string());
        }
        batch.changes += 1;
        batch.kept += usize::from(result.is_ok());
        let mut outcome = batch.outcome.subscribe();
        turn.settled = true;
        drop(turn);
        // A failed change was rolled back: nothing of it waits for the commit.
        let answer = result?;
        let heard = outcome.wait_for(Option::is_some).await;
        match heard.as_deref() {
            Ok(Some(Ok(()))) => Ok(answer),
            Ok(Some(Err((busy, message)))) => Err(StoreError::Batch {
                busy: *busy,
                message: message.clone(),
            }
            .into()),
            // The committer stopped before telling: the outcome is unknown,
            // and a retry under the same key will find out.
            Ok(None) | Err(_) => Err(StoreError::Batch {
                busy: true,
                message: "the commit's outcome is unknown".into(),
            }
            .into()),
        }
    }

    /// How the batching of changes went so far.
    pub fn group_commit_counts(&self) -> GroupCommitCounts {
        GroupCommitCounts {
            batches: self.group.batches.load(Ordering::Relaxed),
            changes: self.group.changes.load(Ordering::Relaxed),
            waiting: self.group.queued.load(Ordering::Relaxed),
        }
    }

    /// Begins a batch and the task that will commit it.
    async fn open_batch(&self) -> Result<Batch> {
        let tx = self.begin().await?;
        let (outcome, _) = watch::channel(None);
        tokio::spawn(commit_when_no_one_waits(self.group.clone()));
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
/// the next batch.
async fn commit_when_no_one_waits(group: Arc<GroupCommit>) {
    loop {
        group.done_with_batch.notified().await;
        let mut open = group.open.lock().await;
        let Some(batch) = open.as_ref() else {
            return;
        };
        let full = batch.changes >= batch.most_changes;
        if group.queued.load(Ordering::Acquire) > 0 && !full && batch.broken.is_none() {
            continue;
        }
        let batch = open.take().expect("checked above");
        let outcome = batch.outcome.clone();
        let changes = batch.kept as u64;
        let committed = batch.commit().await;
        match &committed {
            Ok(()) => {
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
