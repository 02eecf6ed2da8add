//! Storage for the three services. SQLite is the embedded default, PostgreSQL
//! the production database; both run the same runtime queries, written once
//! ([`sql`]: sqlx's PostgreSQL driver, rusqlite for SQLite), with migrations
//! kept per backend.

pub mod audit;
pub mod directory;
pub mod institution;
pub mod jobseekers;
pub mod pilotage;
mod readers;
mod sql;
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

pub use institution::InstitutionStore;
pub use pilotage::PilotageStore;

static INSTITUTION_SQLITE: Migrator = sqlx::migrate!("migrations/institution/sqlite");
static INSTITUTION_POSTGRES: Migrator = sqlx::migrate!("migrations/institution/postgres");
static PILOTAGE_SQLITE: Migrator = sqlx::migrate!("migrations/pilotage/sqlite");
static PILOTAGE_POSTGRES: Migrator = sqlx::migrate!("migrations/pilotage/postgres");

/// Page cache of each SQLite connection, in KiB.
const SQLITE_CACHE_KIB: u32 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(
                "database URL must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

/// Which service's schema a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Institution,
    Pilotage,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The write contradicts what is stored (e.g. a service of an unknown structure).
    #[error("{0}")]
    Conflict(String),
    /// A group-committed batch failed; each of its callers gets this copy.
    #[error("database: {message}")]
    Batch { busy: bool, message: String },
}

impl StoreError {
    /// Whether the database was only busy (locked by other writers, a
    /// serialisation conflict, no free connection): the same call retried
    /// after a pause will go through, so callers are told UNAVAILABLE, never
    /// INTERNAL.
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Batch { busy, .. } => *busy,
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::Database(sqlx::Error::Database(db)) => {
                // SQLite: BUSY, LOCKED and their extended codes; PostgreSQL:
                // serialization_failure, deadlock_detected, lock_not_available.
                matches!(
                    db.code().as_deref(),
                    Some("5" | "6" | "261" | "262" | "517" | "40001" | "40P01" | "55P03")
                ) || db.message().contains("database is locked")
            }
            _ => false,
        }
    }
}

/// Records kept whole as JSON (bodies, payloads); a body that does not
/// parse back is corrupt data, never a caller's error.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `($1, $2), ($3, $4)…` for a multi-row insert of `rows` rows of `columns`
/// values, numbered as both backends read them.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A connection pool with the schema of one service applied.
#[derive(Debug, Clone)]
pub struct Database {
    pools: Pools,
}

#[derive(Debug, Clone)]
enum Pools {
    Sqlite(sql::SqlitePool),
    Postgres {
        pool: PgPool,
        /// Connections kept aside for single reads ([`Database::read`]).
        readers: std::sync::Arc<readers::Readers>,
    },
}

/// A pooled PostgreSQL connection idle longer than this is pinged before use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

