//! The crossings the outbox delivers to the partner: which partner RPC
//! (the same at either side) carries each kind of message.

use passerelle_domain::Outbound;

pub const SHARE_CONSENT: &str = "ShareConsent";
pub const RECEIVE_REFERRAL: &str = "ReceiveReferral";
pub const RECEIVE_DIAGNOSIS: &str = "ReceiveDiagnosis";
pub const RECEIVE_CASE_EVENT: &str = "ReceiveCaseEvent";
pub const RECEIVE_REFERRAL_DECISION: &str = "ReceiveReferralDecision";
pub const RECEIVE_PLAN_SUMMARY: &str = "ReceivePlanSummary";
pub const RECEIVE_SUSPENSION_NOTICE: &str = "ReceiveSuspensionNotice";
pub const RECEIVE_END_OF_PROCESSING: &str = "ReceiveEndOfProcessing";
pub const RECEIVE_RIGHTS_NOTICE: &str = "ReceiveRightsNotice";
pub const RECEIVE_PARCOURS_CHANGE: &str = "ReceiveParcoursChange";

/// The table of crossings: the partner RPC each kind of message goes
/// through. Refusals are audited under the same method as deliveries.
pub fn rpc_of(message: &Outbound) -> &'static str {
    match message {
        Outbound::Consent(_) => SHARE_CONSENT,
        Outbound::Referral(_) => RECEIVE_REFERRAL,
        Outbound::Diagnosis(_) => RECEIVE_DIAGNOSIS,
        Outbound::CaseEvent { .. } => RECEIVE_CASE_EVENT,
        Outbound::ReferralDecision { .. } => RECEIVE_REFERRAL_DECISION,
        Outbound::PlanSummary(_) => RECEIVE_PLAN_SUMMARY,
        Outbound::Suspension(_) => RECEIVE_SUSPENSION_NOTICE,
        Outbound::EndOfProcessing(_) => RECEIVE_END_OF_PROCESSING,
        Outbound::RightsNotice(_) => RECEIVE_RIGHTS_NOTICE,
        Outbound::ParcoursChange(_) => RECEIVE_PARCOURS_CHANGE,
    }
}
