//! One way to run a statement on either backend, written once: the queries
//! of the stores bind values and read rows through it, whatever the
//! database.
//!
//! PostgreSQL runs through sqlx's typed driver. SQLite runs through
//! rusqlite, on the calling task's own thread: sqlx runs each SQLite
//! connection on a thread of its own, and each statement was a hop there
//! and back (two thread wake-ups, ~50 µs, against 5-15 µs of SQLite's own
//! work), which bounded a batch of changes, run one statement after the
//! other, to a few thousand changes a second. A statement here runs to its
//! end within one poll, so a cancelled call never leaves one half-run. What
//! may wait long stays off the async threads: the durable commit (an fsync)
//! runs on the blocking pool, and writers wait for SQLite's one write lock
//! in line in this process ([`SqlitePool::writer`]), never in SQLite's busy
//! handler.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Column, Postgres, Row as _, TypeInfo, ValueRef as _};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::{Database, Result, StoreError};

mod case_changes;
pub(crate) use case_changes::CaseStamps;

/// A value bound to a statement, or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A NULL of the type PostgreSQL is to be told.
    Null(Kind),
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Real,
    Bool,
    Text,
    Blob,
}

/// What can be bound to a statement.
pub(crate) trait Bind {
    const KIND: Kind;
    fn value(self) -> Value;
}

macro_rules! bind {
    ($kind:ident, $variant:ident: $($t:ty => $conv:expr),+ $(,)?) => {$(
        impl Bind for $t {
            const KIND: Kind = Kind::$kind;
            fn value(self) -> Value {
                #[allow(clippy::redundant_closure_call)]
                Value::$variant(($conv)(self))
            }
        }
    )+};
}

bind!(Int, Int: i64 => |v| v, i32 => i64::from, u32 => i64::from);
bind!(Real, Real: f64 => |v| v);
bind!(Bool, Bool: bool => |v| v);
bind!(Text, Text: String => |v| v, &str => str::to_owned, &String => String::clone);
bind!(Blob, Blob: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec, &Vec<u8> => Vec::clone);

impl<T: Bind> Bind for Option<T> {
    const KIND: Kind = T::KIND;
    fn value(self) -> Value {
        match self {
            Some(v) => v.value(),
            None => Value::Null(T::KIND),
        }
    }
}

/// What can be read from a row's column.
pub(crate) trait Decode: Sized {
    fn decode(value: &Value) -> std::result::Result<Self, String>;
}

impl Decode for i64 {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl Decode for bool {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Int(i) => Ok(*i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}

impl Decode for f64 {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Real(r) => Ok(*r),
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl Decode for String {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl Decode for Vec<u8> {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null(_) => Ok(None),
            other => T::decode(other).map(Some),
        }
    }
}

/// A column named or numbered.
pub(crate) trait ColumnIndex {
    fn position(&self, row: &Row) -> Result<usize>;
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row) -> Result<usize> {
        row.columns
            .iter()
            .position(|c| &**c == *self)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {self}")))
    }
}

impl ColumnIndex for usize {
    fn position(&self, row: &Row) -> Result<usize> {
        (*self < row.values.len())
            .then_some(*self)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {self}")))
    }
}

/// A row read, whole: its columns' names and values.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    columns: Arc<[Box<str>]>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn width(&self) -> usize {
        self.values.len()
    }

    /// About how many bytes its values hold.
    pub(crate) fn stored_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| match value {
                Value::Text(text) => text.len(),
                Value::Blob(blob) => blob.len(),
                _ => 8,
            })
            .sum()
    }

    pub(crate) fn try_get<T: Decode, I: ColumnIndex>(&self, column: I) -> Result<T> {
        let at = column.position(self)?;
        T::decode(&self.values[at])
            .map_err(|e| StoreError::Corrupt(format!("column {}: {e}", self.columns[at])))
    }
}

/// A statement and its values, run by one of the `fetch` or `execute`
/// methods on a connection or on the database (a connection of its pool).
#[must_use]
pub(crate) struct Query {
    sql: Cow<'static, str>,
    values: Vec<Value>,
    /// May read many rows ([`Query::large`]).
    large: bool,
}

pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        values: Vec::new(),
        large: false,
    }
}

/// Where a statement runs: a connection, or any of the database's.
pub(crate) enum Target<'c> {
    Conn(&'c mut Conn),
    Database(&'c Database),
}

impl<'c> From<&'c mut Conn> for Target<'c> {
    fn from(conn: &'c mut Conn) -> Self {
        Target::Conn(conn)
    }
}

impl<'c> From<&'c Database> for Target<'c> {
    fn from(db: &'c Database) -> Self {
        Target::Database(db)
    }
}

/// How many rows a statement is read for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    None,
    One,
    All,
}

