//! Relays the outbox to the partner until each message is delivered: each
//! case's messages in the order they were written, different cases side by
//! side, the deliveries of a pass marked with their audit records in one
//! transaction. Each delivery re-checks the consent (a withdrawal
//! stops what was queued before it), minimises the message to what the
//! crossing and the consent allow, and is audited once the partner has it.
//! The partner deduplicates by the message key, so a crash between delivery
//! and bookkeeping only causes a harmless resend.

use std::collections::BTreeSet;
use std::time::Duration;

use passerelle_boundary::{AuditEntry, Minimiser, Policy, SendRefusal, allowed_categories};
use passerelle_contract::{convert, v1};
use passerelle_domain::{Consent, DataCategory, Outbound};
use passerelle_runtime::config::OutboxConfig;
use passerelle_runtime::partner::Outgoing;
use passerelle_storage::institution::PendingMessage;
use tokio::sync::watch;
use tonic::Code;

use crate::casework::Casework;
use crate::crossings;

/// Messages read from the outbox per pass.
const BATCH: i64 = 256;

/// Cases whose messages are on their way to the partner at once.
const CASES_IN_FLIGHT: usize = 64;

/// What became of one case's messages in a pass.
#[derive(Default)]
struct CaseOutcome {
    /// Delivered, with the record of each crossing, to commit together.
    delivered: Vec<(i64, AuditEntry)>,
    /// A message could not go now: retry after the backoff.
    stopped: bool,
}

/// The messages grouped by case, each group in outbox order, the groups in
/// the order of their first message.
fn by_case(pending: Vec<PendingMessage>) -> Vec<Vec<PendingMessage>> {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<PendingMessage>> = vec![];
    for message in pending {
        let case_id = message.message.case_id().to_owned();
        match index.get(&case_id) {
            Some(&i) => groups[i].push(message),
            None => {
                index.insert(case_id, groups.len());
                groups.push(vec![message]);
            }
        }
    }
    groups
}

#[derive(Debug)]
enum Failure {
    /// Worth retrying: the partner is down, slow or overloaded.
    Transient(String),
    /// The partner refused for good; retrying would not change its answer.
    Permanent(String),
}

/// How often the relay publishes the outbox's depth and the batches' totals.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

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
    legal_basis: passerelle_domain::LegalBasis,
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

