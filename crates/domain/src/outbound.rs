//! Messages an institution owes its partner. They are written to the outbox in
//! the same transaction as the change they describe, then relayed until the
//! partner has them.

use serde::{Deserialize, Serialize};

use crate::case::{
    CaseEvent, DiagnosisHalf, EndOfProcessing, Referral, ReferralDecision, SuspensionNotice,
};
use crate::consent::Consent;
use crate::ids::CaseId;
use crate::orientation::Orientation;
use crate::plan::PlanSummary;
use crate::rights::RightsNotice;
use crate::vocabulary::Purpose;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outbound {
    Consent(Consent),
    Referral(Referral),
    Diagnosis(DiagnosisHalf),
    CaseEvent {
        case_id: CaseId,
        event: CaseEvent,
    },
    ReferralDecision {
        case_id: CaseId,
        decision: ReferralDecision,
    },
    PlanSummary(PlanSummary),
    /// Exclusive social support: the employment side's follow-up is suspended.
    Suspension(SuspensionNotice),
    /// Processing ends at the person's request (consent withdrawn).
    EndOfProcessing(EndOfProcessing),
    /// A right the person exercised here that the partner, a recipient of
    /// their data, must hear of (erasure, rectification).
    RightsNotice(RightsNotice),
    /// The person's parcours changed during the support.
    ParcoursChange(Orientation),
}

impl Outbound {
    pub fn case_id(&self) -> &str {
        match self {
            Outbound::Consent(c) => &c.case_id,
            Outbound::Referral(r) => &r.case_id,
            Outbound::Diagnosis(d) => &d.case_id,
            Outbound::CaseEvent { case_id, .. } | Outbound::ReferralDecision { case_id, .. } => {
                case_id
            }
            Outbound::PlanSummary(p) => &p.case_id,
            Outbound::Suspension(s) => &s.case_id,
            Outbound::EndOfProcessing(e) => &e.case_id,
            Outbound::RightsNotice(n) => &n.case_id,
            Outbound::ParcoursChange(o) => &o.case_id,
        }
    }

    /// A short name for logs, metrics and the outbox table.
    pub fn kind(&self) -> &'static str {
        match self {
            Outbound::Consent(_) => "consent",
            Outbound::Referral(_) => "referral",
            Outbound::Diagnosis(_) => "diagnosis",
            Outbound::CaseEvent { .. } => "case_event",
            Outbound::ReferralDecision { .. } => "referral_decision",
            Outbound::PlanSummary(_) => "plan_summary",
            Outbound::Suspension(_) => "suspension",
            Outbound::EndOfProcessing(_) => "end_of_processing",
            Outbound::RightsNotice(_) => "rights_notice",
            Outbound::ParcoursChange(_) => "parcours_change",
        }
    }

    /// The purpose the crossing serves.
    pub fn purpose(&self) -> Purpose {
        match self {
            Outbound::Consent(_) => Purpose::ConsentRecord,
            Outbound::EndOfProcessing(_) | Outbound::RightsNotice(_) => Purpose::RightsNotification,
            Outbound::Referral(_) | Outbound::Diagnosis(_) | Outbound::ReferralDecision { .. } => {
                Purpose::Referral
            }
            Outbound::CaseEvent { .. } | Outbound::PlanSummary(_) => Purpose::GlobalSupport,
            Outbound::Suspension(_) => Purpose::ExclusiveSocialSupport,
            Outbound::ParcoursChange(_) => Purpose::Orientation,
        }
    }

    /// The purpose whose consent the crossing needs; `None` for consent
    /// records and end-of-processing notices, which travel on the
    /// controllers' own task or obligation so a withdrawal can never be held
    /// back by the absence of consent, and for a change of parcours, which
    /// the law for full employment makes a public task of both (the person
    /// may object to it).
    pub fn consent_purpose(&self) -> Option<Purpose> {
        match self {
            Outbound::Consent(_)
            | Outbound::EndOfProcessing(_)
            | Outbound::RightsNotice(_)
            | Outbound::ParcoursChange(_) => None,
            other => Some(other.purpose()),
        }
    }
}