impl Query {
    pub(crate) fn bind(mut self, value: impl Bind) -> Self {
        self.values.push(value.value());
        self
    }

    /// Marks a statement that may read many rows (a whole table, a
    /// recount): on SQLite it runs on the blocking pool, not on the async
    /// thread the calls to the service share.
    pub(crate) fn large(mut self) -> Self {
        self.large = true;
        self
    }

    /// Runs the statement; answers how many rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Into<Target<'c>>) -> Result<u64> {
        Ok(self.run(on.into(), Want::None).await?.0)
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<Row>> {
        Ok(self.run(on.into(), Want::All).await?.1)
    }

    pub(crate) async fn fetch_optional<'c>(self, on: impl Into<Target<'c>>) -> Result<Option<Row>> {
        Ok(self.run(on.into(), Want::One).await?.1.pop())
    }

    pub(crate) async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<Row> {
        self.fetch_optional(on)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    async fn run(self, on: Target<'_>, want: Want) -> Result<(u64, Vec<Row>)> {
        match on {
            Target::Conn(conn) => conn.run(self, want).await,
            Target::Database(db) => {
                // A write outside a transaction takes its turn at SQLite's
                // write lock like any other ([`SqlitePool::writer`]).
                let mut conn = if want == Want::None {
                    db.acquire_writer().await?
                } else {
                    db.acquire().await?
                };
                conn.run(self, want).await
            }
        }
    }
}

/// Statements of no value run one after the other (savepoints, settings).
pub(crate) async fn batch(conn: &mut Conn, statements: &str) -> Result<()> {
    let postgres: &mut sqlx::PgConnection = match conn {
        Conn::Sqlite(c) => {
            c.get()?.execute_batch(statements)?;
            c.after_commit(0);
            return Ok(());
        }
        Conn::Postgres(c) => c,
        Conn::PostgresTx(tx) => tx,
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
        .execute(postgres)
        .await?;
    Ok(())
}

/// A connection of either backend, alone or holding a transaction.
#[derive(Debug)]
pub(crate) enum Conn {
    Sqlite(SqliteConn),
    Postgres(PoolConnection<Postgres>),
    PostgresTx(sqlx::Transaction<'static, Postgres>),
}

impl Conn {
    /// The watch over what this connection's open transaction changes
    /// (SQLite, a pool watching case tables).
    pub(crate) fn watch(&self) -> Option<&case_changes::Watch> {
        match self {
            Conn::Sqlite(c) => c.watch.as_ref(),
            Conn::Postgres(_) | Conn::PostgresTx(_) => None,
        }
    }

    async fn run(&mut self, query: Query, want: Want) -> Result<(u64, Vec<Row>)> {
        let Query { sql, values, large } = query;
        match self {
            // A statement outside a transaction commits by itself.
            Conn::Sqlite(c) if large => {
                let (ran, wal_pages) = c
                    .on_blocking_pool(move |connection| {
                        let ran = sqlite_run(connection, &sql, &values, want);
                        (ran, checkpointer::wal_pages_after_commit())
                    })
                    .await?;
                c.after_commit(wal_pages);
                ran
            }
            Conn::Sqlite(c) => {
                let ran = sqlite_run(c.get()?, &sql, &values, want);
                c.after_commit(checkpointer::wal_pages_after_commit());
                ran
            }
            Conn::Postgres(c) => postgres_run(c, &sql, values, want).await,
            Conn::PostgresTx(tx) => postgres_run(tx, &sql, values, want).await,
        }
    }

    /// Commits the transaction this connection holds. SQLite's commit
    /// waits for the disk (fsync): it runs on the blocking pool.
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Conn::Sqlite(mut c) => {
                let (committed, wal_pages) = c
                    .on_blocking_pool(|connection| {
                        let committed = connection.execute_batch("COMMIT");
                        (committed, checkpointer::wal_pages_after_commit())
                    })
                    .await?;
                c.after_commit(wal_pages);
                Ok(committed?)
            }
            Conn::PostgresTx(tx) => Ok(tx.commit().await?),
            Conn::Postgres(_) => Err(StoreError::Corrupt(
                "commit on a connection holding no transaction".into(),
            )),
        }
    }

    /// Rolls the transaction back now (dropped, it would roll back too,
    /// only later on PostgreSQL).
    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Conn::Sqlite(c) => {
                c.get()?.execute_batch("ROLLBACK")?;
                if let Some(watch) = &c.watch {
                    // Nothing it changed was ever seen.
                    watch.rolled_back();
                }
                Ok(())
            }
            Conn::PostgresTx(tx) => Ok(tx.rollback().await?),
            Conn::Postgres(_) => Ok(()),
        }
    }
}

/// Statements with more values than this get SQLite's `?N` parameters.
const BOUND_BY_NAME_UP_TO: usize = 16;

