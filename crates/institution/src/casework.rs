//! The application layer of an institution's service: each operation checks
//! the rules, writes the change, its outbox message and its idempotency record
//! in one transaction, and wakes the relay. Handlers only convert and call.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use passerelle_boundary::Caller;
use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_domain::agreement::Agreement;
use passerelle_domain::agreement::CapacityDecision;
use passerelle_domain::person::MAX_NOTE;
use passerelle_domain::plan::{Plan, PlanKind, PlanSummary, PlanTheme};
use passerelle_domain::{
    Case, CaseEntry, CaseEvent, CaseExit, CaseState, Clock, Consent, ConsentState, DiagnosisDraft,
    DiagnosisHalf, DomainError, DueKind, Evidence, ExclusiveOutcome, ExitReason, FieldError,
    Indicators, Institution, NewConsent, Outbound, Pair, Participant, Purpose, Referral,
    ReferralDecision, ReferralDraft, ReferralState, Role, SuspensionNotice, Track,
};
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::{CounsellorEntry, Origin, Tx};
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
    pub plan: Option<Plan>,
    pub plan_summaries: Vec<PlanSummary>,
}

/// One item of a due list.
pub type DueEntry = (String, DueKind, DateTime<Utc>);

/// What the working-time register says of a counsellor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PortfolioView {
    pub max_portfolio: u32,
    pub portfolio: u32,
}

