//! Proto <-> domain conversions, at the edge. Proto to domain validates and
//! names the field at fault; domain to proto cannot fail.

use chrono::{DateTime, Utc};
use passerelle_domain as domain;
use passerelle_domain::FieldError;
use passerelle_domain::person::{self, MAX_ADDRESS, MAX_SHORT_TEXT};

use crate::v1;

type Result<T> = std::result::Result<T, FieldError>;

/// Maps a proto enum value to its domain twin; zero and unknown values are refused.
pub fn enum_field<P, D>(field: &str, value: i32, map: impl Fn(P) -> Option<D>) -> Result<D>
where
    P: TryFrom<i32>,
{
    let proto = P::try_from(value)
        .map_err(|_| FieldError::new(field, format!("has unknown value {value}")))?;
    map(proto).ok_or_else(|| FieldError::new(field, "is required"))
}

pub fn timestamp_from(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>> {
    let ts = ts.ok_or_else(|| FieldError::new(field, "is required"))?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| FieldError::new(field, "has nanos outside 0 to 999,999,999"))?;
    let at = DateTime::from_timestamp(ts.seconds, nanos)
        .ok_or_else(|| FieldError::new(field, "is out of range"))?;
    domain::bounds::instant(field, at)
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn optional_timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(timestamp)
}

fn required<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

/// A case or record identifier: a UUID in its hyphenated form.
pub fn identifier(field: &str, value: &str) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    uuid_like(trimmed)
        .then(|| trimmed.to_owned())
        .ok_or_else(|| FieldError::new(field, "is not a UUID"))
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// A lowercase or uppercase hex SHA-256 digest.
pub fn sha256_hex(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FieldError::new(field, "is not a SHA-256 hex digest"));
    }
    Ok(v.to_ascii_lowercase())
}

