//! Which cases each SQLite commit changed, so that what is kept between
//! reads (a case's consents, its parts) stays exactly as fresh as a read.
//!
//! Every pooled connection gets temporary triggers on the watched tables:
//! each row inserted, updated or deleted, whatever the statement, notes its
//! table and `case_id` (before and after) in the connection's open
//! transaction. Once the transaction commits (visible to new reads) and
//! before its caller is answered, each noted (table, case) gets the commit's
//! number as its stamp. A reader takes the last number before it reads; what
//! it read is current as long as no stamp of its tables and case passed that
//! number ([`CaseStamps::changed_since`]).
//!
//! The same (table, case) pairs are stamped a first time by SQLite's commit
//! hook, before the commit is visible and while its writer still holds the
//! write lock: a write transaction, which can begin only after that, finds
//! every commit it sees stamped already, so what it reads may be kept for
//! the next write transaction too (`Tx::case`). Readers outside a write
//! transaction go by the second stamp, given once the commit is visible.
//!
//! SQLite's update hook counts the same rows, independently: should it
//! count more than the triggers noted (a connection opened before the
//! tables existed, a table rebuilt since), the commit stamps every case.
//! Stamps live in a fixed array indexed by a hash: two cases sharing a slot
//! only make each other's kept reads stale, never fresher.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Slots of stamps per database file: 32 KiB.
const SLOTS: usize = 4096;

/// The name of the function the triggers call.
const NOTE_FUNCTION: &str = "passerelle_case_changed";

