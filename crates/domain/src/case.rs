//! The life of one case: referral and its decision, shared diagnosis, entry
//! (or the waiting list), support and its renewals, exit; and exclusive
//! social support (axe 3), which runs the same case on the social side alone.

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

use crate::agreement::{DiagnosisRule, SupportPeriod};
use crate::consent::Evidence;
use crate::error::{DomainError, FieldError};
use crate::ids::{CaseId, ConsentId};
use crate::person::{Barrier, Contact, EmploymentSummary, PersonIdentity};
use crate::vocabulary::{Institution, Network, coded_enum};

pub use crate::terms::{CheckAnswer, ExitReason, ExitType, Referent, ReferralState};

/// The referral form (fiche de liaison).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub case_id: CaseId,
    pub referring_network: Network,
    pub referred_by: String,
    pub office_code: String,
    pub person: PersonIdentity,
    pub contact: Contact,
    pub barriers: Vec<Barrier>,
    pub employment: EmploymentSummary,
    pub referred_at: DateTime<Utc>,
    pub consent_id: ConsentId,
    /// The agreement's pre-referral checks or orientation criteria.
    #[serde(default)]
    pub checks: Vec<CheckAnswer>,
    /// The approved association that referred under the Département's delegation.
    #[serde(default)]
    pub association_id: Option<String>,
    /// Where the agreement's parcours apply: the orientation the referral
    /// comes from (without its grid).
    #[serde(default)]
    pub orientation: Option<crate::orientation::Orientation>,
}

/// What an agent submits; the service adds who, when and from which network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralDraft {
    pub case_id: CaseId,
    pub office_code: String,
    pub person: PersonIdentity,
    pub contact: Contact,
    pub barriers: Vec<Barrier>,
    pub employment: EmploymentSummary,
    pub consent_id: ConsentId,
    pub checks: Vec<CheckAnswer>,
}

impl ReferralDraft {
    pub fn complete(
        self,
        referring_network: Network,
        referred_by: String,
        referred_at: DateTime<Utc>,
        association_id: Option<String>,
    ) -> Referral {
        Referral {
            case_id: self.case_id,
            referring_network,
            referred_by,
            office_code: self.office_code,
            person: self.person,
            contact: self.contact,
            barriers: self.barriers,
            employment: self.employment,
            referred_at,
            consent_id: self.consent_id,
            checks: self.checks,
            association_id,
            orientation: None,
        }
    }
}

/// What an agent submits of its half of the diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisDraft {
    pub case_id: CaseId,
    pub barriers: Vec<Barrier>,
    pub verdict: Verdict,
}

coded_enum!(
    /// A professional's verdict on the shared diagnosis: whether the person should enter.
    Verdict { Agree => "agree", Disagree => "disagree" }
);

/// One institution's half of the shared diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosisHalf {
    pub case_id: CaseId,
    pub author_institution: Institution,
    pub author: String,
    pub barriers: Vec<Barrier>,
    #[serde(alias = "agreement")]
    pub verdict: Verdict,
    pub recorded_at: DateTime<Utc>,
}

coded_enum!(Track { Global => "global", SocialExclusive => "social_exclusive" });

coded_enum!(
    CaseState {
        Referred => "referred",
        Diagnosed => "diagnosed",
        /// Signed in, waiting for a place in the counsellor's portfolio.
        Queued => "queued",
        Active => "active",
        Exited => "exited",
        NotEntered => "not_entered",
    }
);

coded_enum!(
    /// The joint decision at the end of a period of exclusive social support.
    ExclusiveOutcome {
        Renew => "renew",
        MoveToGlobalSupport => "move_to_global_support",
        ReturnToEmploymentTrack => "return_to_employment_track",
    }
);

/// The counsellor + social worker pair (binôme).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub counsellor: String,
    pub social_worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEntry {
    pub pair: Pair,
    pub track: Track,
    pub entered_at: DateTime<Utc>,
    /// Digests of what the person signed (and, where the agreement asks,
    /// the interview conclusion); the documents stay where they were signed.
    pub evidence: Vec<Evidence>,
    pub referent: Referent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseExit {
    pub reason: ExitReason,
    pub exited_at: DateTime<Utc>,
}

/// Support renewed after the pair's joint review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRenewal {
    /// Renewals granted so far, this one included.
    pub renewals: u32,
    pub renewed_at: DateTime<Utc>,
    pub exceptional: bool,
}

/// The receiving institution's answer to a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralDecision {
    /// Accepted, refused or expired.
    pub state: ReferralState,
    /// A code of the agreement's refusal reasons, when refused.
    pub refusal_reason: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// A change of state told to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseEvent {
    Entered(CaseEntry),
    /// Signed in, put on the waiting list of a full portfolio.
    Queued {
        pair: Pair,
        queued_at: DateTime<Utc>,
    },
    Exited(CaseExit),
    Renewed(CaseRenewal),
    AppointmentMissed {
        at: DateTime<Utc>,
    },
}

coded_enum!(
    /// What the pair (or the office) must do by a date.
    DueKind {
        Review => "review",
        EndOfPeriod => "end_of_period",
        ReferralReminder => "referral_reminder",
        ReferralExpiry => "referral_expiry",
        DiagnosisValidation => "diagnosis_validation",
        FollowUp => "follow_up",
    }
);

/// What the employment side is told of exclusive social support: that its
/// follow-up of the jobseeker is suspended, until when, and how it ended.
/// Nothing of the person's situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionNotice {
    pub case_id: CaseId,
    pub jobseeker_number: String,
    pub suspended_from: DateTime<Utc>,
    /// `None` once lifted.
    pub suspended_until: Option<DateTime<Utc>>,
    pub renewals: u32,
    /// Set when the suspension is lifted by the joint decision.
    pub outcome: Option<ExclusiveOutcome>,
    pub changed_at: DateTime<Utc>,
}