/// `sql` with each `$N` outside quotes written `?N`: the same parameter
/// for SQLite, at position N whatever the order of appearance.
fn numbered_for_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

fn sqlite_run(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[Value],
    want: Want,
) -> Result<(u64, Vec<Row>)> {
    // Parameters are written `$1`, `$2`… as PostgreSQL wants them; SQLite
    // numbers them in order of first appearance, so each is bound by name.
    // A name costs SQLite a walk of the statement's names, when parsed and
    // when bound: a statement of many rows' values (a batch's records) is
    // given SQLite's own `?N` instead, whose number is its position.
    let numbered = values.len() > BOUND_BY_NAME_UP_TO;
    let mut statement = if numbered {
        conn.prepare_cached(&numbered_for_sqlite(sql))?
    } else {
        conn.prepare_cached(sql)?
    };
    for index in 1..=statement.parameter_count() {
        // A `?N` statement is not asked its names: that walks them too.
        let position = if numbered {
            index
        } else {
            match statement.parameter_name(index) {
                Some(name) => name[1..].parse::<usize>().map_err(|_| {
                    StoreError::Corrupt(format!("parameter {name} is not numbered"))
                })?,
                None => index,
            }
        };
        let value = values
            .get(position - 1)
            .ok_or_else(|| StoreError::Corrupt(format!("parameter ${position} has no value")))?;
        match value {
            Value::Null(_) => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
            Value::Int(i) => statement.raw_bind_parameter(index, i)?,
            Value::Real(r) => statement.raw_bind_parameter(index, r)?,
            Value::Bool(b) => statement.raw_bind_parameter(index, i64::from(*b))?,
            Value::Text(s) => statement.raw_bind_parameter(index, s.as_str())?,
            Value::Blob(b) => statement.raw_bind_parameter(index, b.as_slice())?,
        }
    }
    let columns: Arc<[Box<str>]> = statement
        .column_names()
        .into_iter()
        .map(Box::from)
        .collect();
    let mut found = Vec::new();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next()? {
        if want == Want::None {
            continue;
        }
        let values = (0..columns.len())
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null(Kind::Text),
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?
                            .to_owned(),
                    ),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        found.push(Row {
            columns: columns.clone(),
            values,
        });
        if want == Want::One {
            break;
        }
    }
    drop(rows);
    Ok((conn.changes(), found))
}

async fn postgres_run(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    values: Vec<Value>,
    want: Want,
) -> Result<(u64, Vec<Row>)> {
    let mut arguments = PgArguments::default();
    for value in values {
        let added = match value {
            Value::Null(Kind::Int) => arguments.add(None::<i64>),
            Value::Null(Kind::Real) => arguments.add(None::<f64>),
            Value::Null(Kind::Bool) => arguments.add(None::<bool>),
            Value::Null(Kind::Text) => arguments.add(None::<String>),
            Value::Null(Kind::Blob) => arguments.add(None::<Vec<u8>>),
            Value::Int(i) => arguments.add(i),
            Value::Real(r) => arguments.add(r),
            Value::Bool(b) => arguments.add(b),
            Value::Text(s) => arguments.add(s),
            Value::Blob(b) => arguments.add(b),
        };
        added.map_err(|e| StoreError::Corrupt(format!("bind: {e}")))?;
    }
    let statement = sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), arguments);
    match want {
        Want::None => Ok((statement.execute(conn).await?.rows_affected(), Vec::new())),
        Want::One | Want::All => {
            let rows = if want == Want::One {
                statement.fetch_optional(conn).await?.into_iter().collect()
            } else {
                statement.fetch_all(conn).await?
            };
            // The rows of one statement share their columns' names.
            let Some(first) = rows.first() else {
                return Ok((0, Vec::new()));
            };
            let columns: Arc<[Box<str>]> = first
                .columns()
                .iter()
                .map(|c| Box::from(c.name()))
                .collect();
            let rows = rows
                .iter()
                .map(|r| postgres_values(r, columns.clone()))
                .collect::<Result<_>>()?;
            Ok((0, rows))
        }
    }
}

/// A row's values, by the types PostgreSQL says they have.
fn postgres_values(row: &PgRow, columns: Arc<[Box<str>]>) -> Result<Row> {
    let values = (0..columns.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null(Kind::Text));
            }
            let type_name = raw.type_info().name().to_owned();
            Ok(match type_name.as_str() {
                "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
                "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
                "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i)?)),
                "FLOAT8" => Value::Real(row.try_get::<f64, _>(i)?),
                "FLOAT4" => Value::Real(f64::from(row.try_get::<f32, _>(i)?)),
                "BOOL" => Value::Bool(row.try_get::<bool, _>(i)?),
                "BYTEA" => Value::Blob(row.try_get::<Vec<u8>, _>(i)?),
                "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "CHAR" => {
                    Value::Text(row.try_get::<String, _>(i)?)
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {}: type {other} is not read",
                        columns[i]
                    )));
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Row { columns, values })
}

