//! The per-call half of the boundary, for crossings, at both ends.
//!
//! Receiving: the layer has already authenticated the caller and checked the
//! allow list; here the consent is checked when the crossing's legal basis is
//! consent, the message is minimised to the categories that may cross, and
//! the crossing is audited before the answer leaves.
//!
//! Sending: data leaves for the partner only under a consent that covers the
//! purpose and the recipient; a refusal is audited like a delivery.

use std::collections::BTreeSet;
use std::sync::Arc;

use passerelle_domain::{Clock, Consent, DataCategory, Institution, LegalBasis, Purpose};
use tonic::{Request, Response, Status};

use crate::audit::{AuditEntry, Decision, Direction};
use crate::identity::Caller;
use crate::layer::admission;
use crate::minimise::{Minimised, Minimiser};
use crate::policy::{CrossingRule, Flow};
use crate::ports::{AuditSink, ConsentRegister, record};

/// Why a crossing on a public task is refused for a person who objected.
pub const OBJECTED: &str = "the person objected to this processing (GDPR art. 21)";

/// Categories any crossing may carry once its consent is found: the case
/// itself is what the consent is about, and public codes are not personal.
const ALWAYS_WITH_CONSENT: [DataCategory; 2] = [DataCategory::Public, DataCategory::Case];

/// What may cross: the crossing's categories, narrowed to those the consent
/// covers (when the basis is consent) plus the ones that always cross.
pub fn allowed_categories(
    crossing: &BTreeSet<DataCategory>,
    consent: Option<&Consent>,
) -> BTreeSet<DataCategory> {
    let mut allowed = crossing.clone();
    if let Some(consent) = consent {
        allowed.retain(|c| consent.categories.contains(c) || ALWAYS_WITH_CONSENT.contains(c));
    }
    allowed
}

#[derive(Clone)]
pub struct CrossingControl {
    pub own: Institution,
    pub minimiser: Minimiser,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    /// Where consents are looked up; `None` for a service that holds none.
    pub consents: Option<Arc<dyn ConsentRegister>>,
}

impl std::fmt::Debug for CrossingControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossingControl")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// An admitted crossing: who, under which rule and consent, and what may cross.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub caller: Caller,
    pub method: String,
    pub rule: CrossingRule,
    pub case_id: Option<String>,
    pub consent_id: Option<passerelle_domain::ConsentId>,
    pub allowed: BTreeSet<DataCategory>,
}

/// Why data may not leave for the partner.
#[derive(Debug)]
pub enum SendRefusal {
    /// No consent covers it: the refusal is audited; retrying will not help.
    Denied(String),
    /// The consent register or the audit log could not answer: try again.
    Unavailable(String),
}

