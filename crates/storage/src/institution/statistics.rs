//! The committee's counts in an institution's store. Every transaction that
//! changes a case replaces that case's counts by its new ones in an explicit
//! step before it commits ([`Tx::update_statistics`]; a commit that skipped
//! it is refused); the counts are filled from the cases once, at the first
//! start after their migration. Reading the indicators then reads
//! the counts only, never a person's row.

use std::collections::BTreeMap;

use crate::sql::{Conn, Row, query};
use passerelle_domain::orientation::Orientation;
use passerelle_domain::plan::Plan;
use passerelle_domain::statistics::{
    CaseFacts, CubeKey, ReferralFacts, contributions, difference, orientation_counts, summed,
};
use passerelle_domain::{Case, Institution, Referral};

use super::{CASE_COLUMNS, InstitutionStore, Tx, case_from_row};
use crate::{Result, StoreError, from_json, values_placeholders};

/// Rows per multi-row insert: well under both backends' bind limits.
const INSERT_CHUNK: usize = 1_000;
/// Cases read at a time when the counts are rebuilt.
const REBUILD_PAGE: i64 = 5_000;

fn referral_facts(referral: &Referral) -> ReferralFacts {
    ReferralFacts {
        birth_date: referral.person.birth_date,
        rsa_beneficiary: referral.employment.rsa_beneficiary,
        registered: referral.employment.registered,
        registration_date: referral.employment.registration_date,
        barriers: referral.barriers.iter().map(|b| b.category).collect(),
        association: referral.association_id.is_some(),
    }
}