coded_enum!(
    /// Why processing of a case ends at the person's request.
    EndOfProcessingReason { ConsentWithdrawn => "consent_withdrawn" }
);

/// Processing of a case ends at the person's request, on both sides: all
/// the partner is told is the case, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfProcessing {
    pub case_id: CaseId,
    pub ended_at: DateTime<Utc>,
    pub reason: EndOfProcessingReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub case_id: CaseId,
    pub track: Track,
    pub state: CaseState,
    pub pair: Option<Pair>,
    pub referring_network: Network,
    pub referred_at: DateTime<Utc>,
    pub diagnosed_at: Option<DateTime<Utc>>,
    pub entered_at: Option<DateTime<Utc>>,
    pub exited_at: Option<DateTime<Utc>>,
    pub exit_reason: Option<ExitReason>,
    /// Renewals granted so far.
    #[serde(default)]
    pub renewals: u32,
    /// End of the current support period.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The formal review the agreement requires, until it has taken place.
    #[serde(default)]
    pub review_due_at: Option<DateTime<Utc>>,
    /// The referring office (agency, CDAS or MDS).
    pub office_code: String,
    pub referral_state: ReferralState,
    /// A pending referral expires then.
    pub referral_expires_at: DateTime<Utc>,
    pub referral_decided_at: Option<DateTime<Utc>>,
    pub refusal_reason: Option<String>,
    pub referent: Option<Referent>,
    /// On the waiting list since.
    pub queued_at: Option<DateTime<Utc>>,
    /// The entry signed while the portfolio was full, applied when a place frees.
    pub pending_entry: Option<CaseEntry>,
    #[serde(default)]
    pub missed_appointments: u32,
    /// Follow-up in employment due after a job exit, where the agreement asks for it.
    pub follow_up_due_at: Option<DateTime<Utc>>,
    /// The follow-up's finding: still in employment?
    pub follow_up_in_employment: Option<bool>,
    /// When exclusive social support started, kept whatever followed (quotas count it).
    pub exclusive_started_at: Option<DateTime<Utc>>,
    /// What the entry rests on: digests of the signed documents (or, for
    /// exclusive social support, of the validated social evaluation).
    #[serde(default)]
    pub entry_evidence: Vec<Evidence>,
    /// The ESF participant questionnaire, where the person signed; local only.
    #[serde(default)]
    pub participant: Option<crate::person::Participant>,
    /// Left with a qualification (an ESF result); local only.
    #[serde(default)]
    pub qualification_gained: bool,
}

fn precondition(reason: impl Into<String>) -> DomainError {
    DomainError::FailedPrecondition(reason.into())
}

impl Case {
    /// A new case from its referral, pending the partner's decision until
    /// `expiry_days` have passed.
    pub fn referred(referral: &Referral, expiry_days: u32) -> Self {
        Case {
            case_id: referral.case_id.clone(),
            track: Track::Global,
            state: CaseState::Referred,
            pair: None,
            referring_network: referral.referring_network,
            referred_at: referral.referred_at,
            diagnosed_at: None,
            entered_at: None,
            exited_at: None,
            exit_reason: None,
            renewals: 0,
            ends_at: None,
            review_due_at: None,
            office_code: referral.office_code.clone(),
            referral_state: ReferralState::Pending,
            referral_expires_at: referral.referred_at
                + chrono::Duration::days(i64::from(expiry_days)),
            referral_decided_at: None,
            refusal_reason: None,
            referent: None,
            queued_at: None,
            pending_entry: None,
            missed_appointments: 0,
            follow_up_due_at: None,
            follow_up_in_employment: None,
            exclusive_started_at: None,
            entry_evidence: vec![],
            participant: None,
            qualification_gained: false,
        }
    }

    /// The institution the referral was sent to: the one that decides on it.
    pub fn receiving_institution(&self) -> Institution {
        match self.referring_network {
            Network::Emploi => Institution::Social,
            Network::Social => Institution::Emploi,
        }
    }

    /// Records the receiving institution's decision (or the expiry).
    /// The same decision twice is a no-op; another one is refused.
    pub fn decide_referral(&mut self, decision: &ReferralDecision) -> Result<(), DomainError> {
        if self.referral_state == decision.state
            && self.referral_decided_at == Some(decision.decided_at)
        {
            return Ok(());
        }
        if self.referral_state != ReferralState::Pending {
            return Err(precondition(format!(
                "the referral is already {}",
                self.referral_state
            )));
        }
        match decision.state {
            ReferralState::Pending => {
                return Err(FieldError::new("decision", "must accept or refuse").into());
            }
            ReferralState::Accepted => {}
            ReferralState::Refused | ReferralState::Expired | ReferralState::Withdrawn => {
                self.state = CaseState::NotEntered;
            }
        }
        self.referral_state = decision.state;
        self.referral_decided_at = Some(decision.decided_at);
        self.refusal_reason = decision.refusal_reason.clone();
        Ok(())
    }