impl CrossingControl {
    fn entry(
        &self,
        caller: &Caller,
        method: &str,
        rule: &CrossingRule,
        case_id: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            case_id: case_id.map(Into::into),
            purpose: Some(rule.purpose),
            legal_basis: Some(rule.legal_basis),
            ..AuditEntry::inbound(self.clock.now(), Some(caller), method)
        }
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), Status> {
        record(&*self.audit, entry).await.map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the crossing");
            Status::unavailable("audit log unavailable")
        })
    }

    async fn consents(&self, case_id: Option<&str>) -> Result<Vec<Consent>, String> {
        match (&self.consents, case_id) {
            (Some(register), Some(case_id)) => register.consents_for_case(case_id).await,
            _ => Ok(vec![]),
        }
    }

    async fn objected(&self, case_id: &str, purpose: Purpose) -> Result<bool, String> {
        match &self.consents {
            Some(register) => register.objected(case_id, purpose).await,
            None => Ok(false),
        }
    }

    /// Before sending on a public task: the person may have objected to it
    /// for this case; the refusal is audited like a delivery. Both sides
    /// record the objection (the partner hears of it), so each stops
    /// sending; a receiver cannot refuse instead, or a consent's withdrawal
    /// travelling on the same task would be held back.
    pub async fn objection_to_send(
        &self,
        partner: Institution,
        case_id: &str,
        purpose: Purpose,
        target_method: &str,
    ) -> Result<(), SendRefusal> {
        if !self
            .objected(case_id, purpose)
            .await
            .map_err(SendRefusal::Unavailable)?
        {
            return Ok(());
        }
        let mut entry = self.sending_entry(None, partner, case_id, purpose, target_method);
        entry.legal_basis = Some(LegalBasis::PublicTask);
        entry.decision = Decision::Denied;
        entry.reason = Some(OBJECTED.into());
        record(&*self.audit, entry)
            .await
            .map_err(SendRefusal::Unavailable)?;
        Err(SendRefusal::Denied(OBJECTED.into()))
    }

    // ---- receiving ---------------------------------------------------------

    /// Checks the consent (when the basis is consent) and returns the ticket.
    pub async fn admit<T>(
        &self,
        request: &Request<T>,
        case_id: Option<&str>,
    ) -> Result<Ticket, Status> {
        let admission = admission(request)?;
        let Some(rule) = admission.rule.crossing.clone() else {
            return Err(Status::permission_denied("not a crossing"));
        };
        let caller = admission.caller.clone();
        let method = admission.rule.path.clone();
        let mut consent_id = None;
        let mut allowed = rule.categories.clone();
        if rule.legal_basis == LegalBasis::Consent {
            let recipient = match rule.flow {
                Flow::Push => self.own,
                Flow::Pull => caller.institution,
            };
            let consents = self.consents(case_id).await.map_err(|e| {
                tracing::error!(error = %e, "consent lookup failed");
                Status::unavailable("consent register unavailable")
            })?;
            match Consent::find_covering(&consents, rule.purpose, recipient, self.clock.now()) {
                Ok(consent) => {
                    consent_id = Some(consent.consent_id.clone());
                    allowed = allowed_categories(&rule.categories, Some(consent));
                }
                Err(refusal) => {
                    let mut entry = self.entry(&caller, &method, &rule, case_id);
                    entry.decision = Decision::Denied;
                    entry.reason = Some(refusal.to_string());
                    self.record(entry).await?;
                    return Err(Status::permission_denied(refusal.to_string()));
                }
            }
        }
        Ok(Ticket {
            caller,
            method,
            rule,
            case_id: case_id.map(str::to_owned),
            consent_id,
            allowed,
        })
    }

    /// `message` narrowed to what the ticket allows to cross.
    fn minimise<M>(&self, ticket: &Ticket, message: M) -> Result<Minimised<M>, Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        self.minimiser
            .minimise(message, &ticket.allowed)
            .map_err(|e| {
                tracing::error!(error = %e, "minimisation failed");
                Status::internal("internal error")
            })
    }

    /// For a push: minimises what arrived and records the crossing, before
    /// the handler acts on it.
    pub async fn receive<M>(&self, ticket: &Ticket, message: M) -> Result<M, Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let (message, record) = self.arrive(ticket, message)?;
        record.settle().await?;
        Ok(message)
    }

    /// For a push whose handler writes what arrived: minimises it and
    /// returns its audit record unwritten, to be committed with the change
    /// it makes ([`PendingRecord`]), not in a commit of its own before it.
    pub fn arrive<M>(&self, ticket: &Ticket, message: M) -> Result<(M, PendingRecord), Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let minimised = self.minimise(ticket, message)?;
        if !minimised.stripped.is_empty() {
            tracing::warn!(method = %ticket.method, stripped = ?minimised.stripped, "fields outside the crossing's categories were dropped");
        }
        let entry = self.allowed_entry(ticket, &minimised.categories, minimised.kept);
        Ok((
            minimised.message,
            PendingRecord::new(entry, self.audit.clone()),
        ))
    }

    /// For a pull: minimises the answer and records the crossing before it leaves.
    pub async fn release<M>(&self, ticket: &Ticket, message: M) -> Result<Response<M>, Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let minimised = self.minimise(ticket, message)?;
        self.record(self.allowed_entry(ticket, &minimised.categories, minimised.kept))
            .await?;
        Ok(Response::new(minimised.message))
    }

    /// Refuses an admitted crossing for a reason of the service's own (no
    /// habilitation, say): the refusal is audited like the boundary's.
    pub async fn refuse(&self, ticket: &Ticket, reason: &str) -> Status {
        let mut entry = self.entry(
            &ticket.caller,
            &ticket.method,
            &ticket.rule,
            ticket.case_id.as_deref(),
        );
        entry.decision = Decision::Denied;
        entry.reason = Some(reason.to_owned());
        match self.record(entry).await {
            Ok(()) => Status::permission_denied(reason.to_owned()),
            Err(status) => status,
        }
    }

    /// Refuses an agent of this institution a case outside its need to know
    /// (see [`crate::need_to_know`]); the refusal is audited.
    pub async fn refuse_local(
        &self,
        caller: &Caller,
        method: &str,
        case_id: &str,
        reason: &str,
    ) -> Result<(), String> {
        let entry = AuditEntry {
            case_id: Some(case_id.into()),
            decision: Decision::Denied,
            reason: Some(reason.to_owned()),
            ..AuditEntry::inbound(self.clock.now(), Some(caller), method)
        };
        record(&*self.audit, entry).await
    }

    /// Audits a read streamed in chunks: the categories its rows carry, once
    /// per read, before the first row leaves.
    pub async fn record_stream(
        &self,
        ticket: &Ticket,
        fields: Vec<String>,
        detail: String,
    ) -> Result<(), Status> {
        let mut entry = self.allowed_entry(ticket, &ticket.allowed, fields);
        entry.reason = Some(detail);
        self.record(entry).await
    }

    fn allowed_entry(
        &self,
        ticket: &Ticket,
        categories: &BTreeSet<DataCategory>,
        fields: Vec<String>,
    ) -> AuditEntry {
        let mut entry = self.entry(
            &ticket.caller,
            &ticket.method,
            &ticket.rule,
            ticket.case_id.as_deref(),
        );
        entry.consent_id = ticket.consent_id.clone();
        entry.categories = categories.clone();
        entry.fields = fields;
        entry
    }

    // ---- sending -----------------------------------------------------------

    /// The audit entry of data leaving this service for `partner` through
    /// `target_method`, on behalf of `caller` (none for the outbox relay).
    pub fn sending_entry(
        &self,
        caller: Option<&Caller>,
        partner: Institution,
        case_id: &str,
        purpose: Purpose,
        target_method: &str,
    ) -> AuditEntry {
        AuditEntry {
            at: self.clock.now(),
            direction: Direction::Outbound,
            agent: caller.map(|c| c.agent.clone()),
            agent_institution: Some(self.own),
            agent_role: caller.map(|c| c.role),
            counterpart: Some(partner),
            method: target_method.to_owned(),
            case_id: Some(case_id.into()),
            purpose: Some(purpose),
            legal_basis: None,
            consent_id: None,
            categories: BTreeSet::new(),
            fields: vec![],
            decision: Decision::Allowed,
            reason: None,
        }
    }

    /// The consent under which data about `case_id` may leave for `partner`
    /// for `purpose`; without one, the refusal is audited.
    pub async fn consent_to_send(
        &self,
        caller: Option<&Caller>,
        partner: Institution,
        case_id: &str,
        purpose: Purpose,
        target_method: &str,
    ) -> Result<Consent, SendRefusal> {
        let consents = self
            .consents(Some(case_id))
            .await
            .map_err(SendRefusal::Unavailable)?;
        match Consent::find_covering(&consents, purpose, partner, self.clock.now()) {
            Ok(consent) => Ok(consent.clone()),
            Err(refusal) => {
                let mut entry =
                    self.sending_entry(caller, partner, case_id, purpose, target_method);
                entry.legal_basis = Some(LegalBasis::Consent);
                entry.decision = Decision::Denied;
                entry.reason = Some(refusal.to_string());
                record(&*self.audit, entry)
                    .await
                    .map_err(SendRefusal::Unavailable)?;
                Err(SendRefusal::Denied(refusal.to_string()))
            }
        }
    }

    /// Records a delivered crossing.
    pub async fn record_sent(&self, entry: AuditEntry) -> Result<(), String> {
        record(&*self.audit, entry).await
    }
}

