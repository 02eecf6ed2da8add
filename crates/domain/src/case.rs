//! The life of one case: referral, shared diagnosis, entry, exit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agreement::{DiagnosisRule, SupportPeriod};
use crate::error::DomainError;
use crate::person::{Barrier, Contact, EmploymentSummary, PersonIdentity};
use crate::vocabulary::{Institution, Network, coded_enum};

/// The referral form (fiche de liaison).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub case_id: String,
    pub referring_network: Network,
    pub referred_by: String,
    pub office_code: String,
    pub person: PersonIdentity,
    pub contact: Contact,
    pub barriers: Vec<Barrier>,
    pub employment: EmploymentSummary,
    pub referred_at: DateTime<Utc>,
    pub consent_id: String,
}

/// What an agent submits; the service adds who, when and from which network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralDraft {
    pub case_id: String,
    pub office_code: String,
    pub person: PersonIdentity,
    pub contact: Contact,
    pub barriers: Vec<Barrier>,
    pub employment: EmploymentSummary,
    pub consent_id: String,
}

impl ReferralDraft {
    pub fn complete(
        self,
        referring_network: Network,
        referred_by: String,
        referred_at: DateTime<Utc>,
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
        }
    }
}

/// What an agent submits of its half of the diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisDraft {
    pub case_id: String,
    pub barriers: Vec<Barrier>,
    pub agreement: Agreement,
}

coded_enum!(Agreement { Agree => "agree", Disagree => "disagree" });

/// One institution's half of the shared diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosisHalf {
    pub case_id: String,
    pub author_institution: Institution,
    pub author: String,
    pub barriers: Vec<Barrier>,
    pub agreement: Agreement,
    pub recorded_at: DateTime<Utc>,
}

coded_enum!(Track { Global => "global", SocialExclusive => "social_exclusive" });

coded_enum!(
    CaseState {
        Referred => "referred",
        Diagnosed => "diagnosed",
        Active => "active",
        Exited => "exited",
        NotEntered => "not_entered",
    }
);

coded_enum!(
    ExitReason {
        Job => "job",
        Training => "training",
        JobSearchAutonomy => "job_search_autonomy",
        SocialProblemSolved => "social_problem_solved",
        EndedByPerson => "ended_by_person",
        MissedAppointments => "missed_appointments",
        Deregistered => "deregistered",
        EndOfTerm => "end_of_term",
    }
);

coded_enum!(
    /// How the steering committee groups exits.
    ExitType { Job => "job", Training => "training", Other => "other" }
);

impl ExitReason {
    pub fn exit_type(self) -> ExitType {
        match self {
            ExitReason::Job => ExitType::Job,
            ExitReason::Training => ExitType::Training,
            _ => ExitType::Other,
        }
    }
}

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
    /// Digest of the signed contract; the document stays with the employment side.
    pub contract_sha256: String,
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

/// A change of state told to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseEvent {
    Entered(CaseEntry),
    Exited(CaseExit),
    Renewed(CaseRenewal),
}

