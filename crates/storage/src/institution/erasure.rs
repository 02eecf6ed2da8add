//! Erasing what is held about a person (GDPR art. 17, and the storage
//! limitation of art. 5(1)(e)): every row that names the case goes, in one
//! transaction, and its part of the committee's counts is kept apart
//! without it, so the published figures do not move and a recount of the
//! remaining cases plus the kept part still equals them. The audit log
//! stays whole: it holds no value, only the case's pseudonymous identifier.

use std::collections::{BTreeMap, BTreeSet};

use passerelle_boundary::audit::{AuditEntry, Direction};
use passerelle_domain::Referral;

use crate::sql::query;
use chrono::{DateTime, Utc};
use passerelle_domain::statistics::summed;
use passerelle_domain::{Case, CaseState};

use super::statistics::{CountTable, add_counts_to};
use super::{CASE_COLUMNS, InstitutionStore, Tx, case_from_row};
use crate::{Result, from_json, from_micros, json, to_micros};

/// People oriented and never referred whose last orientation is on or
/// before `$1`: only those with an orientation that old are looked at
/// (`orientations_by_date`).
pub(crate) const PURGE_UNREFERRED_ORIENTATIONS: &str =
    "SELECT case_id, MAX(decided_at) AS last FROM orientations
     WHERE case_id IN (SELECT case_id FROM orientations WHERE decided_at <= $1)
       AND case_id NOT IN (SELECT case_id FROM cases)
       AND case_id NOT IN (SELECT case_id FROM restrictions)
     GROUP BY case_id HAVING MAX(decided_at) <= $1 ORDER BY case_id";

/// Erased cases whose consent records are kept, ended on or before `$1`,
/// the longest ended first: only those are looked at, in the index's order
/// (`erased_cases_keeping_consents`), not every case ever erased.
pub(crate) const PURGE_KEPT_CONSENTS: &str =
    "SELECT case_id, ended_at FROM erased_cases WHERE consents_kept = 1 AND ended_at <= $1
     ORDER BY ended_at, case_id";

/// Why a case's personal data were erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasureReason {
    /// At the person's request, by this institution's DPO (art. 17).
    Request,
    /// The partner erased its copy at the person's request and told this side (art. 19).
    PartnerNotice,
    /// The agreement's retention passed (art. 5(1)(e)).
    Retention,
}

impl ErasureReason {
    pub fn code(self) -> &'static str {
        match self {
            ErasureReason::Request => "request",
            ErasureReason::PartnerNotice => "partner_notice",
            ErasureReason::Retention => "retention",
        }
    }
}

/// What the purge would erase, and why now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCandidate {
    pub case_id: String,
    pub ended_at: DateTime<Utc>,
    /// `false`: the case's data; `true`: its consent records, kept longer.
    pub consents_only: bool,
}

/// Tables that hold a case's personal data, by the case's identifier.
const CASE_TABLES: [&str; 8] = [
    "referrals",
    "diagnoses",
    "local_notes",
    "plans",
    "outbox",
    "restrictions",
    "objections",
    "orientations",
];

