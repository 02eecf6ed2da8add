//! The store of an institution's service (employment or social side). Writes
//! go through [`Tx`], so a change, its outbox message and its idempotency
//! record commit together or not at all.

mod case_cache;
pub(crate) mod erasure;
pub(crate) mod group_commit;
mod keys_in_flight;
mod statistics;

pub use erasure::{ErasureReason, PurgeCandidate};
pub use group_commit::GroupCommitCounts;
pub use keys_in_flight::KeyTicket;

use std::collections::{BTreeMap, BTreeSet};

use crate::sql::{Conn, Row, Target, query};
use chrono::{DateTime, Utc};
use passerelle_boundary::audit::{AuditEntry, AuditRecord};
use passerelle_domain::orientation::Orientation;
use passerelle_domain::plan::{Plan, PlanKind, PlanSummary};
use passerelle_domain::statistics::CubeKey;
use passerelle_domain::{
    Case, CaseState, Consent, ConsentState, DataCategory, DiagnosisHalf, Evidence, EvidenceKind,
    ExitReason, Institution, Network, Outbound, Pair, Purpose, Referent, Referral, ReferralState,
    Track, Verdict,
};

use crate::audit::AuditLog;
use crate::{
    Backend, Database, Result, Schema, StoreError, from_json, from_micros, json, to_micros,
};

async fn orientations_of<'e>(
    executor: impl Into<Target<'e>>,
    case_id: &str,
) -> Result<Vec<Orientation>> {
    query("SELECT body FROM orientations WHERE case_id = $1 ORDER BY seq")
        .bind(case_id)
        .fetch_all(executor)
        .await?
        .iter()
        .map(|r| from_json(&r.try_get::<String, _>("body")?))
        .collect()
}

/// Everything an institution keeps of one case, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseParts {
    pub case: Case,
    /// Whether its processing is restricted (GDPR art. 18).
    pub restricted: bool,
    pub referral: Option<Referral>,
    pub diagnoses: Vec<DiagnosisHalf>,
    pub consents: Vec<Consent>,
    pub notes: Vec<LocalNote>,
    pub plan: Option<Plan>,
    pub plan_summaries: Vec<PlanSummary>,
    /// Its orientations into a parcours, oldest first.
    pub orientations: Vec<Orientation>,
    /// The length of what was read, as stored: what keeping it costs.
    pub(crate) stored_bytes: usize,
}

/// Reads of a case's parts, on the pool or inside a transaction.
mod reads {
    use super::*;

    pub(super) async fn consents<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Vec<Consent>> {
        query("SELECT * FROM consents WHERE case_id = $1 ORDER BY state_changed_at")
            .bind(case_id)
            .fetch_all(executor)
            .await?
            .iter()
            .map(consent_from_row)
            .collect()
    }

    pub(super) async fn referral<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Option<Referral>> {
        query("SELECT body FROM referrals WHERE case_id = $1")
            .bind(case_id)
            .fetch_optional(executor)
            .await?
            .map(|r| from_json(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    pub(super) async fn diagnoses<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Vec<DiagnosisHalf>> {
        query("SELECT body FROM diagnoses WHERE case_id = $1 ORDER BY author_institution")
            .bind(case_id)
            .fetch_all(executor)
            .await?
            .iter()
            .map(|r| from_json(&r.try_get::<String, _>("body")?))
            .collect()
    }

    pub(super) async fn local_notes<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Vec<LocalNote>> {
        query(
            "SELECT author, topic, note, written_at FROM local_notes WHERE case_id = $1 ORDER BY id",
        )
        .bind(case_id)
        .fetch_all(executor)
        .await?
        .iter()
        .map(|r| {
            Ok(LocalNote {
                author: r.try_get("author")?,
                topic: r.try_get("topic")?,
                note: r.try_get("note")?,
                written_at: from_micros(r.try_get("written_at")?)?,
            })
        })
        .collect()
    }

    pub(super) async fn plan_summaries<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Vec<PlanSummary>> {
        query("SELECT origin, body FROM plans WHERE case_id = $1 ORDER BY kind")
            .bind(case_id)
            .fetch_all(executor)
            .await?
            .iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                if r.try_get::<String, _>("origin")? == "local" {
                    Ok(from_json::<Plan>(&body)?.summary())
                } else {
                    from_json(&body)
                }
            })
            .collect()
    }

    /// Everything kept of a case in one statement: one snapshot on both
    /// backends with no transaction around it, and one round trip to
    /// PostgreSQL instead of one per part. Each part's rows fill the
    /// columns it needs; `n` and `k` order them as their own reads did.
    pub(super) async fn case_parts<'e>(
        executor: impl Into<Target<'e>>,
        case_id: &str,
    ) -> Result<Option<CaseParts>> {
        let mut found = None;
        let mut consents = Vec::new();
        let mut bodies = CaseBodies::default();
        let mut stored_bytes = 0;
        let rows = query(case_parts_sql())
            .bind(case_id)
            .fetch_all(executor)
            .await?;
        for row in &rows {
            stored_bytes += row.stored_bytes();
            let part = row.try_get::<String, _>("part")?;
            if part == "case" {
                found = Some(case_and_restriction_from_row(row)?);
                continue;
            }
            if part == "consent" {
                consents.push(consent_from_columns(row, "consent_")?);
                continue;
            }
            let body: String = row.try_get("body")?;
            match part.as_str() {
                "referral" => bodies.referral = Some(from_json(&body)?),
                "diagnosis" => bodies.diagnoses.push(from_json(&body)?),
                "plan" => {
                    if row.try_get::<String, _>("origin")? == Origin::Local.code() {
                        let plan: Plan = from_json(&body)?;
                        bodies.plan_summaries.push(plan.summary());
                        bodies.plan = Some(plan);
                    } else {
                        bodies.plan_summaries.push(from_json(&body)?);
                    }
                }
                "orientation" => bodies.orientations.push(from_json(&body)?),
                "note" => bodies.notes.push(LocalNote {
                    author: row.try_get("origin")?,
                    topic: row.try_get("k")?,
                    note: body,
                    written_at: from_micros(row.try_get("at")?)?,
                }),
                other => return Err(StoreError::Corrupt(format!("unknown case part {other}"))),
            }
        }
        Ok(found.map(|(case, restricted)| CaseParts {
            case,
            restricted,
            referral: bodies.referral,
            diagnoses: bodies.diagnoses,
            consents,
            notes: bodies.notes,
            plan: bodies.plan,
            plan_summaries: bodies.plan_summaries,
            orientations: bodies.orientations,
            stored_bytes,
        }))
    }

    #[derive(Default)]
    struct CaseBodies {
        referral: Option<Referral>,
        diagnoses: Vec<DiagnosisHalf>,
        plan: Option<Plan>,
        plan_summaries: Vec<PlanSummary>,
        orientations: Vec<Orientation>,
        notes: Vec<LocalNote>,
    }

    /// The consents' columns, as the union's last ones (`consent_` before
    /// each name: a consent's `state` is not its case's), with their types.
    const CONSENT_COLUMNS: [(&str, &str); 14] = [
        ("consent_id", "TEXT"),
        ("case_id", "TEXT"),
        ("purposes", "TEXT"),
        ("recipients", "TEXT"),
        ("categories", "TEXT"),
        ("evidence_kind", "TEXT"),
        ("evidence_sha256", "TEXT"),
        ("evidence_signed_at", "BIGINT"),
        ("evidence_collected_by", "TEXT"),
        ("valid_from", "BIGINT"),
        ("valid_until", "BIGINT"),
        ("state", "TEXT"),
        ("state_changed_at", "BIGINT"),
        ("holder", "TEXT"),
    ];