/// SQLite connections to one file, opened on demand up to a bound.
#[derive(Debug, Clone)]
pub(crate) struct SqlitePool {
    shared: Arc<SqliteShared>,
}

#[derive(Debug)]
struct SqliteShared {
    /// What `sqlite3_open_v2` is given, and how.
    target: PathBuf,
    flags: rusqlite::OpenFlags,
    cache_kib: u32,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    most: usize,
    /// SQLite lets one writer at a time: writers of this process wait for
    /// their turn here, asleep, rather than in SQLite's busy handler on an
    /// async thread, which would hold up the tasks queued on that thread
    /// (the one holding the lock among them, maybe).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the thread that copies the WAL back into the database file,
    /// `None` if it could not be started (the writers then do it).
    checkpoints: Option<std::sync::mpsc::SyncSender<()>>,
    /// Tables (each with a `case_id` column) whose every change stamps
    /// its case ([`SqlitePool::case_stamps`]).
    watched: &'static [&'static str],
    /// Which cases the commits changed: one set of stamps per database
    /// file, shared by every pool of this process on it.
    stamps: Arc<CaseStamps>,
}

/// An idle connection, and its watch over the watched tables (`None` if
/// there are none).
#[derive(Debug)]
struct Idle {
    connection: rusqlite::Connection,
    watch: Option<case_changes::Watch>,
}

/// How long a statement waits for a lock another process holds.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: every query of the stores.
const SQLITE_STATEMENTS_KEPT: usize = 256;