/// A proto enum and its domain twin, converted both ways with the same
/// variant names: `UNSPECIFIED` (or a value this build does not know) reads
/// as `None`, so the caller names the field at fault; every domain value has
/// a proto one.
macro_rules! enum_pair {
    ($vis:vis fn $from:ident: $proto:path => $domain:path { $($variant:ident),+ $(,)? }) => {
        $vis fn $from(p: $proto) -> Option<$domain> {
            use $proto as P;
            use $domain as D;
            match p {
                $(P::$variant => Some(D::$variant),)+
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }

        impl From<$domain> for $proto {
            fn from(d: $domain) -> Self {
                use $proto as P;
                use $domain as D;
                match d {
                    $(D::$variant => P::$variant,)+
                }
            }
        }
    };
}

// ---- vocabulary -------------------------------------------------------------

enum_pair!(pub fn institution: v1::Institution => domain::Institution {
    Emploi, Social, Pilotage
});

enum_pair!(pub fn role: v1::Role => domain::Role {
    Counsellor, SocialWorker, Coordinator, Service, Steering, Dpo, AssociationWorker
});

enum_pair!(pub fn purpose: v1::Purpose => domain::Purpose {
    Referral, GlobalSupport, ExclusiveSocialSupport, RsaJobseekerList, JobseekerFile, Statistics, SubjectAccess, ConsentRecord, RightsNotification, AuditIntegrity, Orientation
});

enum_pair!(pub fn legal_basis: v1::LegalBasis => domain::LegalBasis {
    Consent, LegalObligation, PublicTask
});

enum_pair!(pub fn data_category: v1::DataCategory => domain::DataCategory {
    Public, Identity, Contact, Case, Barrier, Employment, SocialPlan, LocalOnly, Aggregate
});

enum_pair!(fn network: v1::Network => domain::Network {
    Emploi, Social
});

// ---- person -----------------------------------------------------------------

enum_pair!(fn barrier_category: v1::BarrierCategory => domain::BarrierCategory {
    Mobility, Housing, Health, FamilyChildcare, Financial, AdministrativeLegal, Digital, LiteracyNumeracy, SocialInsertion
});

enum_pair!(fn barrier_level: v1::BarrierLevel => domain::BarrierLevel {
    Low, Medium, High
});

pub fn barriers(field: &str, list: &[v1::Barrier]) -> Result<Vec<domain::Barrier>> {
    let out = list
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("{field}[{i}]");
            Ok(domain::Barrier {
                category: enum_field(&format!("{at}.category"), b.category, barrier_category)?,
                level: enum_field(&format!("{at}.level"), b.level, barrier_level)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    person::check_barriers(field, &out)?;
    Ok(out)
}

fn barriers_to_proto(list: &[domain::Barrier]) -> Vec<v1::Barrier> {
    list.iter()
        .map(|b| v1::Barrier {
            category: v1::BarrierCategory::from(b.category) as i32,
            level: v1::BarrierLevel::from(b.level) as i32,
        })
        .collect()
}

impl TryFrom<&v1::PersonIdentity> for domain::PersonIdentity {
    type Error = FieldError;
    fn try_from(p: &v1::PersonIdentity) -> Result<Self> {
        Ok(domain::PersonIdentity {
            first_name: person::required_text("first_name", &p.first_name, MAX_SHORT_TEXT)?,
            last_name: person::required_text("last_name", &p.last_name, MAX_SHORT_TEXT)?,
            birth_date: domain::bounds::birth_year(
                "birth_date",
                person::parse_date("birth_date", &p.birth_date)?,
            )?,
            jobseeker_number: person::optional_text("jobseeker_number", &p.jobseeker_number, 32)?,
        })
    }
}

impl From<&domain::PersonIdentity> for v1::PersonIdentity {
    fn from(d: &domain::PersonIdentity) -> Self {
        v1::PersonIdentity {
            first_name: d.first_name.clone(),
            last_name: d.last_name.clone(),
            birth_date: d.birth_date.format("%Y-%m-%d").to_string(),
            jobseeker_number: d.jobseeker_number.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::Contact> for domain::Contact {
    type Error = FieldError;
    fn try_from(c: &v1::Contact) -> Result<Self> {
        let email = person::optional_text("email", &c.email, 254)?;
        if email.as_deref().is_some_and(|e| !e.contains('@')) {
            return Err(FieldError::new("email", "is not an e-mail address"));
        }
        Ok(domain::Contact {
            phone: person::optional_text("phone", &c.phone, 32)?,
            email,
            postal_address: person::optional_text(
                "postal_address",
                &c.postal_address,
                MAX_ADDRESS,
            )?,
        })
    }
}

impl From<&domain::Contact> for v1::Contact {
    fn from(d: &domain::Contact) -> Self {
        v1::Contact {
            phone: d.phone.clone().unwrap_or_default(),
            email: d.email.clone().unwrap_or_default(),
            postal_address: d.postal_address.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::EmploymentSummary> for domain::EmploymentSummary {
    type Error = FieldError;
    fn try_from(e: &v1::EmploymentSummary) -> Result<Self> {
        let registration_date = match e.registration_date.trim() {
            "" => None,
            d => Some(domain::bounds::record_date(
                "registration_date",
                person::parse_date("registration_date", d)?,
            )?),
        };
        if registration_date.is_some() && !e.registered {
            return Err(FieldError::new(
                "registration_date",
                "is set but registered is false",
            ));
        }
        Ok(domain::EmploymentSummary {
            registered: e.registered,
            registration_date,
            rsa_beneficiary: e.rsa_beneficiary,
        })
    }
}

impl From<&domain::EmploymentSummary> for v1::EmploymentSummary {
    fn from(d: &domain::EmploymentSummary) -> Self {
        v1::EmploymentSummary {
            registered: d.registered,
            registration_date: d
                .registration_date
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            rsa_beneficiary: d.rsa_beneficiary,
        }
    }
}

// ---- consent ----------------------------------------------------------------

enum_pair!(fn evidence_kind: v1::EvidenceKind => domain::EvidenceKind {
    SignedReferralForm, SignedContract, InterviewConclusion
});

impl TryFrom<&v1::ConsentEvidence> for domain::Evidence {
    type Error = FieldError;
    fn try_from(e: &v1::ConsentEvidence) -> Result<Self> {
        Ok(domain::Evidence {
            kind: enum_field("kind", e.kind, evidence_kind)?,
            document_sha256: sha256_hex("document_sha256", &e.document_sha256)?,
            signed_at: timestamp_from("signed_at", e.signed_at.as_ref())?,
            collected_by: person::required_text("collected_by", &e.collected_by, MAX_SHORT_TEXT)?,
        })
    }
}

impl From<&domain::Evidence> for v1::ConsentEvidence {
    fn from(d: &domain::Evidence) -> Self {
        v1::ConsentEvidence {
            kind: match d.kind {
                domain::EvidenceKind::SignedReferralForm => v1::EvidenceKind::SignedReferralForm,
                domain::EvidenceKind::SignedContract => v1::EvidenceKind::SignedContract,
                domain::EvidenceKind::InterviewConclusion => v1::EvidenceKind::InterviewConclusion,
            } as i32,
            document_sha256: d.document_sha256.clone(),
            signed_at: Some(timestamp(d.signed_at)),
            collected_by: d.collected_by.clone(),
        }
    }
}

fn set_of<P: TryFrom<i32>, D: Ord>(
    field: &str,
    values: &[i32],
    map: impl Fn(P) -> Option<D>,
) -> Result<std::collections::BTreeSet<D>> {
    if values.is_empty() {
        return Err(FieldError::new(field, "needs at least one value"));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| enum_field(&format!("{field}[{i}]"), *v, &map))
        .collect()
}

/// A consent as an agent records it: the service assigns its id and state.
pub fn new_consent(c: &v1::ConsentRecord) -> Result<domain::NewConsent> {
    let case_id = match c.case_id.trim() {
        "" => None,
        id => Some(identifier("case_id", id)?.into()),
    };
    let evidence = domain::Evidence::try_from(required("evidence", c.evidence.as_ref())?)
        .map_err(|e| e.within("evidence"))?;
    let valid_from = timestamp_from("valid_from", c.valid_from.as_ref())?;
    let valid_until = timestamp_from("valid_until", c.valid_until.as_ref())?;
    if valid_until <= valid_from {
        return Err(FieldError::new("valid_until", "is not after valid_from"));
    }
    let categories = set_of("categories", &c.categories, data_category)?;
    if categories.contains(&domain::DataCategory::LocalOnly) {
        return Err(FieldError::new(
            "categories",
            "cannot include LOCAL_ONLY: such data never leaves its service",
        ));
    }
    Ok(domain::NewConsent {
        case_id,
        purposes: set_of("purposes", &c.purposes, purpose)?,
        recipients: set_of("recipients", &c.recipients, institution)?,
        categories,
        evidence,
        valid_from,
        valid_until,
    })
}

enum_pair!(fn consent_state: v1::ConsentState => domain::ConsentState {
    Given, Withdrawn, Revoked, Expired
});

/// A complete consent record, as the partner shares it.
impl TryFrom<&v1::ConsentRecord> for domain::Consent {
    type Error = FieldError;
    fn try_from(c: &v1::ConsentRecord) -> Result<Self> {
        let draft = new_consent(c)?;
        Ok(domain::Consent {
            consent_id: identifier("consent_id", &c.consent_id)?.into(),
            case_id: draft
                .case_id
                .ok_or_else(|| FieldError::new("case_id", "is required"))?,
            purposes: draft.purposes,
            recipients: draft.recipients,
            categories: draft.categories,
            evidence: draft.evidence,
            valid_from: draft.valid_from,
            valid_until: draft.valid_until,
            state: enum_field("state", c.state, consent_state)?,
            state_changed_at: timestamp_from("state_changed_at", c.state_changed_at.as_ref())?,
            holder: enum_field("holder", c.holder, institution)?,
        })
    }
}

impl From<&domain::Consent> for v1::ConsentRecord {
    fn from(d: &domain::Consent) -> Self {
        v1::ConsentRecord {
            consent_id: d.consent_id.to_string(),
            case_id: d.case_id.to_string(),
            purposes: d
                .purposes
                .iter()
                .map(|p| v1::Purpose::from(*p) as i32)
                .collect(),
            recipients: d
                .recipients
                .iter()
                .map(|i| v1::Institution::from(*i) as i32)
                .collect(),
            categories: d
                .categories
                .iter()
                .map(|c| v1::DataCategory::from(*c) as i32)
                .collect(),
            evidence: Some(v1::ConsentEvidence::from(&d.evidence)),
            valid_from: Some(timestamp(d.valid_from)),
            valid_until: Some(timestamp(d.valid_until)),
            state: match d.state {
                domain::ConsentState::Given => v1::ConsentState::Given,
                domain::ConsentState::Withdrawn => v1::ConsentState::Withdrawn,
                domain::ConsentState::Revoked => v1::ConsentState::Revoked,
                domain::ConsentState::Expired => v1::ConsentState::Expired,
            } as i32,
            state_changed_at: Some(timestamp(d.state_changed_at)),
            holder: v1::Institution::from(d.holder) as i32,
        }
    }
}

// ---- referral and diagnosis ---------------------------------------------------

/// A referral as an agent submits it.
pub fn referral_draft(r: &v1::Referral) -> Result<domain::ReferralDraft> {
    Ok(domain::ReferralDraft {
        case_id: identifier("case_id", &r.case_id)?.into(),
        office_code: person::required_text("office_code", &r.office_code, MAX_SHORT_TEXT)?,
        person: domain::PersonIdentity::try_from(required("person", r.person.as_ref())?)
            .map_err(|e| e.within("person"))?,
        contact: r
            .contact
            .as_ref()
            .map(domain::Contact::try_from)
            .transpose()
            .map_err(|e| e.within("contact"))?
            .unwrap_or_default(),
        barriers: barriers("barriers", &r.barriers)?,
        employment: r
            .employment
            .as_ref()
            .map(domain::EmploymentSummary::try_from)
            .transpose()
            .map_err(|e| e.within("employment"))?
            .unwrap_or_default(),
        consent_id: identifier("consent_id", &r.consent_id)?.into(),
        checks: r
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(domain::CheckAnswer {
                    code: person::required_text(
                        &format!("checks[{i}].code"),
                        &c.code,
                        MAX_SHORT_TEXT,
                    )?,
                    met: c.met,
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// A complete referral, as the partner sends it.
impl TryFrom<&v1::Referral> for domain::Referral {
    type Error = FieldError;
    fn try_from(r: &v1::Referral) -> Result<Self> {
        let draft = referral_draft(r)?;
        let mut referral = draft.complete(
            enum_field("referring_network", r.referring_network, network)?,
            person::required_text("referred_by", &r.referred_by, MAX_SHORT_TEXT)?,
            timestamp_from("referred_at", r.referred_at.as_ref())?,
            person::optional_text("association_id", &r.association_id, MAX_SHORT_TEXT)?,
        );
        referral.orientation = r
            .orientation
            .as_ref()
            .map(domain::orientation::Orientation::try_from)
            .transpose()
            .map_err(|e| e.within("orientation"))?;
        if referral
            .orientation
            .as_ref()
            .is_some_and(|o| o.case_id != referral.case_id)
        {
            return Err(FieldError::new(
                "orientation.case_id",
                "must be the referral's case",
            ));
        }
        Ok(referral)
    }
}

impl From<&domain::Referral> for v1::Referral {
    fn from(d: &domain::Referral) -> Self {
        v1::Referral {
            case_id: d.case_id.to_string(),
            referring_network: v1::Network::from(d.referring_network) as i32,
            referred_by: d.referred_by.clone(),
            office_code: d.office_code.clone(),
            person: Some((&d.person).into()),
            contact: Some((&d.contact).into()),
            barriers: barriers_to_proto(&d.barriers),
            employment: Some((&d.employment).into()),
            referred_at: Some(timestamp(d.referred_at)),
            consent_id: d.consent_id.to_string(),
            checks: d
                .checks
                .iter()
                .map(|c| v1::CheckAnswer {
                    code: c.code.clone(),
                    met: c.met,
                })
                .collect(),
            association_id: d.association_id.clone().unwrap_or_default(),
            orientation: d.orientation.as_ref().map(Into::into),
        }
    }
}

// ---- orientation ------------------------------------------------------------

enum_pair!(fn parcours: v1::Parcours => domain::orientation::Parcours {
    Emploi, SocioProfessionnel, Social
});

enum_pair!(fn organisme_referent: v1::OrganismeReferent => domain::orientation::OrganismeReferent {
    FranceTravail, Departement, MissionLocale, CapEmploi
});

/// More answers than any grid has: a longer list is refused before it is read.
const MAX_CRITERIA: usize = 64;

/// An orientation's own fields with `criteria`, fields named within the
/// `Orientation` message.
fn orientation_with(
    o: &v1::Orientation,
    criteria: Vec<domain::orientation::CriterionAnswer>,
) -> Result<domain::orientation::OrientationDraft> {
    Ok(domain::orientation::OrientationDraft {
        case_id: identifier("case_id", &o.case_id)?.into(),
        office_code: person::required_text("office_code", &o.office_code, MAX_SHORT_TEXT)?,
        parcours: enum_field("parcours", o.parcours, parcours)?,
        criteria,
        referent: enum_field("referent", o.referent, organisme_referent)?,
        rsa_beneficiary: o.rsa_beneficiary,
    })
}

/// What an agent submits of an orientation, with the grid answered (its
/// own field beside the orientation in the request).
pub fn orientation_draft(
    o: &v1::Orientation,
    criteria: &[v1::CriterionAnswer],
) -> Result<domain::orientation::OrientationDraft> {
    if criteria.len() > MAX_CRITERIA {
        return Err(FieldError::new(
            "criteria",
            format!("has more than {MAX_CRITERIA} answers"),
        ));
    }
    let criteria = criteria
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(domain::orientation::CriterionAnswer {
                criterion: person::required_text(
                    &format!("criteria[{i}].criterion"),
                    &c.criterion,
                    MAX_SHORT_TEXT,
                )?,
                answer: person::required_text(
                    &format!("criteria[{i}].answer"),
                    &c.answer,
                    MAX_SHORT_TEXT,
                )?,
            })
        })
        .collect::<Result<_>>()?;
    orientation_with(o, criteria).map_err(|e| e.within("orientation"))
}

/// A decided orientation, as the partner sends it (never with its grid).
impl TryFrom<&v1::Orientation> for domain::orientation::Orientation {
    type Error = FieldError;
    fn try_from(o: &v1::Orientation) -> Result<Self> {
        let draft = orientation_with(o, vec![])?;
        let side = enum_field(
            "decided_by_institution",
            o.decided_by_institution,
            institution,
        )?;
        let side = domain::Side::of(side).ok_or_else(|| {
            FieldError::new(
                "decided_by_institution",
                "must be France Travail or the Département",
            )
        })?;
        Ok(draft.decide(
            side,
            person::required_text("decided_by", &o.decided_by, MAX_SHORT_TEXT)?,
            timestamp_from("decided_at", o.decided_at.as_ref())?,
        ))
    }
}

impl From<&domain::orientation::Orientation> for v1::Orientation {
    fn from(d: &domain::orientation::Orientation) -> Self {
        v1::Orientation {
            case_id: d.case_id.to_string(),
            office_code: d.office_code.clone(),
            parcours: v1::Parcours::from(d.parcours) as i32,
            referent: v1::OrganismeReferent::from(d.referent) as i32,
            rsa_beneficiary: d.rsa_beneficiary,
            decided_by_institution: v1::Institution::from(d.decided_by_institution) as i32,
            decided_by: d.decided_by.clone(),
            decided_at: Some(timestamp(d.decided_at)),
        }
    }
}

/// An orientation with its grid, as the side holding it shows it.
impl From<&domain::orientation::Orientation> for v1::LocalOrientation {
    fn from(d: &domain::orientation::Orientation) -> Self {
        v1::LocalOrientation {
            orientation: Some(d.into()),
            criteria: d
                .criteria
                .iter()
                .map(|c| v1::CriterionAnswer {
                    criterion: c.criterion.clone(),
                    answer: c.answer.clone(),
                })
                .collect(),
        }
    }
}

enum_pair!(fn verdict: v1::Verdict => domain::Verdict {
    Agree, Disagree
});

pub fn diagnosis_draft(h: &v1::DiagnosisHalf) -> Result<domain::DiagnosisDraft> {
    Ok(domain::DiagnosisDraft {
        case_id: identifier("case_id", &h.case_id)?.into(),
        barriers: barriers("barriers", &h.barriers)?,
        verdict: enum_field("verdict", h.verdict, verdict)?,
    })
}

impl TryFrom<&v1::DiagnosisHalf> for domain::DiagnosisHalf {
    type Error = FieldError;
    fn try_from(h: &v1::DiagnosisHalf) -> Result<Self> {
        let draft = diagnosis_draft(h)?;
        Ok(domain::DiagnosisHalf {
            case_id: draft.case_id,
            author_institution: enum_field(
                "author_institution",
                h.author_institution,
                institution,
            )?,
            author: person::required_text("author", &h.author, MAX_SHORT_TEXT)?,
            barriers: draft.barriers,
            verdict: draft.verdict,
            recorded_at: timestamp_from("recorded_at", h.recorded_at.as_ref())?,
        })
    }
}

impl From<&domain::DiagnosisHalf> for v1::DiagnosisHalf {
    fn from(d: &domain::DiagnosisHalf) -> Self {
        v1::DiagnosisHalf {
            case_id: d.case_id.to_string(),
            author_institution: v1::Institution::from(d.author_institution) as i32,
            author: d.author.clone(),
            barriers: barriers_to_proto(&d.barriers),
            verdict: v1::Verdict::from(d.verdict) as i32,
            recorded_at: Some(timestamp(d.recorded_at)),
        }
    }
}

// ---- case -------------------------------------------------------------------

enum_pair!(pub fn track: v1::Track => domain::Track {
    Global, SocialExclusive
});

enum_pair!(pub fn exit_reason: v1::ExitReason => domain::ExitReason {
    Job, Training, JobSearchAutonomy, SocialProblemSolved, EndedByPerson, MissedAppointments, Deregistered, EndOfTerm, EmploymentTrack, ConsentWithdrawn
});

pub fn pair(p: &v1::Pair) -> Result<domain::Pair> {
    Ok(domain::Pair {
        counsellor: person::required_text("counsellor", &p.counsellor, MAX_SHORT_TEXT)?,
        social_worker: person::required_text("social_worker", &p.social_worker, MAX_SHORT_TEXT)?,
    })
}

impl From<&domain::Pair> for v1::Pair {
    fn from(d: &domain::Pair) -> Self {
        v1::Pair {
            counsellor: d.counsellor.clone(),
            social_worker: d.social_worker.clone(),
        }
    }
}

/// An entry as the partner reports it.
impl TryFrom<&v1::CaseEntry> for domain::CaseEntry {
    type Error = FieldError;
    fn try_from(e: &v1::CaseEntry) -> Result<Self> {
        Ok(domain::CaseEntry {
            pair: pair(required("pair", e.pair.as_ref())?).map_err(|err| err.within("pair"))?,
            track: enum_field("track", e.track, track)?,
            entered_at: timestamp_from("entered_at", e.entered_at.as_ref())?,
            evidence: entry_evidence(&e.evidence)?,
            referent: enum_field("referent", e.referent, referent)?,
        })
    }
}

impl From<&domain::CaseEntry> for v1::CaseEntry {
    fn from(d: &domain::CaseEntry) -> Self {
        v1::CaseEntry {
            pair: Some((&d.pair).into()),
            track: v1::Track::from(d.track) as i32,
            entered_at: Some(timestamp(d.entered_at)),
            evidence: d.evidence.iter().map(Into::into).collect(),
            referent: v1::Referent::from(d.referent) as i32,
        }
    }
}

impl TryFrom<&v1::CaseExit> for domain::CaseExit {
    type Error = FieldError;
    fn try_from(e: &v1::CaseExit) -> Result<Self> {
        Ok(domain::CaseExit {
            reason: enum_field("reason", e.reason, exit_reason)?,
            exited_at: timestamp_from("exited_at", e.exited_at.as_ref())?,
        })
    }
}

impl From<&domain::CaseExit> for v1::CaseExit {
    fn from(d: &domain::CaseExit) -> Self {
        v1::CaseExit {
            reason: v1::ExitReason::from(d.reason) as i32,
            exited_at: Some(timestamp(d.exited_at)),
        }
    }
}

impl TryFrom<&v1::CaseEvent> for domain::CaseEvent {
    type Error = FieldError;
    fn try_from(e: &v1::CaseEvent) -> Result<Self> {
        match e.change.as_ref() {
            Some(v1::case_event::Change::Entry(entry)) => domain::CaseEntry::try_from(entry)
                .map(domain::CaseEvent::Entered)
                .map_err(|err| err.within("entry")),
            Some(v1::case_event::Change::Exit(exit)) => domain::CaseExit::try_from(exit)
                .map(domain::CaseEvent::Exited)
                .map_err(|err| err.within("exit")),
            Some(v1::case_event::Change::Renewal(renewal)) => {
                Ok(domain::CaseEvent::Renewed(domain::CaseRenewal {
                    renewals: renewal.renewals,
                    renewed_at: timestamp_from("renewal.renewed_at", renewal.renewed_at.as_ref())?,
                    exceptional: renewal.exceptional,
                }))
            }
            Some(v1::case_event::Change::Queued(q)) => Ok(domain::CaseEvent::Queued {
                pair: pair(required("queued.pair", q.pair.as_ref())?)
                    .map_err(|err| err.within("queued.pair"))?,
                queued_at: timestamp_from("queued.queued_at", q.queued_at.as_ref())?,
            }),
            Some(v1::case_event::Change::AppointmentMissed(m)) => {
                Ok(domain::CaseEvent::AppointmentMissed {
                    at: timestamp_from("appointment_missed.at", m.at.as_ref())?,
                })
            }
            None => Err(FieldError::new("change", "is required")),
        }
    }
}

pub fn case_event(case_id: &str, d: &domain::CaseEvent) -> v1::CaseEvent {
    v1::CaseEvent {
        case_id: case_id.to_owned(),
        change: Some(match d {
            domain::CaseEvent::Entered(entry) => v1::case_event::Change::Entry(entry.into()),
            domain::CaseEvent::Exited(exit) => v1::case_event::Change::Exit(exit.into()),
            domain::CaseEvent::Renewed(r) => v1::case_event::Change::Renewal(v1::CaseRenewal {
                renewals: r.renewals,
                renewed_at: Some(timestamp(r.renewed_at)),
                exceptional: r.exceptional,
            }),
            domain::CaseEvent::Queued { pair, queued_at } => {
                v1::case_event::Change::Queued(v1::CaseQueued {
                    pair: Some(pair.into()),
                    queued_at: Some(timestamp(*queued_at)),
                })
            }
            domain::CaseEvent::AppointmentMissed { at } => {
                v1::case_event::Change::AppointmentMissed(v1::AppointmentMissed {
                    at: Some(timestamp(*at)),
                })
            }
        }),
    }
}

impl From<&domain::Case> for v1::Case {
    fn from(d: &domain::Case) -> Self {
        use domain::CaseState as S;
        v1::Case {
            case_id: d.case_id.to_string(),
            track: v1::Track::from(d.track) as i32,
            state: match d.state {
                S::Referred => v1::CaseState::Referred,
                S::Diagnosed => v1::CaseState::Diagnosed,
                S::Active => v1::CaseState::Active,
                S::Exited => v1::CaseState::Exited,
                S::NotEntered => v1::CaseState::NotEntered,
                S::Queued => v1::CaseState::Queued,
            } as i32,
            pair: d.pair.as_ref().map(Into::into),
            referring_network: v1::Network::from(d.referring_network) as i32,
            referred_at: Some(timestamp(d.referred_at)),
            diagnosed_at: optional_timestamp(d.diagnosed_at),
            entered_at: optional_timestamp(d.entered_at),
            exited_at: optional_timestamp(d.exited_at),
            exit_reason: d
                .exit_reason
                .map(|r| v1::ExitReason::from(r) as i32)
                .unwrap_or_default(),
            renewals: d.renewals,
            ends_at: optional_timestamp(d.ends_at),
            review_due_at: optional_timestamp(d.review_due_at),
            office_code: d.office_code.clone(),
            referral_state: v1::ReferralState::from(d.referral_state) as i32,
            referral_expires_at: Some(timestamp(d.referral_expires_at)),
            refusal_reason: d.refusal_reason.clone().unwrap_or_default(),
            referent: d
                .referent
                .map(|r| v1::Referent::from(r) as i32)
                .unwrap_or_default(),
            queued_at: optional_timestamp(d.queued_at),
            missed_appointments: d.missed_appointments,
            follow_up_due_at: optional_timestamp(d.follow_up_due_at),
            follow_up_in_employment: d.follow_up_in_employment,
            entry_evidence: d.entry_evidence.iter().map(Into::into).collect(),
        }
    }
}

// ---- indicators -----------------------------------------------------------------

impl From<&domain::Cell> for v1::Cell {
    fn from(d: &domain::Cell) -> Self {
        v1::Cell {
            key: d.key.clone(),
            count: d.count.unwrap_or(0),
            suppressed: d.count.is_none(),
        }
    }
}

impl From<&domain::Indicators> for v1::Indicators {
    fn from(d: &domain::Indicators) -> Self {
        v1::Indicators {
            source: v1::Institution::from(d.source) as i32,
            computed_at: Some(timestamp(d.computed_at)),
            counts: d
                .counts
                .iter()
                .map(|(k, value)| v1::IndicatorCount {
                    measure: k.measure.clone(),
                    month: k.month.clone(),
                    office: k.office.clone(),
                    network: k.network.clone(),
                    key: k.key.clone(),
                    value: *value,
                })
                .collect(),
            counsellor_fte_per_mille: d.counsellor_fte_per_mille,
        }
    }
}

impl TryFrom<&v1::Indicators> for domain::Indicators {
    type Error = FieldError;
    fn try_from(p: &v1::Indicators) -> Result<Self> {
        let mut counts = Vec::with_capacity(p.counts.len());
        for (i, c) in p.counts.iter().enumerate() {
            if domain::statistics::measure_named(&c.measure).is_none() {
                return Err(FieldError::new(
                    format!("counts[{i}].measure"),
                    format!("{:?} is not a known measure", c.measure),
                ));
            }
            if c.value < 0 {
                return Err(FieldError::new(
                    format!("counts[{i}].value"),
                    "a count cannot be negative",
                ));
            }
            counts.push((
                domain::statistics::CubeKey {
                    measure: c.measure.clone(),
                    month: c.month.clone(),
                    office: c.office.clone(),
                    network: c.network.clone(),
                    key: c.key.clone(),
                },
                c.value,
            ));
        }
        Ok(domain::Indicators {
            source: enum_field("source", p.source, institution)?,
            computed_at: timestamp_from("computed_at", p.computed_at.as_ref())?,
            counts,
            counsellor_fte_per_mille: p.counsellor_fte_per_mille,
        })
    }
}

fn published_table(name: &str, t: &domain::secrecy::Published) -> v1::PublishedTable {
    v1::PublishedTable {
        name: name.to_owned(),
        title: name
            .split('.')
            .next()
            .and_then(domain::statistics::measure_named)
            .map(|m| m.label.to_owned())
            .unwrap_or_default(),
        rows: t.rows.iter().map(|h| h.label.clone()).collect(),
        columns: t.columns.iter().map(|h| h.label.clone()).collect(),
        row_levels: t.rows.iter().map(|h| h.level.clone()).collect(),
        column_levels: t.columns.iter().map(|h| h.level.clone()).collect(),
        cells: t
            .cells
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(c, cell)| v1::Cell {
                    key: format!("{}|{}", t.rows[r].label, t.columns[c].label),
                    count: cell.unwrap_or(0),
                    suppressed: cell.is_none(),
                })
            })
            .collect(),
        withheld: t.withheld,
        sensitive: t.sensitive,
    }
}

impl From<&domain::Dashboard> for v1::Dashboard {
    fn from(d: &domain::Dashboard) -> Self {
        let s = &d.staffing;
        v1::Dashboard {
            assembled_at: Some(timestamp(d.assembled_at)),
            entries: Some((&d.entries).into()),
            in_progress: Some((&d.in_progress).into()),
            average_entry_delay_days: d.average_entry_delay_days.unwrap_or(0.0),
            average_entry_delay_suppressed: d.average_entry_delay_days.is_none(),
            exits_by_type: d.exits_by_type.iter().map(Into::into).collect(),
            referrals_by_network: d.referrals_by_network.iter().map(Into::into).collect(),
            sources: d
                .sources
                .iter()
                .map(|s| v1::SourceStatus {
                    source: v1::Institution::from(s.source) as i32,
                    computed_at: Some(timestamp(s.computed_at)),
                    fresh: s.fresh,
                })
                .collect(),
            min_cell_size: u32::try_from(d.min_cell_size).unwrap_or(u32::MAX),
            referral_outcomes: d.referral_outcomes.iter().map(Into::into).collect(),
            refusals_by_reason: d.refusals_by_reason.iter().map(Into::into).collect(),
            awaiting_validation_by_party: d
                .awaiting_validation_by_party
                .iter()
                .map(Into::into)
                .collect(),
            not_entered_at_diagnosis: Some((&d.not_entered_at_diagnosis).into()),
            queued: Some((&d.queued).into()),
            exclusive_support_entries: Some((&d.exclusive_support_entries).into()),
            tables: d
                .tables
                .iter()
                .map(|(name, t)| published_table(name, t))
                .collect(),
            delays: d
                .delays
                .iter()
                .map(|f| v1::DelayFigure {
                    period: f.period.clone(),
                    level: f.level.clone(),
                    entries: Some((&f.entries).into()),
                    referral_to_entry_days: f.referral_to_entry,
                    referral_to_diagnosis_days: f.referral_to_diagnosis,
                    diagnosis_to_entry_days: f.diagnosis_to_entry,
                    target_days: f.target_days,
                })
                .collect(),
            staffing: Some(v1::Staffing {
                counsellors_fte: s.counsellors_fte,
                agreed_fte: s.agreed_fte,
                average_portfolio: s.average_portfolio,
                portfolio_min: s.portfolio_min,
                portfolio_max: s.portfolio_max,
                steady_portfolio_target: s.steady_portfolio_target,
                entries_by_year: s
                    .entries_by_year
                    .iter()
                    .map(|y| v1::YearFigure {
                        year: y.year.clone(),
                        entries: Some((&y.entries).into()),
                        entries_per_counsellor: y.per_counsellor,
                        target_per_counsellor: y.target_per_counsellor,
                    })
                    .collect(),
                participants: Some((&s.participants).into()),
                participants_target: s.participants_target,
            }),
            esf: d
                .esf
                .iter()
                .map(|f| v1::EsfFigure {
                    code: f.code.clone(),
                    label: f.label.clone(),
                    count: Some((&f.count).into()),
                })
                .collect(),
        }
    }
}

/// The ESF questionnaire as an agent fills it in.
pub fn participant(p: &v1::ParticipantProfile) -> Result<domain::Participant> {
    use domain::{DisabilityDeclaration as D, EducationLevel as E, Sex as S};
    Ok(domain::Participant {
        sex: enum_field("sex", p.sex, |v: v1::Sex| match v {
            v1::Sex::Female => Some(S::Female),
            v1::Sex::Male => Some(S::Male),
            v1::Sex::Unspecified => None,
        })?,
        education: enum_field("education", p.education, |v: v1::EducationLevel| match v {
            v1::EducationLevel::Isced02 => Some(E::Isced0To2),
            v1::EducationLevel::Isced34 => Some(E::Isced3To4),
            v1::EducationLevel::Isced58 => Some(E::Isced5To8),
            v1::EducationLevel::Unspecified => None,
        })?,
        jobless_household: p.jobless_household,
        single_adult_with_children: p.single_adult_with_children,
        disability: enum_field(
            "disability",
            p.disability,
            |v: v1::DisabilityDeclaration| match v {
                v1::DisabilityDeclaration::Declared => Some(D::Declared),
                v1::DisabilityDeclaration::NotDeclared => Some(D::NotDeclared),
                v1::DisabilityDeclaration::Undisclosed => Some(D::Undisclosed),
                v1::DisabilityDeclaration::Unspecified => None,
            },
        )?,
    })
}

/// The ESF questionnaire as it is shown back (to the person, in their access report).
pub fn participant_profile(p: &domain::Participant) -> v1::ParticipantProfile {
    use domain::{DisabilityDeclaration as D, EducationLevel as E, Sex as S};
    v1::ParticipantProfile {
        sex: match p.sex {
            S::Female => v1::Sex::Female,
            S::Male => v1::Sex::Male,
        } as i32,
        education: match p.education {
            E::Isced0To2 => v1::EducationLevel::Isced02,
            E::Isced3To4 => v1::EducationLevel::Isced34,
            E::Isced5To8 => v1::EducationLevel::Isced58,
        } as i32,
        jobless_household: p.jobless_household,
        single_adult_with_children: p.single_adult_with_children,
        disability: match p.disability {
            D::Declared => v1::DisabilityDeclaration::Declared,
            D::NotDeclared => v1::DisabilityDeclaration::NotDeclared,
            D::Undisclosed => v1::DisabilityDeclaration::Undisclosed,
        } as i32,
    }
}

pub fn due_item(case_id: &str, kind: domain::DueKind, at: DateTime<Utc>) -> v1::DueItem {
    v1::DueItem {
        case_id: case_id.to_owned(),
        kind: match kind {
            domain::DueKind::Review => v1::DueKind::Review,
            domain::DueKind::EndOfPeriod => v1::DueKind::EndOfPeriod,
            domain::DueKind::ReferralReminder => v1::DueKind::ReferralReminder,
            domain::DueKind::ReferralExpiry => v1::DueKind::ReferralExpiry,
            domain::DueKind::DiagnosisValidation => v1::DueKind::DiagnosisValidation,
            domain::DueKind::FollowUp => v1::DueKind::FollowUp,
        } as i32,
        due_at: Some(timestamp(at)),
    }
}

// ---- referral decisions, entry, plans, exclusive support ------------------------

/// The evidence of an entry, each item checked.
pub fn entry_evidence(list: &[v1::ConsentEvidence]) -> Result<Vec<domain::Evidence>> {
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            domain::Evidence::try_from(e).map_err(|err| err.within(&format!("evidence[{i}]")))
        })
        .collect()
}

enum_pair!(pub fn referral_state: v1::ReferralState => domain::ReferralState {
    Pending, Accepted, Refused, Expired, Withdrawn
});

enum_pair!(pub fn referent: v1::Referent => domain::Referent {
    Counsellor, Pair
});

impl TryFrom<&v1::ReferralDecision> for domain::ReferralDecision {
    type Error = FieldError;
    fn try_from(p: &v1::ReferralDecision) -> Result<Self> {
        Ok(domain::ReferralDecision {
            state: enum_field("state", p.state, referral_state)?,
            refusal_reason: person::optional_text(
                "refusal_reason",
                &p.refusal_reason,
                MAX_SHORT_TEXT,
            )?,
            decided_at: timestamp_from("decided_at", p.decided_at.as_ref())?,
        })
    }
}

impl From<&domain::ReferralDecision> for v1::ReferralDecision {
    fn from(d: &domain::ReferralDecision) -> Self {
        v1::ReferralDecision {
            state: v1::ReferralState::from(d.state) as i32,
            refusal_reason: d.refusal_reason.clone().unwrap_or_default(),
            decided_at: Some(timestamp(d.decided_at)),
        }
    }
}

enum_pair!(pub fn exclusive_outcome: v1::ExclusiveOutcome => domain::ExclusiveOutcome {
    Renew, MoveToGlobalSupport, ReturnToEmploymentTrack
});

impl TryFrom<&v1::SuspensionNotice> for domain::SuspensionNotice {
    type Error = FieldError;
    fn try_from(p: &v1::SuspensionNotice) -> Result<Self> {
        Ok(domain::SuspensionNotice {
            case_id: identifier("case_id", &p.case_id)?.into(),
            jobseeker_number: person::optional_text(
                "jobseeker_number",
                &p.jobseeker_number,
                MAX_SHORT_TEXT,
            )?
            .unwrap_or_default(),
            suspended_from: timestamp_from("suspended_from", p.suspended_from.as_ref())?,
            suspended_until: p
                .suspended_until
                .as_ref()
                .map(|t| timestamp_from("suspended_until", Some(t)))
                .transpose()?,
            renewals: p.renewals,
            outcome: match v1::ExclusiveOutcome::try_from(p.outcome) {
                Ok(v1::ExclusiveOutcome::Unspecified) => None,
                _ => Some(enum_field("outcome", p.outcome, exclusive_outcome)?),
            },
            changed_at: timestamp_from("changed_at", p.changed_at.as_ref())?,
        })
    }
}

impl From<&domain::SuspensionNotice> for v1::SuspensionNotice {
    fn from(d: &domain::SuspensionNotice) -> Self {
        v1::SuspensionNotice {
            case_id: d.case_id.to_string(),
            jobseeker_number: d.jobseeker_number.clone(),
            suspended_from: Some(timestamp(d.suspended_from)),
            suspended_until: optional_timestamp(d.suspended_until),
            renewals: d.renewals,
            outcome: d
                .outcome
                .map(|o| v1::ExclusiveOutcome::from(o) as i32)
                .unwrap_or_default(),
            changed_at: Some(timestamp(d.changed_at)),
        }
    }
}

enum_pair!(fn end_of_processing_reason: v1::EndOfProcessingReason => domain::EndOfProcessingReason {
    ConsentWithdrawn
});

impl TryFrom<&v1::EndOfProcessingNotice> for domain::EndOfProcessing {
    type Error = FieldError;
    fn try_from(p: &v1::EndOfProcessingNotice) -> Result<Self> {
        Ok(domain::EndOfProcessing {
            case_id: identifier("case_id", &p.case_id)?.into(),
            ended_at: timestamp_from("ended_at", p.ended_at.as_ref())?,
            reason: enum_field("reason", p.reason, end_of_processing_reason)?,
        })
    }
}

impl From<&domain::EndOfProcessing> for v1::EndOfProcessingNotice {
    fn from(d: &domain::EndOfProcessing) -> Self {
        v1::EndOfProcessingNotice {
            case_id: d.case_id.to_string(),
            ended_at: Some(timestamp(d.ended_at)),
            reason: v1::EndOfProcessingReason::from(d.reason) as i32,
        }
    }
}

enum_pair!(fn rights_notice_kind: v1::RightsNoticeKind => domain::rights::RightsNoticeKind {
    Erasure, Rectification, Restriction, RestrictionLifted, Objection
});

impl From<&domain::rights::RightsNotice> for v1::RightsNotice {
    fn from(d: &domain::rights::RightsNotice) -> Self {
        use domain::rights::RectifiableField as F;
        let mut person = v1::PersonIdentity::default();
        let mut contact = v1::Contact::default();
        for r in &d.rectified {
            let slot = match r.field {
                F::FirstName => &mut person.first_name,
                F::LastName => &mut person.last_name,
                F::BirthDate => &mut person.birth_date,
                F::JobseekerNumber => &mut person.jobseeker_number,
                F::Phone => &mut contact.phone,
                F::Email => &mut contact.email,
                F::PostalAddress => &mut contact.postal_address,
            };
            slot.clone_from(&r.value);
        }
        let names_person = d
            .rectified
            .iter()
            .any(|r| r.field.code().starts_with("referral.person."));
        let names_contact = d
            .rectified
            .iter()
            .any(|r| r.field.code().starts_with("referral.contact."));
        v1::RightsNotice {
            kind: v1::RightsNoticeKind::from(d.kind) as i32,
            at: Some(timestamp(d.at)),
            fields: d
                .rectified
                .iter()
                .map(|r| r.field.code().to_owned())
                .collect(),
            person: names_person.then_some(person),
            contact: names_contact.then_some(contact),
            purpose: d
                .purpose
                .map(|p| v1::Purpose::from(p) as i32)
                .unwrap_or_default(),
        }
    }
}

/// A rights notice as the partner sent it: each field it names, with its
/// value from the identity or contact it carries.
pub fn rights_notice(case_id: &str, p: &v1::RightsNotice) -> Result<domain::rights::RightsNotice> {
    use domain::rights::{RectifiableField as F, RectifiedValue};
    let person = p.person.clone().unwrap_or_default();
    let contact = p.contact.clone().unwrap_or_default();
    let mut rectified = vec![];
    for (i, path) in p.fields.iter().enumerate() {
        let field = F::from_code(path).ok_or_else(|| {
            FieldError::new(
                format!("fields[{i}]"),
                "is not a field that can be rectified",
            )
        })?;
        let value = match field {
            F::FirstName => &person.first_name,
            F::LastName => &person.last_name,
            F::BirthDate => &person.birth_date,
            F::JobseekerNumber => &person.jobseeker_number,
            F::Phone => &contact.phone,
            F::Email => &contact.email,
            F::PostalAddress => &contact.postal_address,
        };
        rectified.push(RectifiedValue {
            field,
            value: value.clone(),
        });
    }
    let kind = enum_field("kind", p.kind, rights_notice_kind)?;
    if kind == domain::rights::RightsNoticeKind::Rectification && rectified.is_empty() {
        return Err(FieldError::new("fields", "names no field to rectify"));
    }
    let purpose = match kind {
        domain::rights::RightsNoticeKind::Objection => {
            Some(enum_field("purpose", p.purpose, purpose)?)
        }
        _ => None,
    };
    Ok(domain::rights::RightsNotice {
        case_id: identifier("case_id", case_id)?.into(),
        kind,
        at: timestamp_from("at", p.at.as_ref())?,
        rectified,
        purpose,
    })
}

enum_pair!(fn plan_kind: v1::PlanKind => domain::plan::PlanKind {
    Social, Employment
});

enum_pair!(fn theme: v1::Theme => domain::plan::Theme {
    Mobility, Housing, Health, FamilyChildcare, Financial, AdministrativeLegal, Digital, LiteracyNumeracy, SocialInsertion, JobProject, JobSearch, Training, WorkExperience
});

enum_pair!(fn action_status: v1::ActionStatus => domain::plan::ActionStatus {
    Planned, InProgress, Done, Abandoned
});

/// A plan as an agent submits it; author and time are set by the service.
pub fn plan_themes(
    p: &v1::Plan,
) -> Result<(String, domain::plan::PlanKind, Vec<domain::plan::PlanTheme>)> {
    let case_id = identifier("case_id", &p.case_id)?;
    let kind = enum_field("kind", p.kind, plan_kind)?;
    let themes = p
        .themes
        .iter()
        .enumerate()
        .map(|(t, th)| {
            let at = format!("themes[{t}]");
            Ok(domain::plan::PlanTheme {
                theme: enum_field(&format!("{at}.theme"), th.theme, theme)?,
                goals: th
                    .goals
                    .iter()
                    .enumerate()
                    .map(|(g, goal)| {
                        Ok(domain::plan::PlanGoal {
                            title: goal.title.trim().to_owned(),
                            actions: goal
                                .actions
                                .iter()
                                .enumerate()
                                .map(|(a, action)| {
                                    Ok(domain::plan::PlanAction {
                                        directory_service_id: Some(
                                            action.directory_service_id.trim().to_owned(),
                                        )
                                        .filter(|id| !id.is_empty()),
                                        title: action.title.trim().to_owned(),
                                        status: enum_field(
                                            &format!("{at}.goals[{g}].actions[{a}].status"),
                                            action.status,
                                            action_status,
                                        )?,
                                    })
                                })
                                .collect::<Result<_>>()?,
                        })
                    })
                    .collect::<Result<_>>()?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((case_id, kind, themes))
}

impl From<&domain::plan::Plan> for v1::Plan {
    fn from(d: &domain::plan::Plan) -> Self {
        v1::Plan {
            case_id: d.case_id.to_string(),
            kind: v1::PlanKind::from(d.kind) as i32,
            themes: d
                .themes
                .iter()
                .map(|t| v1::PlanTheme {
                    theme: v1::Theme::from(t.theme) as i32,
                    goals: t
                        .goals
                        .iter()
                        .map(|g| v1::PlanGoal {
                            title: g.title.clone(),
                            actions: g
                                .actions
                                .iter()
                                .map(|a| v1::PlanAction {
                                    title: a.title.clone(),
                                    status: v1::ActionStatus::from(a.status) as i32,
                                    directory_service_id: a
                                        .directory_service_id
                                        .clone()
                                        .unwrap_or_default(),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            updated_by: d.updated_by.clone(),
            updated_at: Some(timestamp(d.updated_at)),
        }
    }
}

impl From<&domain::plan::PlanSummary> for v1::PlanSummary {
    fn from(d: &domain::plan::PlanSummary) -> Self {
        v1::PlanSummary {
            case_id: d.case_id.to_string(),
            kind: v1::PlanKind::from(d.kind) as i32,
            themes: d
                .themes
                .iter()
                .map(|t| v1::ThemeSummary {
                    theme: v1::Theme::from(t.theme) as i32,
                    goals: t.goals,
                    planned: t.planned,
                    in_progress: t.in_progress,
                    done: t.done,
                    abandoned: t.abandoned,
                })
                .collect(),
            updated_at: Some(timestamp(d.updated_at)),
        }
    }
}

impl TryFrom<&v1::PlanSummary> for domain::plan::PlanSummary {
    type Error = FieldError;
    fn try_from(p: &v1::PlanSummary) -> Result<Self> {
        Ok(domain::plan::PlanSummary {
            case_id: identifier("case_id", &p.case_id)?.into(),
            kind: enum_field("kind", p.kind, plan_kind)?,
            themes: p
                .themes
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok(domain::plan::ThemeSummary {
                        theme: enum_field(&format!("themes[{i}].theme"), t.theme, theme)?,
                        goals: t.goals,
                        planned: t.planned,
                        in_progress: t.in_progress,
                        done: t.done,
                        abandoned: t.abandoned,
                    })
                })
                .collect::<Result<_>>()?,
            updated_at: timestamp_from("updated_at", p.updated_at.as_ref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral() -> v1::Referral {
        v1::Referral {
            case_id: "0193a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into(),
            office_code: "CDAS-RENNES-NORD".into(),
            person: Some(v1::PersonIdentity {
                first_name: "Léa".into(),
                last_name: "Martin".into(),
                birth_date: "1988-04-12".into(),
                jobseeker_number: String::new(),
            }),
            barriers: vec![v1::Barrier {
                category: v1::BarrierCategory::Housing as i32,
                level: v1::BarrierLevel::High as i32,
            }],
            consent_id: "0193a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6e".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_draft_converts() {
        let draft = referral_draft(&referral()).expect("valid");
        assert_eq!(draft.person.first_name, "Léa");
    }

    #[test]
    fn errors_name_the_nested_field() {
        let mut r = referral();
        r.person.as_mut().expect("set").birth_date = "1988-13-40".into();
        assert_eq!(referral_draft(&r).unwrap_err().field, "person.birth_date");

        let mut r = referral();
        r.barriers[0].level = 42;
        let err = referral_draft(&r).unwrap_err();
        assert_eq!(err.field, "barriers[0].level");
        assert!(err.reason.contains("unknown value 42"));

        let mut r = referral();
        r.person = None;
        assert_eq!(referral_draft(&r).unwrap_err().field, "person");
    }

    #[test]
    fn referral_round_trips() {
        let complete = referral_draft(&referral()).expect("valid").complete(
            domain::Network::Social,
            "sw-1".into(),
            DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            Some("asll-77".into()),
        );
        let proto = v1::Referral::from(&complete);
        assert_eq!(domain::Referral::try_from(&proto), Ok(complete));
    }
}