    /// The one statement of [`case_parts`], built once.
    pub(super) fn case_parts_sql() -> &'static str {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SQL.get_or_init(|| {
            let nulls = |n: usize| vec!["NULL"; n].join(", ");
            let case_nulls = nulls(CASE_COLUMNS.split(", ").count() + 1);
            let consent_nulls = nulls(CONSENT_COLUMNS.len());
            // The first branch names and types every column (PostgreSQL
            // resolves the others' NULLs from it).
            let typed_consent_nulls = CONSENT_COLUMNS
                .iter()
                .map(|(name, ty)| format!("CAST(NULL AS {ty}) AS consent_{name}"))
                .collect::<Vec<_>>()
                .join(", ");
            let consent_columns = CONSENT_COLUMNS
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ");
            let other = |part: &str, n: &str, k: &str, origin: &str, body: &str, at: &str, table: &str| {
                format!(
                    " UNION ALL SELECT '{part}', {n}, {k}, {origin}, {body}, {at}, {case_nulls}, {consent_nulls} \
                     FROM {table} WHERE case_id = $1"
                )
            };
            let mut sql = format!(
                "SELECT 'case' AS part, CAST(NULL AS BIGINT) AS n, CAST(NULL AS TEXT) AS k, \
                 CAST(NULL AS TEXT) AS origin, CAST(NULL AS TEXT) AS body, CAST(NULL AS BIGINT) AS at, \
                 {CASE_COLUMNS}, {RESTRICTED}, {typed_consent_nulls} FROM cases WHERE case_id = $1"
            );
            sql += &format!(
                " UNION ALL SELECT 'consent', state_changed_at, NULL, NULL, NULL, NULL, {case_nulls}, \
                 {consent_columns} FROM consents WHERE case_id = $1"
            );
            sql += &other("referral", "NULL", "NULL", "NULL", "body", "NULL", "referrals");
            sql += &other("diagnosis", "NULL", "author_institution", "NULL", "body", "NULL", "diagnoses");
            sql += &other("plan", "NULL", "kind", "origin", "body", "NULL", "plans");
            sql += &other("orientation", "seq", "NULL", "NULL", "body", "NULL", "orientations");
            sql += &other("note", "id", "topic", "author", "note", "written_at", "local_notes");
            sql += " ORDER BY part, n, k";
            sql
        })
    }
}

/// Where a referral came from, seen from this institution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Written by this institution's own agents.
    Local,
    /// Received from the partner.
    Partner,
}

impl Origin {
    fn code(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Partner => "partner",
        }
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub id: i64,
    pub message_key: String,
    pub message: Outbound,
    pub attempts: i64,
    /// Trace context of the call that queued it.
    pub trace_context: Option<String>,
}

/// The outbox's state, for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxDepth {
    pub pending: i64,
    pub abandoned: i64,
    pub oldest_pending_at: Option<i64>,
}

/// A dedicated counsellor in the working-time register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounsellorEntry {
    pub counsellor: String,
    /// Share of full time, in per mille.
    pub working_time_per_mille: u32,
    pub office_code: String,
}

#[derive(Debug, Clone)]
pub struct InstitutionStore {
    db: Database,
    audit: AuditLog,
    /// The open batch of business changes ([`InstitutionStore::write`]).
    group: std::sync::Arc<group_commit::GroupCommit>,
    /// Whose store this is: the counts it keeps are this side's.
    own: Institution,
    /// Idempotency keys being served by this process.
    keys: std::sync::Arc<keys_in_flight::KeysInFlight>,
    /// What is kept of the cases between calls (SQLite).
    kept: std::sync::Arc<case_cache::KeptCases>,
}

/// The tables a case's parts are read from ([`reads::case_parts`]), each
/// with its `case_id`: a commit changing a row of a case in one of them
/// makes what is kept of that case from that table stale
/// (`institution/case_cache.rs`).
pub(crate) const CASE_TABLES: &[&str] = &[
    "cases",
    "restrictions",
    "consents",
    "referrals",
    "diagnoses",
    "plans",
    "orientations",
    "local_notes",
];

/// The table [`Tx::case`] reads a case from.
pub(crate) const CASE_ROW_TABLES: &[&str] = &["cases"];

/// The table a case's consents are read from.
pub(crate) const CONSENT_TABLES: &[&str] = &["consents"];

fn codes<T: Copy>(set: &BTreeSet<T>, code: fn(T) -> &'static str) -> String {
    set.iter().map(|v| code(*v)).collect::<Vec<_>>().join(",")
}

fn parse_codes<T: Ord>(text: &str, parse: fn(&str) -> Option<T>) -> Result<BTreeSet<T>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown code {s}"))))
        .collect()
}

fn parse_code<T>(text: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown code {text}")))
}

fn consent_from_row(row: &Row) -> Result<Consent> {
    consent_from_columns(row, "")
}

/// A consent from columns named as in its table, after `prefix`.
fn consent_from_columns(row: &Row, prefix: &str) -> Result<Consent> {
    // Every crossing reads consents without a prefix: no allocation then.
    let column = |name: &'static str| -> std::borrow::Cow<'static, str> {
        if prefix.is_empty() {
            name.into()
        } else {
            format!("{prefix}{name}").into()
        }
    };
    Ok(Consent {
        consent_id: row
            .try_get::<String, _>(column("consent_id").as_ref())?
            .into(),
        case_id: row.try_get::<String, _>(column("case_id").as_ref())?.into(),
        purposes: parse_codes(
            &row.try_get::<String, _>(column("purposes").as_ref())?,
            Purpose::from_code,
        )?,
        recipients: parse_codes(
            &row.try_get::<String, _>(column("recipients").as_ref())?,
            Institution::from_code,
        )?,
        categories: parse_codes(
            &row.try_get::<String, _>(column("categories").as_ref())?,
            DataCategory::from_code,
        )?,
        evidence: Evidence {
            kind: parse_code(
                &row.try_get::<String, _>(column("evidence_kind").as_ref())?,
                EvidenceKind::from_code,
            )?,
            document_sha256: row.try_get(column("evidence_sha256").as_ref())?,
            signed_at: from_micros(row.try_get(column("evidence_signed_at").as_ref())?)?,
            collected_by: row.try_get(column("evidence_collected_by").as_ref())?,
        },
        valid_from: from_micros(row.try_get(column("valid_from").as_ref())?)?,
        valid_until: from_micros(row.try_get(column("valid_until").as_ref())?)?,
        state: parse_code(
            &row.try_get::<String, _>(column("state").as_ref())?,
            ConsentState::from_code,
        )?,
        state_changed_at: from_micros(row.try_get(column("state_changed_at").as_ref())?)?,
        holder: parse_code(
            &row.try_get::<String, _>(column("holder").as_ref())?,
            Institution::from_code,
        )?,
    })
}

fn optional_instant(row: &Row, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(from_micros)
        .transpose()
}

/// Whether the case of the row is restricted (GDPR art. 18), as a column
/// of the case's own read; BIGINT on both backends.
const RESTRICTED: &str = "CAST(CASE WHEN EXISTS (SELECT 1 FROM restrictions r WHERE r.case_id = cases.case_id) THEN 1 ELSE 0 END AS BIGINT) AS restricted";

fn case_and_restriction_from_row(row: &Row) -> Result<(Case, bool)> {
    Ok((
        case_from_row(row)?,
        row.try_get::<i64, _>("restricted")? == 1,
    ))
}

