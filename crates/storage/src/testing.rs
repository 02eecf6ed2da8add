//! Helpers for tests that must run on both backends.

use sqlx::Connection;

/// The PostgreSQL server the tests may use, from `PASSERELLE_TEST_POSTGRES`
/// (for example `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_base_url() -> Option<String> {
    std::env::var("PASSERELLE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Creates an empty database on that server and returns its URL, so each
/// test owns its databases and tests can run in parallel.
pub async fn fresh_postgres_database(base_url: &str, label: &str) -> super::Result<String> {
    let name = format!(
        "passerelle_{}_{}",
        label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase(),
        uuid_like_suffix()
    );
    let mut conn = sqlx::PgConnection::connect(base_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let (prefix, _) = base_url
        .rsplit_once('/')
        .ok_or_else(|| super::StoreError::Config("bad postgres URL".into()))?;
    Ok(format!("{prefix}/{name}"))
}

fn uuid_like_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one statement on a store's database, as a test tampering with it
/// would; answers how many rows it changed.
pub async fn execute(db: &super::Database, sql: &str) -> super::Result<u64> {
    crate::sql::query(sql.to_owned()).execute(db).await
}

/// A count (`SELECT COUNT(*) AS n …`, the first column) on a store's database.
pub async fn count(db: &super::Database, sql: &str) -> super::Result<i64> {
    crate::sql::query(sql.to_owned())
        .fetch_one(db)
        .await?
        .try_get(0)
}

/// The rows of a query whose columns are all text.
pub async fn text_rows(db: &super::Database, sql: &str) -> super::Result<Vec<Vec<String>>> {
    crate::sql::query(sql.to_owned())
        .fetch_all(db)
        .await?
        .iter()
        .map(|row| (0..row.width()).map(|i| row.try_get(i)).collect())
        .collect()
}

/// The committee's counts kept by `store`, once checked equal to a recount
/// of its cases (what every change must keep true).
pub async fn counts_equal_to_a_recount(
    store: &crate::InstitutionStore,
    label: &str,
) -> std::collections::BTreeMap<passerelle_domain::statistics::CubeKey, i64> {
    let kept: std::collections::BTreeMap<_, _> = store
        .statistics()
        .await
        .expect("counts")
        .into_iter()
        .collect();
    assert_eq!(
        kept,
        store.recount().await.expect("recount"),
        "{label}: the kept counts differ from a recount"
    );
    kept
}

/// The plans each backend chooses for lookups into tables that only grow
/// (the outbox; orientations, until the retention purge), asked on every
/// change, relay pass or housekeeping pass: one line per step. On
/// PostgreSQL sequential scans are discouraged first, so a missing index
/// shows at any table size.
pub async fn growing_table_lookup_plans(
    store: &crate::InstitutionStore,
) -> super::Result<Vec<(&'static str, Vec<String>)>> {
    use crate::institution::erasure::{PURGE_KEPT_CONSENTS, PURGE_UNREFERRED_ORIENTATIONS};
    use crate::institution::{OUTBOX_DEPTH, PARTNER_KNOWS_CASE};
    type Binds = fn(crate::sql::Query) -> crate::sql::Query;
    let lookups: [(&'static str, &str, Binds); 4] = [
        ("partner_knows_case", PARTNER_KNOWS_CASE, |q| {
            q.bind("case-1").bind("partner")
        }),
        ("outbox_depth", OUTBOX_DEPTH, |q| q),
        (
            "purge_unreferred_orientations",
            PURGE_UNREFERRED_ORIENTATIONS,
            |q| q.bind(0_i64),
        ),
        ("purge_kept_consents", PURGE_KEPT_CONSENTS, |q| {
            q.bind(0_i64)
        }),
    ];
    let mut plans = Vec::new();
    for (name, sql, binds) in lookups {
        let mut tx = store.begin().await?;
        let postgres = tx.is_postgres();
        if postgres {
            crate::sql::query("SET LOCAL enable_seqscan = off")
                .execute(tx.db())
                .await?;
        }
        let explain = if postgres {
            "EXPLAIN"
        } else {
            "EXPLAIN QUERY PLAN"
        };
        let rows = binds(crate::sql::query(format!("{explain} {sql}")))
            .fetch_all(tx.db())
            .await?;
        let column = if postgres { "QUERY PLAN" } else { "detail" };
        let lines = rows
            .iter()
            .map(|row| row.try_get(column))
            .collect::<super::Result<Vec<String>>>()?;
        plans.push((name, lines));
    }
    Ok(plans)
}
