//! The application layer of an institution's service: each operation checks
//! the rules, writes the change, its outbox message and its idempotency record
//! in one transaction, and wakes the relay. Handlers only convert and call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_boundary::need_to_know::{CaseParties, CaseScope, may_reach, may_read_note};
use passerelle_boundary::{Caller, CrossingControl, RpcRule, SendRefusal};
use passerelle_domain::agreement::Agreement;
use passerelle_domain::agreement::CapacityDecision;
use passerelle_domain::bounds;
use passerelle_domain::orientation::{Orientation, OrientationDraft, ParcoursRules};
use passerelle_domain::person::MAX_NOTE;
use passerelle_domain::plan::{Plan, PlanKind, PlanSummary, PlanTheme};
use passerelle_domain::{
    Case, CaseEvent, CaseExit, CaseId, CaseState, Clock, Consent, ConsentState, DiagnosisDraft,
    DiagnosisHalf, DomainError, DueKind, EndOfProcessing, EndOfProcessingReason, ExitReason,
    FieldError, Indicators, Institution, NewConsent, Outbound, Purpose, Referral, ReferralDecision,
    ReferralDraft, ReferralState, Role, Side, Track,
};
use passerelle_runtime::error::AppError;
use passerelle_runtime::idempotency::{self, Call};
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::{Origin, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

type Result<T> = std::result::Result<T, AppError>;

/// Whether the RPC's reach is the case's people: a case-taking RPC the
/// contract left unscoped is for them.
fn for_case_people(rule: &RpcRule) -> bool {
    rule.scope.unwrap_or(CaseScope::CasePeople) == CaseScope::CasePeople
}

/// What an agent sees of one case in their own institution.
#[derive(Debug, Clone)]
pub struct CaseView<'a> {
    /// The case read whole (shared with what is kept of it).
    pub parts: &'a CaseParts,
    /// The local notes the caller may read.
    pub local_notes: Vec<&'a str>,
}

pub use passerelle_storage::institution::CaseParts;

/// One item of a due list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    pub case_id: CaseId,
    pub kind: DueKind,
    pub at: DateTime<Utc>,
}

