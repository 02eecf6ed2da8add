//! Exclusive social support (axe 3), run by the Département alone: it
//! starts after the shared diagnosis with the validated social evaluation,
//! within each office's yearly quota; the employment side hears only that
//! its follow-up is suspended, renewed or resumed.

use std::ops::Deref;

use chrono::{DateTime, Datelike, Utc};
use passerelle_casework::Casework;
use passerelle_casework::crossings as rpc;
use passerelle_domain::{
    Case, DomainError, Evidence, ExclusiveOutcome, FieldError, Outbound, Purpose, SuspensionNotice,
};
use passerelle_runtime::{AppError, Call};
use passerelle_storage::institution::Tx;
use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, AppError>;

/// An office's axe 3 quota for a year, and its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaView {
    pub quota: u32,
    pub used: u32,
}

/// The shared casework, with the Département's exclusive social support.
#[derive(Debug, Clone, Copy)]
pub struct ExclusiveSupport<'a>(pub &'a Casework);

impl Deref for ExclusiveSupport<'_> {
    type Target = Casework;
    fn deref(&self) -> &Casework {
        self.0
    }
}

impl ExclusiveSupport<'_> {
    fn axe3(&self) -> Result<&passerelle_domain::agreement::ExclusiveSocialSupport> {
        self.agreement
            .exclusive_social_support
            .as_ref()
            .ok_or_else(|| {
                AppError(DomainError::FailedPrecondition(format!(
                    "agreement {} sets no exclusive social support",
                    self.agreement.id
                )))
            })
    }

    /// The agreement's axe 3, once the case is known here and a consent lets
    /// the employment side hear of its suspension (a refusal is audited).
    async fn may_tell_suspension(
        &self,
        call: Call<'_>,
        case_id: &str,
    ) -> Result<passerelle_domain::agreement::ExclusiveSocialSupport> {
        let axe3 = self.axe3()?.clone();
        self.known_case(case_id).await?;
        let purpose = Purpose::ExclusiveSocialSupport;
        let rpc = rpc::RECEIVE_SUSPENSION_NOTICE;
        self.check_outbound(call.caller, case_id, purpose, rpc)
            .await?;
        Ok(axe3)
    }

    /// Starts exclusive social support within the office's yearly quota; the
    /// employment side is told its follow-up is suspended, and nothing more.
    pub async fn start_exclusive_support(
        &self,
        call: Call<'_>,
        case_id: &str,
        social_evaluation: Evidence,
    ) -> Result<Case> {
        self.check_in_term("entry into exclusive social support")?;
        let axe3 = self.may_tell_suspension(call, case_id).await?;
        let jobseeker_number = self
            .store
            .referral(case_id)
            .await?
            .and_then(|r| r.person.jobseeker_number)
            .ok_or_else(|| {
                AppError(DomainError::FailedPrecondition(
                    "exclusive social support is for registered jobseekers: the referral carries no jobseeker number".into(),
                ))
            })?;
        let now = self.clock.now();
        let (year_start, next_year) = year_bounds(now);
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
            let starts = tx
                .exclusive_starts(&case.office_code, year_start, next_year)
                .await?;
            let raised = tx.office_quota(&case.office_code, now.year()).await?;
            axe3.admit(starts.office, starts.all, raised)
                .map_err(|why| {
                    AppError(DomainError::LimitReached(format!(
                        "{why} (office {})",
                        case.office_code
                    )))
                })?;
            case.start_exclusive(
                &call.caller.agent,
                social_evaluation.clone(),
                now,
                axe3.ends_at(now, 0),
            )?;
            let notice = SuspensionNotice {
                case_id: case_id.into(),
                jobseeker_number: jobseeker_number.clone(),
                suspended_from: now,
                suspended_until: case.ends_at,
                renewals: 0,
                outcome: None,
                changed_at: now,
            };
            let tell = Some(Outbound::Suspension(notice));
            self.save_and_tell(tx, &case, false, tell).await?;
            tracing::info!(case_id, office = %case.office_code, "exclusive social support started");
            Ok(case)
        })
        .await
    }

    /// The joint decision at the end of exclusive social support.
    pub async fn decide_exclusive_end(
        &self,
        call: Call<'_>,
        case_id: &str,
        outcome: ExclusiveOutcome,
    ) -> Result<Case> {
        let axe3 = self.may_tell_suspension(call, case_id).await?;
        let referral = self.store.referral(case_id).await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
            let started = case.entered_at;
            case.decide_exclusive_end(outcome, &axe3, now)?;
            let notice = SuspensionNotice {
                case_id: case_id.into(),
                jobseeker_number: referral
                    .as_ref()
                    .and_then(|r| r.person.jobseeker_number.clone())
                    .unwrap_or_default(),
                suspended_from: started.unwrap_or(now),
                suspended_until: (outcome == ExclusiveOutcome::Renew).then_some(case.ends_at).flatten(),
                renewals: case.renewals,
                outcome: (outcome != ExclusiveOutcome::Renew).then_some(outcome),
                changed_at: now,
            };
            let tell = Some(Outbound::Suspension(notice));
            self.save_and_tell(tx, &case, false, tell).await?;
            tracing::info!(case_id, outcome = %outcome, by = %call.caller.agent, "exclusive social support decided");
            Ok(case)
        })
        .await
    }

    /// An office's express request for more axe 3 entries in a year, granted.
    pub async fn set_office_quota(
        &self,
        call: Call<'_>,
        office_code: &str,
        year: i32,
        quota: u32,
    ) -> Result<QuotaView> {
        let axe3 = self.axe3()?.clone();
        if !axe3.office_may_request_more {
            return Err(AppError(DomainError::FailedPrecondition(format!(
                "agreement {} does not let an office ask for more",
                self.agreement.id
            ))));
        }
        match self.agreement.office(office_code) {
            Some(o) if o.network() == passerelle_domain::Network::Social => {}
            _ => {
                return Err(FieldError::new(
                    "office_code",
                    format!("is not a social office of agreement {}", self.agreement.id),
                )
                .into());
            }
        }
        passerelle_domain::bounds::year("year", year)?;
        let Some(from) = chrono::NaiveDate::from_ymd_opt(year, 1, 1) else {
            return Err(FieldError::new("year", "is not a valid year").into());
        };
        axe3.check_raised_quota(quota)?;
        let now = self.clock.now();
        let (year_start, next_year) = year_bounds(from.and_time(chrono::NaiveTime::MIN).and_utc());
        self.once(call, async |tx: &mut Tx| {
            tx.set_office_quota(office_code, year, quota, &call.caller.agent, now).await?;
            let used = tx.exclusive_starts(office_code, year_start, next_year).await?.office;
            tracing::info!(office_code, year, quota, by = %call.caller.agent, "office quota raised");
            Ok(QuotaView { quota, used })
        })
        .await
    }
}

/// The calendar year of `at`, as a half-open interval.
fn year_bounds(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |y| {
        chrono::NaiveDate::from_ymd_opt(y, 1, 1)
            .unwrap_or_default()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
    };
    (start(at.year()), start(at.year() + 1))
}