impl Relay {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(self.config.initial_backoff_ms);
        let mut gauges_due = tokio::time::Instant::now();
        loop {
            let pass = self.pass().await;
            // Gauges are read once a second at most: a busy relay passes
            // hundreds of times a second.
            if tokio::time::Instant::now() >= gauges_due {
                self.record_gauges().await;
                gauges_due = tokio::time::Instant::now() + GAUGES_EVERY;
            }
            // After a failure the backoff runs its course: a local commit
            // does not wake the relay early, or an outage would be hammered
            // once per commit.
            let (wait, wakeable) = match pass {
                Ok(true) => {
                    backoff = Duration::from_millis(self.config.initial_backoff_ms);
                    continue;
                }
                Ok(false) => {
                    backoff = Duration::from_millis(self.config.initial_backoff_ms);
                    (Duration::from_millis(self.config.poll_interval_ms), true)
                }
                Err(()) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                    (wait, false)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.casework.wake_relay.notified(), if wakeable => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Publishes the outbox's depth, the group commit's totals and the pool's use as metrics.
    pub async fn record_gauges(&self) {
        let service = self.casework.side.code();
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
        let writes = self.casework.store.group_commit_counts();
        passerelle_telemetry::metrics::record_write_batches(
            service,
            writes.batches,
            writes.changes,
        );
        let (in_use, idle) = self.casework.store.database().connections();
        passerelle_telemetry::metrics::record_pool(service, in_use, idle);
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
        use futures_util::StreamExt;
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
        // Each case's messages in the order they were written (a consent
        // before the referral it covers); different cases side by side.
        let outcomes: Vec<CaseOutcome> = futures_util::stream::iter(by_case(pending))
            .map(|messages| self.deliver_case(messages))
            .buffer_unordered(CASES_IN_FLIGHT)
            .collect()
            .await;
        let mut delivered = vec![];
        let mut stopped = false;
        for outcome in outcomes {
            delivered.extend(outcome.delivered);
            stopped |= outcome.stopped;
        }
        // The pass's deliveries and their audit records, in one transaction.
        let counted: Vec<_> = delivered
            .iter()
            .map(|(_, crossing)| passerelle_boundary::ports::count(crossing))
            .collect();
        if let Err(e) = store.mark_delivered(&delivered, self.casework.now()).await {
            tracing::error!(error = %e, "outbox bookkeeping failed");
            return Err(());
        }
        counted.into_iter().for_each(|count| count());
        if stopped { Err(()) } else { Ok(full_batch) }
    }

    /// Delivers one case's messages in order, up to the first that cannot
    /// go now: the ones after it may depend on it, so they wait with it.
    async fn deliver_case(&self, messages: Vec<PendingMessage>) -> CaseOutcome {
        use tracing::Instrument;
        let store = &self.casework.store;
        let mut outcome = CaseOutcome::default();
        for message in messages {
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
            let bookkeeping = match self.deliver(&message).instrument(span).await {
                Ok(crossing) => {
                    outcome.delivered.push((message.id, crossing));
                    continue;
                }
                Err(Failure::Permanent(why)) => {
                    tracing::warn!(key = %message.message_key, kind = message.message.kind(), reason = %why, "outbox message refused for good; kept for review");
                    store.abandon(message.id, self.casework.now(), &why).await
                }
                Err(Failure::Transient(why)) => {
                    tracing::info!(key = %message.message_key, attempts = message.attempts + 1, reason = %why, "partner unavailable; will retry");
                    outcome.stopped = true;
                    store.record_failed_attempt(message.id, &why).await
                }
            };
            if let Err(e) = bookkeeping {
                tracing::error!(error = %e, "outbox bookkeeping failed");
                outcome.stopped = true;
            }
            if outcome.stopped {
                break;
            }
        }
        outcome
    }

    /// Sends one message; the record of the crossing comes back, to be
    /// committed with the message's delivery.
    async fn deliver(&self, pending: &PendingMessage) -> Result<AuditEntry, Failure> {
        let message = &pending.message;
        let case_id = message.case_id().to_owned();
        let path = self.casework.partner_path(crossings::rpc_of(message));
        // Sender-side consent check at delivery time, not only at enqueue time.
        let consent = match message.consent_purpose() {
            None => None,
            Some(purpose) => Some(
                self.casework
                    .crossings
                    .consent_to_send(None, self.casework.partner(), &case_id, purpose, &path)
                    .await
                    .map_err(|refusal| match refusal {
                        SendRefusal::Denied(why) => Failure::Permanent(why),
                        SendRefusal::Unavailable(why) => Failure::Transient(why),
                    })?,
            ),
        };
        let on_public_task = self
            .policy
            .rule(&path)
            .and_then(|r| r.crossing.as_ref())
            .is_some_and(|c| c.legal_basis == passerelle_domain::LegalBasis::PublicTask);
        // A withdrawal always travels, objection or not.
        let withdrawal = matches!(message, Outbound::Consent(c) if c.state != passerelle_domain::ConsentState::Given);
        if on_public_task && !withdrawal {
            self.casework
                .crossings
                .objection_to_send(self.casework.partner(), &case_id, message.purpose(), &path)
                .await
                .map_err(|refusal| match refusal {
                    SendRefusal::Denied(why) => Failure::Permanent(why),
                    SendRefusal::Unavailable(why) => Failure::Transient(why),
                })?;
        }
        let allowed = consent.as_ref();
        let key = pending.message_key.clone();
        let id = case_id.clone();
        let sent = match message {
            Outbound::Consent(c) => {
                let m = v1::ShareConsentRequest {
                    idempotency_key: key,
                    case_id: id,
                    consent: Some(c.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::Referral(r) => {
                let m = v1::ReceiveReferralRequest {
                    idempotency_key: key,
                    case_id: id,
                    referral: Some(r.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::Diagnosis(d) => {
                let m = v1::ReceiveDiagnosisRequest {
                    idempotency_key: key,
                    case_id: id,
                    half: Some(d.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::CaseEvent { event, .. } => {
                let event = Some(convert::case_event(&case_id, event));
                let m = v1::ReceiveCaseEventRequest {
                    idempotency_key: key,
                    case_id: id,
                    event,
                };
                self.send(&path, m, allowed).await
            }
            Outbound::ReferralDecision { decision, .. } => {
                let m = v1::ReceiveReferralDecisionRequest {
                    idempotency_key: key,
                    case_id: id,
                    decision: Some(decision.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::PlanSummary(s) => {
                let m = v1::ReceivePlanSummaryRequest {
                    idempotency_key: key,
                    case_id: id,
                    summary: Some(s.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::EndOfProcessing(e) => {
                let m = v1::ReceiveEndOfProcessingRequest {
                    idempotency_key: key,
                    case_id: id,
                    notice: Some(e.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::RightsNotice(n) => {
                let m = v1::ReceiveRightsNoticeRequest {
                    idempotency_key: key,
                    case_id: id,
                    notice: Some(n.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::Suspension(n) => {
                let m = v1::ReceiveSuspensionNoticeRequest {
                    idempotency_key: key,
                    case_id: id,
                    notice: Some(n.into()),
                };
                self.send(&path, m, allowed).await
            }
            Outbound::ParcoursChange(o) => {
                let m = v1::ReceiveParcoursChangeRequest {
                    idempotency_key: key,
                    case_id: id,
                    orientation: Some(o.into()),
                };
                self.send(&path, m, allowed).await
            }
        }?;
        let purpose = message.purpose();
        let crossings = &self.casework.crossings;
        let mut entry =
            crossings.sending_entry(None, self.casework.partner(), &case_id, purpose, &path);
        entry.legal_basis = Some(sent.legal_basis);
        entry.consent_id = consent.map(|c| c.consent_id);
        entry.categories = sent.categories;
        entry.fields = sent.fields;
        Ok(entry)
    }

    /// Minimises `message` for the crossing at `path` and the consent, and
    /// sends it to the partner with a fresh service token.
    async fn send<M>(
        &self,
        path: &str,
        message: M,
        consent: Option<&Consent>,
    ) -> Result<Sent, Failure>
    where
        M: prost::Message + prost::Name + Default + 'static,
    {
        let rule = self
            .policy
            .rule(path)
            .and_then(|r| r.crossing.as_ref())
            .ok_or_else(|| Failure::Permanent(format!("{path} is not a crossing")))?;
        let allowed: BTreeSet<DataCategory> = allowed_categories(&rule.categories, consent);
        let out = self
            .minimiser
            .minimise(message, &allowed)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let request = self.target.request(out.message).map_err(|s| classify(&s))?;
        // Every crossing's answer is empty: `()` decodes it.
        let () = self
            .target
            .unary(path, request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(Sent {
            legal_basis: rule.legal_basis,
            fields: out.kept,
            categories: out.categories,
        })
    }
}