pub(crate) fn case_from_row(row: &Row) -> Result<Case> {
    let counsellor: Option<String> = row.try_get("counsellor")?;
    let social_worker: Option<String> = row.try_get("social_worker")?;
    Ok(Case {
        case_id: row.try_get::<String, _>("case_id")?.into(),
        track: parse_code(&row.try_get::<String, _>("track")?, Track::from_code)?,
        state: parse_code(&row.try_get::<String, _>("state")?, CaseState::from_code)?,
        pair: match (counsellor, social_worker) {
            (Some(counsellor), Some(social_worker)) => Some(Pair {
                counsellor,
                social_worker,
            }),
            _ => None,
        },
        referring_network: parse_code(
            &row.try_get::<String, _>("referring_network")?,
            Network::from_code,
        )?,
        referred_at: from_micros(row.try_get("referred_at")?)?,
        diagnosed_at: optional_instant(row, "diagnosed_at")?,
        entered_at: optional_instant(row, "entered_at")?,
        exited_at: optional_instant(row, "exited_at")?,
        exit_reason: row
            .try_get::<Option<String>, _>("exit_reason")?
            .map(|r| parse_code(&r, ExitReason::from_code))
            .transpose()?,
        renewals: u32::try_from(row.try_get::<i64, _>("renewals")?)
            .map_err(|_| StoreError::Corrupt("negative renewals".into()))?,
        ends_at: optional_instant(row, "ends_at")?,
        review_due_at: optional_instant(row, "review_due_at")?,
        office_code: row.try_get("office_code")?,
        referral_state: parse_code(
            &row.try_get::<String, _>("referral_state")?,
            ReferralState::from_code,
        )?,
        referral_expires_at: from_micros(row.try_get("referral_expires_at")?)?,
        referral_decided_at: optional_instant(row, "referral_decided_at")?,
        refusal_reason: row.try_get("refusal_reason")?,
        referent: row
            .try_get::<Option<String>, _>("referent")?
            .map(|r| parse_code(&r, Referent::from_code))
            .transpose()?,
        queued_at: optional_instant(row, "queued_at")?,
        pending_entry: row
            .try_get::<Option<String>, _>("pending_entry")?
            .map(|j| from_json(&j))
            .transpose()?,
        missed_appointments: u32::try_from(row.try_get::<i64, _>("missed_appointments")?)
            .map_err(|_| StoreError::Corrupt("negative missed appointments".into()))?,
        follow_up_due_at: optional_instant(row, "follow_up_due_at")?,
        follow_up_in_employment: row
            .try_get::<Option<i64>, _>("follow_up_in_employment")?
            .map(|v| v != 0),
        exclusive_started_at: optional_instant(row, "exclusive_started_at")?,
        entry_evidence: from_json(&row.try_get::<String, _>("entry_evidence")?)?,
        participant: row
            .try_get::<Option<String>, _>("participant")?
            .map(|j| from_json(&j))
            .transpose()?,
        qualification_gained: row.try_get::<i64, _>("qualification_gained")? != 0,
    })
}

pub(crate) const CASE_COLUMNS: &str = "case_id, track, state, counsellor, social_worker, referring_network, referred_at, diagnosed_at, entered_at, exited_at, exit_reason, renewals, ends_at, review_due_at, office_code, referral_state, referral_expires_at, referral_decided_at, refusal_reason, referent, queued_at, pending_entry, missed_appointments, follow_up_due_at, follow_up_in_employment, exclusive_started_at, entry_evidence, participant, qualification_gained";

impl InstitutionStore {
    /// Connects, migrates, and fills the committee's counts from the cases
    /// if they were never filled (the first start after their migration).
    pub async fn connect(url: &str, max_connections: u32, own: Institution) -> Result<Self> {
        let db = Database::connect(url, Schema::Institution, max_connections).await?;
        let store = Self::from_database(db, own);
        store.build_statistics_once().await?;
        Ok(store)
    }

    pub fn from_database(db: Database, own: Institution) -> Self {
        let kept = std::sync::Arc::new(case_cache::KeptCases::new());
        let group = group_commit::GroupCommit::new(db.clone(), own, kept.clone());
        // The chain is written in the business changes' batches: one writer.
        let audit = AuditLog::batched(db.clone(), group.clone());
        InstitutionStore {
            db,
            audit,
            group,
            own,
            keys: std::sync::Arc::default(),
            kept,
        }
    }

