//! Relays the outbox to the partner, in the order messages were written,
//! until each is delivered. Each delivery re-checks the consent (a withdrawal
//! stops what was queued before it), minimises the message to what the
//! crossing and the consent allow, and is audited once the partner has it.
//! The partner deduplicates by the message key, so a crash between delivery
//! and bookkeeping only causes a harmless resend.

use std::collections::BTreeSet;
use std::time::Duration;

use passerelle_boundary::{Minimiser, Policy};
use passerelle_contract::v1::emploi_service_client::EmploiServiceClient;
use passerelle_contract::v1::social_service_client::SocialServiceClient;
use passerelle_contract::{convert, v1};
use passerelle_domain::{Consent, DataCategory, Institution, Outbound};
use passerelle_storage::institution::PendingMessage;
use tokio::sync::watch;
use tonic::Code;

use crate::casework::Casework;
use crate::config::OutboxConfig;
use crate::partner::Outgoing;

/// Messages read from the outbox per pass.
const BATCH: i64 = 100;

#[derive(Debug)]
enum Failure {
    /// Worth retrying: the partner is down, slow or overloaded.
    Transient(String),
    /// The partner refused for good; retrying would not change its answer.
    Permanent(String),
}

#[derive(Debug, Clone)]
pub struct Relay {
    pub casework: Casework,
    pub target: Outgoing,
    pub minimiser: Minimiser,
    pub policy: Policy,
    pub config: OutboxConfig,
}

/// What was sent, for the audit record.
struct Sent {
    fields: Vec<String>,
    categories: BTreeSet<DataCategory>,
}

fn classify(status: &tonic::Status) -> Failure {
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented => Failure::Permanent(text),
        _ => Failure::Transient(text),
    }
}

/// Builds the partner's request for one message, minimises it for the
/// crossing, and sends it with the right generated client.
macro_rules! send {
    ($relay:expr, $allowed:expr, $client:ident, $service:literal, $rpc:ident, $method:ident, $request:expr) => {{
        let path = concat!("/passerelle.v1.", $service, "/", stringify!($rpc));
        let request = $request;
        let sent = $relay.minimise(path, &request, $allowed)?;
        let call = $relay.target.request(sent.0).map_err(|s| classify(&s))?;
        $client::new($relay.target.channel.clone())
            .$method(call)
            .await
            .map_err(|s| classify(&s))?;
        Ok::<(&str, Sent), Failure>((path, sent.1))
    }};
}

impl Relay {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(self.config.initial_backoff_ms);
        loop {
            let pass = self.pass().await;
            self.record_gauges().await;
            let wait = match pass {
                Ok(true) => {
                    backoff = Duration::from_millis(self.config.initial_backoff_ms);
                    continue;
                }
                Ok(false) => {
                    backoff = Duration::from_millis(self.config.initial_backoff_ms);
                    Duration::from_millis(self.config.poll_interval_ms)
                }
                Err(()) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.casework.wake_relay.notified() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Publishes the outbox's depth and the pool's use as metrics.
    pub async fn record_gauges(&self) {
        let service = self.casework.own.code();
        if let Ok(depth) = self.casework.store.outbox_depth().await {
            let age = depth
                .oldest_pending_at
                .and_then(passerelle_storage::from_micros_opt)
                .map(|oldest| (self.casework.now() - oldest).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0);
            passerelle_telemetry::metrics::record_outbox(
                service,
                depth.pending.max(0) as u64,
                depth.abandoned.max(0) as u64,
                age.max(0.0),
            );
        }
        let pool = self.casework.store.database().pool();
        let idle = pool.num_idle() as u64;
        passerelle_telemetry::metrics::record_pool(
            service,
            u64::from(pool.size()).saturating_sub(idle),
            idle,
        );
    }

    /// One pass over the pending messages, in order. `Ok(true)` when it did
    /// work and more may be waiting; `Err` when it stopped on a transient failure.
    pub async fn pass(&self) -> Result<bool, ()> {
        // Another replica holds the lease: it relays, this one waits its turn.
        let lease = match self.casework.store.try_relay_lease().await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::error!(error = %e, "outbox lease unavailable");
                return Err(());
            }
        };
        let outcome = self.pass_under_lease().await;
        lease.release().await;
        outcome
    }