/// The audit record of a crossing that arrived, not written yet. The write
/// the crossing asks for takes it ([`PendingRecord::take`]) and commits it
/// with the change, whatever becomes of the change; if none takes it (a
/// replay, a message refused before any write), [`PendingRecord::settle`]
/// writes it on its own. Either way the answer leaves once it is durable;
/// a call cancelled before either still gets its record written.
pub struct PendingRecord {
    entry: std::sync::Mutex<Option<AuditEntry>>,
    audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord").finish_non_exhaustive()
    }
}

impl PendingRecord {
    pub fn new(entry: AuditEntry, audit: Arc<dyn AuditSink>) -> Self {
        PendingRecord {
            entry: std::sync::Mutex::new(Some(entry)),
            audit,
        }
    }

    /// The entry, for a write that commits it; `None` once taken.
    pub fn take(&self) -> Option<AuditEntry> {
        self.entry.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Writes the record unless a write took it.
    pub async fn settle(&self) -> Result<(), Status> {
        let Some(entry) = self.take() else {
            return Ok(());
        };
        record(&*self.audit, entry).await.map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the crossing");
            Status::unavailable("audit log unavailable")
        })
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(entry) = self.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let audit = self.audit.clone();
            runtime.spawn(async move {
                if let Err(e) = record(&*audit, entry).await {
                    tracing::error!(error = %e, "the record of a cancelled crossing could not be written");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_case_cross_with_any_consent_and_nothing_else_unconsented() {
        let crossing: BTreeSet<_> = [
            DataCategory::Public,
            DataCategory::Case,
            DataCategory::Identity,
            DataCategory::Barrier,
        ]
        .into();
        assert_eq!(allowed_categories(&crossing, None), crossing);
        let now = chrono::Utc::now();
        let consent = Consent {
            consent_id: "c".into(),
            case_id: "k".into(),
            purposes: [Purpose::Referral].into(),
            recipients: [Institution::Emploi].into(),
            categories: [DataCategory::Identity, DataCategory::LocalOnly].into(),
            evidence: passerelle_domain::Evidence {
                kind: passerelle_domain::EvidenceKind::SignedReferralForm,
                document_sha256: "0".repeat(64),
                signed_at: now,
                collected_by: "a".into(),
            },
            valid_from: now,
            valid_until: now,
            state: passerelle_domain::ConsentState::Given,
            state_changed_at: now,
            holder: Institution::Social,
        };
        let allowed = allowed_categories(&crossing, Some(&consent));
        assert_eq!(
            allowed,
            [
                DataCategory::Public,
                DataCategory::Case,
                DataCategory::Identity
            ]
            .into()
        );
    }
}