coded_enum!(
    /// What the pair must do by a date.
    DueKind { Review => "review", EndOfPeriod => "end_of_period" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub case_id: String,
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
}

impl Case {
    pub fn referred(referral: &Referral) -> Self {
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
        }
    }

    /// Takes the halves known so far, under the agreement's rule.
    ///
    /// - Both must agree (Ille-et-Vilaine): both halves agreeing makes the case
    ///   diagnosed; either disagreeing keeps the person out.
    /// - The prescriber decides (Seine-et-Marne): the referring network's half
    ///   settles it; the partner's half, when missing, is awaiting validation.
    pub fn apply_diagnosis(&mut self, halves: &[DiagnosisHalf], rule: DiagnosisRule) {
        if !matches!(
            self.state,
            CaseState::Referred | CaseState::Diagnosed | CaseState::NotEntered
        ) {
            return;
        }
        let half = |who| halves.iter().find(|h| h.author_institution == who);
        let decided = match rule {
            DiagnosisRule::BothMustAgree => {
                match (half(Institution::Emploi), half(Institution::Social)) {
                    (Some(emploi), Some(social)) => Some((
                        emploi.agreement == Agreement::Agree
                            && social.agreement == Agreement::Agree,
                        emploi.recorded_at.max(social.recorded_at),
                    )),
                    _ => None,
                }
            }
            DiagnosisRule::PrescriberDecides => {
                half(self.prescriber()).map(|h| (h.agreement == Agreement::Agree, h.recorded_at))
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
        let partner = self.prescriber().partner()?;
        (!halves.iter().any(|h| h.author_institution == partner)).then_some(partner)
    }

    /// The person's signature starts the case.
    /// The person's signature starts support for the agreement's period.
    pub fn enter(&mut self, entry: &CaseEntry, support: &SupportPeriod) -> Result<(), DomainError> {
        match self.state {
            CaseState::Diagnosed => {}
            CaseState::Active if self.entered_at == Some(entry.entered_at) => return Ok(()),
            CaseState::Referred => {
                return Err(DomainError::FailedPrecondition(
                    "the shared diagnosis is not complete: both halves are needed before entry"
                        .into(),
                ));
            }
            CaseState::NotEntered => {
                return Err(DomainError::FailedPrecondition(
                    "one of the pair did not agree at diagnosis: the person cannot enter".into(),
                ));
            }
            s => {
                return Err(DomainError::FailedPrecondition(format!(
                    "a case in state {s} cannot be entered"
                )));
            }
        }
        if entry.entered_at < self.referred_at {
            return Err(DomainError::Invalid(crate::FieldError::new(
                "entry.entered_at",
                "is before the referral",
            )));
        }
        self.state = CaseState::Active;
        self.track = entry.track;
        self.pair = Some(entry.pair.clone());
        self.entered_at = Some(entry.entered_at);
        self.renewals = 0;
        self.ends_at = Some(support.ends_at(entry.entered_at, 0));
        self.review_due_at = support.review_due_at(entry.entered_at);
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
            return Err(DomainError::FailedPrecondition(format!(
                "a case in state {} cannot be renewed",
                self.state
            )));
        }
        let (Some(entered_at), Some(ends_at)) = (self.entered_at, self.ends_at) else {
            return Err(DomainError::FailedPrecondition(
                "the case has no support period".into(),
            ));
        };
        if at > ends_at {
            return Err(DomainError::FailedPrecondition(format!(
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
    /// the period. Overdue items are included.
    pub fn due_by(&self, horizon: DateTime<Utc>) -> Vec<(DueKind, DateTime<Utc>)> {
        if self.state != CaseState::Active {
            return vec![];
        }
        [
            (DueKind::Review, self.review_due_at),
            (DueKind::EndOfPeriod, self.ends_at),
        ]
        .into_iter()
        .filter_map(|(kind, at)| at.filter(|at| *at <= horizon).map(|at| (kind, at)))
        .collect()
    }

    pub fn exit(&mut self, exit: &CaseExit) -> Result<(), DomainError> {
        match self.state {
            CaseState::Active => {}
            CaseState::Exited
                if self.exited_at == Some(exit.exited_at)
                    && self.exit_reason == Some(exit.reason) =>
            {
                return Ok(());
            }
            s => {
                return Err(DomainError::FailedPrecondition(format!(
                    "a case in state {s} cannot exit"
                )));
            }
        }
        if self
            .entered_at
            .is_some_and(|entered| exit.exited_at < entered)
        {
            return Err(DomainError::Invalid(crate::FieldError::new(
                "exit.exited_at",
                "is before the entry",
            )));
        }
        self.state = CaseState::Exited;
        self.exited_at = Some(exit.exited_at);
        self.exit_reason = Some(exit.reason);
        Ok(())
    }

    /// Applies a change the partner made; the partner's own rules already ran.
    pub fn apply_partner_event(
        &mut self,
        event: &CaseEvent,
        support: &SupportPeriod,
    ) -> Result<(), DomainError> {
        match event {
            CaseEvent::Entered(entry) => {
                if self.state == CaseState::Referred {
                    // The partner may know the diagnosis outcome before our copy of its half arrives.
                    self.state = CaseState::Diagnosed;
                }
                self.enter(entry, support)
            }
            CaseEvent::Exited(exit) => self.exit(exit),
            CaseEvent::Renewed(renewal) => {
                if renewal.renewals <= self.renewals {
                    return Ok(());
                }
                let entered_at = self.entered_at.ok_or_else(|| {
                    DomainError::FailedPrecondition("renewal of a case not entered".into())
                })?;
                self.renewals = renewal.renewals;
                self.ends_at = Some(support.ends_at(entered_at, self.renewals));
                self.review_due_at = None;
                Ok(())
            }
        }
    }

    /// Whole days from referral to entry, the agreements' headline delay.
    pub fn entry_delay_days(&self) -> Option<i64> {
        self.entered_at.map(|e| (e - self.referred_at).num_days())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::*;
    use crate::person::{BarrierCategory, BarrierLevel};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("valid")
    }

    fn referral() -> Referral {
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
        }
    }

    fn half(who: Institution, agreement: Agreement, days: i64) -> DiagnosisHalf {
        DiagnosisHalf {
            case_id: "k".into(),
            author_institution: who,
            author: "x".into(),
            barriers: vec![],
            agreement,
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
            contract_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn entry_needs_both_halves_agreeing() {
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[half(Institution::Emploi, Agreement::Agree, 3)],
            DiagnosisRule::BothMustAgree,
        );
        assert_eq!(case.state, CaseState::Referred);
        assert!(case.enter(&entry(10), &support()).is_err());

        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Agreement::Agree, 3),
                half(Institution::Social, Agreement::Agree, 5),
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
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[half(Institution::Emploi, Agreement::Disagree, 2)],
            DiagnosisRule::PrescriberDecides,
        );
        assert_eq!(
            case.state,
            CaseState::Referred,
            "the partner's half alone decides nothing"
        );
        let halves = [half(Institution::Social, Agreement::Agree, 3)];
        case.apply_diagnosis(&halves, DiagnosisRule::PrescriberDecides);
        assert_eq!(case.state, CaseState::Diagnosed);
        assert_eq!(
            case.awaiting_validation_by(&halves),
            Some(Institution::Emploi)
        );
        // The partner's disagreement does not overturn the detection.
        let both = [
            half(Institution::Social, Agreement::Agree, 3),
            half(Institution::Emploi, Agreement::Disagree, 4),
        ];
        case.apply_diagnosis(&both, DiagnosisRule::PrescriberDecides);
        assert_eq!(case.state, CaseState::Diagnosed);
        assert_eq!(case.awaiting_validation_by(&both), None);
        // The same halves keep the person out where both must agree.
        let mut strict = Case::referred(&referral());
        strict.apply_diagnosis(&both, DiagnosisRule::BothMustAgree);
        assert_eq!(strict.state, CaseState::NotEntered);
    }

    #[test]
    fn support_runs_its_period_then_renews_within_limits() {
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Agreement::Agree, 1),
                half(Institution::Social, Agreement::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        let strict = support();
        case.enter(&entry(10), &strict).expect("enters");
        let entered = t0() + Duration::days(10);
        assert_eq!(
            case.ends_at,
            Some(
                entered
                    .checked_add_months(chrono::Months::new(9))
                    .expect("date")
            )
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
            Some(
                entered
                    .checked_add_months(chrono::Months::new(12))
                    .expect("date")
            )
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
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[half(Institution::Social, Agreement::Agree, 1)],
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
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Agreement::Agree, 3),
                half(Institution::Social, Agreement::Disagree, 4),
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
        let mut case = Case::referred(&referral());
        let exit = CaseExit {
            reason: ExitReason::Training,
            exited_at: t0() + Duration::days(100),
        };
        assert!(case.exit(&exit).is_err());
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Agreement::Agree, 1),
                half(Institution::Social, Agreement::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        case.enter(&entry(2), &support()).expect("enters");
        case.exit(&exit).expect("exits");
        case.exit(&exit).expect("same exit again is a no-op");
        assert_eq!(
            case.exit_reason.map(ExitReason::exit_type),
            Some(ExitType::Training)
        );
        let other = CaseExit {
            reason: ExitReason::Job,
            ..exit
        };
        assert!(case.exit(&other).is_err());
    }

    #[test]
    fn exit_before_entry_is_refused() {
        let mut case = Case::referred(&referral());
        case.apply_diagnosis(
            &[
                half(Institution::Emploi, Agreement::Agree, 1),
                half(Institution::Social, Agreement::Agree, 1),
            ],
            DiagnosisRule::BothMustAgree,
        );
        case.enter(&entry(20), &support()).expect("enters");
        let early = CaseExit {
            reason: ExitReason::Job,
            exited_at: t0() + Duration::days(3),
        };
        assert!(matches!(case.exit(&early), Err(DomainError::Invalid(_))));
    }
}