/// An office's axe 3 quota for a year, and its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct QuotaView {
    pub quota: u32,
    pub used: u32,
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
    /// The directory's search index, rebuilt when the directory changes.
    pub directory_index: crate::directory::IndexCache,
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
    pub(crate) async fn once<T, F>(&self, call: Call<'_>, op: F) -> Result<T>
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
        // An association's worker refers under the Département's delegation,
        // as the association named in their token.
        let association = match call.caller.role {
            Role::AssociationWorker => Some(call.caller.organisation.clone().ok_or_else(|| {
                ApiError(DomainError::PermissionDenied(
                    "an association worker's token must name the association".into(),
                ))
            })?),
            _ => None,
        };
        self.agreement.check_referral(
            network,
            &draft.office_code,
            &draft.checks,
            association.as_deref(),
        )?;
        let now = self.clock.now();
        let expiry_days = self.agreement.referral.expiry_days;
        self.once(call, async |tx: &mut Tx| {
            let referral = draft.complete(network, call.caller.agent.clone(), now, association);
            if !tx.insert_referral(&referral, Origin::Local).await? {
                return Err(ApiError(DomainError::FailedPrecondition(
                    "this case already has a referral".into(),
                )));
            }
            tx.save_case(&Case::referred(&referral, expiry_days), None).await?;
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
            if case.receiving_institution() == self.own
                && case.referral_state != ReferralState::Accepted
            {
                return Err(ApiError(DomainError::FailedPrecondition(format!(
                    "the referral is {}: accept it (DecideReferral) before the diagnosis",
                    case.referral_state
                ))));
            }
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

    /// The person's signature: the case starts with its pair, or waits for a
    /// place in the counsellor's portfolio, as the agreement reads.
    pub async fn sign_contract(
        &self,
        call: Call<'_>,
        case_id: &str,
        pair: Pair,
        evidence: Vec<Evidence>,
        participant: Option<Participant>,
        target_method: &str,
    ) -> Result<Case> {
        let required = self.agreement.entry_evidence_kinds();
        for (i, item) in evidence.iter().enumerate() {
            if !required.contains(&item.kind) {
                return Err(FieldError::new(
                    format!("entry.evidence[{i}].kind"),
                    format!(
                        "{} is not entry evidence under agreement {}",
                        item.kind, self.agreement.id
                    ),
                )
                .into());
            }
        }
        if let Some(missing) = required
            .iter()
            .find(|k| !evidence.iter().any(|e| e.kind == **k))
        {
            return Err(FieldError::new(
                "entry.evidence",
                format!(
                    "must include the {missing} (agreement {})",
                    self.agreement.id
                ),
            )
            .into());
        }
        self.known_case(case_id).await?;
        let consent = self
            .check_outbound(call.caller, case_id, Purpose::GlobalSupport, target_method)
            .await?;
        let now = self.clock.now();
        let support = &self.agreement.global_support;
        // The exchanges last as long as support does: the consent must cover the period.
        if consent.valid_until < support.ends_at(now, 0) {
            return Err(ApiError(DomainError::FailedPrecondition(format!(
                "the consent ends on {}, before the support period would: collect one that covers it",
                consent.valid_until.date_naive()
            ))));
        }
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let entry = CaseEntry {
                pair,
                track: Track::Global,
                entered_at: now,
                evidence,
                referent: self.agreement.referent(),
            };
            // The ESF questionnaire stays here: the event to the partner
            // is built from the entry, which does not carry it.
            case.participant = participant.clone();
            let event = match self.admit(tx, &entry.pair.counsellor).await? {
                CapacityDecision::Accept => {
                    case.enter(&entry, support)?;
                    CaseEvent::Entered(entry)
                }
                CapacityDecision::Queue => {
                    case.queue(&entry)?;
                    CaseEvent::Queued { pair: entry.pair.clone(), queued_at: now }
                }
                CapacityDecision::Refuse { max } => {
                    return Err(ApiError(DomainError::LimitReached(format!(
                        "counsellor {} already follows {max} people, the most agreement {} allows at their working time",
                        entry.pair.counsellor, self.agreement.id
                    ))));
                }
            };
            tx.save_case(&case, Some(self.own)).await?;
            tx.enqueue(
                &self.message_key("case_event"),
                &Outbound::CaseEvent { case_id: case_id.to_owned(), event },
                now,
            )
            .await?;
            tracing::info!(case_id, state = %case.state, by = %call.caller.agent, "contract signed");
            Ok(case)
        })
        .await
    }

    /// The capacity rule for one more person in `counsellor`'s portfolio.
    async fn admit(&self, tx: &mut Tx, counsellor: &str) -> Result<CapacityDecision> {
        let registered = tx.counsellor(counsellor).await?.ok_or_else(|| {
            ApiError(DomainError::FailedPrecondition(format!(
                "counsellor {counsellor} is not in the working-time register: a coordinator registers them first"
            )))
        })?;
        let current = tx.portfolio(counsellor).await?;
        Ok(self.agreement.capacity.admit(
            current,
            f64::from(registered.working_time_per_mille) / 1000.0,
        ))
    }

    /// Enters people waiting for `counsellor` while places are free; each
    /// entry is told to the partner.
    async fn serve_queue(&self, tx: &mut Tx, counsellor: &str, now: DateTime<Utc>) -> Result<()> {
        while let Some(mut waiting) = tx.first_queued(counsellor).await? {
            if self.admit(tx, counsellor).await? != CapacityDecision::Accept {
                break;
            }
            let Some(mut entry) = waiting.pending_entry.clone() else {
                break;
            };
            entry.entered_at = now;
            waiting.enter(&entry, &self.agreement.global_support)?;
            tx.save_case(&waiting, Some(self.own)).await?;
            tx.enqueue(
                &self.message_key("case_event"),
                &Outbound::CaseEvent {
                    case_id: waiting.case_id.clone(),
                    event: CaseEvent::Entered(entry),
                },
                now,
            )
            .await?;
            tracing::info!(case_id = %waiting.case_id, "entered from the waiting list");
        }
        Ok(())
    }

    pub async fn exit_case(
        &self,
        call: Call<'_>,
        case_id: &str,
        reason: ExitReason,
        qualification_gained: bool,
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
            let mut case = self.exit_in(tx, case_id, reason, now).await?;
            if qualification_gained {
                case.qualification_gained = true;
                tx.save_case(&case, None).await?;
            }
            tracing::info!(case_id, by = %call.caller.agent, reason = %reason, "case exited");
            Ok(case)
        })
        .await
    }

    /// Ends a case within `tx`, tells the partner, and gives the freed place
    /// to whoever waits for it.
    async fn exit_in(
        &self,
        tx: &mut Tx,
        case_id: &str,
        reason: ExitReason,
        now: DateTime<Utc>,
    ) -> Result<Case> {
        let mut case = tx
            .case(case_id)
            .await?
            .ok_or(ApiError(DomainError::NotFound("case")))?;
        let exit = CaseExit {
            reason,
            exited_at: now,
        };
        case.exit(&exit, self.agreement.exits.follow_up_after_job_months)?;
        tx.save_case(&case, None).await?;
        tx.enqueue(
            &self.message_key("case_event"),
            &Outbound::CaseEvent {
                case_id: case_id.to_owned(),
                event: CaseEvent::Exited(exit),
            },
            now,
        )
        .await?;
        if self.own == Institution::Emploi
            && case.track == Track::Global
            && let Some(pair) = &case.pair
        {
            self.serve_queue(tx, &pair.counsellor, now).await?;
        }
        Ok(case)
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

    /// Reviews due, periods ending and follow-ups within `within_days`, for
    /// the agent's cases; with `office_code`, also that office's referrals
    /// awaiting this side's decision (reminders, expiry) and diagnoses
    /// awaiting this side's validation.
    pub async fn due_for(
        &self,
        agent: &str,
        within_days: u32,
        office_code: Option<&str>,
    ) -> Result<Vec<DueEntry>> {
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
        if let Some(office) = office_code {
            if self.agreement.office(office).is_none() {
                return Err(FieldError::new(
                    "office_code",
                    format!("is not an office of agreement {}", self.agreement.id),
                )
                .into());
            }
            let reminders = &self.agreement.referral.reminder_days_before_expiry;
            for (case, origin, halves) in self.store.office_open_cases(office).await? {
                if origin == Origin::Partner {
                    items.extend(
                        case.referral_due_by(reminders, horizon)
                            .into_iter()
                            .map(|(kind, at)| (case.case_id.clone(), kind, at)),
                    );
                }
                if case.awaiting_validation_by(&halves) == Some(self.own)
                    && let Some(since) = halves.iter().map(|h| h.recorded_at).min()
                {
                    items.push((case.case_id.clone(), DueKind::DiagnosisValidation, since));
                }
            }
        }
        items.sort_by_key(|(case_id, _, at)| (*at, case_id.clone()));
        Ok(items)
    }

    pub async fn case_view(&self, case_id: &str) -> Result<CaseView> {
        // The case is read last: every change to its parts commits with the
        // case, so the state shown is never older than the diagnoses or
        // plans shown beside it (a caller waiting for both halves then reads
        // the state they led to, not the one before).
        let referral = self.store.referral(case_id).await?;
        let diagnoses = self.store.diagnoses(case_id).await?;
        let consents = self.store.consents_for_case(case_id).await?;
        let local_notes = self.store.local_notes(case_id).await?;
        let plan = self.store.own_plan(case_id).await?;
        let plan_summaries = self.store.plan_summaries(case_id).await?;
        let case = self
            .store
            .case(case_id)
            .await?
            .ok_or(ApiError(DomainError::NotFound("case")))?;
        Ok(CaseView {
            case,
            referral,
            diagnoses,
            consents,
            local_notes,
            plan,
            plan_summaries,
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
        // The partner ran these checks; a referral that fails ours is not taken in.
        self.agreement.check_referral(
            referral.referring_network,
            &referral.office_code,
            &referral.checks,
            referral.association_id.as_deref(),
        )?;
        let expiry_days = self.agreement.referral.expiry_days;
        self.once(call, async |tx: &mut Tx| {
            if tx.insert_referral(&referral, Origin::Partner).await? {
                tx.save_case(&Case::referred(&referral, expiry_days), None)
                    .await?;
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
            case.apply_partner_event(
                &event,
                &self.agreement.global_support,
                self.agreement.exits.follow_up_after_job_months,
            )?;
            tx.save_case(&case, None).await?;
            Ok(())
        })
        .await
    }

    /// Exact aggregates for the steering service; nothing per person. The
    /// counts are kept up to date by each change: no case is read here.
    pub async fn indicators(&self) -> Result<Indicators> {
        let counsellor_fte_per_mille = match self.own {
            Institution::Emploi => self.store.counsellor_fte_per_mille().await?,
            _ => 0,
        };
        Ok(Indicators {
            source: self.own,
            computed_at: self.clock.now(),
            counts: self.store.statistics().await?,
            counsellor_fte_per_mille,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ---- referral decision -----------------------------------------------------

    /// The institution a referral was sent to accepts it, or refuses it with
    /// one of the agreement's reasons; the referrer is told.
    pub async fn decide_referral(
        &self,
        call: Call<'_>,
        case_id: &str,
        state: ReferralState,
        refusal_reason: Option<String>,
        local_note: &str,
        target_method: &str,
    ) -> Result<Case> {
        let local_note = note(local_note)?;
        match (state, &refusal_reason) {
            (ReferralState::Accepted, None) => {}
            (ReferralState::Accepted, Some(_)) => {
                return Err(FieldError::new("refusal_reason", "is only for a refusal").into());
            }
            (ReferralState::Refused, Some(reason)) => self.agreement.refusal_reason(reason)?,
            (ReferralState::Refused, None) => {
                return Err(FieldError::new("refusal_reason", "is required for a refusal").into());
            }
            _ => return Err(FieldError::new("decision", "must be ACCEPTED or REFUSED").into()),
        }
        self.known_case(case_id).await?;
        self.check_outbound(call.caller, case_id, Purpose::Referral, target_method)
            .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            if case.receiving_institution() != self.own {
                return Err(ApiError(DomainError::FailedPrecondition(
                    "this side sent the referral: the institution it was sent to decides".into(),
                )));
            }
            let decision = ReferralDecision {
                state,
                refusal_reason: refusal_reason.clone(),
                decided_at: now,
            };
            case.decide_referral(&decision)?;
            tx.save_case(&case, None).await?;
            if let Some(text) = &local_note {
                tx.insert_note(case_id, &call.caller.agent, "referral_decision", text, now)
                    .await?;
            }
            tx.enqueue(
                &self.message_key("referral_decision"),
                &Outbound::ReferralDecision {
                    case_id: case_id.to_owned(),
                    decision,
                },
                now,
            )
            .await?;
            tracing::info!(case_id, decision = %state, by = %call.caller.agent, "referral decided");
            Ok(case)
        })
        .await
    }

    pub async fn receive_referral_decision(
        &self,
        call: Call<'_>,
        case_id: &str,
        decision: ReferralDecision,
    ) -> Result<()> {
        if let Some(reason) = &decision.refusal_reason {
            self.agreement
                .refusal_reason(reason)
                .map_err(|e| e.within("decision"))?;
        }
        let from = call.caller.institution;
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            if case.receiving_institution() != from {
                return Err(FieldError::new(
                    "case_id",
                    "names a referral the sender did not receive",
                )
                .into());
            }
            case.decide_referral(&decision)?;
            tx.save_case(&case, None).await?;
            Ok(())
        })
        .await
    }

    // ---- appointments and follow-up -------------------------------------------

    /// One more missed appointment; at the agreement's threshold the person
    /// is taken to have ended support.
    pub async fn record_missed_appointment(
        &self,
        call: Call<'_>,
        case_id: &str,
        target_method: &str,
    ) -> Result<Case> {
        self.known_case(case_id).await?;
        self.check_outbound(call.caller, case_id, Purpose::GlobalSupport, target_method)
            .await?;
        let now = self.clock.now();
        let threshold = self.agreement.exits.missed_appointments_threshold;
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let reached = case.miss_appointment(threshold)?;
            tx.save_case(&case, None).await?;
            tx.enqueue(
                &self.message_key("case_event"),
                &Outbound::CaseEvent {
                    case_id: case_id.to_owned(),
                    event: CaseEvent::AppointmentMissed { at: now },
                },
                now,
            )
            .await?;
            if reached {
                tracing::info!(
                    case_id,
                    threshold,
                    "missed appointments reached the threshold"
                );
                return self
                    .exit_in(tx, case_id, ExitReason::MissedAppointments, now)
                    .await;
            }
            Ok(case)
        })
        .await
    }

    /// The follow-up in employment after a job exit (employment side).
    pub async fn record_follow_up(
        &self,
        call: Call<'_>,
        case_id: &str,
        in_employment: bool,
    ) -> Result<Case> {
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            case.record_follow_up(in_employment)?;
            tx.save_case(&case, None).await?;
            Ok(case)
        })
        .await
    }

    // ---- capacity -------------------------------------------------------------

    /// Records a counsellor's working time; people waiting for them enter if
    /// the new bound leaves room.
    pub async fn register_counsellor(
        &self,
        call: Call<'_>,
        entry: CounsellorEntry,
    ) -> Result<PortfolioView> {
        if !(1..=1000).contains(&entry.working_time_per_mille) {
            return Err(
                FieldError::new("working_time_per_mille", "must be between 1 and 1000").into(),
            );
        }
        match self.agreement.office(&entry.office_code) {
            Some(office) if office.network() == passerelle_domain::Network::Emploi => {}
            _ => {
                return Err(FieldError::new(
                    "office_code",
                    format!(
                        "is not an employment agency of agreement {}",
                        self.agreement.id
                    ),
                )
                .into());
            }
        }
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            tx.upsert_counsellor(&entry, &call.caller.agent, now)
                .await?;
            self.serve_queue(tx, &entry.counsellor, now).await?;
            Ok(PortfolioView {
                max_portfolio: self
                    .agreement
                    .capacity
                    .max_portfolio(f64::from(entry.working_time_per_mille) / 1000.0),
                portfolio: tx.portfolio(&entry.counsellor).await?,
            })
        })
        .await
    }

    // ---- plans ----------------------------------------------------------------

    /// Replaces this institution's plan; the partner receives its summary.
    pub async fn update_plan(
        &self,
        call: Call<'_>,
        case_id: &str,
        kind: PlanKind,
        themes: Vec<PlanTheme>,
        target_method: &str,
    ) -> Result<PlanSummary> {
        if kind.holder() != self.own {
            return Err(FieldError::new(
                "plan.kind",
                format!("the {kind} plan is held by {}", kind.holder()),
            )
            .into());
        }
        let now = self.clock.now();
        let plan = Plan {
            case_id: case_id.to_owned(),
            kind,
            themes,
            updated_by: call.caller.agent.clone(),
            updated_at: now,
        };
        plan.validate()?;
        let case = self
            .store
            .case(case_id)
            .await?
            .ok_or(ApiError(DomainError::NotFound("case")))?;
        // Under exclusive social support the employment side hears nothing but the suspension.
        let tell_partner = case.track == Track::Global;
        if tell_partner {
            self.check_outbound(call.caller, case_id, Purpose::GlobalSupport, target_method)
                .await?;
        }
        self.once(call, async |tx: &mut Tx| {
            let case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            if case.state != CaseState::Active {
                return Err(ApiError(DomainError::FailedPrecondition(format!(
                    "plans are kept while support runs; the case is {}",
                    case.state
                ))));
            }
            tx.save_plan(case_id, kind, Origin::Local, &plan, now)
                .await?;
            let summary = plan.summary();
            if tell_partner {
                tx.enqueue(
                    &self.message_key("plan_summary"),
                    &Outbound::PlanSummary(summary.clone()),
                    now,
                )
                .await?;
            }
            Ok(summary)
        })
        .await
    }

    pub async fn receive_plan_summary(&self, call: Call<'_>, summary: PlanSummary) -> Result<()> {
        if summary.kind.holder() != call.caller.institution {
            return Err(FieldError::new("summary.kind", "is not a plan the sender holds").into());
        }
        let at = summary.updated_at;
        self.once(call, async |tx: &mut Tx| {
            tx.case(&summary.case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            tx.save_plan(
                &summary.case_id,
                summary.kind,
                Origin::Partner,
                &summary,
                at,
            )
            .await?;
            Ok(())
        })
        .await
    }

    // ---- exclusive social support (axe 3) ---------------------------------------

    fn axe3(&self) -> Result<&passerelle_domain::agreement::ExclusiveSocialSupport> {
        self.agreement
            .exclusive_social_support
            .as_ref()
            .ok_or_else(|| {
                ApiError(DomainError::FailedPrecondition(format!(
                    "agreement {} sets no exclusive social support",
                    self.agreement.id
                )))
            })
    }

    /// Starts exclusive social support within the office's yearly quota; the
    /// employment side is told its follow-up is suspended, and nothing more.
    pub async fn start_exclusive_support(
        &self,
        call: Call<'_>,
        case_id: &str,
        social_evaluation: Evidence,
        target_method: &str,
    ) -> Result<Case> {
        let axe3 = self.axe3()?.clone();
        self.known_case(case_id).await?;
        self.check_outbound(
            call.caller,
            case_id,
            Purpose::ExclusiveSocialSupport,
            target_method,
        )
        .await?;
        let jobseeker_number = self
            .store
            .referral(case_id)
            .await?
            .and_then(|r| r.person.jobseeker_number)
            .ok_or_else(|| {
                ApiError(DomainError::FailedPrecondition(
                    "exclusive social support is for registered jobseekers: the referral carries no jobseeker number".into(),
                ))
            })?;
        let now = self.clock.now();
        let (year_start, next_year) = year_bounds(now);
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            let (office_used, all_used) = tx
                .exclusive_starts(&case.office_code, year_start, next_year)
                .await?;
            let raised = tx.office_quota(&case.office_code, now.year()).await?;
            axe3.admit(office_used, all_used, raised).map_err(|why| {
                ApiError(DomainError::LimitReached(format!(
                    "{why} (office {})",
                    case.office_code
                )))
            })?;
            case.start_exclusive(
                &call.caller.agent,
                social_evaluation.clone(),
                now,
                axe3.ends_at(now, 0),
            )?;
            tx.save_case(&case, None).await?;
            let notice = SuspensionNotice {
                case_id: case_id.to_owned(),
                jobseeker_number: jobseeker_number.clone(),
                suspended_from: now,
                suspended_until: case.ends_at,
                renewals: 0,
                outcome: None,
                changed_at: now,
            };
            tx.enqueue(
                &self.message_key("suspension"),
                &Outbound::Suspension(notice),
                now,
            )
            .await?;
            tracing::info!(case_id, office = %case.office_code, "exclusive social support started");
            Ok(case)
        })
        .await
    }

    /// The joint decision at the end of exclusive social support.
    pub async fn decide_exclusive_end(
        &self,
        call: Call<'_>,
        case_id: &str,
        outcome: ExclusiveOutcome,
        target_method: &str,
    ) -> Result<Case> {
        let axe3 = self.axe3()?.clone();
        self.known_case(case_id).await?;
        self.check_outbound(
            call.caller,
            case_id,
            Purpose::ExclusiveSocialSupport,
            target_method,
        )
        .await?;
        let referral = self.store.referral(case_id).await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx.case(case_id).await?.ok_or(ApiError(DomainError::NotFound("case")))?;
            let started = case.entered_at;
            case.decide_exclusive_end(outcome, &axe3, now)?;
            tx.save_case(&case, None).await?;
            let notice = SuspensionNotice {
                case_id: case_id.to_owned(),
                jobseeker_number: referral
                    .as_ref()
                    .and_then(|r| r.person.jobseeker_number.clone())
                    .unwrap_or_default(),
                suspended_from: started.unwrap_or(now),
                suspended_until: (outcome == ExclusiveOutcome::Renew).then_some(case.ends_at).flatten(),
                renewals: case.renewals,
                outcome: (outcome != ExclusiveOutcome::Renew).then_some(outcome),
                changed_at: now,
            };
            tx.enqueue(&self.message_key("suspension"), &Outbound::Suspension(notice), now).await?;
            tracing::info!(case_id, outcome = %outcome, by = %call.caller.agent, "exclusive social support decided");
            Ok(case)
        })
        .await
    }

    /// An office's express request for more axe 3 entries in a year, granted.
    pub async fn set_office_quota(
        &self,
        call: Call<'_>,
        office_code: &str,
        year: i32,
        quota: u32,
    ) -> Result<QuotaView> {
        let axe3 = self.axe3()?.clone();
        if !axe3.office_may_request_more {
            return Err(ApiError(DomainError::FailedPrecondition(format!(
                "agreement {} does not let an office ask for more",
                self.agreement.id
            ))));
        }
        match self.agreement.office(office_code) {
            Some(o) if o.network() == passerelle_domain::Network::Social => {}
            _ => {
                return Err(FieldError::new(
                    "office_code",
                    format!("is not a social office of agreement {}", self.agreement.id),
                )
                .into());
            }
        }
        let Some(from) = chrono::NaiveDate::from_ymd_opt(year, 1, 1) else {
            return Err(FieldError::new("year", "is not a valid year").into());
        };
        if quota < axe3.quota_per_office_per_year || quota > 10 * axe3.quota_per_office_per_year {
            return Err(FieldError::new(
                "quota",
                format!(
                    "must be between the agreement's {} and ten times it",
                    axe3.quota_per_office_per_year
                ),
            )
            .into());
        }
        let now = self.clock.now();
        let (year_start, next_year) = year_bounds(from.and_time(chrono::NaiveTime::MIN).and_utc());
        self.once(call, async |tx: &mut Tx| {
            tx.set_office_quota(office_code, year, quota, &call.caller.agent, now).await?;
            let (used, _) = tx.exclusive_starts(office_code, year_start, next_year).await?;
            tracing::info!(office_code, year, quota, by = %call.caller.agent, "office quota raised");
            Ok(QuotaView { quota, used })
        })
        .await
    }

    pub async fn receive_suspension(&self, call: Call<'_>, notice: SuspensionNotice) -> Result<()> {
        self.once(call, async |tx: &mut Tx| {
            let mut case = tx
                .case(&notice.case_id)
                .await?
                .ok_or(ApiError(DomainError::NotFound("case")))?;
            case.apply_suspension(&notice);
            tx.save_case(&case, None).await?;
            tracing::info!(case_id = %notice.case_id, "employment follow-up suspension updated");
            Ok(())
        })
        .await
    }

    // ---- deadlines ----------------------------------------------------------

    /// Runs the agreement's deadlines every `interval` until shutdown.
    pub async fn keep_deadlines(
        self,
        interval: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.run_deadlines().await {
                tracing::warn!(error = %e.0, "deadline pass failed; retried next time");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Expires referrals left pending past the agreement's delay (where this
    /// side received them) and closes support periods that ended without a
    /// renewal (where this side recorded the entry). Each change is told to
    /// the partner. Returns how many cases changed.
    pub async fn run_deadlines(&self) -> Result<usize> {
        const BATCH: i64 = 100;
        let now = self.clock.now();
        let mut changed = 0;
        for case in self.store.expired_referrals(now, BATCH).await? {
            let mut tx = self.store.begin().await?;
            let Some(mut case) = tx.case(&case.case_id).await? else {
                continue;
            };
            if !case.referral_expired_at(now) {
                continue;
            }
            let decision = ReferralDecision {
                state: ReferralState::Expired,
                refusal_reason: None,
                decided_at: case.referral_expires_at,
            };
            case.decide_referral(&decision)?;
            tx.save_case(&case, None).await?;
            tx.enqueue(
                &self.message_key("referral_decision"),
                &Outbound::ReferralDecision {
                    case_id: case.case_id.clone(),
                    decision,
                },
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(case_id = %case.case_id, "referral expired");
            changed += 1;
        }
        if self.agreement.exits.allows(ExitReason::EndOfTerm) {
            for case in self.store.ended_periods(self.own, now, BATCH).await? {
                let mut tx = self.store.begin().await?;
                match tx.case(&case.case_id).await? {
                    Some(c)
                        if c.state == CaseState::Active && c.ends_at.is_some_and(|e| e <= now) => {}
                    _ => continue,
                }
                let exited_at = case.ends_at.unwrap_or(now);
                self.exit_in(&mut tx, &case.case_id, ExitReason::EndOfTerm, exited_at)
                    .await?;
                tx.commit().await?;
                tracing::info!(case_id = %case.case_id, "support period ended");
                changed += 1;
            }
        }
        if changed > 0 {
            self.wake_relay.notify_one();
        }
        Ok(changed)
    }
}

/// The calendar year of `at`, as a half-open interval.
fn year_bounds(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |y| {
        chrono::NaiveDate::from_ymd_opt(y, 1, 1)
            .unwrap_or_default()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
    };
    (start(at.year()), start(at.year() + 1))
}