/// The stamps of one database file, shared by every pool of this process on
/// it.
#[derive(Debug)]
pub(crate) struct CaseStamps {
    /// The number given to the last commit that changed a watched table.
    last: AtomicU64,
    /// The number of the last commit whose changes could not all be
    /// attributed to cases: everything read before it is stale.
    everything: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl Default for CaseStamps {
    fn default() -> Self {
        CaseStamps {
            last: AtomicU64::new(0),
            everything: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl CaseStamps {
    /// The number to read under: taken before the read begins.
    pub(crate) fn now(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Whether a commit numbered after `since` changed a row of `case_id`
    /// in one of `tables` (or rows it could not attribute).
    pub(crate) fn changed_since(&self, tables: &[&str], case_id: &str, since: u64) -> bool {
        self.everything.load(Ordering::SeqCst) > since
            || tables
                .iter()
                .any(|table| self.slots[slot(table, case_id)].load(Ordering::SeqCst) > since)
    }

    /// Stamps what a commit changed: as it commits (the commit hook), then
    /// once it is visible to new reads. A read that began before the second
    /// took a smaller number and is stale by its stamps; one that began
    /// after it reads its changes.
    fn committed(&self, changes: &Changes) {
        if changes.rows.is_empty() && changes.noted.is_empty() {
            return;
        }
        let number = self.last.fetch_add(1, Ordering::SeqCst) + 1;
        if changes.unattributed() {
            self.everything.fetch_max(number, Ordering::SeqCst);
        }
        for (table, case_id) in &changes.cases {
            self.slots[slot(table, case_id)].fetch_max(number, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
impl CaseStamps {
    /// Stamps as a commit of one row would.
    pub(crate) fn stamp(&self, table: &'static str, case_id: &str) {
        let mut changes = Changes {
            rows: vec![1],
            noted: vec![1],
            ..Changes::default()
        };
        changes.cases.insert((table, case_id.into()));
        self.committed(&changes);
    }
}

fn slot(table: &str, case_id: &str) -> usize {
    // A fixed hasher: the stamps are this process's own, no input of a
    // caller's chooses a slot it could not choose with its own case.
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((table, case_id));
    (hash % SLOTS as u64) as usize
}

/// The stamps of the database at `target`, shared by this process's pools
/// on it: a test's or a tool's store beside the service's commits to the
/// same rows.
pub(crate) fn stamps_of(target: &std::path::Path) -> Arc<CaseStamps> {
    type Registry = Vec<(std::path::PathBuf, std::sync::Weak<CaseStamps>)>;
    static STAMPS: Mutex<Registry> = Mutex::new(Vec::new());
    // Named as SQLite is given it: a URI (an in-memory database) as is, a
    // path by its directory's real path (the file may not exist yet).
    let target = if target.to_str().is_some_and(|t| t.starts_with("file:")) {
        target.to_owned()
    } else {
        let absolute = std::path::absolute(target).unwrap_or_else(|_| target.to_owned());
        match (
            absolute.parent().and_then(|dir| dir.canonicalize().ok()),
            absolute.file_name(),
        ) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => absolute,
        }
    };
    let mut all = STAMPS.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|(_, stamps)| stamps.strong_count() > 0);
    if let Some(stamps) = all
        .iter()
        .find(|(path, _)| *path == target)
        .and_then(|(_, stamps)| stamps.upgrade())
    {
        return stamps;
    }
    let stamps = Arc::new(CaseStamps::default());
    all.push((target, Arc::downgrade(&stamps)));
    stamps
}

/// What the transaction open on a connection changed so far.
#[derive(Debug, Default)]
struct Changes {
    /// Rows changed per watched table, as SQLite's update hook counts them.
    rows: Vec<u64>,
    /// Rows per watched table the triggers noted.
    noted: Vec<u64>,
    /// The (table, case) pairs the triggers noted.
    cases: HashSet<(&'static str, Box<str>)>,
}

impl Changes {
    fn count(counts: &mut Vec<u64>, table: usize) {
        if counts.len() <= table {
            counts.resize(table + 1, 0);
        }
        counts[table] += 1;
    }

    /// Whether the update hook counted, in some table, rows no trigger noted.
    fn unattributed(&self) -> bool {
        self.rows
            .iter()
            .enumerate()
            .any(|(table, rows)| *rows > self.noted.get(table).copied().unwrap_or(0))
    }
}

/// A connection's watch over its changes to the watched tables.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    changes: Arc<Mutex<Changes>>,
    stamps: Arc<CaseStamps>,
}

impl Watch {
    /// Installs the update hook, the note function and the triggers on a
    /// new connection. Tables that do not exist yet (a new database, before
    /// its migrations) get no trigger: their changes stamp every case.
    pub(crate) fn install(
        connection: &rusqlite::Connection,
        tables: &'static [&'static str],
        stamps: Arc<CaseStamps>,
    ) -> rusqlite::Result<Watch> {
        use rusqlite::functions::FunctionFlags;
        let changes = Arc::new(Mutex::new(Changes::default()));
        let counted = changes.clone();
        // Stamped before the commit is visible, for write transactions.
        let committing = changes.clone();
        let stamps_at_commit = stamps.clone();
        connection.commit_hook(Some(move || {
            stamps_at_commit.committed(&lock(&committing));
            // The commit goes ahead.
            false
        }))?;
        connection.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                if let Some(table) = tables.iter().position(|t| *t == table) {
                    Changes::count(&mut lock(&counted).rows, table);
                }
            },
        ))?;
        let noting = changes.clone();
        connection.create_scalar_function(
            NOTE_FUNCTION,
            3,
            // Not deterministic: SQLite must call it for every row.
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
            move |context| {
                let table: String = context.get(0)?;
                let Some(index) = tables.iter().position(|t| *t == table) else {
                    return Ok(rusqlite::types::Null);
                };
                let mut case_ids = Vec::with_capacity(2);
                for i in 1..3 {
                    match context.get_raw(i) {
                        rusqlite::types::ValueRef::Null => {}
                        rusqlite::types::ValueRef::Text(id) => {
                            case_ids.push(String::from_utf8_lossy(id).into_owned());
                        }
                        // Not a case id this process writes: the row stays
                        // unnoted, so its commit stamps every case (a
                        // failure here would fail the statement).
                        _ => return Ok(rusqlite::types::Null),
                    }
                }
                let mut changes = lock(&noting);
                Changes::count(&mut changes.noted, index);
                for case_id in case_ids {
                    changes
                        .cases
                        .insert((tables[index], case_id.into_boxed_str()));
                }
                Ok(rusqlite::types::Null)
            },
        )?;
        // A row REPLACE deletes fires the delete trigger only with recursive
        // triggers (the update hook never sees it: it is then counted by
        // the triggers alone, still stamped).
        connection.execute_batch("PRAGMA recursive_triggers = ON")?;
        let mut existing = connection
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1")?;
        let mut triggers = String::new();
        for table in tables {
            if !existing.exists([table])? {
                continue;
            }
            for (event, old, new) in [
                ("INSERT", "NULL", "NEW.case_id"),
                ("UPDATE", "OLD.case_id", "NEW.case_id"),
                ("DELETE", "OLD.case_id", "NULL"),
            ] {
                triggers += &format!(
                    "CREATE TEMP TRIGGER IF NOT EXISTS passerelle_{table}_{event} \
                     AFTER {event} ON main.{table} \
                     BEGIN SELECT {NOTE_FUNCTION}('{table}', {old}, {new}); END;\n",
                    event = event.to_lowercase(),
                );
            }
        }
        drop(existing);
        connection.execute_batch(&triggers)?;
        Ok(Watch { changes, stamps })
    }

    /// After a statement or a commit: once the connection is outside a
    /// transaction, what it changed is committed and visible.
    pub(crate) fn after_commit(&self, outside_transaction: bool) {
        if !outside_transaction {
            return;
        }
        let changes = std::mem::take(&mut *lock(&self.changes));
        self.stamps.committed(&changes);
    }

    /// Whether the transaction open on the connection changed a row of
    /// `case_id` in one of `tables` (or rows it could not attribute): what
    /// it reads of them then is its own, not yet committed.
    pub(crate) fn changed_in_transaction(&self, tables: &[&'static str], case_id: &str) -> bool {
        let changes = lock(&self.changes);
        changes.unattributed()
            || tables
                .iter()
                .any(|table| changes.cases.contains(&(*table, Box::from(case_id))))
    }

    /// The stamps of the connection's database file.
    pub(crate) fn stamps(&self) -> &CaseStamps {
        &self.stamps
    }

    /// After a rollback: nothing it changed was ever seen.
    pub(crate) fn rolled_back(&self) {
        *lock(&self.changes) = Changes::default();
    }
}

fn lock(changes: &Mutex<Changes>) -> std::sync::MutexGuard<'_, Changes> {
    changes.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &[&str] = &["cases", "consents"];

    fn connection_with(stamps: &Arc<CaseStamps>) -> (rusqlite::Connection, Watch) {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .execute_batch(
                "CREATE TABLE cases (case_id TEXT PRIMARY KEY, state TEXT);
                 CREATE TABLE consents (consent_id TEXT PRIMARY KEY, case_id TEXT);
                 CREATE TABLE other (case_id TEXT)",
            )
            .unwrap();
        let watch = Watch::install(&connection, TABLES, stamps.clone()).unwrap();
        (connection, watch)
    }

    fn run(connection: &rusqlite::Connection, watch: &Watch, sql: &str) {
        connection.execute_batch(sql).unwrap();
        watch.after_commit(connection.is_autocommit());
    }

    #[test]
    fn a_commit_stamps_the_cases_and_tables_it_changed_and_no_other() {
        let stamps = Arc::new(CaseStamps::default());
        let (connection, watch) = connection_with(&stamps);
        let since = stamps.now();
        run(&connection, &watch, "INSERT INTO cases VALUES ('a', 'new')");
        assert!(stamps.changed_since(&["cases"], "a", since));
        assert!(!stamps.changed_since(&["consents"], "a", since));
        assert!(!stamps.changed_since(&["cases", "consents"], "b", since));
        // Read after that commit: current until the next change of its own.
        let since = stamps.now();
        run(&connection, &watch, "INSERT INTO cases VALUES ('b', 'new')");
        run(&connection, &watch, "INSERT INTO other VALUES ('a')");
        assert!(!stamps.changed_since(&["cases"], "a", since));
        run(&connection, &watch, "UPDATE cases SET state = 'active'");
        assert!(stamps.changed_since(&["cases"], "a", since));
        // An update moving a row to another case stamps both.
        let since = stamps.now();
        run(
            &connection,
            &watch,
            "INSERT INTO consents VALUES ('k', 'a')",
        );
        let since_consent = stamps.now();
        run(&connection, &watch, "UPDATE consents SET case_id = 'c'");
        assert!(stamps.changed_since(&["consents"], "a", since_consent));
        assert!(stamps.changed_since(&["consents"], "c", since_consent));
        assert!(!stamps.changed_since(&["cases"], "a", since));
        // A DELETE without WHERE, which the update hook skips (SQLite
        // truncates the table) unless triggers are set: stamped.
        let since = stamps.now();
        run(&connection, &watch, "DELETE FROM consents");
        assert!(stamps.changed_since(&["consents"], "c", since));
        assert!(!stamps.changed_since(&["consents"], "a", since));
    }

    #[test]
    fn a_transaction_stamps_at_its_commit_only_and_a_rollback_never() {
        let stamps = Arc::new(CaseStamps::default());
        let (connection, watch) = connection_with(&stamps);
        let since = stamps.now();
        run(
            &connection,
            &watch,
            "BEGIN; INSERT INTO cases VALUES ('a', 'new')",
        );
        assert!(
            !stamps.changed_since(&["cases"], "a", since),
            "not committed yet"
        );
        run(
            &connection,
            &watch,
            "SAVEPOINT s; INSERT INTO cases VALUES ('b', 'new')",
        );
        run(&connection, &watch, "ROLLBACK TO s; RELEASE s");
        run(&connection, &watch, "COMMIT");
        assert!(stamps.changed_since(&["cases"], "a", since));
        let since = stamps.now();
        run(&connection, &watch, "BEGIN; UPDATE cases SET state = 'x'");
        connection.execute_batch("ROLLBACK").unwrap();
        watch.rolled_back();
        run(&connection, &watch, "INSERT INTO other VALUES ('a')");
        assert!(!stamps.changed_since(&["cases"], "a", since));
        assert_eq!(
            since,
            stamps.now(),
            "a commit changing nothing watched takes no number"
        );
    }

    #[test]
    fn a_commit_is_stamped_as_it_commits_before_its_writer_goes_on() {
        let stamps = Arc::new(CaseStamps::default());
        let (connection, watch) = connection_with(&stamps);
        let since = stamps.now();
        run(
            &connection,
            &watch,
            "BEGIN; INSERT INTO cases VALUES ('a', 'new')",
        );
        // The commit alone, without what its writer does after it: the
        // next write transaction may begin in between.
        connection.execute_batch("COMMIT").unwrap();
        assert!(stamps.changed_since(&["cases"], "a", since));
        assert!(!stamps.changed_since(&["cases"], "b", since));
        let at_commit = stamps.now();
        watch.after_commit(connection.is_autocommit());
        assert!(
            stamps.changed_since(&["cases"], "a", at_commit),
            "stamped again once visible, for the reads that began meanwhile"
        );
        // A lone statement commits by itself: stamped as it commits too.
        let since = stamps.now();
        connection
            .execute_batch("UPDATE cases SET state = 'active'")
            .unwrap();
        assert!(stamps.changed_since(&["cases"], "a", since));
    }

    #[test]
    fn a_transaction_knows_the_cases_it_changed_until_it_ends() {
        let stamps = Arc::new(CaseStamps::default());
        let (connection, watch) = connection_with(&stamps);
        run(&connection, &watch, "INSERT INTO cases VALUES ('a', 'new')");
        assert!(!watch.changed_in_transaction(&["cases"], "a"));
        run(&connection, &watch, "BEGIN; UPDATE cases SET state = 'x'");
        assert!(watch.changed_in_transaction(&["cases"], "a"));
        assert!(watch.changed_in_transaction(&["consents", "cases"], "a"));
        assert!(!watch.changed_in_transaction(&["consents"], "a"));
        assert!(!watch.changed_in_transaction(&["cases"], "b"));
        connection.execute_batch("ROLLBACK").unwrap();
        watch.rolled_back();
        assert!(!watch.changed_in_transaction(&["cases"], "a"));
        run(&connection, &watch, "BEGIN; DELETE FROM cases");
        assert!(watch.changed_in_transaction(&["cases"], "a"));
        run(&connection, &watch, "COMMIT");
        assert!(!watch.changed_in_transaction(&["cases"], "a"));
        // Rows it could not attribute: any case may have changed.
        run(
            &connection,
            &watch,
            "BEGIN; INSERT INTO cases VALUES (X'2A', 'new')",
        );
        assert!(watch.changed_in_transaction(&["consents"], "b"));
        run(&connection, &watch, "COMMIT");
    }

    #[test]
    fn a_row_whose_case_id_is_not_text_stamps_every_case() {
        let stamps = Arc::new(CaseStamps::default());
        let (connection, watch) = connection_with(&stamps);
        let since = stamps.now();
        // A column of TEXT affinity stores a number as text; a blob stays one.
        run(
            &connection,
            &watch,
            "INSERT INTO cases VALUES (X'2A', 'new')",
        );
        assert!(stamps.changed_since(&["consents"], "b", since));
    }

    #[test]
    fn changes_no_trigger_noted_stamp_every_case() {
        let stamps = Arc::new(CaseStamps::default());
        // Opened before the table existed: no trigger on it.
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let watch = Watch::install(&connection, TABLES, stamps.clone()).unwrap();
        connection
            .execute_batch("CREATE TABLE cases (case_id TEXT, state TEXT)")
            .unwrap();
        let since = stamps.now();
        run(&connection, &watch, "INSERT INTO cases VALUES ('a', 'new')");
        assert!(stamps.changed_since(&["consents"], "b", since));
    }

    #[test]
    fn the_stamps_of_a_file_are_shared_by_its_pools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let (one, two) = (stamps_of(&path), stamps_of(&path));
        assert!(Arc::ptr_eq(&one, &two));
        assert!(!Arc::ptr_eq(&one, &stamps_of(&dir.path().join("other.db"))));
        // The same file named from where the process runs.
        let up: std::path::PathBuf = std::env::current_dir()
            .unwrap()
            .components()
            .skip(1)
            .map(|_| "..")
            .collect();
        let relative = up.join(path.strip_prefix("/").unwrap());
        assert!(Arc::ptr_eq(&one, &stamps_of(&relative)));
    }
}