fn plan_actions(plan: &Plan) -> Vec<(String, u64)> {
    plan.themes
        .iter()
        .map(|t| {
            let n = t.goals.iter().map(|g| g.actions.len() as u64).sum();
            (t.theme.code().to_owned(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The referral's part of the counts: whether it was written here, and
/// what it says. Never rewritten once stored, so read once per transaction.
type KnownReferral = (bool, ReferralFacts);

fn known_referral(origin: &str, body: &str) -> Result<KnownReferral> {
    Ok((
        origin == "local",
        referral_facts(&from_json::<Referral>(body)?),
    ))
}

/// Which of a case's other rows its counts still need read.
struct Wanted {
    referral: bool,
    authors: bool,
    plan: bool,
}

impl Wanted {
    fn any(&self) -> bool {
        self.referral || self.authors || self.plan
    }

    /// One statement for the parts wanted, built once for each combination.
    fn sql(&self) -> &'static str {
        static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let all = SQL.get_or_init(|| {
            (0..8)
                .map(|bits| {
                    // Each branch names its columns: any of them may come
                    // first. Of the own plans (one per kind), the first by
                    // kind counts.
                    let parts: Vec<&str> = [
                        (1, "SELECT 'referral' AS part, origin AS a, body AS b FROM referrals WHERE case_id = $1"),
                        (2, "SELECT 'author' AS part, author_institution AS a, CAST(NULL AS TEXT) AS b FROM diagnoses WHERE case_id = $1"),
                        (4, "SELECT 'plan' AS part, kind AS a, body AS b FROM plans WHERE case_id = $1 AND origin = 'local'"),
                    ]
                    .into_iter()
                    .filter(|(bit, _)| bits & bit != 0)
                    .map(|(_, sql)| sql)
                    .collect();
                    format!("{} ORDER BY part, a", parts.join(" UNION ALL "))
                })
                .collect()
        });
        let bits = usize::from(self.referral)
            | usize::from(self.authors) << 1
            | usize::from(self.plan) << 2;
        &all[bits]
    }
}

/// What a case's counts depend on, from its rows.
struct Rows {
    case: Case,
    entry_recorded_by: Option<String>,
    referral: Option<KnownReferral>,
    authors: Vec<String>,
    plan: Option<String>,
    orientations: Vec<Orientation>,
}

/// A case's counts before the transaction changed it.
#[derive(Debug)]
pub(crate) struct Noted {
    counts: Vec<(CubeKey, i64)>,
    referral: Option<KnownReferral>,
    /// Its other rows as read then, each dropped once a write of this
    /// transaction changes it: the counts after are computed from the
    /// case's row read again and these, instead of every row read again.
    kept: Known,
}

/// Rows of a case already read in this transaction and not changed since
/// (`None`: read them).
#[derive(Debug, Clone, Default)]
struct Known {
    authors: Option<Vec<String>>,
    plan: Option<Option<String>>,
    orientations: Option<Vec<Orientation>>,
}

impl Known {
    fn of(rows: &Rows) -> Self {
        Known {
            authors: Some(rows.authors.clone()),
            plan: Some(rows.plan.clone()),
            orientations: Some(rows.orientations.clone()),
        }
    }
}

/// A part of a case a write changes, besides its own row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Diagnoses,
    OwnPlan,
    Orientations,
}

fn facts(own: Institution, rows: Rows) -> Result<CaseFacts> {
    let (referred_here, referral) = match rows.referral {
        Some((here, facts)) => (here, Some(facts)),
        None => (false, None),
    };
    let authors = rows
        .authors
        .iter()
        .map(|a| {
            Institution::from_code(a)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown institution {a}")))
        })
        .collect::<Result<_>>()?;
    Ok(CaseFacts {
        own,
        referred_here,
        entry_recorded_here: rows.entry_recorded_by.as_deref() == Some(own.code()),
        referral,
        diagnosis_authors: authors,
        plan_actions: match &rows.plan {
            Some(body) => plan_actions(&from_json::<Plan>(body)?),
            None => vec![],
        },
        orientations: rows.orientations,
        case: rows.case,
    })
}

fn count_row(row: &Row) -> Result<(CubeKey, i64)> {
    Ok((
        CubeKey {
            measure: row.try_get("measure")?,
            month: row.try_get("month")?,
            office: row.try_get("office")?,
            network: row.try_get("network")?,
            key: row.try_get("breakdown")?,
        },
        row.try_get("value")?,
    ))
}

/// Orientation rows grouped by case, each case's oldest first.
fn orientations_by_case(rows: Vec<Row>) -> Result<BTreeMap<String, Vec<Orientation>>> {
    let mut numbered: BTreeMap<String, Vec<(i64, Orientation)>> = BTreeMap::new();
    for r in rows {
        numbered.entry(r.try_get("case_id")?).or_default().push((
            r.try_get("seq")?,
            from_json(&r.try_get::<String, _>("body")?)?,
        ));
    }
    Ok(numbered
        .into_iter()
        .map(|(case_id, mut list)| {
            list.sort_by_key(|(seq, _)| *seq);
            (case_id, list.into_iter().map(|(_, o)| o).collect())
        })
        .collect())
}

/// Where counts are kept: the live ones, and those of erased cases.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CountTable {
    Statistics,
    Erased,
}

impl CountTable {
    fn name(self) -> &'static str {
        match self {
            CountTable::Statistics => "statistics",
            CountTable::Erased => "erased_statistics",
        }
    }
}

/// Adds `counts` to the stored ones, in key order (so that concurrent
/// transactions lock the rows they share in the same order).
async fn add_counts(conn: &mut Conn, counts: &BTreeMap<CubeKey, i64>) -> Result<()> {
    add_counts_to(conn, CountTable::Statistics, counts).await
}

/// Adds a transaction's changes to the counts, summed by key first.
pub(crate) async fn add_counts_up(conn: &mut Conn, changes: &[(CubeKey, i64)]) -> Result<()> {
    let mut summed: BTreeMap<CubeKey, i64> = BTreeMap::new();
    for (k, n) in changes {
        *summed.entry(k.clone()).or_insert(0) += n;
    }
    add_counts(conn, &summed).await
}

pub(crate) async fn add_counts_to(
    conn: &mut Conn,
    table: CountTable,
    counts: &BTreeMap<CubeKey, i64>,
) -> Result<()> {
    let rows: Vec<(&CubeKey, &i64)> = counts.iter().filter(|(_, n)| **n != 0).collect();
    let table = table.name();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO {table} (measure, month, office, network, breakdown, value) VALUES {}
             ON CONFLICT (measure, month, office, network, breakdown)
             DO UPDATE SET value = {table}.value + excluded.value",
            values_placeholders(chunk.len(), 6)
        );
        let mut insert = query(sql);
        for (k, n) in chunk {
            insert = insert
                .bind(k.measure.clone())
                .bind(k.month.clone())
                .bind(k.office.clone())
                .bind(k.network.clone())
                .bind(k.key.clone())
                .bind(**n);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Tx {
    /// Notes a case's counts before this transaction changes it.
    pub(crate) async fn touch(&mut self, case_id: &str) -> Result<()> {
        if self.touched.contains_key(case_id) {
            return Ok(());
        }
        let rows = self.case_rows(case_id, None, Known::default()).await?;
        // What the change does not rewrite is not read again after it.
        let kept = rows.as_ref().map(Known::of).unwrap_or_default();
        let (counts, referral) = self.counts_from(case_id, rows).await?;
        self.touched.insert(
            case_id.to_owned(),
            Noted {
                counts,
                referral,
                kept,
            },
        );
        Ok(())
    }

    /// Notes that this transaction changes `part` of a touched case.
    pub(crate) fn changes(&mut self, case_id: &str, part: Part) {
        if let Some(noted) = self.touched.get_mut(case_id) {
            match part {
                Part::Diagnoses => noted.kept.authors = None,
                Part::OwnPlan => noted.kept.plan = None,
                Part::Orientations => noted.kept.orientations = None,
            }
        }
    }

    /// A referral rewritten in this transaction (a rectification): its new
    /// facts are the ones the case's counts are replaced by.
    pub(crate) fn referral_rewritten(&mut self, referral: &Referral) {
        if let Some(noted) = self.touched.get_mut(referral.case_id.as_str())
            && let Some((here, _)) = noted.referral
        {
            noted.referral = Some((here, referral_facts(referral)));
        }
    }

    /// The case's counts as its rows stand in this transaction (none for a
    /// case it does not hold).
    pub(crate) async fn counts_of(&mut self, case_id: &str) -> Result<Vec<(CubeKey, i64)>> {
        Ok(self.counts_now(case_id, None, Known::default()).await?.0)
    }

    /// The counts of `case_id` as its rows stand in this transaction, and
    /// its referral's facts: a case's contributions, or those of the
    /// orientations of a person not referred yet.
    async fn counts_now(
        &mut self,
        case_id: &str,
        referral: Option<KnownReferral>,
        known: Known,
    ) -> Result<(Vec<(CubeKey, i64)>, Option<KnownReferral>)> {
        let rows = self.case_rows(case_id, referral, known).await?;
        self.counts_from(case_id, rows).await
    }

    /// The counts of the case whose rows are `rows`, and its referral's facts.
    async fn counts_from(
        &mut self,
        case_id: &str,
        rows: Option<Rows>,
    ) -> Result<(Vec<(CubeKey, i64)>, Option<KnownReferral>)> {
        Ok(match rows {
            Some(rows) => {
                let referral = rows.referral.clone();
                (contributions(&facts(self.own, rows)?), referral)
            }
            None => (
                orientation_counts(self.own, &self.orientations(case_id).await?),
                None,
            ),
        })
    }

    /// The case's rows; `referral` and `known` when already read in this
    /// transaction (and not changed since).
    async fn case_rows(
        &mut self,
        case_id: &str,
        referral: Option<KnownReferral>,
        known: Known,
    ) -> Result<Option<Rows>> {
        // Locked like any read of a row about to be rewritten: the counts
        // noted here must be the ones this transaction replaces.
        // Whether the person was oriented comes with the case, so that the
        // many cases never oriented cost no further statement here.
        let Some(row) = query(format!(
            "SELECT {CASE_COLUMNS}, entry_recorded_by,
               (SELECT COUNT(*) FROM orientations o WHERE o.case_id = cases.case_id) AS oriented
             FROM cases WHERE case_id = $1{}",
            self.lock()
        ))
        .bind(case_id)
        .fetch_optional(self.db())
        .await?
        else {
            return Ok(None);
        };
        // The parts not known yet, in one statement (each is a round trip
        // to PostgreSQL on the batch's one connection).
        let wanted = Wanted {
            referral: referral.is_none(),
            authors: known.authors.is_none(),
            plan: known.plan.is_none(),
        };
        let (mut read_referral, mut authors, mut plan) = (None, vec![], None);
        if wanted.any() {
            for part in query(wanted.sql())
                .bind(case_id)
                .fetch_all(self.db())
                .await?
            {
                let (a, b) = (
                    part.try_get::<String, _>("a")?,
                    part.try_get::<String, _>("b"),
                );
                match part.try_get::<String, _>("part")?.as_str() {
                    "author" => authors.push(a),
                    "plan" => plan = plan.or(Some(b?)),
                    _ => read_referral = Some(known_referral(&a, &b?)?),
                }
            }
        }
        let referral = referral.or(read_referral);
        let authors = known.authors.unwrap_or(authors);
        let plan = known.plan.unwrap_or(plan);
        let orientations = match known.orientations {
            Some(orientations) => orientations,
            None if row.try_get::<i64, _>("oriented")? > 0 => self.orientations(case_id).await?,
            None => vec![],
        };
        Ok(Some(Rows {
            case: case_from_row(&row)?,
            entry_recorded_by: row.try_get("entry_recorded_by")?,
            referral,
            authors,
            plan,
            orientations,
        }))
    }

    /// Replaces the noted counts of every case this transaction changed by
    /// its new ones: the committee's counts and the cases never disagree.
    /// A write transaction runs it last, before [`Tx::commit`], which
    /// writes the difference (with the rest of its batch's).
    pub async fn update_statistics(&mut self) -> Result<()> {
        let touched = std::mem::take(&mut self.touched);
        for (case_id, before) in touched {
            let (after, _) = self
                .counts_now(&case_id, before.referral, before.kept)
                .await?;
            self.counts.extend(
                difference(&before.counts, &after)
                    .into_iter()
                    .filter(|(_, n)| *n != 0),
            );
        }
        Ok(())
    }
}

impl InstitutionStore {
    /// The counts as kept, zeros left out.
    pub async fn statistics(&self) -> Result<Vec<(CubeKey, i64)>> {
        query(
            "SELECT measure, month, office, network, breakdown, value FROM statistics
             WHERE value <> 0 ORDER BY measure, month, office, network, breakdown",
        )
        .large()
        .fetch_all(self.database())
        .await?
        .iter()
        .map(count_row)
        .collect()
    }

    /// Full-time equivalents of the working-time register, in thousandths.
    pub async fn counsellor_fte_per_mille(&self) -> Result<u64> {
        let n: Option<i64> = query(
            // PostgreSQL sums BIGINTs as NUMERIC: back to BIGINT for both backends.
            "SELECT CAST(SUM(working_time_per_mille) AS BIGINT) AS n FROM counsellors",
        )
        .fetch_one(self.database())
        .await?
        .try_get("n")?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// The counts computed afresh from every case: what the kept counts
    /// must equal. Reads the cases a page at a time.
    pub async fn recount(&self) -> Result<BTreeMap<CubeKey, i64>> {
        let pool = self.database();
        let mut counts: BTreeMap<CubeKey, i64> = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = query(format!(
                "SELECT {CASE_COLUMNS}, entry_recorded_by FROM cases WHERE case_id > $1 ORDER BY case_id LIMIT $2"
            ))
            .bind(&after)
            .bind(REBUILD_PAGE)
            .large().fetch_all(pool)
            .await?;
            let Some(last) = page.last() else { break };
            let last: String = last.try_get("case_id")?;
            let range = |sql: &str| {
                query(format!("{sql} WHERE case_id > $1 AND case_id <= $2"))
                    .bind(after.clone())
                    .bind(last.clone())
            };
            let mut referrals: BTreeMap<String, KnownReferral> = BTreeMap::new();
            for r in range("SELECT case_id, origin, body FROM referrals")
                .large()
                .fetch_all(pool)
                .await?
            {
                referrals.insert(
                    r.try_get("case_id")?,
                    known_referral(
                        &r.try_get::<String, _>("origin")?,
                        &r.try_get::<String, _>("body")?,
                    )?,
                );
            }
            let mut authors: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in range("SELECT case_id, author_institution FROM diagnoses")
                .large()
                .fetch_all(pool)
                .await?
            {
                authors
                    .entry(r.try_get("case_id")?)
                    .or_default()
                    .push(r.try_get("author_institution")?);
            }
            let mut plans: BTreeMap<String, String> = BTreeMap::new();
            for r in range("SELECT case_id, origin, body FROM plans")
                .large()
                .fetch_all(pool)
                .await?
            {
                if r.try_get::<String, _>("origin")? == "local" {
                    plans.insert(r.try_get("case_id")?, r.try_get("body")?);
                }
            }
            let mut orientations = orientations_by_case(
                range("SELECT case_id, seq, body FROM orientations")
                    .large()
                    .fetch_all(pool)
                    .await?,
            )?;
            for row in &page {
                let case = case_from_row(row)?;
                let id = case.case_id.to_string();
                let rows = Rows {
                    entry_recorded_by: row.try_get("entry_recorded_by")?,
                    referral: referrals.remove(&id),
                    authors: authors.remove(&id).unwrap_or_default(),
                    plan: plans.remove(&id),
                    orientations: orientations.remove(&id).unwrap_or_default(),
                    case,
                };
                for (k, n) in contributions(&facts(self.own(), rows)?) {
                    *counts.entry(k).or_insert(0) += n;
                }
            }
            after = last;
        }
        // People oriented and not referred (yet): their orientations alone.
        let unreferred = orientations_by_case(
            query(
                "SELECT case_id, seq, body FROM orientations
                 WHERE case_id NOT IN (SELECT case_id FROM cases)",
            )
            .large()
            .fetch_all(pool)
            .await?,
        )?;
        for list in unreferred.values() {
            for (k, n) in orientation_counts(self.own(), list) {
                *counts.entry(k).or_insert(0) += n;
            }
        }
        // Erased cases are gone from the rows; their counts are kept apart.
        for row in
            query("SELECT measure, month, office, network, breakdown, value FROM erased_statistics")
                .large()
                .fetch_all(pool)
                .await?
        {
            let (k, n) = count_row(&row)?;
            *counts.entry(k).or_insert(0) += n;
        }
        Ok(summed(counts))
    }

    /// Replaces the kept counts by a recount (after a restore, say).
    pub async fn rebuild_statistics(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        self.rebuild_in(&mut tx).await?;
        tx.update_statistics().await?;
        tx.commit().await
    }

    async fn rebuild_in(&self, tx: &mut Tx) -> Result<()> {
        let counts = self.recount().await?;
        query("DELETE FROM statistics").execute(tx.db()).await?;
        add_counts(tx.db(), &counts).await?;
        query("UPDATE statistics_state SET built = 1 WHERE id = 1")
            .execute(tx.db())
            .await?;
        Ok(())
    }

    /// Fills the counts from the cases if nobody has yet; one replica does
    /// it while the others wait on the state row.
    pub(crate) async fn build_statistics_once(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        let built: i64 = query(format!(
            "SELECT built FROM statistics_state WHERE id = 1{}",
            tx.lock()
        ))
        .fetch_one(tx.db())
        .await?
        .try_get("built")?;
        if built == 0 {
            tracing::info!("filling the committee's counts from the cases");
            self.rebuild_in(&mut tx).await?;
        }
        tx.update_statistics().await?;
        tx.commit().await
    }
}
