//! The application layer of an institution's service: each operation checks
//! the rules, writes the change, its outbox message and its idempotency record
//! in one transaction, and wakes the relay. Handlers only convert and call.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use passerelle_boundary::Caller;
use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_domain::agreement::Agreement;
use passerelle_domain::person::MAX_NOTE;
use passerelle_domain::{
    Case, CaseEntry, CaseEvent, CaseExit, Clock, Consent, ConsentState, DiagnosisDraft,
    DiagnosisHalf, DomainError, DueKind, ExitType, FieldError, Indicators, Institution, NewConsent,
    Outbound, Purpose, Referral, ReferralDraft,
};
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::{Origin, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// What an agent sees of one case in their own institution.
#[derive(Debug, Clone)]
pub struct CaseView {
    pub case: Case,
    pub referral: Option<Referral>,
    pub diagnoses: Vec<DiagnosisHalf>,
    pub consents: Vec<Consent>,
    pub local_notes: Vec<String>,
}

/// Who asks, through which RPC, under which idempotency key, for which request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub caller: &'a Caller,
    /// Wire path of the RPC being served.
    pub method: &'a str,
    pub key: &'a str,
    /// SHA-256 of the request, so a reused key with another request is refused.
    pub digest: &'a str,
}

#[derive(Debug, Clone)]
pub struct Casework {
    pub own: Institution,
    pub store: InstitutionStore,
    pub clock: Arc<dyn Clock>,
    pub wake_relay: Arc<Notify>,
    /// The agreement whose rules this service runs.
    pub agreement: Arc<Agreement>,
}

/// SHA-256 of a request's encoding: the same key with another request is refused.
pub fn request_digest(encoded: &[u8]) -> String {
    hex::encode(Sha256::digest(encoded))
}

fn idempotency_key(key: &str) -> std::result::Result<&str, FieldError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(FieldError::new("idempotency_key", "is required"));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError::new(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    Ok(key)
}

fn note(note: &str) -> std::result::Result<Option<String>, FieldError> {
    passerelle_domain::person::optional_text("local_note", note, MAX_NOTE)
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError(DomainError::internal(e))
}

impl Casework {
    pub fn partner(&self) -> Institution {
        // Only the two institutions run casework; each has exactly one partner.
        self.own.partner().unwrap_or(Institution::Emploi)
    }

    fn message_key(&self, kind: &str) -> String {
        format!("{}:{kind}:{}", self.own.code(), uuid::Uuid::now_v7())
    }

