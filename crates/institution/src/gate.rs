//! The per-call half of the boundary, for crossings: the layer has already
//! authenticated the caller and checked the allow list; here the consent is
//! checked when the crossing's legal basis is consent, the message is
//! minimised to the categories that may cross, and the crossing is audited
//! before the answer leaves.

use std::collections::BTreeSet;
use std::sync::Arc;

use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_boundary::layer::Admission;
use passerelle_boundary::{Caller, CrossingRule, Flow, Minimiser};
use passerelle_domain::{Clock, Consent, DataCategory, Institution, LegalBasis};
use passerelle_storage::InstitutionStore;
use passerelle_storage::audit::AuditLog;
use tonic::{Request, Response, Status};

/// Categories any crossing may carry once admitted: the case itself is what
/// the consent is about, and public codes are not personal.
const ALWAYS_WITH_CONSENT: [DataCategory; 2] = [DataCategory::Public, DataCategory::Case];

#[derive(Debug, Clone)]
pub struct Gate {
    pub own: Institution,
    pub minimiser: Minimiser,
    pub audit: AuditLog,
    pub clock: Arc<dyn Clock>,
    /// Where consents are looked up; `None` for a service that holds none.
    pub consents: Option<InstitutionStore>,
}

/// An admitted crossing: who, under which rule and consent, and what may cross.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub caller: Caller,
    pub method: String,
    pub rule: CrossingRule,
    pub case_id: Option<String>,
    pub consent_id: Option<String>,
    pub allowed: BTreeSet<DataCategory>,
}

/// The caller the layer admitted. Missing means the layer was bypassed: refuse.
pub fn admission<T>(request: &Request<T>) -> Result<&Admission, Status> {
    request
        .extensions()
        .get::<Admission>()
        .ok_or_else(|| Status::permission_denied("call not admitted by the boundary"))
}

pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    admission(request).map(|a| &a.caller)
}

impl Gate {
    fn entry(
        &self,
        ticket_like: (&Caller, &str, &CrossingRule),
        case_id: Option<&str>,
    ) -> AuditEntry {
        let (caller, method, rule) = ticket_like;
        AuditEntry {
            at: self.clock.now(),
            direction: Direction::Inbound,
            agent: Some(caller.agent.clone()),
            agent_institution: Some(caller.institution),
            agent_role: Some(caller.role),
            counterpart: Some(caller.institution),
            method: method.to_owned(),
            case_id: case_id.map(str::to_owned),
            purpose: Some(rule.purpose),
            legal_basis: Some(rule.legal_basis),
            consent_id: None,
            categories: BTreeSet::new(),
            fields: vec![],
            decision: Decision::Allowed,
            reason: None,
        }
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), Status> {
        self.audit.append(&entry).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "audit append failed; refusing the crossing");
            Status::unavailable("audit log unavailable")
        })
    }

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
        let mut allowed = rule.categories.clone();
        let mut consent_id = None;
        if rule.legal_basis == LegalBasis::Consent {
            let recipient = match rule.flow {
                Flow::Push => self.own,
                Flow::Pull => caller.institution,
            };
            let consents = match (&self.consents, case_id) {
                (Some(store), Some(case_id)) => {
                    store.consents_for_case(case_id).await.map_err(|e| {
                        tracing::error!(error = %e, "consent lookup failed");
                        Status::unavailable("consent register unavailable")
                    })?
                }
                _ => vec![],
            };
            match Consent::find_covering(&consents, rule.purpose, recipient, self.clock.now()) {
                Ok(consent) => {
                    consent_id = Some(consent.consent_id.clone());
                    allowed.retain(|c| {
                        consent.categories.contains(c) || ALWAYS_WITH_CONSENT.contains(c)
                    });
                }
                Err(refusal) => {
                    let mut entry = self.entry((&caller, &method, &rule), case_id);
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

    /// For a push: minimises what arrived and records the crossing, before
    /// the handler acts on it.
    pub async fn receive<M>(&self, ticket: &Ticket, message: M) -> Result<M, Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let minimised = self
            .minimiser
            .minimise(&message, &ticket.allowed)
            .map_err(|e| {
                tracing::error!(error = %e, "minimisation failed");
                Status::internal("internal error")
            })?;
        if !minimised.stripped.is_empty() {
            tracing::warn!(method = %ticket.method, stripped = ?minimised.stripped, "fields outside the crossing's categories were dropped");
        }
        self.record(self.allowed_entry(ticket, &minimised.categories, minimised.kept))
            .await?;
        Ok(minimised.message)
    }

    /// For a pull: minimises the answer and records the crossing before it leaves.
    pub async fn release<M>(&self, ticket: &Ticket, message: M) -> Result<Response<M>, Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let minimised = self
            .minimiser
            .minimise(&message, &ticket.allowed)
            .map_err(|e| {
                tracing::error!(error = %e, "minimisation failed");
                Status::internal("internal error")
            })?;
        self.record(self.allowed_entry(ticket, &minimised.categories, minimised.kept))
            .await?;
        Ok(Response::new(minimised.message))
    }

    /// Refuses an admitted crossing for a reason of the service's own (no
    /// habilitation, say): the refusal is audited like the boundary's.
    pub async fn refuse(&self, ticket: &Ticket, reason: &str) -> Status {
        let mut entry = self.entry(
            (&ticket.caller, &ticket.method, &ticket.rule),
            ticket.case_id.as_deref(),
        );
        entry.decision = Decision::Denied;
        entry.reason = Some(reason.to_owned());
        match self.record(entry).await {
            Ok(()) => Status::permission_denied(reason.to_owned()),
            Err(status) => status,
        }
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
            (&ticket.caller, &ticket.method, &ticket.rule),
            ticket.case_id.as_deref(),
        );
        entry.consent_id = ticket.consent_id.clone();
        entry.categories = categories.clone();
        entry.fields = fields;
        entry
    }
}