    pub fn own(&self) -> Institution {
        self.own
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Whether anything of the case is kept in memory (for tests: an
    /// erased case's must not be).
    #[doc(hidden)]
    pub fn keeps_anything_of(&self, case_id: &str) -> bool {
        self.kept.holds(case_id)
    }

    pub async fn begin(&self) -> Result<Tx> {
        Tx::begin(&self.db, self.own, self.kept.clone()).await
    }

    /// A call's ticket for an idempotency key, taken before it looks the
    /// key up: only one call of this process writes under a key at a time,
    /// and the next hears of it ([`KeyTicket::write`]).
    pub fn key_ticket(&self, method: &str, key: &str) -> KeyTicket {
        self.keys.ticket(method, key)
    }

    /// The answer stored under a key, read without the write lock: a
    /// replay is answered from it, and a key seen for the first time goes
    /// on to a write ([`InstitutionStore::key_ticket`]) whose insert of the
    /// key catches another replica's.
    pub async fn stored_response(&self, method: &str, key: &str) -> Result<Option<StoredResponse>> {
        self.db
            .read(async |connection| {
                let row = query(STORED_RESPONSE)
                    .bind(method)
                    .bind(key)
                    .fetch_optional(connection)
                    .await?;
                row.as_ref().map(stored_response).transpose()
            })
            .await
    }

    /// A case's consents, as fresh as a read: kept between calls on SQLite
    /// (`case_cache.rs` says how they stay fresh).
    pub async fn consents_for_case(&self, case_id: &str) -> Result<Vec<Consent>> {
        let read = async || {
            self.db
                .read(async |connection| reads::consents(connection, case_id).await)
                .await
                .map(Some)
        };
        let consents = self
            .kept
            .consents
            .kept_or_read(self.db.case_stamps(), case_id, read)
            .await?;
        Ok(consents
            .map(|kept| kept.as_ref().clone())
            .unwrap_or_default())
    }

    /// Everything kept of a case, from one snapshot: the parts always
    /// agree with the case. Kept between calls on SQLite, as fresh as a
    /// read (`case_cache.rs`), and shared rather than copied.
    pub async fn case_parts(&self, case_id: &str) -> Result<Option<std::sync::Arc<CaseParts>>> {
        let read = async || {
            self.db
                .read(async |connection| reads::case_parts(connection, case_id).await)
                .await
        };
        self.kept
            .parts
            .kept_or_read(self.db.case_stamps(), case_id, read)
            .await
    }

    pub async fn case(&self, case_id: &str) -> Result<Option<Case>> {
        let row = query(format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE case_id = $1"
        ))
        .bind(case_id)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(case_from_row).transpose()
    }

    /// The case's orientations, oldest first.
    pub async fn orientations(&self, case_id: &str) -> Result<Vec<Orientation>> {
        orientations_of(&self.db, case_id).await
    }

    pub async fn referral(&self, case_id: &str) -> Result<Option<Referral>> {
        reads::referral(&self.db, case_id).await
    }

    pub async fn diagnoses(&self, case_id: &str) -> Result<Vec<DiagnosisHalf>> {
        reads::diagnoses(&self.db, case_id).await
    }

    /// The case a consent is about, if this institution knows the consent.
    pub async fn consent_case(&self, consent_id: &str) -> Result<Option<String>> {
        let row = query("SELECT case_id FROM consents WHERE consent_id = $1")
            .bind(consent_id)
            .fetch_optional(&self.db)
            .await?;
        row.map(|r| r.try_get("case_id")).transpose()
    }

    /// A case's local notes at this institution, oldest first, with their authors.
    pub async fn local_notes(&self, case_id: &str) -> Result<Vec<LocalNote>> {
        reads::local_notes(&self.db, case_id).await
    }

    /// Active cases the agent follows (as counsellor or social worker) with
    /// a review or a period end on or before `horizon`.
    pub async fn active_cases_due(&self, agent: &str, horizon: DateTime<Utc>) -> Result<Vec<Case>> {
        let rows = query(format!(
            "SELECT {CASE_COLUMNS} FROM cases
             WHERE (counsellor = $1 OR social_worker = $1)
               AND ((state = 'active' AND ((review_due_at IS NOT NULL AND review_due_at <= $2) OR ends_at <= $2))
                 OR (state = 'exited' AND follow_up_due_at <= $2 AND follow_up_in_employment IS NULL))
             ORDER BY ends_at, case_id"
        ))
        .bind(agent)
        .bind(to_micros(horizon))
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    /// Summaries of both plans of a case: the own one computed, the partner's as received.
    pub async fn plan_summaries(&self, case_id: &str) -> Result<Vec<PlanSummary>> {
        reads::plan_summaries(&self.db, case_id).await
    }

    /// Referrals received from the partner, still pending at `now` past their expiry.
    pub async fn expired_referrals(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Case>> {
        let rows = query(format!(
            "SELECT {} FROM cases c JOIN referrals r ON r.case_id = c.case_id
             WHERE c.referral_state = 'pending' AND c.referral_expires_at <= $1 AND r.origin = 'partner'
               AND c.case_id NOT IN (SELECT case_id FROM restrictions)
             ORDER BY c.referral_expires_at, c.case_id LIMIT $2",
            prefixed("c", CASE_COLUMNS)
        ))
        .bind(to_micros(now))
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    /// Global-support cases this institution entered whose period ended by `now`.
    pub async fn ended_periods(
        &self,
        own: Institution,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Case>> {
        let rows = query(format!(
            "SELECT {CASE_COLUMNS} FROM cases
             WHERE state = 'active' AND track = 'global' AND ends_at <= $1 AND entry_recorded_by = $2
               AND case_id NOT IN (SELECT case_id FROM restrictions)
             ORDER BY ends_at, case_id LIMIT $3"
        ))
        .bind(to_micros(now))
        .bind(own.code())
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    /// An office's open cases (pending referrals, diagnoses under way, people
    /// in support), with what this side knows of the diagnosis.
    pub async fn office_open_cases(&self, office_code: &str) -> Result<Vec<OpenCase>> {
        let rows = query(format!(
            "SELECT {}, r.origin AS referral_origin FROM cases c JOIN referrals r ON r.case_id = c.case_id
             WHERE c.office_code = $1 AND c.state IN ('referred', 'diagnosed', 'queued', 'active')
             ORDER BY c.referred_at, c.case_id",
            prefixed("c", CASE_COLUMNS)
        ))
        .bind(office_code)
        .fetch_all(&self.db)
        .await?;
        // Every half of those cases in one read, not one per case.
        let mut halves: std::collections::HashMap<String, Vec<DiagnosisHalf>> =
            std::collections::HashMap::new();
        for row in query(
            "SELECT d.body FROM diagnoses d JOIN cases c ON c.case_id = d.case_id
             WHERE c.office_code = $1 AND c.state IN ('referred', 'diagnosed', 'queued', 'active')
             ORDER BY d.case_id, d.author_institution",
        )
        .bind(office_code)
        .fetch_all(&self.db)
        .await?
        {
            let half: DiagnosisHalf = from_json(&row.try_get::<String, _>("body")?)?;
            halves
                .entry(half.case_id.to_string())
                .or_default()
                .push(half);
        }
        rows.iter()
            .map(|row| {
                let case = case_from_row(row)?;
                let origin = if row.try_get::<String, _>("referral_origin")? == "local" {
                    Origin::Local
                } else {
                    Origin::Partner
                };
                let halves = halves.remove(case.case_id.as_str()).unwrap_or_default();
                Ok(OpenCase {
                    case,
                    referral_origin: origin,
                    halves,
                })
            })
            .collect()
    }

    /// The right to relay the outbox for one pass. Order matters (a referral
    /// before its diagnosis), so with several replicas only one relays at a
    /// time: on PostgreSQL a transaction-scoped advisory lock, released when
    /// the lease is dropped; an SQLite file belongs to one process anyway.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>> {
        match self.db.backend() {
            Backend::Sqlite => Ok(Some(RelayLease { tx: None })),
            Backend::Postgres => {
                let mut tx = self.db.begin_write().await?;
                let held: bool = query("SELECT pg_try_advisory_xact_lock($1) AS held")
                    .bind(RELAY_LOCK_KEY)
                    .fetch_one(&mut tx)
                    .await?
                    .try_get("held")?;
                Ok(held.then_some(RelayLease { tx: Some(tx) }))
            }
        }
    }

    /// The oldest undelivered messages, in the order they were written.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<PendingMessage>> {
        let rows = query(
            // A restricted case's messages wait (in order) until it is lifted;
            // what concerns the person's rights goes out regardless.
            "SELECT id, message_key, payload, attempts, trace_context FROM outbox
             WHERE delivered_at IS NULL AND abandoned_at IS NULL
               AND (kind IN ('rights_notice', 'end_of_processing', 'consent')
                    OR case_id NOT IN (SELECT case_id FROM restrictions))
             ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingMessage {
                    id: r.try_get("id")?,
                    message_key: r.try_get("message_key")?,
                    message: from_json(&r.try_get::<String, _>("payload")?)?,
                    attempts: r.try_get("attempts")?,
                    trace_context: r.try_get("trace_context")?,
                })
            })
            .collect()
    }

    /// Marks messages delivered and records their crossings in the audit
    /// log, in one transaction: a delivery is never kept without its record.
    /// If this fails the messages stay pending and are sent again (the
    /// partner answers a resent key from its idempotency record).
    ///
    /// A delivered message keeps its row (what left, when, for which case)
    /// but not its payload: the person's data it carried is the partner's
    /// to keep now, and a copy here served nothing (storage limitation,
    /// GDPR art. 5(1)(e)); its crossing is in the audit log.
    pub async fn mark_delivered(
        &self,
        delivered: &[(i64, AuditEntry)],
        at: DateTime<Utc>,
    ) -> Result<()> {
        if delivered.is_empty() {
            return Ok(());
        }
        let entries: Vec<&AuditEntry> = delivered.iter().map(|(_, entry)| entry).collect();
        let ids: Vec<String> = delivered.iter().map(|(id, _)| id.to_string()).collect();
        let bookkeeping = async |tx: &mut Tx| {
            tx.append_audits(&entries);
            // Ids are integers read from the outbox, written in as numbers.
            query(format!(
                "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL, payload = '' \
                 WHERE id IN ({})",
                ids.join(", ")
            ))
            .bind(to_micros(at))
            .execute(tx.db())
            .await?;
            Ok::<_, StoreError>(())
        };
        match self.db.backend() {
            // One writer at a time on SQLite: the bookkeeping joins the
            // batch of business changes rather than wait for its lock.
            Backend::Sqlite => self.write(bookkeeping).await,
            // On PostgreSQL it commits beside the batch (row locks suffice,
            // the chain's lock is taken at its commit only), so the relay
            // does not wait in line behind the agents' changes.
            Backend::Postgres => {
                let mut tx = self.begin().await?;
                bookkeeping(&mut tx).await?;
                tx.commit().await
            }
        }
    }

    pub async fn record_failed_attempt(&self, id: i64, error: &str) -> Result<()> {
        query("UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Gives up on a message the partner refused for good, keeping it for review.
    pub async fn abandon(&self, id: i64, at: DateTime<Utc>, error: &str) -> Result<()> {
        query("UPDATE outbox SET abandoned_at = $1, attempts = attempts + 1, last_error = $2 WHERE id = $3")
            .bind(to_micros(at))
            .bind(error)
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    pub async fn outbox_depth(&self) -> Result<OutboxDepth> {
        let row = query(OUTBOX_DEPTH).fetch_one(&self.db).await?;
        Ok(OutboxDepth {
            pending: row.try_get("pending")?,
            abandoned: row.try_get("abandoned")?,
            oldest_pending_at: row.try_get("oldest")?,
        })
    }
}

/// Whether the partner holds a case (`$1`; `$2` the partner's origin code).
/// Through the outbox's index by case: delivered messages stay, so the
/// outbox grows with every change told to the partner.
pub(crate) const PARTNER_KNOWS_CASE: &str =
    "SELECT 1 AS one FROM referrals WHERE case_id = $1 AND origin = $2
     UNION ALL SELECT 1 AS one FROM outbox
       WHERE case_id = $1 AND kind <> 'consent' AND abandoned_at IS NULL";

/// The relay's gauges. Each part reads through its partial index: what is
/// pending or given up, never the delivered messages that make up the rest.
pub(crate) const OUTBOX_DEPTH: &str = "SELECT
       (SELECT COUNT(*) FROM outbox
         WHERE delivered_at IS NULL AND abandoned_at IS NULL) AS pending,
       (SELECT COUNT(*) FROM outbox WHERE abandoned_at IS NOT NULL) AS abandoned,
       (SELECT MIN(created_at) FROM outbox
         WHERE delivered_at IS NULL AND abandoned_at IS NULL) AS oldest";

const STORED_RESPONSE: &str =
    "SELECT request_sha256, response FROM idempotency WHERE method = $1 AND idempotency_key = $2";

fn stored_response(row: &Row) -> Result<StoredResponse> {
    Ok(StoredResponse {
        request_sha256: row.try_get("request_sha256")?,
        response: row.try_get("response")?,
    })
}

fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Advisory-lock key of the outbox relay (any constant unique to this database).
const RELAY_LOCK_KEY: i64 = 0x7061_7373_6572_656c; // "passerel"

/// Held while one replica relays the outbox.
#[derive(Debug)]
pub struct RelayLease {
    tx: Option<Conn>,
}

impl RelayLease {
    /// Ends the lease now (a dropped transaction rolls back only later).
    pub async fn release(self) {
        if let Some(tx) = self.tx
            && let Err(e) = tx.rollback().await
        {
            tracing::warn!(error = %e, "outbox lease release failed; it ends with the connection");
        }
    }
}

/// A free-text note an agent kept with a case; it never leaves the institution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNote {
    pub author: String,
    pub topic: String,
    pub note: String,
    pub written_at: DateTime<Utc>,
}

/// An open case of an office, as its due list needs it.
#[derive(Debug, Clone)]
pub struct OpenCase {
    pub case: Case,
    /// Whether this side wrote the referral or received it.
    pub referral_origin: Origin,
    /// The halves of the shared diagnosis this side knows.
    pub halves: Vec<DiagnosisHalf>,
}

/// Entries into exclusive social support over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExclusiveStarts {
    /// By the office asked about.
    pub office: u32,
    /// By every office of the agreement.
    pub all: u32,
}

/// One unit of work.
#[derive(Debug)]
pub struct Tx {
    /// Reached through [`Tx::db`].
    conn: Conn,
    pub(crate) own: Institution,
    backend: Backend,
    /// Cases this transaction changes, with their counts before it did.
    pub(crate) touched: BTreeMap<String, statistics::Noted>,
    /// Audit records to append to the chain when the transaction commits,
    /// in order: appended in one statement just before the commit, so that
    /// on PostgreSQL the chain's lock is held only then, never while changes
    /// run (by another replica's batch, or this one's next).
    pub(crate) audits: Vec<AuditEntry>,
    /// Answers to idempotent requests, stored when the transaction commits
    /// (one statement for a whole batch's instead of a round trip per change).
    answers: Vec<AnswerToStore>,
    /// Cases erased by the transaction, each with how many answers were
    /// queued before its erasure: those naming it are not stored.
    erased: Vec<(String, usize)>,
    /// What the transaction's changes add to the committee's counts, added
    /// to the stored ones in one statement just before the commit: the
    /// shared count rows are written once per batch instead of once per
    /// change, and on PostgreSQL locked only for the commit (as the chain is).
    counts: Vec<(CubeKey, i64)>,
    /// How long those four lists were when the current savepoint was set.
    at_savepoint: Queued,
    /// Where the batch's one savepoint stands.
    savepoint: Savepoint,
    /// Messages queued in the outbox ([`Tx::enqueued`]).
    enqueued: u64,
    /// What its store keeps of the cases between calls ([`Tx::case`]; an
    /// erasure lets go of the case's at the commit).
    kept: std::sync::Arc<case_cache::KeptCases>,
}

/// The state of a batch's savepoint (at most one is set at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Savepoint {
    /// None is set.
    None,
    /// Set before the change now running.
    Set,
    /// Set before a change that succeeded: released together with the
    /// setting of the next one (one statement instead of two), or by the
    /// commit.
    Kept,
    /// A statement on it was interrupted: whether it ran is unknown.
    Unknown,
}

/// Lengths of a transaction's lists of what it writes at its commit.
#[derive(Debug, Clone, Copy, Default)]
struct Queued {
    audits: usize,
    answers: usize,
    erased: usize,
    counts: usize,
}

/// An answer to an idempotent request, stored at the commit.
#[derive(Debug)]
struct AnswerToStore {
    method: String,
    key: String,
    request_sha256: String,
    response: Vec<u8>,
    at: i64,
}

/// Most answers stored in one statement (five values each).
const ANSWERS_PER_STATEMENT: usize = 200;

/// Stores a transaction's answers, a few hundred per statement. A key
/// already taken (another replica committed it since the call looked)
/// makes the transaction fail as busy: its changes must not commit twice.
async fn store_answers(tx: &mut Conn, answers: &[&AnswerToStore]) -> Result<()> {
    for chunk in answers.chunks(ANSWERS_PER_STATEMENT) {
        // Only placeholders are formatted in; every value is bound.
        let sql = format!(
            "INSERT INTO idempotency (method, idempotency_key, request_sha256, response, created_at) VALUES {} ON CONFLICT (method, idempotency_key) DO NOTHING",
            crate::values_placeholders(chunk.len(), 5)
        );
        let mut insert = query(sql);
        for answer in chunk {
            insert = insert
                .bind(answer.method.clone())
                .bind(answer.key.clone())
                .bind(answer.request_sha256.clone())
                .bind(answer.response.clone())
                .bind(answer.at);
        }
        let stored = insert.execute(&mut *tx).await?;
        if stored != chunk.len() as u64 {
            return Err(StoreError::Batch {
                busy: true,
                message: "another writer stored an answer under one of the transaction's idempotency keys first".into(),
            });
        }
    }
    Ok(())
}

/// The answers queued, but those naming a case erased after them (the
/// erasure deletes the stored answers naming the case: it would miss these).
fn answers_to_store<'a>(
    answers: &'a [AnswerToStore],
    erased: &[(String, usize)],
) -> Vec<&'a AnswerToStore> {
    answers
        .iter()
        .enumerate()
        .filter(|(i, answer)| {
            !erased.iter().any(|(case_id, queued_before)| {
                i < queued_before && names(&answer.response, case_id)
            })
        })
        .map(|(_, answer)| answer)
        .collect()
}