impl Database {
    /// Connects, creating an SQLite file if needed, and applies migrations.
    pub async fn connect(url: &str, schema: Schema, max_connections: u32) -> Result<Self> {
        let backend = Backend::of_url(url)?;
        let migrator = match (schema, backend) {
            (Schema::Institution, Backend::Sqlite) => &INSTITUTION_SQLITE,
            (Schema::Institution, Backend::Postgres) => &INSTITUTION_POSTGRES,
            (Schema::Pilotage, Backend::Sqlite) => &PILOTAGE_SQLITE,
            (Schema::Pilotage, Backend::Postgres) => &PILOTAGE_POSTGRES,
        };
        let pools = match backend {
            Backend::Sqlite => {
                // Create the file on first start; a fresh machine needs nothing else.
                let url = if url.contains("mode=") {
                    url.to_owned()
                } else {
                    format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
                };
                let watched = match schema {
                    Schema::Institution => institution::CASE_TABLES,
                    Schema::Pilotage => &[],
                };
                let pool = sql::SqlitePool::new(&url, max_connections, SQLITE_CACHE_KIB, watched)?;
                // WAL lets readers work while the outbox relay writes. The
                // connection stays open in the pool (an in-memory database
                // lives as long as one does).
                let mut first = sql::Conn::Sqlite(pool.acquire_writer().await?);
                sql::batch(&mut first, "PRAGMA journal_mode = WAL").await?;
                drop(first);
                // Migrations are sqlx's, on a connection of its own.
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?;
                let mut migrating = sqlx::SqliteConnection::connect_with(&options).await?;
                migrator.run_direct(None, &mut migrating, false).await?;
                migrating.close().await?;
                pool.reopen_idle()?;
                Pools::Sqlite(pool)
            }
            Backend::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    // A ping before every use is a round trip per query. A
                    // connection idle for a while may have been dropped by
                    // the server or the network: that one is checked; one
                    // in steady use is not.
                    .test_before_acquire(false)
                    .before_acquire(move |connection, meta| {
                        Box::pin(async move {
                            if meta.idle_for > PING_WHEN_IDLE_FOR {
                                Connection::ping(connection).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(options)
                    .await?;
                migrator.run(&pool).await?;
                Pools::Postgres {
                    pool,
                    readers: std::sync::Arc::new(readers::Readers::new(max_connections)),
                }
            }
        };
        Ok(Database { pools })
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Which cases the commits changed, on SQLite
    /// ([`sql::SqlitePool::case_stamps`]); `None` on PostgreSQL, whose
    /// other replicas' commits this process does not see.
    pub(crate) fn case_stamps(&self) -> Option<&sql::CaseStamps> {
        match &self.pools {
            Pools::Sqlite(pool) => Some(pool.case_stamps()),
            Pools::Postgres { .. } => None,
        }
    }

    /// A connection of the pool.
    pub(crate) async fn acquire(&self) -> Result<sql::Conn> {
        Ok(match &self.pools {
            Pools::Sqlite(pool) => sql::Conn::Sqlite(pool.acquire().await?),
            Pools::Postgres { pool, .. } => sql::Conn::Postgres(pool.acquire().await?),
        })
    }

    /// A connection for a write outside a transaction: on SQLite it holds
    /// this process's turn at the write lock.
    pub(crate) async fn acquire_writer(&self) -> Result<sql::Conn> {
        Ok(match &self.pools {
            Pools::Sqlite(pool) => sql::Conn::Sqlite(pool.acquire_writer().await?),
            Pools::Postgres { pool, .. } => sql::Conn::Postgres(pool.acquire().await?),
        })
    }

    /// Runs a read of one statement (or of several that need no common
    /// snapshot). On PostgreSQL it runs on a connection kept aside for
    /// reads: it skips the test the pool runs on every connection given
    /// back to it.
    pub(crate) async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&mut sql::Conn) -> Result<T>,
    ) -> Result<T> {
        match &self.pools {
            Pools::Sqlite(pool) => read(&mut sql::Conn::Sqlite(pool.acquire().await?)).await,
            Pools::Postgres { pool, readers } => readers.read(pool, read).await,
        }
    }

    /// Connections in use and idle, for the pool's metrics.
    pub fn connections(&self) -> (u64, u64) {
        match &self.pools {
            Pools::Sqlite(pool) => pool.connections(),
            Pools::Postgres { pool, .. } => {
                let idle = pool.num_idle() as u64;
                (u64::from(pool.size()).saturating_sub(idle), idle)
            }
        }
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        sql::query("SELECT 1").fetch_one(self).await?;
        Ok(())
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), once this process's other writers
    /// are done: a deferred transaction that reads first and writes later
    /// fails with SQLITE_BUSY when another writer got in between.
    pub(crate) async fn begin_write(&self) -> Result<sql::Conn> {
        Ok(match &self.pools {
            Pools::Sqlite(pool) => sql::Conn::Sqlite(pool.begin_write().await?),
            Pools::Postgres { pool, .. } => sql::Conn::PostgresTx(pool.begin().await?),
        })
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite(pool) => pool.close(),
            Pools::Postgres { pool, readers } => {
                readers.close();
                pool.close().await;
            }
        }
    }
}

/// Instants are stored as microseconds since the epoch: exact and portable.
pub fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub fn from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("instant {micros} out of range")))
}

/// Like [`from_micros`], for values that may be out of range.
pub fn from_micros_opt(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}