impl DueEntry {
    fn new(case_id: &CaseId, (kind, at): (DueKind, DateTime<Utc>)) -> Self {
        DueEntry {
            case_id: case_id.clone(),
            kind,
            at,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Casework {
    pub side: Side,
    pub store: InstitutionStore,
    pub clock: Arc<dyn Clock>,
    pub wake_relay: Arc<Notify>,
    /// The agreement whose rules this service runs.
    pub agreement: Arc<Agreement>,
    /// The boundary's checks at both ends of a crossing.
    pub crossings: CrossingControl,
    /// The agreement's last day, with the renewals recorded: no new referral
    /// or entry after it, while cases in progress run to their end.
    pub term_end: NaiveDate,
}

pub fn note(note: &str) -> std::result::Result<Option<String>, FieldError> {
    passerelle_domain::person::optional_text("local_note", note, MAX_NOTE)
}

/// Processing of a restricted case is refused: its data are only kept.
pub fn restricted() -> AppError {
    AppError(DomainError::FailedPrecondition(
        "processing of this case is restricted at the person's request (GDPR art. 18): its data are only kept until the DPO lifts the restriction".into(),
    ))
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError(DomainError::internal(e))
}

impl Casework {
    /// This side's institution.
    pub fn own(&self) -> Institution {
        self.side.institution()
    }

    /// The institution on the other side of every case.
    pub fn partner(&self) -> Institution {
        self.side.partner().institution()
    }

    /// Wire path of the partner's `rpc`: where a message is delivered, and
    /// the method its audit records name.
    pub fn partner_path(&self, rpc: &str) -> String {
        passerelle_contract::services::path(self.side.partner(), rpc)
    }

    fn message_key(&self, kind: &str) -> String {
        format!("{}:{kind}:{}", self.side.code(), uuid::Uuid::now_v7())
    }

    /// Runs `op` once per (method, key), in one transaction with its
    /// answer and the committee's counts of the cases it changed; a fresh
    /// commit wakes the relay if `op` queued a message (only then: each
    /// pass of the relay reads the outbox).
    pub async fn once<T, F>(&self, call: Call<'_>, op: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce(&mut Tx) -> Result<T>,
    {
        let queued = std::sync::atomic::AtomicBool::new(false);
        let change = async |tx: &mut Tx| {
            let before = tx.enqueued();
            let answer = op(tx).await?;
            tx.update_statistics().await?;
            queued.store(tx.enqueued() > before, Ordering::Relaxed);
            Ok(answer)
        };
        idempotency::once(&self.store, &*self.clock, call, change, || {
            if queued.load(Ordering::Relaxed) {
                self.wake_relay.notify_one();
            }
        })
        .await
    }

    /// New referrals and entries need the agreement in force.
    pub fn check_in_term(&self, what: &str) -> Result<()> {
        let today = self.clock.now().date_naive();
        if today <= self.term_end {
            return Ok(());
        }
        Err(AppError(DomainError::FailedPrecondition(format!(
            "agreement {} ended on {}: no new {what} (a renewal signed by both parties is recorded in the configuration, agreement_renewals)",
            self.agreement.id, self.term_end
        ))))
    }

    /// Days left in the agreement's term (negative once it has ended).
    pub fn term_days_left(&self) -> i64 {
        (self.term_end - self.clock.now().date_naive()).num_days()
    }

    /// The case's people at this institution; `None` for a case it does not know.
    pub async fn case_parties(&self, case_id: &str) -> Result<Option<CaseParties>> {
        let Some(case) = self.store.case(case_id).await? else {
            return Ok(None);
        };
        let referral = self.store.referral(case_id).await?;
        let halves = self.store.diagnoses(case_id).await?;
        Ok(Some(self.parties_of(&case, referral.as_ref(), &halves)))
    }

    /// The case's people at this institution, from the case and its parts.
    fn parties_of(
        &self,
        case: &Case,
        referral: Option<&Referral>,
        halves: &[DiagnosisHalf],
    ) -> CaseParties {
        let pair = case
            .pair
            .as_ref()
            .or(case.pending_entry.as_ref().map(|entry| &entry.pair));
        CaseParties {
            office_code: case.office_code.clone(),
            pair_member: pair.map(|p| match self.side {
                Side::Emploi => p.counsellor.clone(),
                Side::Social => p.social_worker.clone(),
            }),
            referrer: referral
                .filter(|r| r.referring_network == self.side.network())
                .map(|r| r.referred_by.clone()),
            diagnosis_authors: halves
                .iter()
                .filter(|h| h.author_institution == self.own())
                .map(|h| h.author.clone())
                .collect(),
        }
    }

    /// Need to know: `caller` reaches `case_id` through the RPC of `rule`
    /// only as its scope in the contract allows; a refusal is audited.
    pub async fn reach(&self, caller: &Caller, rule: &RpcRule, case_id: &str) -> Result<()> {
        if !for_case_people(rule) {
            return Ok(());
        }
        let parties = self.case_parties(case_id).await?;
        self.reached(caller, rule, case_id, parties.as_ref()).await
    }

    /// Need to know, judged on a case already read (`None`: not held here).
    pub async fn reach_read(
        &self,
        caller: &Caller,
        rule: &RpcRule,
        case_id: &str,
        parts: Option<&CaseParts>,
    ) -> Result<()> {
        if !for_case_people(rule) {
            return Ok(());
        }
        let parties = parts.map(|p| self.parties_of(&p.case, p.referral.as_ref(), &p.diagnoses));
        self.reached(caller, rule, case_id, parties.as_ref()).await
    }

    /// The need-to-know decision on the case's people; a refusal is audited.
    async fn reached(
        &self,
        caller: &Caller,
        rule: &RpcRule,
        case_id: &str,
        parties: Option<&CaseParties>,
    ) -> Result<()> {
        match may_reach(caller, self.own(), CaseScope::CasePeople, parties) {
            Ok(()) => Ok(()),
            Err(why) => {
                self.crossings
                    .refuse_local(caller, &rule.path, case_id, &why)
                    .await
                    .map_err(|e| internal(std::io::Error::other(e)))?;
                Err(AppError(DomainError::PermissionDenied(why)))
            }
        }
    }

    /// A case this service does not know is NOT_FOUND, whatever else is wrong.
    pub async fn known_case(&self, case_id: &str) -> Result<()> {
        match self.store.case(case_id).await? {
            Some(_) => Ok(()),
            None => Err(AppError(DomainError::NotFound("case"))),
        }
    }

    /// Sender-side boundary check: data leaves for the partner only under a
    /// consent that covers it; a refusal is audited.
    pub async fn check_outbound(
        &self,
        caller: &Caller,
        case_id: &str,
        purpose: Purpose,
        target_rpc: &str,
    ) -> Result<Consent> {
        self.crossings
            .consent_to_send(
                Some(caller),
                self.partner(),
                case_id,
                purpose,
                &self.partner_path(target_rpc),
            )
            .await
            .map_err(|refusal| match refusal {
                SendRefusal::Denied(why) => AppError(DomainError::PermissionDenied(why)),
                SendRefusal::Unavailable(why) => internal(std::io::Error::other(why)),
            })
    }

    /// The case `case_id` as `tx` sees it (locked for the change on
    /// PostgreSQL), to be changed: refused while its processing is restricted.
    pub async fn load_case(&self, tx: &mut Tx, case_id: &str) -> Result<Case> {
        match tx.case_and_restriction(case_id).await? {
            None => Err(AppError(DomainError::NotFound("case"))),
            Some((_, true)) => Err(restricted()),
            Some((case, false)) => Ok(case),
        }
    }

    /// The case a partner's message changes. Not refused while restricted
    /// here: the partner holds its own messages while it restricts, and one
    /// it sent just before hearing of the restriction is still taken in.
    pub async fn load_partner_case(&self, tx: &mut Tx, case_id: &str) -> Result<Case> {
        tx.case(case_id)
            .await?
            .ok_or(AppError(DomainError::NotFound("case")))
    }

    /// Saves a changed case and queues, in the same transaction, what the
    /// partner must hear of the change (`entered_here`: this side recorded
    /// the entry, so its deadlines run here).
    pub async fn save_and_tell(
        &self,
        tx: &mut Tx,
        case: &Case,
        entered_here: bool,
        tell: Option<Outbound>,
    ) -> Result<()> {
        tx.save_case(case, entered_here.then_some(self.own()))
            .await?;
        if let Some(message) = tell {
            self.tell_partner(tx, &message).await?;
        }
        Ok(())
    }

    /// Queues `message` for the partner in `tx`: it leaves once committed.
    pub async fn tell_partner(&self, tx: &mut Tx, message: &Outbound) -> Result<()> {
        tx.enqueue(&self.message_key(message.kind()), message, self.clock.now())
            .await?;
        Ok(())
    }

    // ---- local operations ----------------------------------------------------

    pub async fn record_consent(&self, call: Call<'_>, new: NewConsent) -> Result<Consent> {
        let now = self.clock.now();
        if new.evidence.signed_at > now {
            return Err(FieldError::new("consent.evidence.signed_at", "is in the future").into());
        }
        if new.valid_until <= now {
            return Err(FieldError::new("consent.valid_until", "is already past").into());
        }
        let partner = self.partner();
        self.once(call, async |tx: &mut Tx| {
            let consent = Consent {
                consent_id: uuid::Uuid::now_v7().to_string().into(),
                case_id: new.case_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string().into()),
                purposes: new.purposes,
                recipients: new.recipients,
                categories: new.categories,
                evidence: new.evidence,
                valid_from: new.valid_from,
                valid_until: new.valid_until,
                state: ConsentState::Given,
                state_changed_at: now,
                holder: self.own(),
            };
            tx.upsert_consent(&consent).await?;
            if consent.recipients.contains(&partner) {
                self.tell_partner(tx, &Outbound::Consent(consent.clone())).await?;
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
            let mut consent = tx.consent(consent_id).await?.ok_or(AppError(DomainError::NotFound("consent")))?;
            if consent.holder != self.own() {
                return Err(AppError(DomainError::FailedPrecondition(format!(
                    "this consent is held by {}: withdraw it there",
                    consent.holder
                ))));
            }
            if consent.state != ConsentState::Given {
                return Err(AppError(DomainError::FailedPrecondition(format!("the consent is already {}", consent.state))));
            }
            consent.state = ConsentState::Withdrawn;
            consent.state_changed_at = now;
            tx.upsert_consent(&consent).await?;
            if consent.recipients.contains(&partner) {
                self.tell_partner(tx, &Outbound::Consent(consent.clone())).await?;
            }
            // Processing of the case ends on both sides (GDPR art. 7(3)).
            let end = EndOfProcessing {
                case_id: consent.case_id.clone(),
                ended_at: now,
                reason: EndOfProcessingReason::ConsentWithdrawn,
            };
            self.end_processing_in(tx, &end).await?;
            if tx.partner_knows_case(&end.case_id).await? {
                self.tell_partner(tx, &Outbound::EndOfProcessing(end)).await?;
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
    ) -> Result<Referral> {
        let local_note = note(local_note)?;
        self.check_in_term("referral")?;
        let today = self.clock.now().date_naive();
        let birth = draft.person.birth_date;
        bounds::birth_date("referral.person.birth_date", birth, today)?;
        let consent = self
            .check_outbound(
                call.caller,
                &draft.case_id,
                Purpose::Referral,
                crate::crossings::RECEIVE_REFERRAL,
            )
            .await?;
        if consent.consent_id != draft.consent_id {
            return Err(FieldError::new(
                "referral.consent_id",
                "is not the consent in force for this case",
            )
            .into());
        }
        let network = self.side.network();
        // An association's worker refers under the Département's delegation,
        // as the association named in their token.
        let association = match call.caller.role {
            Role::AssociationWorker => Some(call.caller.organisation.clone().ok_or_else(|| {
                AppError(DomainError::PermissionDenied(
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
            let mut referral = draft.complete(network, call.caller.agent.clone(), now, association);
            referral.orientation = self.orientation_to_refer(tx, &referral).await?;
            if !tx.insert_referral(&referral, Origin::Local).await? {
                return Err(AppError(DomainError::FailedPrecondition(
                    "this case already has a referral".into(),
                )));
            }
            self.save_and_tell(tx, &Case::referred(&referral, expiry_days), false, None)
                .await?;
            if let Some(text) = &local_note {
                tx.insert_note(&referral.case_id, &call.caller.agent, "referral", text, now)
                    .await?;
            }
            self.tell_partner(tx, &Outbound::Referral(referral.clone())).await?;
            tracing::info!(case_id = %referral.case_id, by = %call.caller.agent, "referral created");
            Ok(referral)
        })
        .await
    }

    /// The agreement's parcours, or why there are none.
    fn parcours_rules(&self) -> Result<&ParcoursRules> {
        self.agreement.parcours.as_ref().ok_or_else(|| {
            AppError(DomainError::FailedPrecondition(format!(
                "agreement {} organises no parcours",
                self.agreement.id
            )))
        })
    }

    /// Appends `o` to its case's history in `tx`; busy when another
    /// orientation of the same case was appended at the same moment.
    async fn append_orientation(&self, tx: &mut Tx, o: &Orientation, origin: Origin) -> Result<()> {
        if tx.append_orientation(o, origin).await? {
            Ok(())
        } else {
            Err(AppError(DomainError::Unavailable(
                "another orientation of this case was recorded at the same moment: try again"
                    .into(),
            )))
        }
    }

    /// The orientation a referral written here comes from, where the
    /// agreement's parcours apply to its office: it must open
    /// accompagnement global. Sent without its grid.
    async fn orientation_to_refer(
        &self,
        tx: &mut Tx,
        referral: &Referral,
    ) -> Result<Option<Orientation>> {
        let Some(rules) = &self.agreement.parcours else {
            return Ok(None);
        };
        if !rules.apply_on(&referral.office_code) {
            return Ok(None);
        }
        let current = tx.orientations(&referral.case_id).await?.pop();
        rules.check_referral(&referral.office_code, current.as_ref(), "orientation")?;
        Ok(current.map(|o| o.for_partner()))
    }

    /// Records the orientation the deciding side decided. Before a referral
    /// it stays here (a referral carries it to the partner); on a case under
    /// way it is a change of parcours, which the partner hears of.
    pub async fn record_orientation(
        &self,
        call: Call<'_>,
        draft: OrientationDraft,
    ) -> Result<Orientation> {
        let rules = self.parcours_rules()?;
        rules.check(self.side, &draft)?;
        let orientation = draft.decide(self.side, call.caller.agent.clone(), self.clock.now());
        self.once(call, async |tx: &mut Tx| {
            let case_id = orientation.case_id.as_str();
            let case = match tx.case_and_restriction(case_id).await? {
                Some((_, true)) => return Err(restricted()),
                Some((case, false)) => Some(case),
                None => None,
            };
            if let Some(case) = &case {
                if case.ended_at().is_some() {
                    return Err(AppError(DomainError::FailedPrecondition(
                        "the case has ended: a new orientation starts a new case".into(),
                    )));
                }
                if orientation.office_code != case.office_code {
                    return Err(FieldError::new(
                        "orientation.office_code",
                        format!("must be the case's office ({})", case.office_code),
                    )
                    .into());
                }
            }
            if let Some(last) = tx.orientations(case_id).await?.last()
                && last.parcours == orientation.parcours
            {
                return Err(AppError(DomainError::FailedPrecondition(format!(
                    "the person is already in parcours {}",
                    last.parcours
                ))));
            }
            self.append_orientation(tx, &orientation, Origin::Local)
                .await?;
            if case.is_some() && tx.partner_knows_case(case_id).await? {
                self.tell_partner(tx, &Outbound::ParcoursChange(orientation.for_partner()))
                    .await?;
            }
            // The parcours says something of the person: not in the logs.
            tracing::info!(case_id = %case_id, by = %call.caller.agent, "orientation recorded");
            Ok(orientation.clone())
        })
        .await
    }

    pub async fn record_diagnosis(
        &self,
        call: Call<'_>,
        draft: DiagnosisDraft,
        local_note: &str,
    ) -> Result<DiagnosisHalf> {
        let local_note = note(local_note)?;
        self.known_case(&draft.case_id).await?;
        self.check_outbound(
            call.caller,
            &draft.case_id,
            Purpose::Referral,
            crate::crossings::RECEIVE_DIAGNOSIS,
        )
        .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, &draft.case_id).await?;
            if case.receiving_institution() == self.own()
                && case.referral_state != ReferralState::Accepted
            {
                return Err(AppError(DomainError::FailedPrecondition(format!(
                    "the referral is {}: accept it (DecideReferral) before the diagnosis",
                    case.referral_state
                ))));
            }
            let half = DiagnosisHalf {
                case_id: draft.case_id.clone(),
                author_institution: self.own(),
                author: call.caller.agent.clone(),
                barriers: draft.barriers,
                verdict: draft.verdict,
                recorded_at: now,
            };
            tx.upsert_diagnosis(&half).await?;
            case.apply_diagnosis(
                &tx.diagnoses(&half.case_id).await?,
                self.agreement.shared_diagnosis.rule,
            );
            self.save_and_tell(tx, &case, false, None).await?;
            if let Some(text) = &local_note {
                tx.insert_note(&half.case_id, &call.caller.agent, "diagnosis", text, now)
                    .await?;
            }
            self.tell_partner(tx, &Outbound::Diagnosis(half.clone()))
                .await?;
            Ok(half)
        })
        .await
    }

    /// The capacity rule for one more person in `counsellor`'s portfolio at `now`.
    pub async fn admit(
        &self,
        tx: &mut Tx,
        counsellor: &str,
        now: DateTime<Utc>,
    ) -> Result<CapacityDecision> {
        let registered = tx.counsellor(counsellor).await?.ok_or_else(|| {
            AppError(DomainError::FailedPrecondition(format!(
                "counsellor {counsellor} is not in the working-time register: a coordinator registers them first"
            )))
        })?;
        let current = tx.portfolio(counsellor, now).await?;
        Ok(self.agreement.capacity.admit(
            current,
            f64::from(registered.working_time_per_mille) / 1000.0,
        ))
    }

    /// Enters people waiting for `counsellor` while places are free; each
    /// entry is told to the partner.
    pub async fn serve_queue(
        &self,
        tx: &mut Tx,
        counsellor: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        while let Some(mut waiting) = tx.first_queued(counsellor).await? {
            if self.admit(tx, counsellor, now).await? != CapacityDecision::Accept {
                break;
            }
            let Some(mut entry) = waiting.pending_entry.clone() else {
                break;
            };
            entry.entered_at = now;
            waiting.enter(&entry, &self.agreement.global_support)?;
            self.save_and_tell(tx, &waiting, true, None).await?;
            self.tell_partner(
                tx,
                &Outbound::CaseEvent {
                    case_id: waiting.case_id.clone(),
                    event: CaseEvent::Entered(entry),
                },
            )
            .await?;
            tracing::info!(case_id = %waiting.case_id, "entered from the waiting list");
        }
        Ok(())
    }

    /// Ends a case within `tx`, tells the partner, and gives the freed place
    /// to whoever waits for it.
    pub async fn exit_in(
        &self,
        tx: &mut Tx,
        case_id: &str,
        reason: ExitReason,
        now: DateTime<Utc>,
    ) -> Result<Case> {
        let mut case = self.load_case(tx, case_id).await?;
        let exit = CaseExit {
            reason,
            exited_at: now,
        };
        case.exit(&exit, self.agreement.exits.follow_up_after_job_months)?;
        let event = CaseEvent::Exited(exit);
        let tell = Outbound::CaseEvent {
            case_id: case_id.into(),
            event,
        };
        self.save_and_tell(tx, &case, false, Some(tell)).await?;
        if self.own() == Institution::Emploi
            && case.track == Track::Global
            && let Some(pair) = &case.pair
        {
            self.serve_queue(tx, &pair.counsellor, now).await?;
        }
        Ok(case)
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
                    .map(|due| DueEntry::new(&c.case_id, due))
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
            for open in self.store.office_open_cases(office).await? {
                let (case, halves) = (&open.case, &open.halves);
                if open.referral_origin == Origin::Partner {
                    items.extend(
                        case.referral_due_by(reminders, horizon)
                            .into_iter()
                            .map(|due| DueEntry::new(&case.case_id, due)),
                    );
                }
                if case.awaiting_validation_by(halves) == Some(self.own())
                    && let Some(since) = halves.iter().map(|h| h.recorded_at).min()
                {
                    items.push(DueEntry::new(
                        &case.case_id,
                        (DueKind::DiagnosisValidation, since),
                    ));
                }
            }
        }
        items.sort_by(|a, b| (a.at, &a.case_id).cmp(&(b.at, &b.case_id)));
        Ok(items)
    }

    /// Everything kept of the case; `None` for a case this side does not hold.
    pub async fn case_parts(&self, case_id: &str) -> Result<Option<Arc<CaseParts>>> {
        Ok(self.store.case_parts(case_id).await?)
    }

    /// What `caller` sees of a case read whole (`None`: not held here).
    pub fn case_view<'a>(
        &self,
        caller: &Caller,
        parts: Option<&'a CaseParts>,
    ) -> Result<CaseView<'a>> {
        let parts = parts.ok_or(AppError(DomainError::NotFound("case")))?;
        // Reading is processing too; the DPO answers for the kept data.
        if parts.restricted && caller.role != Role::Dpo {
            return Err(restricted());
        }
        // Local notes are for the pair, the office's coordinator and their
        // authors; the people come from what was just read.
        let parties = self.parties_of(&parts.case, parts.referral.as_ref(), &parts.diagnoses);
        let local_notes = parts
            .notes
            .iter()
            .filter(|n| may_read_note(caller, &parties, &n.author))
            .map(|n| n.note.as_str())
            .collect();
        Ok(CaseView { parts, local_notes })
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
        let today = self.clock.now().date_naive();
        let birth = referral.person.birth_date;
        bounds::birth_date("referral.person.birth_date", birth, today)?;
        // The partner ran these checks; a referral that fails ours is not taken in.
        self.agreement.check_referral(
            referral.referring_network,
            &referral.office_code,
            &referral.checks,
            referral.association_id.as_deref(),
        )?;
        if let Some(rules) = &self.agreement.parcours {
            rules.check_referral(
                &referral.office_code,
                referral.orientation.as_ref(),
                "referral.orientation",
            )?;
        }
        if let Some(o) = &referral.orientation
            && o.decided_by_institution != from
        {
            return Err(FieldError::new(
                "referral.orientation.decided_by_institution",
                "must be the referring institution",
            )
            .into());
        }
        let expiry_days = self.agreement.referral.expiry_days;
        self.once(call, async |tx: &mut Tx| {
            if tx.insert_referral(&referral, Origin::Partner).await? {
                self.save_and_tell(tx, &Case::referred(&referral, expiry_days), false, None)
                    .await?;
                if let Some(o) = &referral.orientation {
                    self.append_orientation(tx, o, Origin::Partner).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The partner changed the person's parcours during the support.
    pub async fn receive_parcours_change(
        &self,
        call: Call<'_>,
        orientation: Orientation,
    ) -> Result<()> {
        if orientation.decided_by_institution != call.caller.institution {
            return Err(FieldError::new(
                "orientation.decided_by_institution",
                "must be the sending institution",
            )
            .into());
        }
        let rules = self.parcours_rules()?;
        if rules.track(orientation.parcours).is_none() {
            return Err(FieldError::new(
                "orientation.parcours",
                "is not a parcours of the agreement",
            )
            .into());
        }
        self.once(call, async |tx: &mut Tx| {
            let case = self.load_partner_case(tx, &orientation.case_id).await?;
            if orientation.office_code != case.office_code {
                return Err(FieldError::new(
                    "orientation.office_code",
                    "must be the case's office",
                )
                .into());
            }
            self.append_orientation(tx, &orientation, Origin::Partner)
                .await?;
            tracing::info!(case_id = %orientation.case_id, "partner changed the parcours");
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
            let mut case = self.load_partner_case(tx, &half.case_id).await?;
            tx.upsert_diagnosis(&half).await?;
            case.apply_diagnosis(
                &tx.diagnoses(&half.case_id).await?,
                self.agreement.shared_diagnosis.rule,
            );
            self.save_and_tell(tx, &case, false, None).await?;
            Ok(())
        })
        .await
    }

    /// Ends processing of a case in `tx`, if this side holds it and it has
    /// not ended already.
    async fn end_processing_in(&self, tx: &mut Tx, end: &EndOfProcessing) -> Result<()> {
        if let Some(mut case) = tx.case(&end.case_id).await?
            && case.end_processing(end)
        {
            self.save_and_tell(tx, &case, false, None).await?;
            tracing::info!(case_id = %end.case_id, reason = %end.reason, "processing ended");
        }
        Ok(())
    }

    /// The partner ended processing of a case at the person's request: it
    /// ends here too (a case this side never held has nothing to end).
    pub async fn receive_end_of_processing(
        &self,
        call: Call<'_>,
        end: EndOfProcessing,
    ) -> Result<()> {
        self.once(call, async |tx: &mut Tx| {
            self.end_processing_in(tx, &end).await
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
            let mut case = self.load_partner_case(tx, case_id).await?;
            case.apply_partner_event(
                &event,
                &self.agreement.global_support,
                self.agreement.exits.follow_up_after_job_months,
            )?;
            self.save_and_tell(tx, &case, false, None).await?;
            Ok(())
        })
        .await
    }

    /// Exact aggregates for the steering service; nothing per person. The
    /// counts are kept up to date by each change: no case is read here.
    pub async fn indicators(&self) -> Result<Indicators> {
        let counsellor_fte_per_mille = match self.own() {
            Institution::Emploi => self.store.counsellor_fte_per_mille().await?,
            _ => 0,
        };
        Ok(Indicators {
            source: self.own(),
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
    ) -> Result<Case> {
        let local_note = note(local_note)?;
        self.agreement
            .check_referral_decision(state, refusal_reason.as_deref())?;
        self.known_case(case_id).await?;
        self.check_outbound(
            call.caller,
            case_id,
            Purpose::Referral,
            crate::crossings::RECEIVE_REFERRAL_DECISION,
        )
        .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
            if case.receiving_institution() != self.own() {
                return Err(AppError(DomainError::FailedPrecondition(
                    "this side sent the referral: the institution it was sent to decides".into(),
                )));
            }
            let decision = ReferralDecision {
                state,
                refusal_reason: refusal_reason.clone(),
                decided_at: now,
            };
            case.decide_referral(&decision)?;
            let tell = Outbound::ReferralDecision {
                case_id: case_id.into(),
                decision,
            };
            self.save_and_tell(tx, &case, false, Some(tell)).await?;
            if let Some(text) = &local_note {
                tx.insert_note(case_id, &call.caller.agent, "referral_decision", text, now)
                    .await?;
            }
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
            let mut case = self.load_partner_case(tx, case_id).await?;
            if case.receiving_institution() != from {
                return Err(FieldError::new(
                    "case_id",
                    "names a referral the sender did not receive",
                )
                .into());
            }
            case.decide_referral(&decision)?;
            self.save_and_tell(tx, &case, false, None).await?;
            Ok(())
        })
        .await
    }

    // ---- appointments and follow-up -------------------------------------------

    /// One more missed appointment; at the agreement's threshold the person
    /// is taken to have ended support.
    pub async fn record_missed_appointment(&self, call: Call<'_>, case_id: &str) -> Result<Case> {
        self.known_case(case_id).await?;
        self.check_outbound(
            call.caller,
            case_id,
            Purpose::GlobalSupport,
            crate::crossings::RECEIVE_CASE_EVENT,
        )
        .await?;
        let now = self.clock.now();
        let threshold = self.agreement.exits.missed_appointments_threshold;
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
            let reached = case.miss_appointment(threshold)?;
            self.save_and_tell(tx, &case, false, None).await?;
            self.tell_partner(
                tx,
                &Outbound::CaseEvent {
                    case_id: case_id.into(),
                    event: CaseEvent::AppointmentMissed { at: now },
                },
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

    // ---- capacity -------------------------------------------------------------

    // ---- plans ----------------------------------------------------------------

    /// Replaces this institution's plan; the partner receives its summary.
    pub async fn update_plan(
        &self,
        call: Call<'_>,
        case_id: &str,
        kind: PlanKind,
        themes: Vec<PlanTheme>,
    ) -> Result<PlanSummary> {
        if kind.holder() != self.own() {
            return Err(FieldError::new(
                "plan.kind",
                format!("the {kind} plan is held by {}", kind.holder()),
            )
            .into());
        }
        let now = self.clock.now();
        let plan = Plan {
            case_id: case_id.into(),
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
            .ok_or(AppError(DomainError::NotFound("case")))?;
        // Under exclusive social support the employment side hears nothing but the suspension.
        let tell_partner = case.track == Track::Global;
        if tell_partner {
            self.check_outbound(
                call.caller,
                case_id,
                Purpose::GlobalSupport,
                crate::crossings::RECEIVE_PLAN_SUMMARY,
            )
            .await?;
        }
        self.once(call, async |tx: &mut Tx| {
            let case = self.load_case(tx, case_id).await?;
            if case.state != CaseState::Active {
                return Err(AppError(DomainError::FailedPrecondition(format!(
                    "plans are kept while support runs; the case is {}",
                    case.state
                ))));
            }
            tx.save_plan(case_id, kind, Origin::Local, &plan, now)
                .await?;
            let summary = plan.summary();
            if tell_partner {
                self.tell_partner(tx, &Outbound::PlanSummary(summary.clone()))
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
            self.load_partner_case(tx, &summary.case_id).await?;
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

    // ---- deadlines ----------------------------------------------------------

    /// Runs the agreement's deadlines every `interval` until shutdown.
    pub async fn keep_deadlines(
        self,
        interval: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            passerelle_telemetry::metrics::record_agreement_days_left(
                self.side.code(),
                self.term_days_left(),
            );
            if let Err(e) = self.run_deadlines().await {
                tracing::warn!(error = %e.0, "deadline pass failed; retried next time");
            }
            let purged = crate::rights::purge(
                &self.store,
                &self.agreement,
                self.clock.now(),
                false,
                crate::rights::PURGE_BATCH,
            )
            .await;
            if let Err(e) = purged {
                tracing::warn!(error = %e, "retention purge failed; retried next time");
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
            let tell = Outbound::ReferralDecision {
                case_id: case.case_id.clone(),
                decision,
            };
            self.save_and_tell(&mut tx, &case, false, Some(tell))
                .await?;
            tx.update_statistics().await?;
            tx.commit().await?;
            tracing::info!(case_id = %case.case_id, "referral expired");
            changed += 1;
        }
        if self.agreement.exits.allows(ExitReason::EndOfTerm) {
            for case in self.store.ended_periods(self.own(), now, BATCH).await? {
                let mut tx = self.store.begin().await?;
                match tx.case(&case.case_id).await? {
                    Some(c)
                        if c.state == CaseState::Active && c.ends_at.is_some_and(|e| e <= now) => {}
                    _ => continue,
                }
                let exited_at = case.ends_at.unwrap_or(now);
                self.exit_in(&mut tx, &case.case_id, ExitReason::EndOfTerm, exited_at)
                    .await?;
                tx.update_statistics().await?;
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

#[cfg(test)]
mod tests;