impl SqlitePool {
    /// A pool for `url` (`sqlite://path?mode=rwc`, `sqlite:file:name?mode=memory&cache=shared`).
    /// Every commit that changes a row of one of the `watched` tables
    /// stamps the row's case ([`SqlitePool::case_stamps`]).
    pub(crate) fn new(
        url: &str,
        max_connections: u32,
        cache_kib: u32,
        watched: &'static [&'static str],
    ) -> Result<Self> {
        use rusqlite::OpenFlags;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::Config("an SQLite URL starts with sqlite:".into()))?;
        if rest.starts_with(":memory:") {
            // Each connection would open a database of its own.
            return Err(StoreError::Config(
                "an in-memory SQLite database is shared by name: sqlite:file:NAME?mode=memory&cache=shared".into(),
            ));
        }
        let (target, flags) = if rest.starts_with("file:") {
            // A URI: SQLite reads its parameters itself.
            (
                rest.to_owned(),
                OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE,
            )
        } else {
            let (path, parameters) = rest.split_once('?').unwrap_or((rest, ""));
            let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE;
            for parameter in parameters.split('&').filter(|p| !p.is_empty()) {
                match parameter {
                    "mode=rwc" => flags |= OpenFlags::SQLITE_OPEN_CREATE,
                    "mode=rw" => {}
                    "mode=ro" => flags = OpenFlags::SQLITE_OPEN_READ_ONLY,
                    other => {
                        return Err(StoreError::Config(format!(
                            "SQLite URL parameter {other} is not understood"
                        )));
                    }
                }
            }
            (path.to_owned(), flags)
        };
        let target = PathBuf::from(target);
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let stamps = case_changes::stamps_of(&target);
        Ok(SqlitePool {
            shared: Arc::new(SqliteShared {
                checkpoints: checkpointer::start(&target, flags),
                target,
                flags,
                cache_kib,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
                most: max_connections.max(1) as usize,
                writer: Arc::new(tokio::sync::Mutex::new(())),
                watched,
                stamps,
            }),
        })
    }

    /// Which cases the commits changed so far, in the watched tables:
    /// stamped once the commit is visible to new reads and before its
    /// caller is answered, whichever of this process's pools on the file
    /// made it (a commit of another process is not stamped: this process
    /// is the database's only writer).
    pub(crate) fn case_stamps(&self) -> &CaseStamps {
        &self.shared.stamps
    }

    /// Replaces the idle connections with a new one: those opened before
    /// the migrations watch no table the migrations created. The new one
    /// is opened first (an in-memory database lives as long as one of its
    /// connections does).
    pub(crate) fn reopen_idle(&self) -> Result<()> {
        let fresh = self.open()?;
        let before = std::mem::replace(
            &mut *self
                .shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            vec![fresh],
        );
        drop(before);
        Ok(())
    }

    fn open(&self) -> Result<Idle> {
        let shared = &self.shared;
        let connection = rusqlite::Connection::open_with_flags(&shared.target, shared.flags)?;
        connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        connection.set_prepared_statement_cache_capacity(SQLITE_STATEMENTS_KEPT);
        // Each connection's page cache defaults to 2 MiB: with a pool of
        // them, most of a service's memory. The operating system caches the
        // file anyway. Foreign keys are checked, as sqlx did; a commit is
        // durable when it returns (FULL, SQLite's default, said aloud).
        // A change's savepoint keeps the pages it first touches in a
        // sub-journal, which SQLite writes to a temporary file past 64 KiB
        // (a batch of changes passes that): with temp_store = MEMORY it stays
        // in memory, as long as its transaction (nothing in it is needed
        // after a crash: the WAL holds what was committed).
        // The WAL file keeps the length it once reached (a long read holding
        // the checkpoint back, the writers' backstop): past twice the
        // checkpoint thread's bound it is cut back when SQLite starts it
        // over, so a burst does not hold the disk for the process's life.
        connection.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;
             PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = {}",
            shared.cache_kib,
            checkpointer::WAL_KEPT_BYTES,
        ))?;
        if shared.checkpoints.is_some() {
            // In place of SQLite's own checkpoint after a commit.
            connection.wal_hook(Some(checkpointer::after_commit));
        }
        let watch = if shared.watched.is_empty() {
            None
        } else {
            Some(case_changes::Watch::install(
                &connection,
                shared.watched,
                shared.stamps.clone(),
            )?)
        };
        Ok(Idle { connection, watch })
    }

    /// A connection, once one of the pool's is free.
    pub(crate) async fn acquire(&self) -> Result<SqliteConn> {
        let permit = tokio::time::timeout(
            Duration::from_secs(10),
            self.shared.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
        .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        let idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Idle { connection, watch } = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        Ok(SqliteConn {
            connection: Some(connection),
            watch,
            pool: self.shared.clone(),
            _permit: permit,
            writing: None,
        })
    }

    /// A connection holding this process's turn to write.
    pub(crate) async fn acquire_writer(&self) -> Result<SqliteConn> {
        let turn = self.shared.writer.clone().lock_owned().await;
        let mut conn = self.acquire().await?;
        conn.writing = Some(turn);
        Ok(conn)
    }

    /// A connection that began a write transaction.
    pub(crate) async fn begin_write(&self) -> Result<SqliteConn> {
        let conn = self.acquire_writer().await?;
        conn.get()?.execute_batch("BEGIN IMMEDIATE")?;
        Ok(conn)
    }

    /// Connections in use and idle.
    pub(crate) fn connections(&self) -> (u64, u64) {
        let idle = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64;
        let in_use = (self.shared.most - self.shared.permits.available_permits()) as u64;
        (in_use, idle)
    }

    /// Closes the idle connections and opens no more.
    pub(crate) fn close(&self) {
        self.shared.permits.close();
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// SQLite copies the pages a commit appended to the WAL back into the
/// database file (a checkpoint) in the committing connection, once the WAL
/// passes 1,000 pages: a commit in every few then also copies megabytes and
/// waits for a second fsync, and with one writer at a time every writer
/// after it waits too (4% of the replay's process, all on the writers'
/// path). Here the commit only notes the WAL's length (SQLite's hook after
/// a commit); past a bound (below) it wakes the pool's own thread, which
/// checkpoints beside the writers (a passive checkpoint takes no
/// lock they need). Should that thread fall behind, the writers checkpoint
/// as SQLite would, much later.
///
/// The thread waits for 5,000 pages (20 MiB of WAL), not SQLite's 1,000:
/// a checkpoint copies each page once however many commits rewrote it, and
/// the same pages are rewritten by every commit (the audit chain's end, the
/// committee's counts, the indexes' leaves), so copying five times less
/// often copies far fewer pages per commit: new crossings at 64 in flight
/// +7-48% (runs in turn, 2026-12-07; at 16 within the noise).
mod checkpointer {
    use std::cell::Cell;
    use std::ffi::c_int;
    use std::path::{Path, PathBuf};
    use std::sync::mpsc::{SyncSender, sync_channel};

    /// WAL pages past which the thread checkpoints (20 MiB of 4 KiB pages).
    pub(super) const CHECKPOINT_PAST: c_int = 5_000;
    /// The WAL file's length SQLite cuts it back to when it starts it over
    /// (twice the thread's bound).
    pub(super) const WAL_KEPT_BYTES: i64 = 2 * CHECKPOINT_PAST as i64 * 4096;
    /// WAL pages past which the committing writer checkpoints itself
    /// (80 MiB).
    pub(super) const WRITERS_CHECKPOINT_PAST: c_int = 20_000;

    thread_local! {
        /// The WAL's length after the last commit on this thread.
        static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
    }

    /// SQLite's hook after each commit, on the committing thread.
    pub(super) fn after_commit(wal: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
        WAL_PAGES.set(pages);
        if pages >= WRITERS_CHECKPOINT_PAST {
            // The commit has happened whatever this answers; busy (the
            // thread is at it) or failed, the next commit tries again.
            let _ = wal.checkpoint();
        }
        Ok(())
    }

    /// The WAL's length the hook noted for the commit just run on this
    /// thread, read once (0 if none: the hook runs only when a commit
    /// happens, and every statement and commit reads it after running).
    pub(super) fn wal_pages_after_commit() -> c_int {
        WAL_PAGES.replace(0)
    }

    /// The thread, woken by commits that leave a long WAL; it ends once
    /// the pool is gone.
    pub(super) fn start(target: &Path, flags: rusqlite::OpenFlags) -> Option<SyncSender<()>> {
        let (wake, woken) = sync_channel::<()>(1);
        let target: PathBuf = target.to_owned();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut connection = None;
                while woken.recv().is_ok() {
                    if connection.is_none() {
                        connection = rusqlite::Connection::open_with_flags(&target, flags)
                            .inspect_err(|e| tracing::warn!(error = %e, "checkpoint connection"))
                            .ok();
                    }
                    if let Some(c) = &connection
                        && let Err(e) =
                            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        // Busy (a writer's checkpoint running): next time.
                        tracing::debug!(error = %e, "checkpoint");
                    }
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, "no checkpoint thread: writers checkpoint"))
            .ok()
            .map(|_| wake)
    }
}