    async fn pass_under_lease(&self) -> Result<bool, ()> {
        let store = &self.casework.store;
        let pending = match store.pending_outbox(BATCH).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "outbox read failed");
                return Err(());
            }
        };
        if pending.is_empty() {
            return Ok(false);
        }
        let full_batch = pending.len() as i64 == BATCH;
        for message in pending {
            use tracing::Instrument;
            // The delivery joins the trace of the call that queued the message.
            let span = tracing::info_span!(
                "outbox.deliver",
                otel.kind = "producer",
                message.kind = message.message.kind(),
                attempt = message.attempts + 1
            );
            passerelle_telemetry::propagation::set_parent_from_text(
                &span,
                message.trace_context.as_deref(),
            );
            let outcome = self.deliver(&message).instrument(span).await;
            let now = self.casework.now();
            let bookkeeping = match &outcome {
                Ok(()) => store.mark_delivered(message.id, now).await,
                Err(Failure::Permanent(why)) => {
                    tracing::warn!(key = %message.message_key, kind = message.message.kind(), reason = %why, "outbox message refused for good; kept for review");
                    store.abandon(message.id, now, why).await
                }
                Err(Failure::Transient(why)) => {
                    tracing::info!(key = %message.message_key, attempts = message.attempts + 1, reason = %why, "partner unavailable; will retry");
                    store.record_failed_attempt(message.id, why).await
                }
            };
            if let Err(e) = bookkeeping {
                tracing::error!(error = %e, "outbox bookkeeping failed");
                return Err(());
            }
            if matches!(outcome, Err(Failure::Transient(_))) {
                // Later messages may depend on this one (consent before referral): wait.
                return Err(());
            }
        }
        Ok(full_batch)
    }

    fn minimise<M>(
        &self,
        path: &str,
        message: &M,
        consent_categories: Option<&BTreeSet<DataCategory>>,
    ) -> Result<(M, Sent), Failure>
    where
        M: prost::Message + prost::Name + Default,
    {
        let rule = self
            .policy
            .rule(path)
            .and_then(|r| r.crossing.as_ref())
            .ok_or_else(|| Failure::Permanent(format!("{path} is not a crossing")))?;
        let mut allowed = rule.categories.clone();
        if let Some(consented) = consent_categories {
            allowed.retain(|c| {
                consented.contains(c) || matches!(c, DataCategory::Public | DataCategory::Case)
            });
        }
        let out = self
            .minimiser
            .minimise(message, &allowed)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        Ok((
            out.message,
            Sent {
                fields: out.kept,
                categories: out.categories,
            },
        ))
    }

    /// Wire path of the partner RPC a message is delivered through, so
    /// refusals are audited under the same method as deliveries.
    fn target_path(&self, message: &Outbound) -> String {
        let rpc = match message {
            Outbound::Consent(_) => "ShareConsent",
            Outbound::Referral(_) => "ReceiveReferral",
            Outbound::Diagnosis(_) => "ReceiveDiagnosis",
            Outbound::CaseEvent { .. } => "ReceiveCaseEvent",
            Outbound::ReferralDecision { .. } => "ReceiveReferralDecision",
            Outbound::PlanSummary(_) => "ReceivePlanSummary",
            Outbound::Suspension(_) => "ReceiveSuspensionNotice",
        };
        crate::api::partner_path(self.casework.partner(), rpc)
    }

    async fn deliver(&self, pending: &PendingMessage) -> Result<(), Failure> {
        let message = &pending.message;
        let case_id = message.case_id().to_owned();
        // Sender-side consent check at delivery time, not only at enqueue time.
        let consent = match message.consent_purpose() {
            None => None,
            Some(purpose) => {
                let consents = self
                    .casework
                    .store
                    .consents_for_case(&case_id)
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                match Consent::find_covering(
                    &consents,
                    purpose,
                    self.casework.partner(),
                    self.casework.now(),
                ) {
                    Ok(c) => Some(c.clone()),
                    Err(refusal) => {
                        let mut entry = self.casework.outbound_entry(
                            None,
                            &case_id,
                            purpose,
                            &self.target_path(message),
                        );
                        entry.decision = passerelle_boundary::Decision::Denied;
                        entry.reason = Some(refusal.to_string());
                        self.casework
                            .store
                            .audit()
                            .append(&entry)
                            .await
                            .map_err(|e| Failure::Transient(e.to_string()))?;
                        return Err(Failure::Permanent(refusal.to_string()));
                    }
                }
            }
        };
        let allowed = consent.as_ref().map(|c| &c.categories);
        let key = pending.message_key.clone();
        let (path, sent) = match (self.casework.partner(), message) {
            (Institution::Emploi, Outbound::Consent(c)) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ShareConsent,
                share_consent,
                v1::EmploiServiceShareConsentRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    consent: Some(c.into())
                }
            ),
            (Institution::Emploi, Outbound::Referral(r)) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceiveReferral,
                receive_referral,
                v1::EmploiServiceReceiveReferralRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    referral: Some(r.into())
                }
            ),
            (Institution::Emploi, Outbound::Diagnosis(d)) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceiveDiagnosis,
                receive_diagnosis,
                v1::EmploiServiceReceiveDiagnosisRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    half: Some(d.into())
                }
            ),
            (Institution::Emploi, Outbound::CaseEvent { event, .. }) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceiveCaseEvent,
                receive_case_event,
                v1::EmploiServiceReceiveCaseEventRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    event: Some(convert::case_event(&case_id, event))
                }
            ),
            (Institution::Social, Outbound::Consent(c)) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ShareConsent,
                share_consent,
                v1::SocialServiceShareConsentRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    consent: Some(c.into())
                }
            ),
            (Institution::Social, Outbound::Referral(r)) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ReceiveReferral,
                receive_referral,
                v1::SocialServiceReceiveReferralRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    referral: Some(r.into())
                }
            ),
            (Institution::Social, Outbound::Diagnosis(d)) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ReceiveDiagnosis,
                receive_diagnosis,
                v1::SocialServiceReceiveDiagnosisRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    half: Some(d.into())
                }
            ),
            (Institution::Social, Outbound::CaseEvent { event, .. }) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ReceiveCaseEvent,
                receive_case_event,
                v1::SocialServiceReceiveCaseEventRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    event: Some(convert::case_event(&case_id, event))
                }
            ),
            (Institution::Emploi, Outbound::ReferralDecision { decision, .. }) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceiveReferralDecision,
                receive_referral_decision,
                v1::EmploiServiceReceiveReferralDecisionRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    decision: Some(decision.into())
                }
            ),
            (Institution::Emploi, Outbound::PlanSummary(summary)) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceivePlanSummary,
                receive_plan_summary,
                v1::EmploiServiceReceivePlanSummaryRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    summary: Some(summary.into())
                }
            ),
            (Institution::Social, Outbound::ReferralDecision { decision, .. }) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ReceiveReferralDecision,
                receive_referral_decision,
                v1::SocialServiceReceiveReferralDecisionRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    decision: Some(decision.into())
                }
            ),
            (Institution::Social, Outbound::PlanSummary(summary)) => send!(
                self,
                allowed,
                SocialServiceClient,
                "SocialService",
                ReceivePlanSummary,
                receive_plan_summary,
                v1::SocialServiceReceivePlanSummaryRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    summary: Some(summary.into())
                }
            ),
            (Institution::Emploi, Outbound::Suspension(notice)) => send!(
                self,
                allowed,
                EmploiServiceClient,
                "EmploiService",
                ReceiveSuspensionNotice,
                receive_suspension_notice,
                v1::ReceiveSuspensionNoticeRequest {
                    idempotency_key: key,
                    case_id: case_id.clone(),
                    notice: Some(notice.into())
                }
            ),
            (Institution::Social, Outbound::Suspension(_)) => Err(Failure::Permanent(
                "only the employment side's follow-up is suspended".into(),
            )),
            (Institution::Pilotage, _) => Err(Failure::Permanent(
                "the steering service receives no casework".into(),
            )),
        }?;
        let purpose = message
            .consent_purpose()
            .unwrap_or(passerelle_domain::Purpose::ConsentRecord);
        let mut entry = self.casework.outbound_entry(None, &case_id, purpose, path);
        entry.consent_id = consent.map(|c| c.consent_id);
        entry.categories = sent.categories;
        entry.fields = sent.fields;
        // Delivered already: a failed audit append must not resend, only be loud.
        if let Err(e) = self.casework.store.audit().append(&entry).await {
            tracing::error!(error = %e, "audit of a delivered crossing failed");
        }
        Ok(())
    }
}
