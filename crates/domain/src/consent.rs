//! Consent as a record with a life (FHIR Consent / ISO 27560 in spirit):
//! who may receive what, why, on which evidence, for how long, and its state.
//! Withdrawal is a state change, never a deletion.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CaseId, ConsentId};
use crate::vocabulary::{DataCategory, Institution, Purpose, coded_enum};

coded_enum!(
    ConsentState { Given => "given", Withdrawn => "withdrawn", Revoked => "revoked", Expired => "expired" }
);

coded_enum!(
    EvidenceKind {
        SignedReferralForm => "signed_referral_form",
        SignedContract => "signed_contract",
        InterviewConclusion => "interview_conclusion",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub kind: EvidenceKind,
    /// SHA-256 of the signed document, lowercase hex.
    pub document_sha256: String,
    pub signed_at: DateTime<Utc>,
    pub collected_by: String,
}

/// What an agent records; the service fills in identity and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    pub case_id: Option<CaseId>,
    pub purposes: BTreeSet<Purpose>,
    pub recipients: BTreeSet<Institution>,
    pub categories: BTreeSet<DataCategory>,
    pub evidence: Evidence,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub consent_id: ConsentId,
    pub case_id: CaseId,
    pub purposes: BTreeSet<Purpose>,
    pub recipients: BTreeSet<Institution>,
    pub categories: BTreeSet<DataCategory>,
    pub evidence: Evidence,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub state: ConsentState,
    pub state_changed_at: DateTime<Utc>,
    /// The institution that collected it and keeps the evidence.
    pub holder: Institution,
}

/// Why a consent does not cover a crossing. Said to callers as is: it names
/// no personal value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("no consent covers this case")]
    Missing,
    #[error("the consent was withdrawn")]
    Withdrawn,
    #[error("the consent was revoked")]
    Revoked,
    #[error("the consent has expired")]
    Expired,
    #[error("the consent is not yet valid")]
    NotYetValid,
    #[error("the consent does not cover the purpose {0}")]
    OtherPurpose(Purpose),
    #[error("the consent does not name {0} as a recipient")]
    OtherRecipient(Institution),
}

impl Consent {
    /// The state at `now`: a given consent past its end is expired even if
    /// nobody has written that down yet.
    pub fn state_at(&self, now: DateTime<Utc>) -> ConsentState {
        match self.state {
            ConsentState::Given if now >= self.valid_until => ConsentState::Expired,
            s => s,
        }
    }

    /// Does this consent let `recipient` receive data for `purpose` at `now`?
    pub fn covers(
        &self,
        purpose: Purpose,
        recipient: Institution,
        now: DateTime<Utc>,
    ) -> Result<(), ConsentRefusal> {
        match self.state_at(now) {
            ConsentState::Withdrawn => return Err(ConsentRefusal::Withdrawn),
            ConsentState::Revoked => return Err(ConsentRefusal::Revoked),
            ConsentState::Expired => return Err(ConsentRefusal::Expired),
            ConsentState::Given => {}
        }
        if now < self.valid_from {
            return Err(ConsentRefusal::NotYetValid);
        }
        if !self.purposes.contains(&purpose) {
            return Err(ConsentRefusal::OtherPurpose(purpose));
        }
        if !self.recipients.contains(&recipient) {
            return Err(ConsentRefusal::OtherRecipient(recipient));
        }
        Ok(())
    }

    /// The first consent among `consents` that covers the crossing, or the
    /// most telling refusal (a withdrawn consent says more than a missing one).
    pub fn find_covering(
        consents: &[Consent],
        purpose: Purpose,
        recipient: Institution,
        now: DateTime<Utc>,
    ) -> Result<&Consent, ConsentRefusal> {
        let mut refusal = ConsentRefusal::Missing;
        for consent in consents {
            match consent.covers(purpose, recipient, now) {
                Ok(()) => return Ok(consent),
                Err(r) => refusal = r,
            }
        }
        Err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn consent(now: DateTime<Utc>) -> Consent {
        Consent {
            consent_id: "c1".into(),
            case_id: "k1".into(),
            purposes: [Purpose::Referral].into(),
            recipients: [Institution::Emploi].into(),
            categories: [DataCategory::Identity].into(),
            evidence: Evidence {
                kind: EvidenceKind::SignedReferralForm,
                document_sha256: "00".repeat(32),
                signed_at: now,
                collected_by: "agent".into(),
            },
            valid_from: now,
            valid_until: now + Duration::days(365),
            state: ConsentState::Given,
            state_changed_at: now,
            holder: Institution::Social,
        }
    }

    #[test]
    fn covers_only_its_purpose_and_recipient() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let c = consent(now);
        assert_eq!(
            c.covers(Purpose::Referral, Institution::Emploi, now),
            Ok(())
        );
        assert_eq!(
            c.covers(Purpose::GlobalSupport, Institution::Emploi, now),
            Err(ConsentRefusal::OtherPurpose(Purpose::GlobalSupport))
        );
        assert_eq!(
            c.covers(Purpose::Referral, Institution::Pilotage, now),
            Err(ConsentRefusal::OtherRecipient(Institution::Pilotage))
        );
    }

    #[test]
    fn expires_exactly_at_its_end() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let c = consent(now);
        let end = c.valid_until;
        assert_eq!(
            c.covers(
                Purpose::Referral,
                Institution::Emploi,
                end - Duration::seconds(1)
            ),
            Ok(())
        );
        assert_eq!(
            c.covers(Purpose::Referral, Institution::Emploi, end),
            Err(ConsentRefusal::Expired)
        );
        assert_eq!(
            c.covers(
                Purpose::Referral,
                Institution::Emploi,
                now - Duration::seconds(1)
            ),
            Err(ConsentRefusal::NotYetValid)
        );
    }

    #[test]
    fn withdrawn_consent_refuses_and_says_so() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let mut c = consent(now);
        c.state = ConsentState::Withdrawn;
        let all = [c];
        assert_eq!(
            Consent::find_covering(&all, Purpose::Referral, Institution::Emploi, now).err(),
            Some(ConsentRefusal::Withdrawn)
        );
        assert_eq!(
            Consent::find_covering(&[], Purpose::Referral, Institution::Emploi, now).err(),
            Some(ConsentRefusal::Missing)
        );
    }
}
