//! Messages an institution owes its partner. They are written to the outbox in
//! the same transaction as the change they describe, then relayed until the
//! partner has them.

use serde::{Deserialize, Serialize};

use crate::case::{CaseEvent, DiagnosisHalf, Referral};
use crate::consent::Consent;
use crate::vocabulary::Purpose;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outbound {
    Consent(Consent),
    Referral(Referral),
    Diagnosis(DiagnosisHalf),
    CaseEvent { case_id: String, event: CaseEvent },
}

impl Outbound {
    pub fn case_id(&self) -> &str {
        match self {
            Outbound::Consent(c) => &c.case_id,
            Outbound::Referral(r) => &r.case_id,
            Outbound::Diagnosis(d) => &d.case_id,
            Outbound::CaseEvent { case_id, .. } => case_id,
        }
    }

    /// A short name for logs, metrics and the outbox table.
    pub fn kind(&self) -> &'static str {
        match self {
            Outbound::Consent(_) => "consent",
            Outbound::Referral(_) => "referral",
            Outbound::Diagnosis(_) => "diagnosis",
            Outbound::CaseEvent { .. } => "case_event",
        }
    }

    /// The purpose the crossing serves, and so the consent it needs; `None`
    /// for consent records themselves, which travel on the public task so a
    /// withdrawal can never be held back by the absence of consent.
    pub fn consent_purpose(&self) -> Option<Purpose> {
        match self {
            Outbound::Consent(_) => None,
            Outbound::Referral(_) | Outbound::Diagnosis(_) => Some(Purpose::Referral),
            Outbound::CaseEvent { .. } => Some(Purpose::GlobalSupport),
        }
    }
}