    /// Runs `op` once per (method, key): a replay with the same request gets
    /// the first answer back; with another request it is refused.
    async fn once<T, F>(&self, call: Call<'_>, op: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce(&mut Tx) -> Result<T>,
    {
        let (method, request_sha256) = (call.method, call.digest);
        let key = idempotency_key(call.key)?;
        let mut tx = self.store.begin().await?;
        if let Some(stored) = tx.idempotent_response(method, key).await? {
            return self.replay(stored.request_sha256 == request_sha256, &stored.response);
        }
        let result = op(&mut tx).await?;
        let encoded = serde_json::to_vec(&result).map_err(internal)?;
        let saved = match tx
            .save_response(method, key, request_sha256, &encoded, self.clock.now())
            .await
        {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        match saved {
            Ok(()) => {
                self.wake_relay.notify_one();
                Ok(result)
            }
            // A concurrent request with the same key committed first: answer as it did.
            Err(e) if e.is_unique_violation() => {
                let mut tx = self.store.begin().await?;
                let stored = tx
                    .idempotent_response(method, key)
                    .await?
                    .ok_or_else(|| internal(e))?;
                self.replay(stored.request_sha256 == request_sha256, &stored.response)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn replay<T: DeserializeOwned>(&self, same_request: bool, response: &[u8]) -> Result<T> {
        if !same_request {
            return Err(ApiError(DomainError::IdempotencyConflict));
        }
        serde_json::from_slice(response).map_err(internal)
    }

    /// A case this service does not know is NOT_FOUND, whatever else is wrong.
    async fn known_case(&self, case_id: &str) -> Result<()> {
        match self.store.case(case_id).await? {
            Some(_) => Ok(()),
            None => Err(ApiError(DomainError::NotFound("case"))),
        }
    }

    /// Sender-side boundary check: data leaves for the partner only under a
    /// consent that covers it; a refusal is audited.
    async fn check_outbound(
        &self,
        caller: &Caller,
        case_id: &str,
        purpose: Purpose,
        target_method: &str,
    ) -> Result<Consent> {
        let consents = self.store.consents_for_case(case_id).await?;
        match Consent::find_covering(&consents, purpose, self.partner(), self.clock.now()) {
            Ok(consent) => Ok(consent.clone()),
            Err(refusal) => {
                self.audit_outbound(
                    Some(caller),
                    case_id,
                    purpose,
                    target_method,
                    refusal.to_string(),
                )
                .await?;
                Err(ApiError(DomainError::PermissionDenied(refusal.to_string())))
            }
        }
    }

    /// The audit entry of data leaving this service for the partner.
    pub fn outbound_entry(
        &self,
        caller: Option<&Caller>,
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
            counterpart: Some(self.partner()),
            method: target_method.to_owned(),
            case_id: Some(case_id.to_owned()),
            purpose: Some(purpose),
            legal_basis: None,
            consent_id: None,
            categories: BTreeSet::new(),
            fields: vec![],
            decision: Decision::Allowed,
            reason: None,
        }
    }

    async fn audit_outbound(
        &self,
        caller: Option<&Caller>,
        case_id: &str,
        purpose: Purpose,
        target_method: &str,
        reason: String,
    ) -> Result<()> {
        let mut entry = self.outbound_entry(caller, case_id, purpose, target_method);
        entry.decision = Decision::Denied;
        entry.reason = Some(reason);
        self.store.audit().append(&entry).await?;
        Ok(())
    }

    // ---- local operations ----------------------------------------------------

    pub async fn record_consent(&self, call: Call<'_>, new: NewConsent) -> Result<Consent> {
        let now = self.clock.now();
        if new.evidence.signed_at > now {
            return Err(FieldError::new("consent.evidence.signed_at", "is in the future").into());
        }
        let partner = self.partner();
        self.once(call, async |tx: &mut Tx| {
            let consent = Consent {
                consent_id: uuid::Uuid::now_v7().to_string(),
                case_id: new.case_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                purposes: new.purposes,
                recipients: new.recipients,
                categories: new.categories,
                evidence: new.evidence,
                valid_from: new.valid_from,
                valid_until: new.valid_until,
                state: ConsentState::Given,
                state_changed_at: now,
                holder: self.own,
            };
            tx.upsert_consent(&consent).await?;
            if consent.recipients.contains(&partner) {
                tx.enqueue(&self.message_key("consent"), &Outbound::Consent(consent.clone()), now).await?;
            }
            tracing::info!(consent_id = %consent.consent_id, case_id = %consent.case_id, by = %call.caller.agent, "consent recorded");
            Ok(consent)
        })
        .await
    }

    /// Takes effect at once here; the partner is told through the outbox.
    pub async fn withdraw_consent(&self, call: Call<'_>, consent_id: &str) -> Result<Consent> {
        let now = self.clock.now();
        let partner = self.partner();
        self.once(call, async |tx: &mut Tx| {
            let mut consent = tx.consent(consent_id).await?.ok_or(ApiError(DomainError::NotFound("consent")))?;
            if consent.holder != self.own {
                return Err(ApiError(DomainError::FailedPrecondition(format!(
                    "this consent is held by {}: withdraw it there",
                    consent.holder
                ))));
            }
            if consent.state != ConsentState::Given {
                return Err(ApiError(DomainError::FailedPrecondition(format!("the consent is already {}", consent.state))));
            }
            consent.state = ConsentState::Withdrawn;
            consent.state_changed_at = now;
            tx.upsert_consent(&consent).await?;
            if consent.recipients.contains(&partner) {
                tx.enqueue(&self.message_key("consent"), &Outbound::Consent(consent.clone()), now).await?;
            }
            tracing::info!(consent_id = %consent.consent_id, by = %call.caller.agent, "consent withdrawn");
            Ok(consent)
        })
        .await
    }

    pub async fn create_referral(
        &self,
        call: Call<'_>,
        draft: ReferralDraft,
        local_note: &str,
        target_method: &str,
    ) -> Result<Referral> {
        let local_note = note(local_note)?;
        let consent = self
            .check_outbound(
                call.caller,
                &draft.case_id,
                Purpose::Referral,
                target_method,
            )
            .await?;
        if consent.consent_id != draft.consent_id {
            return Err(FieldError::new(
                "referral.consent_id",
                "is not the consent in force for this case",
            )
            .into());
        }
        let network = self
            .own
            .network()
            .ok_or_else(|| internal(std::io::Error::other("no network")))?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let referral = draft.complete(network, call.caller.agent.clone(), now);
            if !tx.insert_referral(&referral, Origin::Local).await? {
                return Err(ApiError(DomainError::FailedPrecondition(
                    "this case already has a referral".into(),
                )));
            }
            tx.save_case(&Case::referred(&referral), None).await?;
            if let Some(text) = &local_note {
                tx.insert_note(&referral.case_id, &call.caller.agent, "referral", text, now)
                    .await?;
            }
            tx.enqueue(
                &self.message_key("referral"),
                &Outbound::Referral(referral.clone()),
                now,
            )
            .await?;
            tracing::info!(case_id = %referral.case_id, by = %call.caller.agent, "referral created");
            Ok(referral)
        })
        .await
    }

    pub async fn record_diagnosis(
        &self,
        call: Call<'_>,
        draft: DiagnosisDraft,
        local_note: &str,
        target_method: &str,
    ) -> Result<DiagnosisHalf> {
        let local_note = note(local_note)?;
        self.known_case(&draft.case_id).await?;
        self.check_outbound(
            call.caller,
            &draft.case_id,
            Purpose::Referral,
            target_method,
        )
        .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(&draft.case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let half = DiagnosisHalf {
                case_id: draft.case_id.clone(),
                author_institution: self.own,
                author: call.caller.agent.clone(),
                barriers: draft.barriers,
                agreement: draft.agreement,
                recorded_at: now,
            };
            tx.upsert_diagnosis(&half).await?;
            case.apply_diagnosis(
                &tx.diagnoses(&half.case_id).await?,
                self.agreement.shared_diagnosis.rule,
            );
            tx.save_case(&case, None).await?;
            if let Some(text) = &local_note {
                tx.insert_note(&half.case_id, &call.caller.agent, "diagnosis", text, now)
                    .await?;
            }
            tx.enqueue(
                &self.message_key("diagnosis"),
                &Outbound::Diagnosis(half.clone()),
                now,
            )
            .await?;
            Ok(half)
        })
        .await
    }

    /// The person's signature: the case starts with its pair.
    pub async fn sign_contract(
        &self,
        call: Call<'_>,
        case_id: &str,
        pair: passerelle_domain::Pair,
        track: passerelle_domain::Track,
        contract_sha256: String,
        target_method: &str,
    ) -> Result<Case> {
        self.known_case(case_id).await?;
        self.check_outbound(call.caller, case_id, Purpose::GlobalSupport, target_method)
            .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let entry = CaseEntry {
                pair,
                track,
                entered_at: now,
                contract_sha256,
            };
            case.enter(&entry, &self.agreement.global_support)?;
            tx.save_case(&case, Some(self.own)).await?;
            let event = Outbound::CaseEvent {
                case_id: case_id.to_owned(),
                event: CaseEvent::Entered(entry),
            };
            tx.enqueue(&self.message_key("case_event"), &event, now)
                .await?;
            tracing::info!(case_id, by = %call.caller.agent, "case entered");
            Ok(case)
        })
        .await
    }

    pub async fn exit_case(
        &self,
        call: Call<'_>,
        case_id: &str,
        reason: passerelle_domain::ExitReason,
    ) -> Result<Case> {
        if !self.agreement.exits.allows(reason) {
            return Err(FieldError::new(
                "exit.reason",
                format!(
                    "{reason} is not an exit reason of agreement {}",
                    self.agreement.id
                ),
            )
            .into());
        }
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let exit = CaseExit {
                reason,
                exited_at: now,
            };
            case.exit(&exit)?;
            tx.save_case(&case, None).await?;
            let event = Outbound::CaseEvent {
                case_id: case_id.to_owned(),
                event: CaseEvent::Exited(exit),
            };
            tx.enqueue(&self.message_key("case_event"), &event, now)
                .await?;
            tracing::info!(case_id, by = %call.caller.agent, reason = %reason, "case exited");
            Ok(case)
        })
        .await
    }

    /// The pair renews support after their joint review; the partner is told.
    pub async fn renew_support(
        &self,
        call: Call<'_>,
        case_id: &str,
        exceptional: bool,
        justification: &str,
        target_method: &str,
    ) -> Result<Case> {
        let justification =
            note(justification).map_err(|e| FieldError::new("justification", e.reason))?;
        if exceptional && justification.is_none() {
            return Err(
                FieldError::new("justification", "is required for an exceptional renewal").into(),
            );
        }
        self.known_case(case_id).await?;
        self.check_outbound(call.caller, case_id, Purpose::GlobalSupport, target_method)
            .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx.case(case_id).await?.ok_or(ApiError(DomainError::NotFound("case")))?;
            let renewal = case.renew(&self.agreement.global_support, exceptional, now)?;
            tx.save_case(&case, None).await?;
            if let Some(text) = &justification {
                tx.insert_note(case_id, &call.caller.agent, "renewal", text, now).await?;
            }
            let event = Outbound::CaseEvent { case_id: case_id.to_owned(), event: CaseEvent::Renewed(renewal) };
            tx.enqueue(&self.message_key("case_event"), &event, now).await?;
            tracing::info!(case_id, renewals = case.renewals, exceptional, by = %call.caller.agent, "support renewed");
            Ok(case)
        })
        .await
    }

    /// Reviews due and periods ending within `within_days`, for the agent's cases.
    pub async fn due_for(
        &self,
        agent: &str,
        within_days: u32,
    ) -> Result<Vec<(String, DueKind, DateTime<Utc>)>> {
        if !(1..=366).contains(&within_days) {
            return Err(FieldError::new("within_days", "must be between 1 and 366").into());
        }
        let horizon = self.clock.now() + chrono::Duration::days(i64::from(within_days));
        let cases = self.store.active_cases_due(agent, horizon).await?;
        let mut items: Vec<_> = cases
            .iter()
            .flat_map(|c| {
                c.due_by(horizon)
                    .into_iter()
                    .map(|(kind, at)| (c.case_id.clone(), kind, at))
            })
            .collect();
        items.sort_by_key(|(case_id, _, at)| (*at, case_id.clone()));
        Ok(items)
    }

    pub async fn case_view(&self, case_id: &str) -> Result<CaseView> {
        let case = self
            .store
            .case(case_id)
            .await?
            .ok_or(ApiError(DomainError::NotFound("case")))?;
        Ok(CaseView {
            case,
            referral: self.store.referral(case_id).await?,
            diagnoses: self.store.diagnoses(case_id).await?,
            consents: self.store.consents_for_case(case_id).await?,
            local_notes: self.store.local_notes(case_id).await?,
        })
    }

    // ---- what the partner sends ------------------------------------------------

    pub async fn receive_consent(&self, call: Call<'_>, consent: Consent) -> Result<()> {
        let from = call.caller.institution;
        if consent.holder != from {
            return Err(
                FieldError::new("consent.holder", "must be the sending institution").into(),
            );
        }
        self.once(call, async |tx: &mut Tx| {
            // A partner may only change the consents it holds itself.
            if let Some(known) = tx.consent(&consent.consent_id).await?
                && known.holder != from
            {
                return Err(FieldError::new("consent.consent_id", "names a consent the sender does not hold").into());
            }
            tx.upsert_consent(&consent).await?;
            tracing::info!(consent_id = %consent.consent_id, state = %consent.state, "partner consent recorded");
            Ok(())
        })
        .await
    }

    pub async fn receive_referral(&self, call: Call<'_>, referral: Referral) -> Result<()> {
        let from = call.caller.institution;
        if Some(referral.referring_network) != from.network() {
            return Err(FieldError::new(
                "referral.referring_network",
                "must be the sending institution's network",
            )
            .into());
        }
        self.once(call, async |tx: &mut Tx| {
            if tx.insert_referral(&referral, Origin::Partner).await? {
                tx.save_case(&Case::referred(&referral), None).await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn receive_diagnosis(&self, call: Call<'_>, half: DiagnosisHalf) -> Result<()> {
        let from = call.caller.institution;
        if half.author_institution != from {
            return Err(FieldError::new(
                "half.author_institution",
                "must be the sending institution",
            )
            .into());
        }
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(&half.case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            tx.upsert_diagnosis(&half).await?;
            case.apply_diagnosis(
                &tx.diagnoses(&half.case_id).await?,
                self.agreement.shared_diagnosis.rule,
            );
            tx.save_case(&case, None).await?;
            Ok(())
        })
        .await
    }

    pub async fn receive_case_event(
        &self,
        call: Call<'_>,
        case_id: &str,
        event: CaseEvent,
    ) -> Result<()> {
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            case.apply_partner_event(&event, &self.agreement.global_support)?;
            tx.save_case(&case, None).await?;
            Ok(())
        })
        .await
    }

    /// Exact aggregates for the steering service; nothing per person.
    pub async fn indicators(&self) -> Result<Indicators> {
        let counts = self.store.case_counts(self.own).await?;
        let mut exits: Vec<(String, u64)> = [ExitType::Job, ExitType::Training, ExitType::Other]
            .iter()
            .map(|t| (t.code().to_owned(), 0))
            .collect();
        for (reason, n) in &counts.exits_by_reason {
            let exit_type = passerelle_domain::ExitReason::from_code(reason)
                .map(|r| r.exit_type())
                .unwrap_or(ExitType::Other);
            if let Some(slot) = exits.iter_mut().find(|(k, _)| k == exit_type.code()) {
                slot.1 += n;
            }
        }
        Ok(Indicators {
            source: self.own,
            computed_at: self.clock.now(),
            referrals_sent: counts.referrals_sent,
            entries: counts.entries,
            in_progress: counts.in_progress,
            entry_delay_days_sum: counts.entry_delay_days_sum,
            entry_delay_count: counts.entry_delay_count,
            exits_by_type: exits,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