/// A connection of an [`SqlitePool`], back to it when dropped.
#[derive(Debug)]
pub(crate) struct SqliteConn {
    /// `None` only while a commit runs on the blocking pool.
    connection: Option<rusqlite::Connection>,
    pool: Arc<SqliteShared>,
    /// Its watch over the watched tables.
    watch: Option<case_changes::Watch>,
    _permit: OwnedSemaphorePermit,
    /// This process's turn to write, when taken: released after the
    /// connection is back (field order).
    writing: Option<OwnedMutexGuard<()>>,
}

impl SqliteConn {
    fn get(&self) -> Result<&rusqlite::Connection> {
        self.connection
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("connection lost to a cancelled call".into()))
    }

    /// After a statement or a commit: wakes the checkpoint thread if the
    /// commit just run (a transaction's or a lone statement's; `wal_pages`
    /// 0 if none) left a long WAL, and stamps the cases it changed (now
    /// visible to new reads; within a transaction, only once it commits).
    fn after_commit(&self, wal_pages: std::ffi::c_int) {
        if let Some(checkpoints) = &self.pool.checkpoints
            && wal_pages >= checkpointer::CHECKPOINT_PAST
        {
            // Full: a checkpoint is already due.
            let _ = checkpoints.try_send(());
        }
        if let (Some(watch), Some(connection)) = (&self.watch, &self.connection) {
            watch.after_commit(connection.is_autocommit());
        }
    }

    /// Runs `work` on the connection on the blocking pool. The turn to
    /// write goes along: should the caller stop waiting (cancelled), the
    /// turn is released only once the work is done and the connection
    /// closed, never while it may still hold SQLite's write lock.
    async fn on_blocking_pool<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T> {
        let connection = self
            .connection
            .take()
            .ok_or_else(|| StoreError::Corrupt("connection lost to a cancelled call".into()))?;
        let writing = self.writing.take();
        let (connection, writing, done) = tokio::task::spawn_blocking(move || {
            let done = work(&connection);
            (connection, writing, done)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("blocking task: {e}")))?;
        self.connection = Some(connection);
        self.writing = writing;
        Ok(done)
    }
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        // One left inside a transaction (its call was cancelled) is closed,
        // which rolls the transaction back, rather than kept.
        if let Some(connection) = self.connection.take()
            && connection.is_autocommit()
            && !self.pool.permits.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Idle {
                    connection,
                    watch: self.watch.take(),
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `connections` on a database file of its own, kept while
    /// the directory lives.
    fn file_pool(connections: u32) -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
        (dir, SqlitePool::new(&url, connections, 512, &[]).unwrap())
    }

    /// What every connection is opened with: checked foreign keys, a
    /// commit durable when it returns, savepoints' journals in memory, and
    /// the writers' own checkpoint only as a backstop.
    #[tokio::test]
    async fn connections_open_with_the_settings_the_stores_rely_on() {
        let (_dir, pool) = file_pool(1);
        let conn = pool.acquire().await.unwrap();
        let setting = |name: &str| -> i64 {
            conn.get()
                .unwrap()
                .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(setting("foreign_keys"), 1);
        assert_eq!(setting("synchronous"), 2, "FULL");
        assert_eq!(setting("temp_store"), 2, "MEMORY");
        assert_eq!(
            setting("wal_autocheckpoint"),
            0,
            "SQLite's own checkpoint replaced"
        );
        assert_eq!(setting("journal_size_limit"), checkpointer::WAL_KEPT_BYTES);
    }

    /// SQLite as `.cargo/config.toml` has it built: no process-wide mutex
    /// around every allocation nor around the connections' page caches.
    #[tokio::test]
    async fn sqlite_is_built_without_its_process_wide_locks() {
        let (_dir, pool) = file_pool(1);
        let conn = pool.acquire().await.unwrap();
        let connection = conn.get().unwrap();
        let mut statement = connection.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }

    /// A pool on a database in WAL mode with a table of `pages`.
    async fn wal_file_pool() -> (tempfile::TempDir, SqlitePool) {
        let (dir, pool) = file_pool(2);
        let mut conn = Conn::Sqlite(pool.acquire_writer().await.unwrap());
        batch(
            &mut conn,
            "PRAGMA journal_mode = WAL; CREATE TABLE pages (body BLOB NOT NULL)",
        )
        .await
        .unwrap();
        (dir, pool)
    }

    /// `rows` rows of eight pages each.
    async fn insert_pages(conn: &mut Conn, rows: usize) {
        for _ in 0..rows {
            query("INSERT INTO pages (body) VALUES (zeroblob(8 * 4096))")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    }

    /// A WAL grown past its kept length (one long transaction here) is cut
    /// back once copied into the database file and started over.
    #[tokio::test]
    async fn a_wal_grown_long_is_cut_back_once_started_over() {
        let (dir, pool) = wal_file_pool().await;
        let wal = dir.path().join("test.db-wal");
        let kept = checkpointer::WAL_KEPT_BYTES as u64;
        let mut conn = Conn::Sqlite(pool.begin_write().await.unwrap());
        // A tenth past the kept length, eight pages a row.
        let rows = kept as usize * 11 / 10 / (8 * 4096);
        insert_pages(&mut conn, rows).await;
        conn.commit().await.unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > kept);
        // Once the thread has copied it all, the next commit starts the WAL
        // over, and cuts it back.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&wal).unwrap().len() > kept {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL keeps {} bytes",
                std::fs::metadata(&wal).unwrap().len()
            );
            let mut writing = Conn::Sqlite(pool.acquire_writer().await.unwrap());
            query("INSERT INTO pages (body) VALUES (x'00')")
                .execute(&mut writing)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Committed pages reach the database file soon after a commit leaves
    /// a long WAL, though no writer copies them back (not before four times
    /// as many): a transaction's commit, and lone statements', each of
    /// which commits by itself.
    #[tokio::test]
    async fn commits_are_copied_into_the_database_file_beside_the_writers() {
        for in_a_transaction in [true, false] {
            let (dir, pool) = wal_file_pool().await;
            let file = dir.path().join("test.db");
            let before = std::fs::metadata(&file).unwrap().len();
            let mut conn = Conn::Sqlite(if in_a_transaction {
                pool.begin_write().await.unwrap()
            } else {
                pool.acquire_writer().await.unwrap()
            });
            // Some 1.15 times the thread's bound, eight pages a row (fewer
            // lone statements, each its own commit and fsync).
            let rows = checkpointer::CHECKPOINT_PAST as usize / 8 + 100;
            insert_pages(&mut conn, rows).await;
            if in_a_transaction {
                conn.commit().await.unwrap();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let copied = before + checkpointer::CHECKPOINT_PAST as u64 * 4096;
            while std::fs::metadata(&file).unwrap().len() < copied {
                assert!(
                    std::time::Instant::now() < deadline,
                    "in a transaction: {in_a_transaction}: the commits are still only in the WAL"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn parameters_bind_by_their_number_whatever_their_order() {
        let (_dir, pool) = file_pool(2);
        let mut conn = Conn::Sqlite(pool.acquire().await.unwrap());
        let row = query("SELECT $2 AS b, $1 AS a, $2 || $1 AS ba, $3 AS n")
            .bind("one")
            .bind("two")
            .bind(None::<i64>)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.try_get::<String, _>("a").unwrap(), "one");
        assert_eq!(row.try_get::<String, _>("b").unwrap(), "two");
        assert_eq!(row.try_get::<String, _>("ba").unwrap(), "twoone");
        assert_eq!(row.try_get::<Option<i64>, _>("n").unwrap(), None);
        assert!(row.try_get::<i64, _>("a").is_err());
        assert!(row.try_get::<String, _>("missing").is_err());
    }

    #[tokio::test]
    async fn many_parameters_bind_by_their_number_whatever_their_order() {
        let (_dir, pool) = file_pool(2);
        let mut conn = Conn::Sqlite(pool.acquire().await.unwrap());
        // More values than are bound by name, the last first and one twice,
        // with a `$` in a literal that is no parameter.
        let many = BOUND_BY_NAME_UP_TO as i64 + 4;
        let columns: Vec<String> = (1..=many).rev().map(|n| format!("${n} AS c{n}")).collect();
        let sql = format!(
            "SELECT {}, $1 + $2 AS sum, '$1' AS text",
            columns.join(", ")
        );
        let mut statement = query(sql);
        for n in 1..=many {
            statement = statement.bind(n * 10);
        }
        let row = statement.fetch_one(&mut conn).await.unwrap();
        for n in 1..=many {
            assert_eq!(
                row.try_get::<i64, _>(format!("c{n}").as_str()).unwrap(),
                n * 10
            );
        }
        assert_eq!(row.try_get::<i64, _>("sum").unwrap(), 30);
        assert_eq!(row.try_get::<String, _>("text").unwrap(), "$1");
    }

    #[test]
    fn numbered_parameters_leave_quoted_text_alone() {
        assert_eq!(
            numbered_for_sqlite(r#"SELECT $12, '$1 ''$2''', "$3", $ , $x, $3"#),
            r#"SELECT ?12, '$1 ''$2''', "$3", $ , $x, ?3"#
        );
    }

    #[tokio::test]
    async fn a_connection_dropped_inside_a_transaction_rolls_it_back() {
        let (_dir, pool) = file_pool(2);
        let mut conn = Conn::Sqlite(pool.acquire_writer().await.unwrap());
        batch(&mut conn, "CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        drop(conn);
        let mut writing = Conn::Sqlite(pool.begin_write().await.unwrap());
        query("INSERT INTO t (x) VALUES ($1)")
            .bind(1_i64)
            .execute(&mut writing)
            .await
            .unwrap();
        drop(writing);
        let mut conn = Conn::Sqlite(pool.acquire().await.unwrap());
        assert_eq!(rows_in_t(&mut conn).await, 0);
        let mut writing = Conn::Sqlite(pool.begin_write().await.unwrap());
        let changed = query("INSERT INTO t (x) VALUES ($1), ($1)")
            .bind(2_i64)
            .execute(&mut writing)
            .await
            .unwrap();
        assert_eq!(changed, 2);
        // A large read runs on the blocking pool and gives the connection
        // back, still inside its transaction.
        let rows = query("SELECT x FROM t WHERE x = $1")
            .bind(2_i64)
            .large()
            .fetch_all(&mut writing)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        query("INSERT INTO t (x) VALUES (3)")
            .execute(&mut writing)
            .await
            .unwrap();
        writing.commit().await.unwrap();
        assert_eq!(rows_in_t(&mut conn).await, 3);
    }

    async fn rows_in_t(conn: &mut Conn) -> i64 {
        query("SELECT COUNT(*) AS n FROM t")
            .fetch_one(conn)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    #[tokio::test]
    async fn a_cancelled_large_read_keeps_the_turn_to_write_until_it_is_done() {
        let (_dir, pool) = file_pool(4);
        let mut writing = Conn::Sqlite(pool.begin_write().await.unwrap());
        let long = query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
             SELECT COUNT(*) AS n FROM n",
        )
        .large()
        .fetch_one(&mut writing);
        // Its caller stops waiting while the read runs on the blocking pool.
        let cancelled = tokio::time::timeout(Duration::from_millis(20), long).await;
        assert!(cancelled.is_err(), "the read outlasts 20 ms");
        drop(writing);
        let too_soon = tokio::time::timeout(Duration::from_millis(50), pool.acquire_writer()).await;
        assert!(too_soon.is_err(), "the turn is held until the read ends");
        let mut next = Conn::Sqlite(pool.begin_write().await.unwrap());
        batch(&mut next, "CREATE TABLE after_it (x INTEGER)")
            .await
            .unwrap();
        next.commit().await.unwrap();
    }

    #[test]
    fn sqlite_urls_name_a_file_or_a_shared_memory_database() {
        let pool = |url: &str| SqlitePool::new(url, 1, 512, &[]).map(|p| p.shared.target.clone());
        assert_eq!(
            pool("sqlite://.passerelle/emploi.db?mode=rwc").unwrap(),
            PathBuf::from(".passerelle/emploi.db")
        );
        assert_eq!(
            pool("sqlite:///var/lib/p.db").unwrap(),
            PathBuf::from("/var/lib/p.db")
        );
        assert_eq!(
            pool("sqlite:file:m?mode=memory&cache=shared").unwrap(),
            PathBuf::from("file:m?mode=memory&cache=shared")
        );
        assert!(pool("sqlite::memory:").is_err());
        assert!(pool("sqlite://p.db?journal=off").is_err());
        assert!(pool("postgres://x/y").is_err());
    }
}