    /// Whether a pending referral has passed its expiry at `now`.
    pub fn referral_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.referral_state == ReferralState::Pending && now >= self.referral_expires_at
    }

    /// Reminders and expiry of a pending referral, due by `horizon`.
    pub fn referral_due_by(
        &self,
        reminder_days_before_expiry: &[u32],
        horizon: DateTime<Utc>,
    ) -> Vec<(DueKind, DateTime<Utc>)> {
        if self.referral_state != ReferralState::Pending {
            return vec![];
        }
        let mut due: Vec<_> = reminder_days_before_expiry
            .iter()
            .map(|d| {
                (
                    DueKind::ReferralReminder,
                    self.referral_expires_at - chrono::Duration::days(i64::from(*d)),
                )
            })
            .chain([(DueKind::ReferralExpiry, self.referral_expires_at)])
            .filter(|(_, at)| *at <= horizon)
            .collect();
        due.sort_by_key(|(_, at)| *at);
        due
    }

    /// Takes the halves known so far, under the agreement's rule.
    ///
    /// - Both must agree (Ille-et-Vilaine): both halves agreeing makes the case
    ///   diagnosed; either disagreeing keeps the person out.
    /// - The prescriber decides (Seine-et-Marne): the referring network's half
    ///   settles it; the partner's half, when missing, is awaiting validation.
    ///
    /// A refused or expired referral stays closed whatever arrives.
    pub fn apply_diagnosis(&mut self, halves: &[DiagnosisHalf], rule: DiagnosisRule) {
        if !matches!(
            self.state,
            CaseState::Referred | CaseState::Diagnosed | CaseState::NotEntered
        ) || matches!(
            self.referral_state,
            ReferralState::Refused | ReferralState::Expired
        ) {
            return;
        }
        let half = |who| halves.iter().find(|h| h.author_institution == who);
        let decided = match rule {
            DiagnosisRule::BothMustAgree => {
                match (half(Institution::Emploi), half(Institution::Social)) {
                    (Some(emploi), Some(social)) => Some((
                        emploi.verdict == Verdict::Agree && social.verdict == Verdict::Agree,
                        emploi.recorded_at.max(social.recorded_at),
                    )),
                    _ => None,
                }
            }
            DiagnosisRule::PrescriberDecides => {
                half(self.prescriber()).map(|h| (h.verdict == Verdict::Agree, h.recorded_at))
            }
        };
        if let Some((agreed, at)) = decided {
            self.state = if agreed {
                CaseState::Diagnosed
            } else {
                CaseState::NotEntered
            };
            self.diagnosed_at = Some(at);
        }
    }

    /// The institution whose network referred the person.
    pub fn prescriber(&self) -> Institution {
        match self.referring_network {
            Network::Emploi => Institution::Emploi,
            Network::Social => Institution::Social,
        }
    }

    /// Under "the prescriber decides": the partner whose half is not recorded yet.
    pub fn awaiting_validation_by(&self, halves: &[DiagnosisHalf]) -> Option<Institution> {
        if matches!(self.state, CaseState::NotEntered | CaseState::Exited) {
            return None;
        }
        let prescriber_done = halves
            .iter()
            .any(|h| h.author_institution == self.prescriber());
        let partner = self.prescriber().partner()?;
        (prescriber_done && !halves.iter().any(|h| h.author_institution == partner))
            .then_some(partner)
    }

    fn ready_for_entry(&self, entry: &CaseEntry) -> Result<bool, DomainError> {
        match self.state {
            CaseState::Diagnosed => {}
            CaseState::Active if self.entered_at == Some(entry.entered_at) => return Ok(false),
            CaseState::Referred => {
                return Err(precondition(
                    "the shared diagnosis is not complete: both halves are needed before entry",
                ));
            }
            CaseState::NotEntered => {
                return Err(precondition(format!(
                    "the person cannot enter: {}",
                    match self.referral_state {
                        ReferralState::Refused => "the referral was refused",
                        ReferralState::Expired => "the referral expired",
                        _ => "one of the pair did not agree at diagnosis",
                    }
                )));
            }
            s => {
                return Err(precondition(format!(
                    "a case in state {s} cannot be entered"
                )));
            }
        }
        if self.referral_state != ReferralState::Accepted {
            return Err(precondition(format!(
                "the referral is {}: the receiving institution accepts it first",
                self.referral_state
            )));
        }
        if entry.entered_at < self.referred_at {
            return Err(FieldError::new("entry.entered_at", "is before the referral").into());
        }
        Ok(true)
    }

    /// The person's signature starts support for the agreement's period.
    pub fn enter(&mut self, entry: &CaseEntry, support: &SupportPeriod) -> Result<(), DomainError> {
        if self.state == CaseState::Queued {
            // Entry from the waiting list: the place has freed.
            self.state = CaseState::Diagnosed;
        } else if !self.ready_for_entry(entry)? {
            return Ok(());
        }
        self.state = CaseState::Active;
        self.track = entry.track;
        self.pair = Some(entry.pair.clone());
        self.referent = Some(entry.referent);
        self.entry_evidence = entry.evidence.clone();
        self.entered_at = Some(entry.entered_at);
        self.queued_at = None;
        self.pending_entry = None;
        self.renewals = 0;
        self.ends_at = Some(support.ends_at(entry.entered_at, 0));
        self.review_due_at = support.review_due_at(entry.entered_at);
        Ok(())
    }

    /// Signed in while the counsellor's portfolio is full: the entry waits.
    pub fn queue(&mut self, entry: &CaseEntry) -> Result<(), DomainError> {
        if self.state == CaseState::Queued && self.queued_at == Some(entry.entered_at) {
            return Ok(());
        }
        self.ready_for_entry(entry)?;
        self.state = CaseState::Queued;
        self.pair = Some(entry.pair.clone());
        self.queued_at = Some(entry.entered_at);
        self.pending_entry = Some(entry.clone());
        Ok(())
    }

    /// Renews support after the pair's joint review, within the agreement's
    /// limits (or beyond, as a justified exception where it allows one). The
    /// review the agreement requires is the one this renewal follows.
    pub fn renew(
        &mut self,
        support: &SupportPeriod,
        exceptional: bool,
        at: DateTime<Utc>,
    ) -> Result<CaseRenewal, DomainError> {
        if self.state != CaseState::Active {
            return Err(precondition(format!(
                "a case in state {} cannot be renewed",
                self.state
            )));
        }
        let (Some(entered_at), Some(ends_at)) = (self.entered_at, self.ends_at) else {
            return Err(precondition("the case has no support period"));
        };
        if at > ends_at {
            return Err(precondition(format!(
                "the support period ended on {}: record the exit (end of term)",
                ends_at.date_naive()
            )));
        }
        support
            .may_renew(self.renewals, exceptional)
            .map_err(DomainError::FailedPrecondition)?;
        self.renewals += 1;
        self.ends_at = Some(support.ends_at(entered_at, self.renewals));
        self.review_due_at = None;
        Ok(CaseRenewal {
            renewals: self.renewals,
            renewed_at: at,
            exceptional,
        })
    }

    /// What the pair must do by `horizon`: the required review, the end of
    /// the period, the follow-up after a job exit. Overdue items are included.
    pub fn due_by(&self, horizon: DateTime<Utc>) -> Vec<(DueKind, DateTime<Utc>)> {
        let items = match self.state {
            CaseState::Active => vec![
                (DueKind::Review, self.review_due_at),
                (DueKind::EndOfPeriod, self.ends_at),
            ],
            CaseState::Exited if self.follow_up_in_employment.is_none() => {
                vec![(DueKind::FollowUp, self.follow_up_due_at)]
            }
            _ => vec![],
        };
        items
            .into_iter()
            .filter_map(|(kind, at)| at.filter(|at| *at <= horizon).map(|at| (kind, at)))
            .collect()
    }

    /// Ends the case. Where the agreement asks for follow-up in employment
    /// after a job exit, it falls due `follow_up_months` later.
    pub fn exit(
        &mut self,
        exit: &CaseExit,
        follow_up_months: Option<u32>,
    ) -> Result<(), DomainError> {
        match self.state {
            CaseState::Active => {}
            CaseState::Exited
                if self.exited_at == Some(exit.exited_at)
                    && self.exit_reason == Some(exit.reason) =>
            {
                return Ok(());
            }
            s => return Err(precondition(format!("a case in state {s} cannot exit"))),
        }
        if self
            .entered_at
            .is_some_and(|entered| exit.exited_at < entered)
        {
            return Err(FieldError::new("exit.exited_at", "is before the entry").into());
        }
        self.state = CaseState::Exited;
        self.exited_at = Some(exit.exited_at);
        self.exit_reason = Some(exit.reason);
        if exit.reason == ExitReason::Job {
            self.follow_up_due_at =
                follow_up_months.and_then(|m| exit.exited_at.checked_add_months(Months::new(m)));
        }
        Ok(())
    }

    /// When the case ended (exit, refusal, expiry, kept out at diagnosis,
    /// withdrawal); `None` while it is open. Retention counts from it.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            CaseState::Exited => self.exited_at,
            CaseState::NotEntered => self
                .exited_at
                .or(self.referral_decided_at.max(self.diagnosed_at)),
            _ => None,
        }
    }

    /// Ends processing at the person's request (consent withdrawn): a case
    /// in support exits, one not yet entered never will (a pending referral
    /// is withdrawn). `false` when the case had already ended.
    pub fn end_processing(&mut self, end: &EndOfProcessing) -> bool {
        let EndOfProcessingReason::ConsentWithdrawn = end.reason;
        match self.state {
            CaseState::Exited | CaseState::NotEntered => return false,
            CaseState::Active => {
                self.state = CaseState::Exited;
                self.exited_at = Some(end.ended_at);
            }
            CaseState::Referred | CaseState::Diagnosed | CaseState::Queued => {
                if self.referral_state == ReferralState::Pending {
                    self.referral_state = ReferralState::Withdrawn;
                    self.referral_decided_at = Some(end.ended_at);
                }
                self.state = CaseState::NotEntered;
                self.pending_entry = None;
            }
        }
        // The day processing ended, for retention; a case never entered
        // is not counted among exits (those are of entered cases).
        self.exited_at = Some(end.ended_at);
        self.exit_reason = Some(ExitReason::ConsentWithdrawn);
        self.review_due_at = None;
        self.follow_up_due_at = None;
        true
    }

    /// One more missed appointment; `true` when it reaches the threshold
    /// after which the person is taken to have ended support.
    pub fn miss_appointment(&mut self, threshold: u32) -> Result<bool, DomainError> {
        if self.state != CaseState::Active {
            return Err(precondition(format!(
                "a case in state {} has no appointments",
                self.state
            )));
        }
        self.missed_appointments += 1;
        Ok(self.missed_appointments >= threshold)
    }

    /// The follow-up in employment after a job exit.
    pub fn record_follow_up(&mut self, in_employment: bool) -> Result<(), DomainError> {
        if self.follow_up_due_at.is_none() {
            return Err(precondition(
                "no follow-up in employment is due on this case",
            ));
        }
        if let Some(known) = self.follow_up_in_employment {
            return if known == in_employment {
                Ok(())
            } else {
                Err(precondition("the follow-up is already recorded"))
            };
        }
        self.follow_up_in_employment = Some(in_employment);
        Ok(())
    }

    /// Applies a change the partner made; the partner's own rules already ran.
    pub fn apply_partner_event(
        &mut self,
        event: &CaseEvent,
        support: &SupportPeriod,
        follow_up_months: Option<u32>,
    ) -> Result<(), DomainError> {
        match event {
            CaseEvent::Entered(entry) => {
                if matches!(self.state, CaseState::Referred) {
                    // The partner may know the diagnosis outcome before our copy of its half arrives.
                    self.state = CaseState::Diagnosed;
                }
                if self.referral_state == ReferralState::Pending {
                    self.referral_state = ReferralState::Accepted;
                }
                self.enter(entry, support)
            }
            CaseEvent::Queued { pair, queued_at } => {
                if self.state == CaseState::Queued {
                    return Ok(());
                }
                self.state = CaseState::Queued;
                self.pair = Some(pair.clone());
                self.queued_at = Some(*queued_at);
                Ok(())
            }
            CaseEvent::Exited(exit) => self.exit(exit, follow_up_months),
            CaseEvent::Renewed(renewal) => {
                if renewal.renewals <= self.renewals {
                    return Ok(());
                }
                let entered_at = self
                    .entered_at
                    .ok_or_else(|| precondition("renewal of a case not entered"))?;
                self.renewals = renewal.renewals;
                self.ends_at = Some(support.ends_at(entered_at, self.renewals));
                self.review_due_at = None;
                Ok(())
            }
            CaseEvent::AppointmentMissed { .. } => {
                // Counted on both copies; the side that recorded it decides the exit.
                self.missed_appointments += 1;
                Ok(())
            }
        }
    }

    /// Applies what the employment side is told of exclusive social support.
    pub fn apply_suspension(&mut self, notice: &SuspensionNotice) {
        match (notice.outcome, notice.suspended_until) {
            (None, Some(until)) => {
                self.track = Track::SocialExclusive;
                self.state = CaseState::Active;
                self.entered_at.get_or_insert(notice.suspended_from);
                self.exclusive_started_at = Some(notice.suspended_from);
                self.referral_state = ReferralState::Accepted;
                self.ends_at = Some(until);
                self.renewals = notice.renewals;
            }
            (Some(ExclusiveOutcome::MoveToGlobalSupport), _) => self.back_to_global_entry(),
            (Some(_), _) => {
                self.state = CaseState::Exited;
                self.exited_at = Some(notice.changed_at);
                self.exit_reason = Some(ExitReason::EmploymentTrack);
                self.ends_at = None;
            }
            (None, None) => {}
        }
    }

    /// Leaving exclusive social support for global support: back to the
    /// point of entry, where the pair signs in as for axe 2.
    fn back_to_global_entry(&mut self) {
        self.track = Track::Global;
        self.state = CaseState::Diagnosed;
        self.entered_at = None;
        self.ends_at = None;
        self.pair = None;
        self.renewals = 0;
    }

    /// Starts exclusive social support (axe 3) after the shared diagnosis.
    pub fn start_exclusive(
        &mut self,
        social_worker: &str,
        social_evaluation: Evidence,
        at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        if self.state == CaseState::Active
            && self.track == Track::SocialExclusive
            && self.entered_at == Some(at)
        {
            return Ok(());
        }
        if self.state != CaseState::Diagnosed {
            return Err(precondition(format!(
                "exclusive social support starts after the shared diagnosis; the case is {}",
                self.state
            )));
        }
        if self.referral_state != ReferralState::Accepted {
            return Err(precondition(format!(
                "the referral is {}: the receiving institution accepts it first",
                self.referral_state
            )));
        }
        self.state = CaseState::Active;
        self.track = Track::SocialExclusive;
        self.pair = Some(Pair {
            counsellor: String::new(),
            social_worker: social_worker.to_owned(),
        });
        self.entered_at = Some(at);
        self.exclusive_started_at = Some(at);
        self.entry_evidence = vec![social_evaluation];
        self.renewals = 0;
        self.ends_at = Some(ends_at);
        self.review_due_at = None;
        Ok(())
    }

    /// The joint decision at the end of exclusive social support.
    pub fn decide_exclusive_end(
        &mut self,
        outcome: ExclusiveOutcome,
        axe3: &crate::agreement::ExclusiveSocialSupport,
        at: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        if self.state != CaseState::Active || self.track != Track::SocialExclusive {
            return Err(precondition("the case is not in exclusive social support"));
        }
        let entered_at = self
            .entered_at
            .ok_or_else(|| precondition("exclusive social support has no start"))?;
        match outcome {
            ExclusiveOutcome::Renew => {
                if self.renewals >= axe3.max_renewals {
                    return Err(precondition(format!(
                        "exclusive social support is renewable {} time(s): decide a move to global support or a return to the employment side",
                        axe3.max_renewals
                    )));
                }
                self.renewals += 1;
                self.ends_at = Some(axe3.ends_at(entered_at, self.renewals));
            }
            ExclusiveOutcome::MoveToGlobalSupport => self.back_to_global_entry(),
            ExclusiveOutcome::ReturnToEmploymentTrack => {
                self.state = CaseState::Exited;
                self.exited_at = Some(at);
                self.exit_reason = Some(ExitReason::EmploymentTrack);
            }
        }
        Ok(())
    }

    /// Whole days from referral to entry, the agreements' headline delay.
    pub fn entry_delay_days(&self) -> Option<i64> {
        self.entered_at.map(|e| (e - self.referred_at).num_days())
    }
}