/// Whether a stored answer names `case_id` (as the erasure's look-up of
/// stored answers does).
fn names(response: &[u8], case_id: &str) -> bool {
    !case_id.is_empty()
        && response
            .windows(case_id.len())
            .any(|window| window == case_id.as_bytes())
}

/// A stored answer to an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_sha256: String,
    pub response: Vec<u8>,
}

impl Tx {
    pub(crate) async fn begin(
        db: &Database,
        own: Institution,
        kept: std::sync::Arc<case_cache::KeptCases>,
    ) -> Result<Tx> {
        Ok(Tx {
            conn: db.begin_write().await?,
            own,
            backend: db.backend(),
            touched: BTreeMap::new(),
            audits: Vec::new(),
            answers: Vec::new(),
            erased: Vec::new(),
            counts: Vec::new(),
            at_savepoint: Queued::default(),
            savepoint: Savepoint::None,
            enqueued: 0,
            kept,
        })
    }

    /// Commits. A transaction that changed cases must have updated their
    /// counts first ([`Tx::update_statistics`]): committing without it would
    /// let the committee's figures drift from the cases, so it is refused.
    pub async fn commit(self) -> Result<()> {
        self.commit_with_records().await.map(drop)
    }

    /// Commits, and answers the audit records it appended, in order.
    pub(crate) async fn commit_with_records(mut self) -> Result<Vec<AuditRecord>> {
        if !self.touched.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "{} changed case(s) committed without their counts updated",
                self.touched.len()
            )));
        }
        let answers = answers_to_store(&self.answers, &self.erased);
        store_answers(&mut self.conn, &answers).await?;
        // The counts before the chain: every replica's batch takes the
        // count rows (in key order) then the chain's lock, never the reverse.
        if self.backend == Backend::Postgres && !self.counts.is_empty() {
            // Only transactions committing hold them, briefly: wait for
            // them whatever a batch's changes may wait.
            crate::sql::batch(&mut self.conn, "SET LOCAL lock_timeout = 0").await?;
        }
        statistics::add_counts_up(&mut self.conn, &self.counts).await?;
        let entries: Vec<&AuditEntry> = self.audits.iter().collect();
        let records = crate::audit::append_all_in(&mut self.conn, self.backend, &entries).await?;
        self.conn.commit().await?;
        for (case_id, _) in &self.erased {
            self.kept.forget(case_id);
        }
        Ok(records)
    }

    /// Notes that `case_id` is erased: the answers queued so far that name it
    /// are not stored.
    pub(crate) fn forget_answers_naming(&mut self, case_id: &str) {
        self.erased.push((case_id.to_owned(), self.answers.len()));
    }

    pub(crate) fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Appended to reads of rows the transaction will rewrite: SQLite's
    /// BEGIN IMMEDIATE already serialises writers; PostgreSQL needs row
    /// locks on what a transaction reads and then rewrites.
    pub(crate) fn lock(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Marks where the next change of a batch starts, releasing the
    /// previous change's savepoint in the same round trip.
    pub(crate) async fn savepoint(&mut self) -> Result<()> {
        let statements = match (self.savepoint, self.backend) {
            (Savepoint::Kept, _) => {
                "RELEASE SAVEPOINT passerelle_change; SAVEPOINT passerelle_change"
            }
            // A batch holds the row locks of every change it ran until it
            // commits: a change of it waiting on another transaction (another
            // replica's batch) for long is likely one half of a deadlock,
            // which PostgreSQL would break only after a second, again and
            // again as the batches go on. It waits a batch's commit at most
            // instead, then fails alone as busy (retried by its caller).
            (Savepoint::None, Backend::Postgres) => {
                "SET LOCAL lock_timeout = '100ms'; SAVEPOINT passerelle_change"
            }
            (Savepoint::None, Backend::Sqlite) => "SAVEPOINT passerelle_change",
            (Savepoint::Set | Savepoint::Unknown, _) => {
                return Err(StoreError::Corrupt(format!(
                    "a savepoint was set while the batch's was {:?}",
                    self.savepoint
                )));
            }
        };
        self.savepoints(statements, Savepoint::Set).await?;
        self.at_savepoint = Queued {
            audits: self.audits.len(),
            answers: self.answers.len(),
            erased: self.erased.len(),
            counts: self.counts.len(),
        };
        Ok(())
    }

    /// The transaction's connection.
    pub(crate) fn db(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Keeps the change since the savepoint (released with the next one set).
    pub(crate) fn keep_savepoint(&mut self) {
        debug_assert_eq!(self.savepoint, Savepoint::Set);
        self.savepoint = Savepoint::Kept;
    }

    /// Undoes the change since the savepoint, and lets the savepoint go.
    pub(crate) async fn rollback_to_savepoint(&mut self) -> Result<()> {
        if self.savepoint != Savepoint::Set {
            return Err(StoreError::Corrupt(format!(
                "a change was rolled back while the batch's savepoint was {:?}",
                self.savepoint
            )));
        }
        // Records appended since go with the rest of the change.
        self.audits.truncate(self.at_savepoint.audits);
        self.answers.truncate(self.at_savepoint.answers);
        self.erased.truncate(self.at_savepoint.erased);
        self.counts.truncate(self.at_savepoint.counts);
        self.savepoints(
            "ROLLBACK TO SAVEPOINT passerelle_change; RELEASE SAVEPOINT passerelle_change",
            Savepoint::None,
        )
        .await
    }

    /// The savepoint's state, as `Unknown` while a statement on it runs
    /// (a call cancelled midway leaves it so).
    pub(crate) fn savepoint_state(&self) -> Savepoint {
        self.savepoint
    }

    async fn savepoints(&mut self, statements: &'static str, then: Savepoint) -> Result<()> {
        self.savepoint = Savepoint::Unknown;
        crate::sql::batch(&mut self.conn, statements).await?;
        self.savepoint = then;
        Ok(())
    }

    /// Stores the answer to an idempotent request with the change it made:
    /// written when the transaction commits. Should another writer (another
    /// replica) have committed an answer under the same key meanwhile, the
    /// whole transaction fails as busy: retried, the call finds that answer.
    pub fn save_response(
        &mut self,
        method: &str,
        key: &str,
        request_sha256: &str,
        response: &[u8],
        at: DateTime<Utc>,
    ) {
        self.answers.push(AnswerToStore {
            method: method.to_owned(),
            key: key.to_owned(),
            request_sha256: request_sha256.to_owned(),
            response: response.to_vec(),
            at: to_micros(at),
        });
    }

    /// A consent, locked until the transaction ends.
    pub async fn consent(&mut self, consent_id: &str) -> Result<Option<Consent>> {
        let row = query(format!(
            "SELECT * FROM consents WHERE consent_id = $1{}",
            self.lock()
        ))
        .bind(consent_id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(consent_from_row).transpose()
    }

    pub async fn consents_for_case(&mut self, case_id: &str) -> Result<Vec<Consent>> {
        let rows = query("SELECT * FROM consents WHERE case_id = $1 ORDER BY state_changed_at")
            .bind(case_id)
            .fetch_all(self.db())
            .await?;
        rows.iter().map(consent_from_row).collect()
    }

    /// Inserts a consent, or takes the newer state of a known one (a consent
    /// only ever moves away from `given`, so the latest change wins).
    pub async fn upsert_consent(&mut self, c: &Consent) -> Result<()> {
        query(
            "INSERT INTO consents (consent_id, case_id, purposes, recipients, categories, evidence_kind, evidence_sha256,
                evidence_signed_at, evidence_collected_by, valid_from, valid_until, state, state_changed_at, holder)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (consent_id) DO UPDATE SET state = excluded.state, state_changed_at = excluded.state_changed_at
             WHERE excluded.state_changed_at >= consents.state_changed_at AND consents.state = 'given'",
        )
        .bind(c.consent_id.as_str())
        .bind(c.case_id.as_str())
        .bind(codes(&c.purposes, Purpose::code))
        .bind(codes(&c.recipients, Institution::code))
        .bind(codes(&c.categories, DataCategory::code))
        .bind(c.evidence.kind.code())
        .bind(&c.evidence.document_sha256)
        .bind(to_micros(c.evidence.signed_at))
        .bind(&c.evidence.collected_by)
        .bind(to_micros(c.valid_from))
        .bind(to_micros(c.valid_until))
        .bind(c.state.code())
        .bind(to_micros(c.state_changed_at))
        .bind(c.holder.code())
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Inserts a referral; `false` when the case already has one.
    pub async fn insert_referral(&mut self, r: &Referral, origin: Origin) -> Result<bool> {
        self.touch(&r.case_id).await?;
        let done = query(
            "INSERT INTO referrals (case_id, referring_network, referred_at, origin, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(r.case_id.as_str())
        .bind(r.referring_network.code())
        .bind(to_micros(r.referred_at))
        .bind(origin.code())
        .bind(json(r)?)
        .execute(self.db())
        .await?;
        Ok(done == 1)
    }

    /// Appends an orientation to its case's history (which may precede the
    /// case). `false` when another was appended at the same moment: the
    /// caller answers busy and the retry lands after it.
    pub async fn append_orientation(&mut self, o: &Orientation, origin: Origin) -> Result<bool> {
        self.touch(&o.case_id).await?;
        self.changes(&o.case_id, statistics::Part::Orientations);
        let next: i64 = query(
            "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) AS next FROM orientations WHERE case_id = $1",
        )
        .bind(o.case_id.as_str())
        .fetch_one(self.db())
        .await?
        .try_get("next")?;
        let done = query(
            "INSERT INTO orientations (case_id, seq, origin, decided_at, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (case_id, seq) DO NOTHING",
        )
        .bind(o.case_id.as_str())
        .bind(next)
        .bind(origin.code())
        .bind(to_micros(o.decided_at))
        .bind(json(o)?)
        .execute(self.db())
        .await?;
        Ok(done == 1)
    }

    /// The case's orientations, oldest first.
    pub async fn orientations(&mut self, case_id: &str) -> Result<Vec<Orientation>> {
        orientations_of(self.db(), case_id).await
    }

    /// Whether the partner holds the case: its referral came from the
    /// partner, or a message about the case (not a mere consent copy) was
    /// queued for the partner, which a later message follows in order.
    pub async fn partner_knows_case(&mut self, case_id: &str) -> Result<bool> {
        Ok(query(PARTNER_KNOWS_CASE)
            .bind(case_id)
            .bind(Origin::Partner.code())
            .fetch_optional(self.db())
            .await?
            .is_some())
    }

    pub async fn referral_exists(&mut self, case_id: &str) -> Result<bool> {
        Ok(query("SELECT 1 AS one FROM referrals WHERE case_id = $1")
            .bind(case_id)
            .fetch_optional(self.db())
            .await?
            .is_some())
    }

    pub async fn upsert_diagnosis(&mut self, d: &DiagnosisHalf) -> Result<()> {
        self.touch(&d.case_id).await?;
        self.changes(&d.case_id, statistics::Part::Diagnoses);
        query(
            "INSERT INTO diagnoses (case_id, author_institution, agreement, recorded_at, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (case_id, author_institution) DO UPDATE
             SET agreement = excluded.agreement, recorded_at = excluded.recorded_at, body = excluded.body
             WHERE excluded.recorded_at >= diagnoses.recorded_at",
        )
        .bind(d.case_id.as_str())
        .bind(d.author_institution.code())
        .bind(match d.verdict {
            Verdict::Agree => "agree",
            Verdict::Disagree => "disagree",
        })
        .bind(to_micros(d.recorded_at))
        .bind(json(d)?)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn diagnoses(&mut self, case_id: &str) -> Result<Vec<DiagnosisHalf>> {
        reads::diagnoses(self.db(), case_id).await
    }

    pub async fn insert_note(
        &mut self,
        case_id: &str,
        author: &str,
        topic: &str,
        note: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        query("INSERT INTO local_notes (case_id, author, topic, note, written_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(case_id)
            .bind(author)
            .bind(topic)
            .bind(note)
            .bind(to_micros(at))
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// A case, locked until the transaction ends: concurrent changes to it
    /// (an agent's and the partner's) apply one after the other, none lost.
    /// The case to be changed (locked on PostgreSQL) and whether its
    /// processing is restricted, in one read.
    pub async fn case_and_restriction(&mut self, case_id: &str) -> Result<Option<(Case, bool)>> {
        let sql = format!(
            "SELECT {CASE_COLUMNS}, {RESTRICTED} FROM cases WHERE case_id = $1{}",
            self.lock()
        );
        let row = query(sql).bind(case_id).fetch_optional(self.db()).await?;
        row.as_ref().map(case_and_restriction_from_row).transpose()
    }

    /// The case as this transaction sees it. On SQLite a case is read once
    /// until a commit changes it: kept as a write transaction read it, it
    /// is served to the next one while no stamp of its row is later and
    /// this transaction did not change it. Every commit a write transaction
    /// sees was stamped before it could begin, whichever connection or pool
    /// of this process made it (`sql/case_changes.rs`). Most changes read
    /// their case first, and most leave its row as it was.
    pub async fn case(&mut self, case_id: &str) -> Result<Option<Case>> {
        let Some(watch) = self.conn.watch().cloned() else {
            return self.read_case(case_id).await;
        };
        if watch.changed_in_transaction(CASE_ROW_TABLES, case_id) {
            // Its own change, not committed: neither kept nor served.
            return self.read_case(case_id).await;
        }
        let case = self
            .kept
            .clone()
            .rows
            .kept_or_read(Some(watch.stamps()), case_id, async || {
                self.read_case(case_id).await
            })
            .await?;
        Ok(case.map(|case| case.as_ref().clone()))
    }

    async fn read_case(&mut self, case_id: &str) -> Result<Option<Case>> {
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE case_id = $1{}",
            self.lock()
        );
        let row = query(sql).bind(case_id).fetch_optional(self.db()).await?;
        row.as_ref().map(case_from_row).transpose()
    }

    /// Writes the case. `entry_recorded_by` names the institution where the
    /// person signed; it is set once.
    pub async fn save_case(
        &mut self,
        c: &Case,
        entry_recorded_by: Option<Institution>,
    ) -> Result<()> {
        self.touch(&c.case_id).await?;
        query(
            "INSERT INTO cases (case_id, track, state, counsellor, social_worker, referring_network, referred_at,
                diagnosed_at, entered_at, exited_at, exit_reason, entry_recorded_by, renewals, ends_at, review_due_at,
                office_code, referral_state, referral_expires_at, referral_decided_at, refusal_reason, referent,
                queued_at, pending_entry, missed_appointments, follow_up_due_at, follow_up_in_employment,
                exclusive_started_at, entry_evidence, participant, qualification_gained)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)
             ON CONFLICT (case_id) DO UPDATE SET track = excluded.track, state = excluded.state,
                counsellor = excluded.counsellor, social_worker = excluded.social_worker,
                diagnosed_at = excluded.diagnosed_at, entered_at = excluded.entered_at,
                exited_at = excluded.exited_at, exit_reason = excluded.exit_reason,
                entry_recorded_by = COALESCE(cases.entry_recorded_by, excluded.entry_recorded_by),
                renewals = excluded.renewals, ends_at = excluded.ends_at, review_due_at = excluded.review_due_at,
                office_code = excluded.office_code, referral_state = excluded.referral_state,
                referral_expires_at = excluded.referral_expires_at, referral_decided_at = excluded.referral_decided_at,
                refusal_reason = excluded.refusal_reason, referent = excluded.referent, queued_at = excluded.queued_at,
                pending_entry = excluded.pending_entry, missed_appointments = excluded.missed_appointments,
                follow_up_due_at = excluded.follow_up_due_at, follow_up_in_employment = excluded.follow_up_in_employment,
                exclusive_started_at = excluded.exclusive_started_at, entry_evidence = excluded.entry_evidence,
                participant = excluded.participant, qualification_gained = excluded.qualification_gained",
        )
        .bind(c.case_id.as_str())
        .bind(c.track.code())
        .bind(c.state.code())
        .bind(c.pair.as_ref().map(|p| p.counsellor.clone()))
        .bind(c.pair.as_ref().map(|p| p.social_worker.clone()))
        .bind(c.referring_network.code())
        .bind(to_micros(c.referred_at))
        .bind(c.diagnosed_at.map(to_micros))
        .bind(c.entered_at.map(to_micros))
        .bind(c.exited_at.map(to_micros))
        .bind(c.exit_reason.map(|r| r.code()))
        .bind(entry_recorded_by.map(|i| i.code()))
        .bind(i64::from(c.renewals))
        .bind(c.ends_at.map(to_micros))
        .bind(c.review_due_at.map(to_micros))
        .bind(&c.office_code)
        .bind(c.referral_state.code())
        .bind(to_micros(c.referral_expires_at))
        .bind(c.referral_decided_at.map(to_micros))
        .bind(c.refusal_reason.clone())
        .bind(c.referent.map(|r| r.code()))
        .bind(c.queued_at.map(to_micros))
        .bind(c.pending_entry.as_ref().map(json).transpose()?)
        .bind(i64::from(c.missed_appointments))
        .bind(c.follow_up_due_at.map(to_micros))
        .bind(c.follow_up_in_employment.map(i64::from))
        .bind(c.exclusive_started_at.map(to_micros))
        .bind(json(&c.entry_evidence)?)
        .bind(c.participant.as_ref().map(json).transpose()?)
        .bind(i64::from(c.qualification_gained))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// People a counsellor follows now (active global support).
    /// The people `counsellor` follows in global support at `now`: a case
    /// whose period ended before `now` frees its place at once, whenever the
    /// deadline pass gets to close it (a restricted one keeps it, as it stays
    /// open).
    pub async fn portfolio(&mut self, counsellor: &str, now: DateTime<Utc>) -> Result<u32> {
        let n: i64 = query(
            "SELECT COUNT(*) AS n FROM cases
             WHERE state = 'active' AND track = 'global' AND counsellor = $1
               AND (ends_at IS NULL OR ends_at > $2
                    OR case_id IN (SELECT case_id FROM restrictions))",
        )
        .bind(counsellor)
        .bind(to_micros(now))
        .fetch_one(self.db())
        .await?
        .try_get("n")?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The case waiting longest for a place with `counsellor`, locked.
    pub async fn first_queued(&mut self, counsellor: &str) -> Result<Option<Case>> {
        let row = query(format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE state = 'queued' AND counsellor = $1
             ORDER BY queued_at, case_id LIMIT 1{}",
            self.lock()
        ))
        .bind(counsellor)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(case_from_row).transpose()
    }

    /// A counsellor's entry in the working-time register, locked.
    pub async fn counsellor(&mut self, counsellor: &str) -> Result<Option<CounsellorEntry>> {
        let row = query(format!(
            "SELECT counsellor, working_time_per_mille, office_code FROM counsellors WHERE counsellor = $1{}",
            self.lock()
        ))
        .bind(counsellor)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| {
            Ok(CounsellorEntry {
                counsellor: r.try_get("counsellor")?,
                working_time_per_mille: u32::try_from(
                    r.try_get::<i64, _>("working_time_per_mille")?,
                )
                .map_err(|_| StoreError::Corrupt("negative working time".into()))?,
                office_code: r.try_get("office_code")?,
            })
        })
        .transpose()
    }

    pub async fn upsert_counsellor(
        &mut self,
        entry: &CounsellorEntry,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        query(
            "INSERT INTO counsellors (counsellor, working_time_per_mille, office_code, updated_by, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (counsellor) DO UPDATE SET working_time_per_mille = excluded.working_time_per_mille,
                office_code = excluded.office_code, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        )
        .bind(&entry.counsellor)
        .bind(i64::from(entry.working_time_per_mille))
        .bind(&entry.office_code)
        .bind(by)
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// The quota an office obtained for `year` on its express request.
    pub async fn office_quota(&mut self, office_code: &str, year: i32) -> Result<Option<u32>> {
        let row = query("SELECT quota FROM office_quotas WHERE office_code = $1 AND year = $2")
            .bind(office_code)
            .bind(i64::from(year))
            .fetch_optional(self.db())
            .await?;
        row.map(|r| {
            u32::try_from(r.try_get::<i64, _>("quota")?)
                .map_err(|_| StoreError::Corrupt("negative quota".into()))
        })
        .transpose()
    }

    pub async fn set_office_quota(
        &mut self,
        office_code: &str,
        year: i32,
        quota: u32,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        query(
            "INSERT INTO office_quotas (office_code, year, quota, granted_by, granted_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (office_code, year) DO UPDATE SET quota = excluded.quota,
                granted_by = excluded.granted_by, granted_at = excluded.granted_at",
        )
        .bind(office_code)
        .bind(i64::from(year))
        .bind(i64::from(quota))
        .bind(by)
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Exclusive social support started in `[from, to)`: at `office_code`, and in all.
    pub async fn exclusive_starts(
        &mut self,
        office_code: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<ExclusiveStarts> {
        let row = query(
            "SELECT COUNT(CASE WHEN office_code = $1 THEN 1 END) AS office, COUNT(*) AS total
             FROM cases WHERE exclusive_started_at >= $2 AND exclusive_started_at < $3",
        )
        .bind(office_code)
        .bind(to_micros(from))
        .bind(to_micros(to))
        .fetch_one(self.db())
        .await?;
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(ExclusiveStarts {
            office: count(row.try_get("office")?),
            all: count(row.try_get("total")?),
        })
    }

    /// Writes a plan: this institution's own in full, or the partner's summary.
    pub async fn save_plan<T: serde::Serialize>(
        &mut self,
        case_id: &str,
        kind: PlanKind,
        origin: Origin,
        body: &T,
        updated_at: DateTime<Utc>,
    ) -> Result<()> {
        // The committee's counts read this side's own plans only: a
        // partner's summary changes none, so its case's counts are not
        // read before and after (eight statements of a ReceivePlanSummary's
        // fourteen). Each kind has one holder, so a summary never replaces
        // an own plan; the guard below keeps it so whatever a caller sends.
        if origin == Origin::Local {
            self.touch(case_id).await?;
            self.changes(case_id, statistics::Part::OwnPlan);
        }
        query(
            "INSERT INTO plans (case_id, kind, origin, body, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (case_id, kind) DO UPDATE SET origin = excluded.origin, body = excluded.body,
                updated_at = excluded.updated_at
             WHERE plans.origin = excluded.origin",
        )
        .bind(case_id)
        .bind(kind.code())
        .bind(origin.code())
        .bind(json(body)?)
        .bind(to_micros(updated_at))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Queues a message for the partner in this same transaction.
    pub async fn enqueue(
        &mut self,
        message_key: &str,
        message: &Outbound,
        at: DateTime<Utc>,
    ) -> Result<()> {
        // The context of the call that queues it: the delivery continues its trace.
        query(
            "INSERT INTO outbox (message_key, case_id, kind, payload, created_at, trace_context)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(message_key)
        .bind(message.case_id())
        .bind(message.kind())
        .bind(json(message)?)
        .bind(to_micros(at))
        .bind(passerelle_telemetry::propagation::current_as_text())
        .execute(self.db())
        .await?;
        self.enqueued += 1;
        Ok(())
    }

    /// Messages queued in the outbox through this transaction so far
    /// (compared before and after a change: whether it queued any).
    pub fn enqueued(&self) -> u64 {
        self.enqueued
    }
}

/// The boundary's consent port.
impl passerelle_boundary::ConsentRegister for InstitutionStore {
    fn objected<'a>(
        &'a self,
        case_id: &'a str,
        purpose: Purpose,
    ) -> passerelle_boundary::layer::BoxFuture<'a, std::result::Result<bool, String>> {
        Box::pin(async move {
            InstitutionStore::objected(self, case_id, purpose)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn consents_for_case<'a>(
        &'a self,
        case_id: &'a str,
    ) -> passerelle_boundary::layer::BoxFuture<'a, std::result::Result<Vec<Consent>, String>> {
        Box::pin(async move {
            InstitutionStore::consents_for_case(self, case_id)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part added to a case's one read must be watched too, or what is
    /// kept of the case would miss its changes.
    #[test]
    fn every_table_a_case_is_read_from_is_watched() {
        let sql = reads::case_parts_sql();
        let tables: BTreeSet<&str> = sql
            .split("FROM ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert!(tables.len() >= 8, "{tables:?}");
        for table in tables
            .into_iter()
            .chain(CASE_ROW_TABLES.iter().copied())
            .chain(CONSENT_TABLES.iter().copied())
        {
            assert!(CASE_TABLES.contains(&table), "{table} is not watched");
        }
    }
}