impl Tx {
    /// Erases everything held about the person of `case_id` (its consent
    /// records too unless `keep_consents`). `false` when this side held no
    /// such case (never, or no longer): erasing twice changes nothing.
    pub async fn erase_case(
        &mut self,
        case_id: &str,
        reason: ErasureReason,
        keep_consents: bool,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        // Changes made earlier in this transaction are counted first, so
        // what is kept apart is the case as it ends.
        self.update_statistics().await?;
        let case = self.case(case_id).await?;
        let counts: BTreeMap<_, _> = summed(self.counts_of(case_id).await?);
        add_counts_to(self.db(), CountTable::Erased, &counts).await?;
        for table in CASE_TABLES {
            query(format!("DELETE FROM {table} WHERE case_id = $1"))
                .bind(case_id)
                .execute(self.db())
                .await?;
        }
        // Stored answers of idempotent calls name the case they were about.
        let answers = if self.is_postgres() {
            "DELETE FROM idempotency WHERE position(convert_to($1, 'UTF8') in response) > 0"
        } else {
            "DELETE FROM idempotency WHERE instr(response, CAST($1 AS BLOB)) > 0"
        };
        query(answers).bind(case_id).execute(self.db()).await?;
        // And those of this transaction, stored only when it commits.
        self.forget_answers_naming(case_id);
        if !keep_consents {
            self.erase_consents(case_id).await?;
        }
        query("DELETE FROM cases WHERE case_id = $1")
            .bind(case_id)
            .execute(self.db())
            .await?;
        let Some(case) = case else {
            return Ok(false);
        };
        query(
            "INSERT INTO erased_cases (case_id, ended_at, erased_at, reason, consents_kept)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(case_id)
        .bind(case.ended_at().map(to_micros))
        .bind(to_micros(at))
        .bind(reason.code())
        .bind(i64::from(keep_consents))
        .execute(self.db())
        .await?;
        Ok(true)
    }

    /// Erases the consent records of a case (and their copies waiting to be sent).
    pub async fn erase_consents(&mut self, case_id: &str) -> Result<()> {
        query("DELETE FROM consents WHERE case_id = $1")
            .bind(case_id)
            .execute(self.db())
            .await?;
        query("UPDATE erased_cases SET consents_kept = 0 WHERE case_id = $1")
            .bind(case_id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// The referral of a case as this transaction sees it.
    pub async fn referral(&mut self, case_id: &str) -> Result<Option<Referral>> {
        let row = query(format!(
            "SELECT body FROM referrals WHERE case_id = $1{}",
            self.lock()
        ))
        .bind(case_id)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| from_json(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    /// Rewrites a stored referral (a rectification); the case's counts follow.
    pub async fn replace_referral(&mut self, referral: &Referral) -> Result<()> {
        self.touch(&referral.case_id).await?;
        query("UPDATE referrals SET body = $1 WHERE case_id = $2")
            .bind(json(referral)?)
            .bind(referral.case_id.as_str())
            .execute(self.db())
            .await?;
        self.referral_rewritten(referral);
        Ok(())
    }

    /// Every field path the audit log shows this side sent the partner
    /// about the case: what the partner received, and so must hear of again
    /// if it changes (GDPR art. 19).
    pub async fn fields_sent(&mut self, case_id: &str) -> Result<BTreeSet<String>> {
        let rows = query(
            "SELECT entry_json FROM audit_log WHERE case_id = $1 AND decision = 'allowed' ORDER BY seq",
        )
        .bind(case_id)
        .fetch_all(self.db())
        .await?;
        let mut fields = BTreeSet::new();
        for row in &rows {
            let entry: AuditEntry = from_json(&row.try_get::<String, _>("entry_json")?)?;
            if entry.direction == Direction::Outbound {
                fields.extend(entry.fields);
            }
        }
        Ok(fields)
    }

    /// Records `entry` in the audit chain as part of this transaction (it
    /// is appended when the transaction commits; a change rolled back to its
    /// savepoint takes its records with it).
    pub fn append_audit(&mut self, entry: &AuditEntry) {
        self.append_audits(&[entry]);
    }

    /// Records `entries`, in order, as part of this transaction.
    pub fn append_audits(&mut self, entries: &[&AuditEntry]) {
        self.audits.extend(entries.iter().map(|&e| e.clone()));
    }

    /// Restricts processing of the case (GDPR art. 18); `false` if it already was.
    pub async fn restrict(&mut self, case_id: &str, since: DateTime<Utc>) -> Result<bool> {
        let done = query(
            "INSERT INTO restrictions (case_id, since) VALUES ($1, $2) ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(case_id)
        .bind(to_micros(since))
        .execute(self.db())
        .await?;
        Ok(done == 1)
    }

    /// Lifts a restriction; `false` if there was none.
    pub async fn lift_restriction(&mut self, case_id: &str) -> Result<bool> {
        let done = query("DELETE FROM restrictions WHERE case_id = $1")
            .bind(case_id)
            .execute(self.db())
            .await?;
        Ok(done == 1)
    }

    /// Records the person's objection to `purpose` for the case (GDPR art. 21).
    pub async fn object(
        &mut self,
        case_id: &str,
        purpose: passerelle_domain::Purpose,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = query(
            "INSERT INTO objections (case_id, purpose, objected_at) VALUES ($1, $2, $3)
             ON CONFLICT (case_id, purpose) DO NOTHING",
        )
        .bind(case_id)
        .bind(purpose.code())
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(done == 1)
    }

    /// Whether this side erased the case's data already.
    pub async fn was_erased(&mut self, case_id: &str) -> Result<bool> {
        Ok(
            query("SELECT 1 AS one FROM erased_cases WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(self.db())
                .await?
                .is_some(),
        )
    }
}

impl InstitutionStore {
    /// Whether processing of the case is restricted (GDPR art. 18).
    pub async fn restricted(&self, case_id: &str) -> Result<bool> {
        Ok(
            query("SELECT 1 AS one FROM restrictions WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(self.database())
                .await?
                .is_some(),
        )
    }

    /// Whether the person objected to `purpose` for the case (GDPR art. 21).
    pub async fn objected(
        &self,
        case_id: &str,
        purpose: passerelle_domain::Purpose,
    ) -> Result<bool> {
        Ok(
            query("SELECT 1 AS one FROM objections WHERE case_id = $1 AND purpose = $2")
                .bind(case_id)
                .bind(purpose.code())
                .fetch_optional(self.database())
                .await?
                .is_some(),
        )
    }

    /// What the agreement's retention lets go at `now`: ended cases whose
    /// data are `data_months` past their end, and erased cases whose
    /// consent records are `consent_months` past it. At most `limit`.
    pub async fn purge_candidates(
        &self,
        now: DateTime<Utc>,
        data_months: u32,
        consent_months: u32,
        limit: usize,
    ) -> Result<Vec<PurgeCandidate>> {
        let due = |months: u32, ended: DateTime<Utc>| {
            ended
                .checked_add_months(chrono::Months::new(months))
                .is_some_and(|until| until <= now)
        };
        // The latest date a case can have ended on and be due narrows the
        // scan; the case's own rule decides.
        let cutoff = latest_due_end(now, data_months);
        let rows = query(format!(
            "SELECT {CASE_COLUMNS} FROM cases WHERE state IN ('exited', 'not_entered')
               AND COALESCE(exited_at, referral_decided_at, diagnosed_at, referred_at) <= $1
               AND case_id NOT IN (SELECT case_id FROM restrictions)
             ORDER BY case_id"
        ))
        .bind(to_micros(cutoff))
        .large()
        .fetch_all(self.database())
        .await?;
        let mut out = vec![];
        for row in &rows {
            let case: Case = case_from_row(row)?;
            if !matches!(case.state, CaseState::Exited | CaseState::NotEntered) {
                continue;
            }
            if let Some(ended) = case.ended_at()
                && due(data_months, ended)
            {
                out.push(PurgeCandidate {
                    case_id: case.case_id.to_string(),
                    ended_at: ended,
                    consents_only: false,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        // People oriented into a parcours and never referred: their
        // orientations go once the last one is as old as a case's data.
        let unreferred = query(PURGE_UNREFERRED_ORIENTATIONS)
            .bind(to_micros(cutoff))
            .large()
            .fetch_all(self.database())
            .await?;
        for row in &unreferred {
            let last = from_micros(row.try_get("last")?)?;
            if due(data_months, last) {
                out.push(PurgeCandidate {
                    case_id: row.try_get("case_id")?,
                    ended_at: last,
                    consents_only: false,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        let kept = query(PURGE_KEPT_CONSENTS)
            .bind(to_micros(latest_due_end(now, consent_months)))
            .large()
            .fetch_all(self.database())
            .await?;
        for row in &kept {
            let ended: Option<i64> = row.try_get("ended_at")?;
            if let Some(ended) = ended.map(from_micros).transpose()?
                && due(consent_months, ended)
            {
                out.push(PurgeCandidate {
                    case_id: row.try_get("case_id")?,
                    ended_at: ended,
                    consents_only: true,
                });
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// The latest end a record can have and be `months` past it at `now`: the
/// scans' bound, inclusive. Not simply `now - months`: adding months clamps
/// to the month's last day (31 January + 1 month = 28 February), so records
/// that ended up to three days after `now - months` can already be due
/// (on 28 February, those of 29, 30 and 31 January). A bound a few days
/// wide costs a few rows read; the exact rule is applied to each.
fn latest_due_end(now: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    now.checked_sub_months(chrono::Months::new(months))
        .map_or(now, |back| back + chrono::Duration::days(3))
}

#[cfg(test)]
mod tests {
    use super::latest_due_end;
    use chrono::{DateTime, Duration, Months, TimeZone, Utc};

    fn at(year: i32, month: u32, day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, hour, 0, 0)
            .single()
            .expect("date")
    }

    fn due(ended: DateTime<Utc>, months: u32, now: DateTime<Utc>) -> bool {
        ended
            .checked_add_months(Months::new(months))
            .is_some_and(|until| until <= now)
    }

    /// Every day of four years (a leap year among them), at three times of
    /// day, for the retentions agreements use: whatever ended within five
    /// days either side of `now - months` (hour by hour) and is due lies
    /// within the bound, and the bound is at most three days past
    /// `now - months`.
    #[test]
    fn every_record_due_lies_within_the_scans_bound() {
        let start = at(2027, 1, 1, 0);
        let mut missed = vec![];
        for day in 0..(4 * 366) {
            for hour in [0, 11, 23] {
                let now = start + Duration::days(day) + Duration::hours(hour);
                for months in [1, 2, 3, 6, 12, 18, 24, 36, 60] {
                    let bound = latest_due_end(now, months);
                    let back = now.checked_sub_months(Months::new(months)).expect("date");
                    assert!(bound - back <= Duration::days(3));
                    for offset in -5 * 24..=5 * 24 {
                        let ended = back + Duration::hours(offset);
                        if due(ended, months, now) && ended > bound {
                            missed.push((now, months, ended));
                        }
                    }
                }
            }
        }
        assert!(
            missed.is_empty(),
            "{} missed, first {:?}",
            missed.len(),
            missed.first()
        );
    }

    /// What `now - months` alone would miss: on 28 February, a record of
    /// 31 January is one month old.
    #[test]
    fn a_month_after_the_thirty_first_of_january_is_the_end_of_february() {
        let now = at(2027, 2, 28, 12);
        let ended = at(2027, 1, 31, 12);
        assert!(due(ended, 1, now));
        assert!(ended > now.checked_sub_months(Months::new(1)).expect("date"));
        assert!(ended <= latest_due_end(now, 1));
    }
}
