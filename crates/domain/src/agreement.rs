//! An agreement (convention) between the employment agency and a Département,
//! as configuration: every parameter that differs between two agreements
//! lives in its file, and the rules below read them. Loading refuses a file
//! with an unknown, missing or inconsistent value, naming the key.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::consent::{Evidence, EvidenceKind};
use crate::error::{DomainError, FieldError};
use crate::terms::{CheckAnswer, ExitReason, Referent, ReferralState};
use crate::vocabulary::Network;
use crate::vocabulary::coded_enum;

/// The agreements shipped with the project, by id.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "ille-et-vilaine-2023",
        include_str!("../../../deploy/agreements/ille-et-vilaine-2023.toml"),
    ),
    (
        "seine-et-marne-2020",
        include_str!("../../../deploy/agreements/seine-et-marne-2020.toml"),
    ),
];

/// A shipped agreement by id.
pub fn shipped(id: &str) -> Result<Agreement, AgreementError> {
    let text = SHIPPED
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            invalid(
                "agreement",
                format!(
                    "no shipped agreement {id}; known: {}",
                    SHIPPED
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    Agreement::from_toml(text)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agreement key `{key}`: {reason}")]
pub struct AgreementError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> AgreementError {
    AgreementError {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// Stable identifier, e.g. `ille-et-vilaine-2023`.
    pub id: String,
    pub name: String,
    pub territory: Territory,
    pub parties: Parties,
    pub term: Term,
    pub termination: Termination,
    /// Local offices of both networks (agencies, CDAS, MDS).
    pub offices: Vec<Office>,
    pub referral: ReferralRules,
    pub shared_diagnosis: SharedDiagnosis,
    pub entry: EntryRules,
    pub global_support: SupportPeriod,
    pub capacity: Capacity,
    pub targets: Targets,
    /// Axe 3; absent where the agreement sets no rule for it.
    pub exclusive_social_support: Option<ExclusiveSocialSupport>,
    pub exits: Exits,
    pub directory: DirectoryRules,
    pub steering: Steering,
    /// The parcours the agreement organises (emploi, socio-professional,
    /// social) and where; absent where it organises none.
    #[serde(default)]
    pub parcours: Option<crate::orientation::ParcoursRules>,
    /// Storage limitation: how long each category is kept for each purpose
    /// once the case has ended.
    pub retention: Vec<RetentionRule>,
}

/// How long personal data of `categories`, kept for `purpose`, survive the
/// end of the case, and the text that sets it (or that it is to confirm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub purpose: crate::vocabulary::Purpose,
    pub categories: BTreeSet<crate::vocabulary::DataCategory>,
    pub months_after_end: u32,
    /// The article or rule it comes from.
    pub source: String,
    /// `false` where the seeds are silent: a value both DPOs must confirm.
    pub confirmed: bool,
}

/// Longest retention a file may set (ten years): anything above is a typo.
const MAX_RETENTION_MONTHS: u32 = 120;

/// When the steering committee meets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steering {
    pub committee_at_start: bool,
    /// Months after the start of a first review meeting, if any.
    pub first_review_after_months: Option<u32>,
    /// A committee this often (months), counted from the start.
    pub every_months: u32,
    pub committee_at_end: bool,
}

coded_enum!(
    /// What happens on a date of the agreement's life.
    MilestoneKind {
        Start => "start",
        Committee => "committee",
        RenewalDecisionDeadline => "renewal_decision_deadline",
        NoticeDeadline => "notice_deadline",
        End => "end",
    }
);

/// A dated step of the agreement's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    pub on: NaiveDate,
    pub kind: MilestoneKind,
    pub label: String,
}

/// Who administers the resource directory (axe 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRules {
    /// The employment side co-administers the employment-training sheets.
    pub employment_coadministers_training_sheets: bool,
    /// A named contact point is expected in every agency and local office.
    pub contact_point_per_office: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Territory {
    /// INSEE code of the Département.
    pub departement_code: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parties {
    pub employment: String,
    pub departement: String,
}

/// How long the agreement lasts and how it is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub starts_on: NaiveDate,
    /// Last day of the initial period.
    pub ends_on: NaiveDate,
    /// Express renewals allowed, each of `renewal_months`.
    pub max_renewals: u32,
    pub renewal_months: u32,
    /// Both parties sign a renewal decision at least this many months before
    /// the current period ends, or there is no renewal.
    pub renewal_decision_months_before_end: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// Months the party in breach has to comply after formal notice.
    pub cure_months: Option<u32>,
    /// Notice before termination takes effect.
    pub notice_months: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfficeKind {
    Agency,
    Cdas,
    Mds,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Office {
    pub code: String,
    pub name: String,
    pub kind: OfficeKind,
}

impl Office {
    pub fn network(&self) -> Network {
        match self.kind {
            OfficeKind::Agency => Network::Emploi,
            OfficeKind::Cdas | OfficeKind::Mds => Network::Social,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub code: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedAssociation {
    pub id: String,
    pub name: String,
}

/// Who may refer, what is checked first, how long a referral waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralRules {
    /// Associations approved by the Département that may refer under its delegation.
    pub approved_associations: Vec<ApprovedAssociation>,
    /// Pre-referral checks (preconditions) or orientation criteria, recorded with the referral.
    pub checks_kind: ChecksKind,
    pub checks: Vec<Check>,
    /// A pending referral expires after this many days…
    pub expiry_days: u32,
    /// …with reminders this many days before it does.
    pub reminder_days_before_expiry: Vec<u32>,
    pub refusal_reasons: Vec<Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksKind {
    /// Every check must hold before the diagnosis (Ille-et-Vilaine).
    Preconditions,
    /// A joint grid the professional relies on to decide (Seine-et-Marne).
    OrientationCriteria,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisRule {
    /// The person enters only if both professionals agree.
    BothMustAgree,
    /// The prescriber's detection is not overturned; pending validations are counted.
    PrescriberDecides,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDiagnosis {
    pub rule: DiagnosisRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryEvidence {
    /// A contract signed with the employment side naming the social referent.
    SignedContractNamingSocialReferent,
    /// The referral form signed by the person and the counsellor's interview conclusion.
    SignedReferralFormAndInterviewConclusion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseReferent {
    Counsellor,
    /// The counsellor and the social worker are co-responsible.
    Pair,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRules {
    pub evidence: EntryEvidence,
    pub case_referent: CaseReferent,
}

/// How long joint support lasts and how it is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportPeriod {
    pub initial_months: u32,
    pub renewal_months: u32,
    pub max_renewals: u32,
    /// Beyond the renewals, only as a justified exception.
    pub exceptional_extension: bool,
    /// A formal review is due no later than this month of support.
    pub review_due_month: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    Refuse,
    Queue,
}

/// How many people a counsellor follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub counsellors_fte: f64,
    pub portfolio_min: u32,
    pub portfolio_max: u32,
    /// The bounds apply in proportion to each counsellor's working time.
    pub prorata_working_time: bool,
    pub when_full: WhenFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearTarget {
    pub year: i32,
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub entries_per_counsellor_per_year: Option<u32>,
    pub participants: Option<u32>,
    pub steady_portfolio: Option<u32>,
    /// Referral → entry delay target, by year.
    pub entry_delay: Vec<YearTarget>,
}

/// Axe 3: the social side follows the person alone for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusiveSocialSupport {
    pub months: u32,
    pub max_renewals: u32,
    pub quota_per_office_per_year: u32,
    pub quota_per_year: u32,
    /// An office may ask for more than its quota.
    pub office_may_request_more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exits {
    pub reasons: Vec<ExitReason>,
    /// Missed appointments after which the person is taken to have ended support.
    pub missed_appointments_threshold: u32,
    /// Follow-up in employment this many months after a job exit; absent
    /// where the agreement does not ask for it.
    pub follow_up_after_job_months: Option<u32>,
}

/// Why a capacity check did not simply accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityDecision {
    Accept,
    /// The portfolio is full; the agreement queues the person.
    Queue,
    /// The portfolio is full; the agreement refuses.
    Refuse {
        max: u32,
    },
}

fn add_months(at: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    at.checked_add_months(Months::new(months)).unwrap_or(at)
}

impl Agreement {
    pub fn from_toml(text: &str) -> Result<Self, AgreementError> {
        let agreement: Agreement = toml::from_str(text).map_err(|e| {
            // toml names the faulty key in its message; keep it whole.
            let key = e.message().split('`').nth(1).unwrap_or("").to_owned();
            invalid(key, e.message().trim().to_owned())
        })?;
        agreement.validate()?;
        Ok(agreement)
    }

    /// Whether the agreement runs the processing of `purpose`: axe 3 and
    /// the parcours only where its file organises them.
    pub fn runs(&self, purpose: crate::vocabulary::Purpose) -> bool {
        use crate::vocabulary::Purpose;
        match purpose {
            Purpose::ExclusiveSocialSupport => self.exclusive_social_support.is_some(),
            Purpose::Orientation => self.parcours.is_some(),
            _ => true,
        }
    }

    /// The retention rule for `category` kept for `purpose`, if the file sets one.
    pub fn retention_for(
        &self,
        purpose: crate::vocabulary::Purpose,
        category: crate::vocabulary::DataCategory,
    ) -> Option<&RetentionRule> {
        self.retention
            .iter()
            .find(|r| r.purpose == purpose && r.categories.contains(&category))
    }

    fn validate_retention(&self) -> Result<(), AgreementError> {
        let mut seen = BTreeSet::new();
        for (i, rule) in self.retention.iter().enumerate() {
            if rule.months_after_end > MAX_RETENTION_MONTHS {
                return Err(invalid(
                    format!("retention[{i}].months_after_end"),
                    format!("is above {MAX_RETENTION_MONTHS}"),
                ));
            }
            if rule.source.trim().is_empty() {
                return Err(invalid(
                    format!("retention[{i}].source"),
                    "must name the article or rule, or say it is to confirm",
                ));
            }
            if rule.categories.is_empty() {
                return Err(invalid(format!("retention[{i}].categories"), "is empty"));
            }
            for category in &rule.categories {
                if !seen.insert((rule.purpose, *category)) {
                    return Err(invalid(
                        format!("retention[{i}].categories"),
                        format!("{category} for {} is set twice", rule.purpose),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Consistency of values no type can express.
    pub fn validate(&self) -> Result<(), AgreementError> {
        if self.id.trim().is_empty() {
            return Err(invalid("id", "is empty"));
        }
        self.validate_retention()?;
        if let Some(parcours) = &self.parcours {
            parcours.validate(self.offices.iter().map(|o| o.code.as_str()))?;
        }
        if self.term.ends_on <= self.term.starts_on {
            return Err(invalid("term.ends_on", "is not after term.starts_on"));
        }
        if self.term.max_renewals > 0 && self.term.renewal_months == 0 {
            return Err(invalid(
                "term.renewal_months",
                "must be positive when renewals are allowed",
            ));
        }
        let mut codes = BTreeSet::new();
        for (i, office) in self.offices.iter().enumerate() {
            if !codes.insert(office.code.as_str()) {
                return Err(invalid(format!("offices[{i}].code"), "is repeated"));
            }
        }
        if !self.offices.iter().any(|o| o.network() == Network::Social) {
            return Err(invalid("offices", "needs at least one CDAS or MDS"));
        }
        let r = &self.referral;
        if r.expiry_days == 0 {
            return Err(invalid("referral.expiry_days", "must be positive"));
        }
        if let Some(late) = r
            .reminder_days_before_expiry
            .iter()
            .find(|d| **d == 0 || **d >= r.expiry_days)
        {
            return Err(invalid(
                "referral.reminder_days_before_expiry",
                format!(
                    "{late} is not within the {} days before expiry",
                    r.expiry_days
                ),
            ));
        }
        if r.refusal_reasons.is_empty() {
            return Err(invalid(
                "referral.refusal_reasons",
                "needs at least one reason",
            ));
        }
        let g = &self.global_support;
        if g.initial_months == 0 {
            return Err(invalid("global_support.initial_months", "must be positive"));
        }
        if g.max_renewals > 0 && g.renewal_months == 0 {
            return Err(invalid(
                "global_support.renewal_months",
                "must be positive when renewals are allowed",
            ));
        }
        if g.review_due_month
            .is_some_and(|m| m == 0 || m > g.initial_months)
        {
            return Err(invalid(
                "global_support.review_due_month",
                "must fall within the initial period",
            ));
        }
        let c = &self.capacity;
        // NaN and negatives alike are refused.
        if !c.counsellors_fte.is_finite() || c.counsellors_fte <= 0.0 {
            return Err(invalid("capacity.counsellors_fte", "must be positive"));
        }
        if c.portfolio_min == 0 || c.portfolio_min > c.portfolio_max {
            return Err(invalid(
                "capacity.portfolio_min",
                "must be positive and at most capacity.portfolio_max",
            ));
        }
        for (i, target) in self.targets.entry_delay.iter().enumerate() {
            let last_year = self.term.ends_on.year()
                + (self.term.max_renewals * self.term.renewal_months).div_ceil(12) as i32;
            if target.year < self.term.starts_on.year()
                || target.year > last_year
                || target.days == 0
            {
                return Err(invalid(
                    format!("targets.entry_delay[{i}]"),
                    "is outside the agreement's years or zero",
                ));
            }
        }
        if let Some(axe3) = &self.exclusive_social_support {
            if axe3.months == 0 {
                return Err(invalid(
                    "exclusive_social_support.months",
                    "must be positive",
                ));
            }
            let offices = self
                .offices
                .iter()
                .filter(|o| o.network() == Network::Social)
                .count() as u32;
            if axe3.quota_per_year > axe3.quota_per_office_per_year * offices {
                return Err(invalid(
                    "exclusive_social_support.quota_per_year",
                    format!(
                        "exceeds {} per office × {offices} offices: it could never be reached",
                        axe3.quota_per_office_per_year
                    ),
                ));
            }
        }
        if self.exits.reasons.is_empty() {
            return Err(invalid("exits.reasons", "needs at least one reason"));
        }
        if self.steering.every_months == 0 {
            return Err(invalid("steering.every_months", "must be positive"));
        }
        if self.exits.follow_up_after_job_months == Some(0) {
            return Err(invalid(
                "exits.follow_up_after_job_months",
                "must be positive when set",
            ));
        }
        let mut check_codes = BTreeSet::new();
        for (i, check) in self.referral.checks.iter().enumerate() {
            if !check_codes.insert(check.code.as_str()) {
                return Err(invalid(format!("referral.checks[{i}].code"), "is repeated"));
            }
        }
        if self.referral.checks.is_empty() {
            return Err(invalid(
                "referral.checks",
                "needs at least one check or criterion",
            ));
        }
        if self.exits.missed_appointments_threshold == 0 {
            return Err(invalid(
                "exits.missed_appointments_threshold",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// Whether a referral may leave `network` from `office_code` with these
    /// answers, sent by an agent of `association` (an approved association)
    /// when set. Names the field at fault.
    pub fn check_referral(
        &self,
        network: Network,
        office_code: &str,
        checks: &[CheckAnswer],
        association: Option<&str>,
    ) -> Result<(), DomainError> {
        match self.office(office_code) {
            None => {
                return Err(FieldError::new(
                    "referral.office_code",
                    format!("is not an office of agreement {}", self.id),
                )
                .into());
            }
            Some(office) if office.network() != network => {
                return Err(FieldError::new(
                    "referral.office_code",
                    format!("is not an office of the {network} network"),
                )
                .into());
            }
            Some(_) => {}
        }
        if let Some(association) = association
            && !self
                .referral
                .approved_associations
                .iter()
                .any(|a| a.id == association)
        {
            return Err(DomainError::PermissionDenied(format!(
                "association {association} is not approved by the Département under agreement {}",
                self.id
            )));
        }
        for (i, answer) in checks.iter().enumerate() {
            if !self.referral.checks.iter().any(|c| c.code == answer.code) {
                return Err(FieldError::new(
                    format!("referral.checks[{i}].code"),
                    format!("is not a check of agreement {}", self.id),
                )
                .into());
            }
            if checks[..i].iter().any(|a| a.code == answer.code) {
                return Err(
                    FieldError::new(format!("referral.checks[{i}].code"), "is repeated").into(),
                );
            }
        }
        if let Some(missing) = self
            .referral
            .checks
            .iter()
            .find(|c| !checks.iter().any(|a| a.code == c.code))
        {
            return Err(FieldError::new(
                "referral.checks",
                format!("must answer {} ({})", missing.code, missing.label),
            )
            .into());
        }
        if self.referral.checks_kind == ChecksKind::Preconditions {
            let unmet: Vec<&str> = checks
                .iter()
                .filter(|a| !a.met)
                .map(|a| a.code.as_str())
                .collect();
            if !unmet.is_empty() {
                return Err(DomainError::FailedPrecondition(format!(
                    "the agreement's preconditions are not met: {}",
                    unmet.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `code` is one of the agreement's refusal reasons.
    pub fn refusal_reason(&self, code: &str) -> Result<(), FieldError> {
        if self.referral.refusal_reasons.iter().any(|r| r.code == code) {
            Ok(())
        } else {
            Err(FieldError::new(
                "refusal_reason",
                format!(
                    "must be one of: {}",
                    self.referral
                        .refusal_reasons
                        .iter()
                        .map(|r| r.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    }

    /// Checks an entry's evidence: every item of a kind the agreement asks
    /// for, and every kind it asks for present.
    pub fn check_entry_evidence(&self, evidence: &[Evidence]) -> Result<(), FieldError> {
        let required = self.entry_evidence_kinds();
        for (i, item) in evidence.iter().enumerate() {
            if !required.contains(&item.kind) {
                return Err(FieldError::new(
                    format!("entry.evidence[{i}].kind"),
                    format!(
                        "{} is not entry evidence under agreement {}",
                        item.kind, self.id
                    ),
                ));
            }
        }
        match required
            .iter()
            .find(|k| !evidence.iter().any(|e| e.kind == **k))
        {
            Some(missing) => Err(FieldError::new(
                "entry.evidence",
                format!("must include the {missing} (agreement {})", self.id),
            )),
            None => Ok(()),
        }
    }

    /// Checks a decision on a referral: accepted without a reason, or
    /// refused with one of the agreement's reasons.
    pub fn check_referral_decision(
        &self,
        state: ReferralState,
        refusal_reason: Option<&str>,
    ) -> Result<(), FieldError> {
        match (state, refusal_reason) {
            (ReferralState::Accepted, None) => Ok(()),
            (ReferralState::Accepted, Some(_)) => {
                Err(FieldError::new("refusal_reason", "is only for a refusal"))
            }
            (ReferralState::Refused, Some(reason)) => self.refusal_reason(reason),
            (ReferralState::Refused, None) => Err(FieldError::new(
                "refusal_reason",
                "is required for a refusal",
            )),
            _ => Err(FieldError::new("decision", "must be ACCEPTED or REFUSED")),
        }
    }

    /// The evidence an entry must carry, as the agreement reads.
    pub fn entry_evidence_kinds(&self) -> &'static [EvidenceKind] {
        match self.entry.evidence {
            EntryEvidence::SignedContractNamingSocialReferent => &[EvidenceKind::SignedContract],
            EntryEvidence::SignedReferralFormAndInterviewConclusion => &[
                EvidenceKind::SignedReferralForm,
                EvidenceKind::InterviewConclusion,
            ],
        }
    }

    pub fn referent(&self) -> Referent {
        match self.entry.case_referent {
            CaseReferent::Counsellor => Referent::Counsellor,
            CaseReferent::Pair => Referent::Pair,
        }
    }

    /// The agreement's dated life, in order, after `renewals` express
    /// renewals: start, committees, the last days to decide a renewal or to
    /// give notice, the end.
    pub fn calendar(&self, renewals: u32) -> Vec<Milestone> {
        let start = self.term.starts_on;
        let end = self.term.ends_after(renewals);
        let mut out = vec![Milestone {
            on: start,
            kind: MilestoneKind::Start,
            label: "prise d'effet de la convention".into(),
        }];
        let st = &self.steering;
        let months = |m: u32| start.checked_add_months(Months::new(m));
        if st.committee_at_start {
            out.push(Milestone {
                on: start,
                kind: MilestoneKind::Committee,
                label: "comité de démarrage".into(),
            });
        }
        if let Some(on) = st.first_review_after_months.and_then(months) {
            out.push(Milestone {
                on,
                kind: MilestoneKind::Committee,
                label: "comité : premier bilan".into(),
            });
        }
        let mut k = 1;
        while let Some(on) = months(st.every_months * k) {
            if on >= end {
                break;
            }
            out.push(Milestone {
                on,
                kind: MilestoneKind::Committee,
                label: "comité annuel : bilan et orientations".into(),
            });
            k += 1;
        }
        if st.committee_at_end {
            out.push(Milestone {
                on: end,
                kind: MilestoneKind::Committee,
                label: "comité de fin de convention".into(),
            });
        }
        if renewals < self.term.max_renewals
            && let Some(on) = self.term.renewal_decision_deadline(end)
        {
            out.push(Milestone {
                on,
                kind: MilestoneKind::RenewalDecisionDeadline,
                label: "dernier jour pour décider du renouvellement".into(),
            });
        }
        if let Some(on) = end.checked_sub_months(Months::new(self.termination.notice_months)) {
            out.push(Milestone {
                on,
                kind: MilestoneKind::NoticeDeadline,
                label: "dernier jour pour dénoncer la convention avant son terme".into(),
            });
        }
        out.push(Milestone {
            on: end,
            kind: MilestoneKind::End,
            label: "fin de la convention".into(),
        });
        out.sort_by_key(|m| (m.on, m.kind));
        out.dedup();
        out
    }

    /// What is due next on or after `today`.
    pub fn next_milestones(&self, renewals: u32, today: NaiveDate) -> Vec<Milestone> {
        self.calendar(renewals)
            .into_iter()
            .filter(|m| m.on >= today)
            .collect()
    }

    pub fn office(&self, code: &str) -> Option<&Office> {
        self.offices.iter().find(|o| o.code == code)
    }

    pub fn entry_delay_target_days(&self, year: i32) -> Option<u32> {
        self.targets
            .entry_delay
            .iter()
            .find(|t| t.year == year)
            .map(|t| t.days)
    }
}

impl Term {
    /// End of the agreement after `renewals` express renewals.
    pub fn ends_after(&self, renewals: u32) -> NaiveDate {
        self.ends_on
            .checked_add_months(Months::new(
                renewals.min(self.max_renewals) * self.renewal_months,
            ))
            .unwrap_or(self.ends_on)
    }

    /// Last day on which a renewal decision may be signed for the period
    /// ending on `period_end`; `None` when no decision is needed.
    pub fn renewal_decision_deadline(&self, period_end: NaiveDate) -> Option<NaiveDate> {
        self.renewal_decision_months_before_end.map(|m| {
            period_end
                .checked_sub_months(Months::new(m))
                .unwrap_or(period_end)
        })
    }
}

impl SupportPeriod {
    /// When support entered at `entered_at` ends, after `renewals` renewals.
    pub fn ends_at(&self, entered_at: DateTime<Utc>, renewals: u32) -> DateTime<Utc> {
        add_months(
            entered_at,
            self.initial_months + renewals * self.renewal_months,
        )
    }

    /// Whether one more renewal may be granted.
    pub fn may_renew(&self, renewals_so_far: u32, exceptional: bool) -> Result<(), String> {
        if renewals_so_far < self.max_renewals || (self.exceptional_extension && exceptional) {
            Ok(())
        } else if self.exceptional_extension {
            Err(format!(
                "renewed {renewals_so_far} time(s) already: only a justified exception allows more"
            ))
        } else {
            Err(format!(
                "the agreement allows {} renewal(s)",
                self.max_renewals
            ))
        }
    }

    pub fn review_due_at(&self, entered_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.review_due_month.map(|m| add_months(entered_at, m))
    }
}

/// A share of full time, in per mille, as the working-time register keeps it.
pub fn working_time_share(per_mille: u32) -> Result<f64, FieldError> {
    if (1..=1000).contains(&per_mille) {
        Ok(f64::from(per_mille) / 1000.0)
    } else {
        Err(FieldError::new(
            "working_time_per_mille",
            "must be between 1 and 1000",
        ))
    }
}

impl Capacity {
    /// The portfolio bound of a counsellor working `working_time_share` (0..=1) of full time.
    pub fn max_portfolio(&self, working_time_share: f64) -> u32 {
        if self.prorata_working_time {
            (f64::from(self.portfolio_max) * working_time_share.clamp(0.0, 1.0)).floor() as u32
        } else {
            self.portfolio_max
        }
    }

    /// Whether a counsellor with `current` people may take one more.
    pub fn admit(&self, current: u32, working_time_share: f64) -> CapacityDecision {
        let max = self.max_portfolio(working_time_share);
        match (current < max, self.when_full) {
            (true, _) => CapacityDecision::Accept,
            (false, WhenFull::Queue) => CapacityDecision::Queue,
            (false, WhenFull::Refuse) => CapacityDecision::Refuse { max },
        }
    }
}

impl ExclusiveSocialSupport {
    /// Checks a quota an office asked for: at least the agreement's, at
    /// most ten times it.
    pub fn check_raised_quota(&self, quota: u32) -> Result<(), FieldError> {
        let base = self.quota_per_office_per_year;
        if quota < base || quota > 10 * base {
            return Err(FieldError::new(
                "quota",
                format!("must be between the agreement's {base} and ten times it"),
            ));
        }
        Ok(())
    }

    /// Whether one more axe 3 entry fits an office's yearly quota and the
    /// agreement's. `office_limit` is the office's raised quota, if it asked.
    pub fn admit(
        &self,
        office_entries_this_year: u32,
        all_entries_this_year: u32,
        office_limit: Option<u32>,
    ) -> Result<(), String> {
        let office_quota = match office_limit {
            Some(raised) if self.office_may_request_more => {
                raised.max(self.quota_per_office_per_year)
            }
            _ => self.quota_per_office_per_year,
        };
        if office_entries_this_year >= office_quota {
            return Err(format!(
                "the office has used its {office_quota} exclusive social support entries this year"
            ));
        }
        if office_limit.is_none() && all_entries_this_year >= self.quota_per_year {
            return Err(format!(
                "the {} exclusive social support entries of the year are used",
                self.quota_per_year
            ));
        }
        Ok(())
    }

    pub fn ends_at(&self, started_at: DateTime<Utc>, renewals: u32) -> DateTime<Utc> {
        add_months(
            started_at,
            self.months * (1 + renewals.min(self.max_renewals)),
        )
    }
}

impl Exits {
    pub fn allows(&self, reason: ExitReason) -> bool {
        self.reasons.contains(&reason)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const IEV: &str = include_str!("../../../deploy/agreements/ille-et-vilaine-2023.toml");
    const SEM: &str = include_str!("../../../deploy/agreements/seine-et-marne-2020.toml");

    fn iev() -> Agreement {
        Agreement::from_toml(IEV).expect("Ille-et-Vilaine loads")
    }

    fn sem() -> Agreement {
        Agreement::from_toml(SEM).expect("Seine-et-Marne loads")
    }

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 9, 0, 0)
            .single()
            .expect("valid")
    }

    fn evidence(kind: EvidenceKind) -> Evidence {
        Evidence {
            kind,
            document_sha256: "0".repeat(64),
            signed_at: at(2024, 1, 15),
            collected_by: "a".into(),
        }
    }

    #[test]
    fn entry_evidence_is_the_agreements_own_and_complete() {
        use EvidenceKind::{InterviewConclusion, SignedContract, SignedReferralForm};
        let (iev, sem) = (iev(), sem());
        assert!(
            iev.check_entry_evidence(&[evidence(SignedContract)])
                .is_ok()
        );
        let missing = iev.check_entry_evidence(&[]).unwrap_err();
        assert_eq!(missing.field, "entry.evidence");
        let foreign = iev
            .check_entry_evidence(&[evidence(SignedContract), evidence(SignedReferralForm)])
            .unwrap_err();
        assert_eq!(foreign.field, "entry.evidence[1].kind");
        assert!(
            sem.check_entry_evidence(&[
                evidence(SignedReferralForm),
                evidence(InterviewConclusion)
            ])
            .is_ok()
        );
        assert!(
            sem.check_entry_evidence(&[evidence(SignedReferralForm)])
                .is_err()
        );
    }

    #[test]
    fn a_referral_is_accepted_without_a_reason_or_refused_with_one_of_the_agreements() {
        let sem = sem();
        let reason = sem.referral.refusal_reasons[0].code.clone();
        assert!(
            sem.check_referral_decision(ReferralState::Accepted, None)
                .is_ok()
        );
        assert!(
            sem.check_referral_decision(ReferralState::Refused, Some(&reason))
                .is_ok()
        );
        let field = |state, reason: Option<&str>| {
            sem.check_referral_decision(state, reason)
                .unwrap_err()
                .field
        };
        assert_eq!(
            field(ReferralState::Accepted, Some(&reason)),
            "refusal_reason"
        );
        assert_eq!(field(ReferralState::Refused, None), "refusal_reason");
        assert_eq!(
            field(ReferralState::Refused, Some("made-up")),
            "refusal_reason"
        );
        assert_eq!(field(ReferralState::Expired, None), "decision");
        assert_eq!(field(ReferralState::Pending, None), "decision");
    }

    #[test]
    fn working_time_is_a_share_of_full_time_and_a_raised_quota_stays_within_ten_times() {
        assert_eq!(working_time_share(1000), Ok(1.0));
        assert_eq!(working_time_share(200), Ok(0.2));
        assert!(working_time_share(0).is_err());
        assert!(working_time_share(1001).is_err());
        let axe3 = sem().exclusive_social_support.expect("SeM has axe 3");
        let base = axe3.quota_per_office_per_year;
        assert!(axe3.check_raised_quota(base).is_ok());
        assert!(axe3.check_raised_quota(10 * base).is_ok());
        assert_eq!(
            axe3.check_raised_quota(base - 1).unwrap_err().field,
            "quota"
        );
        assert!(axe3.check_raised_quota(10 * base + 1).is_err());
    }

    #[test]
    fn the_same_case_runs_9_plus_3_months_in_one_and_6_plus_6_in_the_other() {
        let entered = at(2024, 1, 15);
        let (iev, sem) = (iev(), sem());
        assert_eq!(iev.global_support.ends_at(entered, 0), at(2024, 10, 15));
        assert_eq!(iev.global_support.ends_at(entered, 1), at(2025, 1, 15));
        assert_eq!(sem.global_support.ends_at(entered, 0), at(2024, 7, 15));
        assert_eq!(sem.global_support.ends_at(entered, 1), at(2025, 1, 15));

        assert_eq!(iev.global_support.may_renew(0, false), Ok(()));
        assert!(
            iev.global_support.may_renew(1, true).is_err(),
            "Ille-et-Vilaine: once, no exception"
        );
        assert!(sem.global_support.may_renew(1, false).is_err());
        assert_eq!(
            sem.global_support.may_renew(1, true),
            Ok(()),
            "Seine-et-Marne: beyond, as a justified exception"
        );

        assert_eq!(iev.global_support.review_due_at(entered), None);
        assert_eq!(
            sem.global_support.review_due_at(entered),
            Some(at(2024, 7, 15)),
            "tripartite review by month 6"
        );
    }

    #[test]
    fn the_25th_axe_3_entry_of_an_mds_in_a_year_is_refused_unless_it_asked_for_more() {
        let sem = sem();
        let axe3 = sem
            .exclusive_social_support
            .as_ref()
            .expect("Seine-et-Marne sets axe 3 rules");
        assert_eq!(axe3.admit(23, 100, None), Ok(()));
        let refused = axe3.admit(24, 100, None).unwrap_err();
        assert!(refused.contains("24"), "{refused}");
        assert_eq!(
            axe3.admit(24, 100, Some(30)),
            Ok(()),
            "the office asked for more"
        );
        assert!(axe3.admit(10, 168, None).is_err(), "168 in all");
        assert_eq!(
            axe3.ends_at(at(2020, 3, 1), 1),
            at(2021, 3, 1),
            "6 months renewable once"
        );
        assert!(
            iev().exclusive_social_support.is_none(),
            "Ille-et-Vilaine sets no axe 3 quota"
        );
    }

    #[test]
    fn portfolios_are_bounded_as_each_agreement_reads() {
        let (iev, sem) = (iev(), sem());
        assert_eq!(
            iev.capacity.admit(99, 0.5),
            CapacityDecision::Accept,
            "full-time counsellors: 100 whatever the share"
        );
        assert_eq!(
            iev.capacity.admit(100, 1.0),
            CapacityDecision::Refuse { max: 100 }
        );
        assert_eq!(sem.capacity.max_portfolio(0.8), 80, "by working-time share");
        assert_eq!(sem.capacity.admit(80, 0.8), CapacityDecision::Queue);
        assert_eq!(sem.capacity.admit(79, 0.8), CapacityDecision::Accept);
    }

    #[test]
    fn agreement_terms_and_renewal_deadlines() {
        let (iev, sem) = (iev(), sem());
        assert_eq!(
            iev.term.ends_after(0),
            NaiveDate::from_ymd_opt(2025, 7, 9).expect("date")
        );
        assert_eq!(
            iev.term.ends_after(2),
            NaiveDate::from_ymd_opt(2027, 7, 9).expect("date")
        );
        assert_eq!(
            iev.term.ends_after(5),
            iev.term.ends_after(2),
            "renewable twice only"
        );
        assert_eq!(
            iev.term.renewal_decision_deadline(iev.term.ends_on),
            NaiveDate::from_ymd_opt(2025, 5, 9),
            "two calendar months before the end"
        );
        assert_eq!(sem.term.renewal_decision_deadline(sem.term.ends_on), None);
        assert_eq!(sem.entry_delay_target_days(2020), Some(30));
        assert_eq!(sem.entry_delay_target_days(2021), Some(21));
        assert_eq!(iev.targets.entries_per_counsellor_per_year, Some(127));
        assert_eq!(iev.shared_diagnosis.rule, DiagnosisRule::BothMustAgree);
        assert_eq!(sem.shared_diagnosis.rule, DiagnosisRule::PrescriberDecides);
        assert_eq!(sem.exits.follow_up_after_job_months, Some(6));
        assert_eq!(iev.exits.follow_up_after_job_months, None);
        assert_eq!(
            sem.offices
                .iter()
                .filter(|o| o.kind == OfficeKind::Mds)
                .count(),
            7
        );
    }

    #[test]
    fn a_missing_or_inconsistent_value_names_its_key() {
        let missing = IEV.replace("initial_months = 9\n", "");
        let err = Agreement::from_toml(&missing).unwrap_err();
        assert_eq!(err.key, "initial_months", "{err}");

        let inverted = IEV.replace("portfolio_min = 70", "portfolio_min = 120");
        assert_eq!(
            Agreement::from_toml(&inverted).unwrap_err().key,
            "capacity.portfolio_min"
        );

        let unreachable = SEM.replace("quota_per_year = 168", "quota_per_year = 300");
        assert_eq!(
            Agreement::from_toml(&unreachable).unwrap_err().key,
            "exclusive_social_support.quota_per_year"
        );

        let unknown = SEM.replace(
            "months = 6\nmax_renewals = 1\nquota",
            "months = 6\nmax_renewal = 1\nquota",
        );
        let err = Agreement::from_toml(&unknown).unwrap_err();
        assert!(err.to_string().contains("max_renewal"), "{err}");

        let late_review = SEM.replace("review_due_month = 6", "review_due_month = 9");
        assert_eq!(
            Agreement::from_toml(&late_review).unwrap_err().key,
            "global_support.review_due_month"
        );
    }

    fn answers(agreement: &Agreement, met: bool) -> Vec<CheckAnswer> {
        agreement
            .referral
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| CheckAnswer {
                code: c.code.clone(),
                met: met || i > 0,
            })
            .collect()
    }

    #[test]
    fn preconditions_block_a_referral_where_orientation_criteria_only_inform() {
        let (iev, sem) = (iev(), sem());
        let iev_office = "AD-RENNES";
        let sem_office = "MDS-01";
        assert!(
            iev.check_referral(Network::Social, iev_office, &answers(&iev, true), None)
                .is_ok()
        );
        assert!(matches!(
            iev.check_referral(Network::Social, iev_office, &answers(&iev, false), None),
            Err(DomainError::FailedPrecondition(m)) if m.contains("lack_of_autonomy")
        ));
        assert!(
            sem.check_referral(Network::Social, sem_office, &answers(&sem, false), None)
                .is_ok(),
            "a criterion not met is recorded, not blocking"
        );
        // Every check is answered, with known codes, from an office of the right network.
        let mut partial = answers(&sem, true);
        partial.pop();
        assert!(matches!(
            sem.check_referral(Network::Social, sem_office, &partial, None),
            Err(DomainError::Invalid(e)) if e.field == "referral.checks"
        ));
        let mut unknown = answers(&sem, true);
        unknown[1].code = "lack_of_autonomy".into();
        assert!(matches!(
            sem.check_referral(Network::Social, sem_office, &unknown, None),
            Err(DomainError::Invalid(e)) if e.field == "referral.checks[1].code"
        ));
        assert!(matches!(
            sem.check_referral(Network::Emploi, sem_office, &answers(&sem, true), None),
            Err(DomainError::Invalid(e)) if e.field == "referral.office_code"
        ));
    }

    #[test]
    fn only_approved_associations_refer_under_delegation() {
        let (iev, sem) = (iev(), sem());
        assert!(
            sem.check_referral(
                Network::Social,
                "MDS-02",
                &answers(&sem, true),
                Some("asll-77")
            )
            .is_ok()
        );
        assert!(matches!(
            sem.check_referral(
                Network::Social,
                "MDS-02",
                &answers(&sem, true),
                Some("other")
            ),
            Err(DomainError::PermissionDenied(_))
        ));
        assert!(matches!(
            iev.check_referral(
                Network::Social,
                "AD-RENNES",
                &answers(&iev, true),
                Some("asll-77")
            ),
            Err(DomainError::PermissionDenied(_))
        ));
    }

    #[test]
    fn entry_evidence_and_referent_follow_the_agreement() {
        let (iev, sem) = (iev(), sem());
        assert_eq!(iev.entry_evidence_kinds(), &[EvidenceKind::SignedContract]);
        assert_eq!(
            sem.entry_evidence_kinds(),
            &[
                EvidenceKind::SignedReferralForm,
                EvidenceKind::InterviewConclusion
            ]
        );
        assert_eq!(iev.referent(), Referent::Counsellor);
        assert_eq!(sem.referent(), Referent::Pair);
        assert!(iev.refusal_reason("preconditions_not_met").is_ok());
        assert!(sem.refusal_reason("preconditions_not_met").is_err());
    }

    #[test]
    fn the_committee_calendar_follows_each_agreement() {
        let (iev, sem) = (iev(), sem());
        let committees = |a: &Agreement| {
            a.calendar(0)
                .into_iter()
                .filter(|m| m.kind == MilestoneKind::Committee)
                .map(|m| m.on.to_string())
                .collect::<Vec<_>>()
        };
        // Seine-et-Marne: at the start, at +6 months, yearly, at the end.
        assert_eq!(
            committees(&sem),
            vec!["2020-01-01", "2020-07-01", "2021-01-01", "2021-12-31"]
        );
        // Ille-et-Vilaine: yearly.
        assert_eq!(committees(&iev), vec!["2024-07-10"]);
        // Its renewal must be decided two months before the end.
        let deadline = iev
            .calendar(0)
            .into_iter()
            .find(|m| m.kind == MilestoneKind::RenewalDecisionDeadline)
            .expect("deadline");
        assert_eq!(deadline.on.to_string(), "2025-05-09");
        assert!(
            !sem.calendar(0)
                .iter()
                .any(|m| m.kind == MilestoneKind::RenewalDecisionDeadline),
            "no express renewal in Seine-et-Marne"
        );
        // After two renewals the end moves by two years, and no renewal is left.
        let renewed = iev.calendar(2);
        assert_eq!(
            renewed.last().map(|m| m.on.to_string()),
            Some("2027-07-09".into())
        );
        assert!(
            !renewed
                .iter()
                .any(|m| m.kind == MilestoneKind::RenewalDecisionDeadline)
        );
        let next = iev.next_milestones(0, NaiveDate::from_ymd_opt(2025, 1, 1).expect("date"));
        assert_eq!(next[0].kind, MilestoneKind::NoticeDeadline);
        assert_eq!(next[0].on.to_string(), "2025-04-09");
    }
}