/// A referral for unit tests across the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use chrono::{DateTime, NaiveDate, Utc};

    use super::*;
    use crate::person::{BarrierCategory, BarrierLevel};

    pub fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("valid")
    }

    pub fn referral() -> Referral {
        Referral {
            case_id: "k".into(),
            referring_network: Network::Social,
            referred_by: "sw".into(),
            office_code: "CDAS-01".into(),
            person: PersonIdentity {
                first_name: "A".into(),
                last_name: "B".into(),
                birth_date: NaiveDate::from_ymd_opt(1990, 1, 1).expect("valid"),
                jobseeker_number: None,
            },
            contact: Contact::default(),
            barriers: vec![Barrier {
                category: BarrierCategory::Housing,
                level: BarrierLevel::High,
            }],
            employment: EmploymentSummary::default(),
            referred_at: t0(),
            consent_id: "c".into(),
            checks: vec![],
            association_id: None,
            orientation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::tests_support::{referral, t0};
    use super::*;

    /// A referral the receiving institution accepted.
    fn accepted() -> Case {
        let mut case = Case::referred(&referral(), 30);
        case.decide_referral(&ReferralDecision {
            state: ReferralState::Accepted,
            refusal_reason: None,
            decided_at: t0(),
        })
        .expect("accepted");
        case
    }

    fn half(who: Institution, verdict: Verdict, days: i64) -> DiagnosisHalf {
        DiagnosisHalf {
            case_id: "k".into(),
            author_institution: who,
            author: "x".into(),
            barriers: vec![],
            verdict,
            recorded_at: t0() + Duration::days(days),
        }
    }

    fn support() -> SupportPeriod {
        SupportPeriod {
            initial_months: 9,
            renewal_months: 3,
            max_renewals: 1,
            exceptional_extension: false,
            review_due_month: None,
        }
    }

    fn entry(days: i64) -> CaseEntry {
        CaseEntry {
            pair: Pair {
                counsellor: "c".into(),
                social_worker: "s".into(),
            },
            track: Track::Global,
            entered_at: t0() + Duration::days(days),
            evidence: vec![],
            referent: Referent::Counsellor,
        }
    }

    fn withdrawn(days: i64) -> EndOfProcessing {
        EndOfProcessing {
            case_id: "k".into(),
            ended_at: t0() + Duration::days(days),
            reason: EndOfProcessingReason::ConsentWithdrawn,
        }
    }

    #[test]
    fn a_withdrawal_ends_a_case_whatever_its_stage_and_only_once() {
        let mut pending = Case::referred(&referral(), 30);
        assert!(pending.end_processing(&withdrawn(1)));
        assert_eq!(pending.state, CaseState::NotEntered);
        assert_eq!(pending.referral_state, ReferralState::Withdrawn);
        assert_eq!(pending.referral_decided_at, Some(t0() + Duration::days(1)));
        assert_eq!(pending.ended_at(), Some(t0() + Duration::days(1)));
        assert!(!pending.referral_expired_at(t0() + Duration::days(60)));

        let mut active = accepted();
        active.state = CaseState::Diagnosed;
        active.enter(&entry(10), &support()).expect("enters");
        assert!(active.end_processing(&withdrawn(20)));
        assert_eq!(active.state, CaseState::Exited);
        assert_eq!(active.exited_at, Some(t0() + Duration::days(20)));
        assert_eq!(active.exit_reason, Some(ExitReason::ConsentWithdrawn));
        assert_eq!(active.ended_at(), Some(t0() + Duration::days(20)));
        assert!(active.ends_at.is_some(), "the period is history");
        assert!(active.due_by(t0() + Duration::days(9999)).is_empty());
        // Told twice (a replay, or both sides ending it): nothing changes.
        let before = active.clone();
        assert!(!active.end_processing(&withdrawn(30)));
        assert_eq!(active, before);
    }

    #[test]
    fn entry_needs_both_halves_agreeing() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[half(Institution::Emploi, Verdict::Agree, 3)],
            DiagnosisRule::BothMustAgree,
        );
        assert_eq!(case.state, CaseState::Referred);
        assert!(case.enter(&entry(10), &support()).is_err());

        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 3),
                half(Institution::Social, Verdict::Agree, 5),
            ],
            DiagnosisRule::BothMustAgree,
        );
        assert_eq!(case.state, CaseState::Diagnosed);
        assert_eq!(case.diagnosed_at, Some(t0() + Duration::days(5)));
        case.enter(&entry(12), &support()).expect("enters");
        assert_eq!(case.state, CaseState::Active);
        assert_eq!(case.entry_delay_days(), Some(12));
    }

    #[test]
    fn under_the_prescriber_rule_the_referring_network_decides() {
        // Referred by the social network: its half settles the diagnosis.
        let mut case = accepted();
        case.apply_diagnosis(
            &[half(Institution::Emploi, Verdict::Disagree, 2)],
            DiagnosisRule::PrescriberDecides,
        );
        assert_eq!(
            case.state,
            CaseState::Referred,
            "the partner's half alone decides nothing"
        );
        let halves = [half(Institution::Social, Verdict::Agree, 3)];
        case.apply_diagnosis(&halves, DiagnosisRule::PrescriberDecides);
        assert_eq!(case.state, CaseState::Diagnosed);
        assert_eq!(
            case.awaiting_validation_by(&halves),
            Some(Institution::Emploi)
        );
        // The partner's disagreement does not overturn the detection.
        let both = [
            half(Institution::Social, Verdict::Agree, 3),
            half(Institution::Emploi, Verdict::Disagree, 4),
        ];
        case.apply_diagnosis(&both, DiagnosisRule::PrescriberDecides);
        assert_eq!(case.state, CaseState::Diagnosed);
        assert_eq!(case.awaiting_validation_by(&both), None);
        // The same halves keep the person out where both must agree.
        let mut strict = accepted();
        strict.apply_diagnosis(&both, DiagnosisRule::BothMustAgree);
        assert_eq!(strict.state, CaseState::NotEntered);
    }

    #[test]
    fn support_runs_its_period_then_renews_within_limits() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 1),
                half(Institution::Social, Verdict::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        let strict = support();
        case.enter(&entry(10), &strict).expect("enters");
        let entered = t0() + Duration::days(10);
        assert_eq!(
            case.ends_at,
            Some(entered.checked_add_months(Months::new(9)).expect("date"))
        );
        assert!(case.due_by(entered + Duration::days(30)).is_empty());
        assert_eq!(
            case.due_by(entered + Duration::days(300)),
            vec![(DueKind::EndOfPeriod, case.ends_at.expect("end"))]
        );

        let renewal = case
            .renew(&strict, false, entered + Duration::days(260))
            .expect("renewed once");
        assert_eq!(renewal.renewals, 1);
        assert_eq!(
            case.ends_at,
            Some(entered.checked_add_months(Months::new(12)).expect("date"))
        );
        assert!(matches!(
            case.renew(&strict, true, entered + Duration::days(300)),
            Err(DomainError::FailedPrecondition(_))
        ));

        let mut late = case.clone();
        late.renewals = 0;
        assert!(
            late.renew(&strict, false, entered + Duration::days(400))
                .is_err(),
            "after the end: exit, not renew"
        );
    }

    #[test]
    fn a_required_review_is_listed_until_the_renewal_that_follows_it() {
        let sem = SupportPeriod {
            initial_months: 6,
            renewal_months: 6,
            max_renewals: 1,
            exceptional_extension: true,
            review_due_month: Some(6),
        };
        let mut case = accepted();
        case.apply_diagnosis(
            &[half(Institution::Social, Verdict::Agree, 1)],
            DiagnosisRule::PrescriberDecides,
        );
        case.enter(&entry(2), &sem).expect("enters");
        let entered = t0() + Duration::days(2);
        let due = case.due_by(entered + Duration::days(200));
        assert_eq!(
            due.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![DueKind::Review, DueKind::EndOfPeriod]
        );
        case.renew(&sem, false, entered + Duration::days(170))
            .expect("renewed");
        case.renew(&sem, true, entered + Duration::days(340))
            .expect("a justified exception");
        assert_eq!(case.renewals, 2);
        assert!(
            case.due_by(entered + Duration::days(400))
                .iter()
                .all(|(k, _)| *k == DueKind::EndOfPeriod)
        );
    }

    #[test]
    fn one_disagreement_keeps_the_person_out() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 3),
                half(Institution::Social, Verdict::Disagree, 4),
            ],
            DiagnosisRule::BothMustAgree,
        );
        assert_eq!(case.state, CaseState::NotEntered);
        assert!(matches!(
            case.enter(&entry(5), &support()),
            Err(DomainError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn exit_needs_an_active_case_and_is_idempotent() {
        let mut case = accepted();
        let exit = CaseExit {
            reason: ExitReason::Training,
            exited_at: t0() + Duration::days(100),
        };
        assert!(case.exit(&exit, None).is_err());
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 1),
                half(Institution::Social, Verdict::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        case.enter(&entry(2), &support()).expect("enters");
        case.exit(&exit, None).expect("exits");
        case.exit(&exit, None).expect("same exit again is a no-op");
        assert_eq!(
            case.exit_reason.map(ExitReason::exit_type),
            Some(ExitType::Training)
        );
        let other = CaseExit {
            reason: ExitReason::Job,
            ..exit
        };
        assert!(case.exit(&other, None).is_err());
    }

    #[test]
    fn exit_before_entry_is_refused() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 1),
                half(Institution::Social, Verdict::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        case.enter(&entry(20), &support()).expect("enters");
        let early = CaseExit {
            reason: ExitReason::Job,
            exited_at: t0() + Duration::days(3),
        };
        assert!(matches!(
            case.exit(&early, None),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn a_referral_is_decided_once_and_a_refusal_keeps_the_person_out() {
        let mut case = Case::referred(&referral(), 45);
        assert_eq!(case.referral_state, ReferralState::Pending);
        assert_eq!(case.referral_expires_at, t0() + Duration::days(45));
        let refused = ReferralDecision {
            state: ReferralState::Refused,
            refusal_reason: Some("person_declines".into()),
            decided_at: t0() + Duration::days(3),
        };
        case.decide_referral(&refused).expect("refused");
        case.decide_referral(&refused)
            .expect("the same decision again");
        assert_eq!(case.state, CaseState::NotEntered);
        let accept = ReferralDecision {
            state: ReferralState::Accepted,
            refusal_reason: None,
            decided_at: t0() + Duration::days(4),
        };
        assert!(case.decide_referral(&accept).is_err(), "decided already");
        // A diagnosis arriving later does not reopen it.
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 5),
                half(Institution::Social, Verdict::Agree, 5),
            ],
            DiagnosisRule::BothMustAgree,
        );
        assert_eq!(case.state, CaseState::NotEntered);
        assert!(case.enter(&entry(6), &support()).is_err());
    }

    #[test]
    fn a_pending_referral_has_reminders_then_expires() {
        let case = Case::referred(&referral(), 30);
        let expiry = t0() + Duration::days(30);
        assert!(
            case.referral_due_by(&[10, 3], t0() + Duration::days(19))
                .is_empty()
        );
        assert_eq!(
            case.referral_due_by(&[10, 3], t0() + Duration::days(28)),
            vec![
                (DueKind::ReferralReminder, expiry - Duration::days(10)),
                (DueKind::ReferralReminder, expiry - Duration::days(3)),
            ]
        );
        assert!(!case.referral_expired_at(expiry - Duration::seconds(1)));
        assert!(case.referral_expired_at(expiry));
        let mut accepted = accepted();
        assert!(!accepted.referral_expired_at(expiry + Duration::days(100)));
        assert!(accepted.referral_due_by(&[10], expiry).is_empty());
        accepted
            .decide_referral(&ReferralDecision {
                state: ReferralState::Accepted,
                refusal_reason: None,
                decided_at: t0(),
            })
            .expect("same decision");
    }

    #[test]
    fn entry_needs_an_accepted_referral() {
        let mut case = Case::referred(&referral(), 30);
        let halves = [
            half(Institution::Emploi, Verdict::Agree, 1),
            half(Institution::Social, Verdict::Agree, 1),
        ];
        case.apply_diagnosis(&halves, DiagnosisRule::BothMustAgree);
        assert_eq!(case.state, CaseState::Diagnosed);
        let err = case.enter(&entry(2), &support()).expect_err("pending");
        assert!(err.to_string().contains("accepts it first"), "{err}");
    }

    #[test]
    fn a_queued_entry_takes_effect_when_the_place_frees() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 1),
                half(Institution::Social, Verdict::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        case.queue(&entry(2)).expect("queued");
        assert_eq!(case.state, CaseState::Queued);
        assert_eq!(case.queued_at, Some(t0() + Duration::days(2)));
        let mut later = case.pending_entry.clone().expect("kept");
        later.entered_at = t0() + Duration::days(20);
        case.enter(&later, &support()).expect("enters");
        assert_eq!(case.state, CaseState::Active);
        assert_eq!(case.entry_delay_days(), Some(20));
        assert_eq!(case.queued_at, None);
    }

    #[test]
    fn missed_appointments_reach_the_threshold() {
        let mut case = accepted();
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Verdict::Agree, 1),
                half(Institution::Social, Verdict::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        assert!(case.miss_appointment(3).is_err(), "not active yet");
        case.enter(&entry(2), &support()).expect("enters");
        assert_eq!(case.miss_appointment(3).ok(), Some(false));
        assert_eq!(case.miss_appointment(3).ok(), Some(false));
        assert_eq!(case.miss_appointment(3).ok(), Some(true));
    }

    #[test]
    fn a_job_exit_brings_a_follow_up_where_the_agreement_asks() {
        let active = || {
            let mut case = accepted();
            case.apply_diagnosis(
                &[half(Institution::Social, Verdict::Agree, 1)],
                DiagnosisRule::PrescriberDecides,
            );
            case.enter(&entry(2), &support()).expect("enters");
            case
        };
        let job = CaseExit {
            reason: ExitReason::Job,
            exited_at: t0() + Duration::days(100),
        };
        let mut without = active();
        without.exit(&job, None).expect("exits");
        assert!(without.record_follow_up(true).is_err());
        assert!(without.due_by(t0() + Duration::days(1000)).is_empty());

        let mut with = active();
        with.exit(&job, Some(6)).expect("exits");
        let due = job
            .exited_at
            .checked_add_months(Months::new(6))
            .expect("date");
        assert_eq!(with.due_by(due), vec![(DueKind::FollowUp, due)]);
        with.record_follow_up(true).expect("followed up");
        assert!(with.due_by(due).is_empty());
        assert!(with.record_follow_up(false).is_err());
    }

    fn evaluation() -> Evidence {
        Evidence {
            kind: crate::EvidenceKind::SignedReferralForm,
            document_sha256: "ab".repeat(32),
            signed_at: t0(),
            collected_by: "sw".into(),
        }
    }

    #[test]
    fn exclusive_social_support_runs_6_months_renewable_once_then_a_joint_decision() {
        let axe3 = crate::agreement::ExclusiveSocialSupport {
            months: 6,
            max_renewals: 1,
            quota_per_office_per_year: 24,
            quota_per_year: 168,
            office_may_request_more: true,
        };
        let start = t0() + Duration::days(5);
        let diagnosed = || {
            let mut case = accepted();
            case.apply_diagnosis(
                &[half(Institution::Social, Verdict::Agree, 1)],
                DiagnosisRule::PrescriberDecides,
            );
            case
        };
        let mut case = diagnosed();
        case.start_exclusive("sw", evaluation(), start, axe3.ends_at(start, 0))
            .expect("starts");
        assert_eq!(case.track, Track::SocialExclusive);
        assert_eq!(case.ends_at, start.checked_add_months(Months::new(6)));
        case.decide_exclusive_end(ExclusiveOutcome::Renew, &axe3, start)
            .expect("renewed once");
        assert_eq!(case.ends_at, start.checked_add_months(Months::new(12)));
        assert!(
            case.decide_exclusive_end(ExclusiveOutcome::Renew, &axe3, start)
                .is_err(),
            "renewable once"
        );
        let mut to_global = case.clone();
        to_global
            .decide_exclusive_end(ExclusiveOutcome::MoveToGlobalSupport, &axe3, start)
            .expect("moves");
        assert_eq!(
            (to_global.state, to_global.track),
            (CaseState::Diagnosed, Track::Global)
        );
        to_global
            .enter(&entry(400), &support())
            .expect("enters global support");
        case.decide_exclusive_end(ExclusiveOutcome::ReturnToEmploymentTrack, &axe3, start)
            .expect("returns");
        assert_eq!(case.exit_reason, Some(ExitReason::EmploymentTrack));
    }

    #[test]
    fn diagnoses_awaiting_validation_are_the_partners_missing_halves() {
        let mut case = accepted();
        assert_eq!(case.awaiting_validation_by(&[]), None, "prescriber first");
        let halves = [half(Institution::Social, Verdict::Agree, 1)];
        case.apply_diagnosis(&halves, DiagnosisRule::PrescriberDecides);
        assert_eq!(
            case.awaiting_validation_by(&halves),
            Some(Institution::Emploi)
        );
    }
}
