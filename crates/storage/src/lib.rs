//! Storage for the three services. SQLite is the embedded default, PostgreSQL
//! the production database; both run the same runtime queries through sqlx's
//! `Any` driver, with migrations kept per backend.

pub mod audit;
pub mod directory;
pub mod institution;
pub mod jobseekers;
pub mod pilotage;
mod readers;
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;

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
/// values: the `Any` driver's query builder writes `?`, which PostgreSQL refuses.
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
    pool: AnyPool,
    backend: Backend,
    /// Connections kept aside for single reads ([`Database::read`]).
    readers: std::sync::Arc<readers::Readers>,
}

/// A pooled PostgreSQL connection idle longer than this is pinged before use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

impl Database {
    /// Connects, creating an SQLite file if needed, and applies migrations.
    pub async fn connect(url: &str, schema: Schema, max_connections: u32) -> Result<Self> {
        install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            // Create the file on first start; a fresh machine needs nothing else.
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options = sqlx::any::AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A ping before every use is a round trip (on SQLite a hop to the
            // connection's thread) per query. A PostgreSQL connection idle
            // for a while may have been dropped by the server or the network:
            // that one is checked; one in steady use, or an SQLite file's, is not.
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres && meta.idle_for > PING_WHEN_IDLE_FOR {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Each connection's page cache defaults to 2 MiB: with
                        // a pool of them, most of a service's memory. The
                        // operating system caches the file anyway.
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "PRAGMA cache_size = -{SQLITE_CACHE_KIB}"
                        )))
                        .execute(connection)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers work while the outbox relay writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = match (schema, backend) {
            (Schema::Institution, Backend::Sqlite) => &INSTITUTION_SQLITE,
            (Schema::Institution, Backend::Postgres) => &INSTITUTION_POSTGRES,
            (Schema::Pilotage, Backend::Sqlite) => &PILOTAGE_SQLITE,
            (Schema::Pilotage, Backend::Postgres) => &PILOTAGE_POSTGRES,
        };
        migrator.run(&pool).await?;
        Ok(Database {
            pool,
            backend,
            readers: std::sync::Arc::new(readers::Readers::new(max_connections)),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs a read of one statement (or of several that need no common
    /// snapshot) on a connection kept aside for reads: it skips the test
    /// the pool runs on every connection given back to it.
    pub async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<T>,
    ) -> Result<T> {
        self.readers.read(&self.pool, self.backend, read).await
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// first and writes later fails with SQLITE_BUSY when another writer got
    /// in between, whereas an immediate one waits its turn (busy timeout).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.readers.close();
        self.pool.close().await;
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
