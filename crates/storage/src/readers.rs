//! PostgreSQL connections kept aside for single reads. sqlx tests a
//! connection each time it goes back to its pool (a round trip), which doubled the cost
//! of a one-statement read. A read that ran to its end leaves its
//! connection in a known state, so it is kept here for the next read
//! instead; one cancelled midway, or that failed for any reason but the
//! statement's own, goes back to the pool, which tests it. Reads take
//! turns at the kept connections in the order they arrive.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::sql::Conn;
use crate::{PING_WHEN_IDLE_FOR, Result, StoreError};

/// A connection kept aside, and since when.
type Kept = (PoolConnection<Postgres>, Instant);

#[derive(Debug)]
pub(crate) struct Readers {
    /// `None` once the database is closing: nothing more is kept.
    kept: Mutex<Option<Vec<Kept>>>,
    /// Most connections kept aside: the rest of the pool stays for writes.
    most: usize,
    /// One turn per kept connection, taken in arrival order: without it a
    /// read arriving later could take a kept connection while an earlier
    /// one waits on the pool (whose connections the kept ones no longer
    /// go back to), and the slowest reads waited longest.
    turns: tokio::sync::Semaphore,
}

impl Readers {
    pub(crate) fn new(max_connections: u32) -> Self {
        let most = (max_connections as usize / 2).max(1);
        Readers {
            kept: Mutex::new(Some(Vec::new())),
            most,
            turns: tokio::sync::Semaphore::new(most),
        }
    }

    /// Runs `read` on a kept connection (or one from the pool).
    pub(crate) async fn read<T>(
        &self,
        pool: &PgPool,
        read: impl AsyncFnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let Ok(_turn) = self.turns.acquire().await else {
            // Closing: straight from the pool, and back to it.
            return read(&mut Conn::Postgres(pool.acquire().await?)).await;
        };
        let mut conn = Conn::Postgres(self.connection(pool).await?);
        let result = read(&mut conn).await;
        let Conn::Postgres(connection) = conn else {
            return result;
        };
        let sound = match &result {
            Ok(_) => true,
            // The statement's own failure (a constraint, a value it could
            // not decode) leaves the connection as sound as before.
            Err(StoreError::Database(e)) => matches!(
                e,
                sqlx::Error::Database(_)
                    | sqlx::Error::RowNotFound
                    | sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::TypeNotFound { .. }
            ),
            Err(_) => true,
        };
        if sound
            && let Some(kept) = self
                .kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            && kept.len() < self.most
        {
            kept.push((connection, Instant::now()));
        }
        result
    }

    /// Gives every kept connection back to the pool, and keeps no more
    /// (a closing pool waits for all its connections).
    pub(crate) fn close(&self) {
        self.turns.close();
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(kept);
    }

    async fn connection(&self, pool: &PgPool) -> Result<PoolConnection<Postgres>> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .and_then(Vec::pop);
        if let Some((mut connection, since)) = kept {
            // As the pool does: a PostgreSQL connection idle for a while may
            // have been dropped by the server or the network.
            let stale = since.elapsed() > PING_WHEN_IDLE_FOR;
            if !stale || sqlx::Connection::ping(&mut *connection).await.is_ok() {
                return Ok(connection);
            }
        }
        Ok(pool.acquire().await?)
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::query;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_finished_read_keeps_its_connection_and_a_cancelled_one_does_not() {
        let Some(base) = crate::testing::postgres_base_url() else {
            assert!(
                std::env::var_os("PASSERELLE_REQUIRE_POSTGRES").is_none(),
                "PASSERELLE_TEST_POSTGRES is required"
            );
            eprintln!("skipped: PASSERELLE_TEST_POSTGRES is not set");
            return;
        };
        let url = crate::testing::fresh_postgres_database(&base, "readers")
            .await
            .expect("database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("pool");
        let readers = Readers::new(4);
        let one = async |c: &mut Conn| {
            query("SELECT 1").execute(c).await?;
            Ok(())
        };
        readers.read(&pool, one).await.expect("read");
        readers.read(&pool, one).await.expect("read");
        assert_eq!(
            readers.kept(),
            1,
            "the same connection, kept for the next read"
        );
        // A statement's own failure keeps it too.
        let failing = async |c: &mut Conn| {
            query("SELECT * FROM no_such_table").execute(c).await?;
            Ok(())
        };
        assert!(readers.read(&pool, failing).await.is_err());
        assert_eq!(readers.kept(), 1);
        // Cancelled midway: back to the pool, not kept.
        let slow = async |c: &mut Conn| {
            query("SELECT 1").execute(c).await?;
            std::future::pending::<()>().await;
            Ok(())
        };
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            readers.read(&pool, slow),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(readers.kept(), 0);
        // No more are kept aside than half the pool, and reads take turns at them.
        let (running, most_running) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let held = futures_util::future::join_all((0..6).map(|_| {
            readers.read(&pool, async |c: &mut Conn| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most_running.fetch_max(now, Ordering::SeqCst);
                query("SELECT 1").execute(c).await?;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        }))
        .await;
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(readers.kept(), 2);
        assert_eq!(most_running.load(Ordering::SeqCst), 2);
        // Closing gives them back, so the pool can close.
        readers.close();
        readers.read(&pool, one).await.expect("read");
        assert_eq!(readers.kept(), 0, "nothing kept once closed");
        tokio::time::timeout(std::time::Duration::from_secs(5), pool.close())
            .await
            .expect("the pool closes");
    }
}
