//! The employment side's own part of a case's life: the person's entry
//! (contract signature with its evidence, the counsellor's capacity and the
//! waiting list), renewal, exit, follow-up in employment, the counsellors'
//! working-time register, and the suspension notice exclusive social support
//! sends. Built on the casework both institutions share.

use std::ops::Deref;

use passerelle_casework::Casework;
use passerelle_casework::casework::note;
use passerelle_casework::crossings as rpc;
use passerelle_domain::agreement::{CapacityDecision, working_time_share};
use passerelle_domain::{
    Case, CaseEntry, CaseEvent, DomainError, Evidence, ExitReason, FieldError, Outbound, Pair,
    Participant, Purpose, SuspensionNotice, Track,
};
use passerelle_runtime::{AppError, Call};
use passerelle_storage::institution::{CounsellorEntry, Tx};
use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, AppError>;

/// What the working-time register says of a counsellor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortfolioView {
    pub max_portfolio: u32,
    pub portfolio: u32,
}

/// The shared casework, with the employment side's own operations.
#[derive(Debug, Clone, Copy)]
pub struct EmploymentSupport<'a>(pub &'a Casework);

impl Deref for EmploymentSupport<'_> {
    type Target = Casework;
    fn deref(&self) -> &Casework {
        self.0
    }
}

impl EmploymentSupport<'_> {
    /// The person's signature: the case starts with its pair, or waits for a
    /// place in the counsellor's portfolio, as the agreement reads.
    pub async fn sign_contract(
        &self,
        call: Call<'_>,
        case_id: &str,
        pair: Pair,
        evidence: Vec<Evidence>,
        participant: Option<Participant>,
    ) -> Result<Case> {
        self.check_in_term("entry")?;
        self.agreement.check_entry_evidence(&evidence)?;
        self.known_case(case_id).await?;
        let consent = self
            .check_outbound(
                call.caller,
                case_id,
                Purpose::GlobalSupport,
                rpc::RECEIVE_CASE_EVENT,
            )
            .await?;
        let now = self.clock.now();
        let support = &self.agreement.global_support;
        // The exchanges last as long as support does: the consent must cover the period.
        if consent.valid_until < support.ends_at(now, 0) {
            return Err(AppError(DomainError::FailedPrecondition(format!(
                "the consent ends on {}, before the support period would: collect one that covers it",
                consent.valid_until.date_naive()
            ))));
        }
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
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
            let event = match self.admit(tx, &entry.pair.counsellor, now).await? {
                CapacityDecision::Accept => {
                    case.enter(&entry, support)?;
                    CaseEvent::Entered(entry)
                }
                CapacityDecision::Queue => {
                    case.queue(&entry)?;
                    CaseEvent::Queued { pair: entry.pair.clone(), queued_at: now }
                }
                CapacityDecision::Refuse { max } => {
                    return Err(AppError(DomainError::LimitReached(format!(
                        "counsellor {} already follows {max} people, the most agreement {} allows at their working time",
                        entry.pair.counsellor, self.agreement.id
                    ))));
                }
            };
            let event = Outbound::CaseEvent { case_id: case_id.into(), event };
            self.save_and_tell(tx, &case, true, Some(event)).await?;
            tracing::info!(case_id, state = %case.state, by = %call.caller.agent, "contract signed");
            Ok(case)
        })
        .await
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
                self.save_and_tell(tx, &case, false, None).await?;
            }
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
    ) -> Result<Case> {
        let justification =
            note(justification).map_err(|e| FieldError::new("justification", e.reason))?;
        if exceptional && justification.is_none() {
            return Err(
                FieldError::new("justification", "is required for an exceptional renewal").into(),
            );
        }
        self.known_case(case_id).await?;
        self.check_outbound(
            call.caller,
            case_id,
            Purpose::GlobalSupport,
            rpc::RECEIVE_CASE_EVENT,
        )
        .await?;
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_case(tx, case_id).await?;
            let renewal = case.renew(&self.agreement.global_support, exceptional, now)?;
            let event = Outbound::CaseEvent { case_id: case_id.into(), event: CaseEvent::Renewed(renewal) };
            self.save_and_tell(tx, &case, false, Some(event)).await?;
            if let Some(text) = &justification {
                tx.insert_note(case_id, &call.caller.agent, "renewal", text, now).await?;
            }
            tracing::info!(case_id, renewals = case.renewals, exceptional, by = %call.caller.agent, "support renewed");
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
            let mut case = self.load_case(tx, case_id).await?;
            case.record_follow_up(in_employment)?;
            self.save_and_tell(tx, &case, false, None).await?;
            Ok(case)
        })
        .await
    }

    /// Records a counsellor's working time; people waiting for them enter if
    /// the new bound leaves room.
    pub async fn register_counsellor(
        &self,
        call: Call<'_>,
        entry: CounsellorEntry,
    ) -> Result<PortfolioView> {
        let share = working_time_share(entry.working_time_per_mille)?;
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
                max_portfolio: self.agreement.capacity.max_portfolio(share),
                portfolio: tx.portfolio(&entry.counsellor, now).await?,
            })
        })
        .await
    }

    pub async fn receive_suspension(&self, call: Call<'_>, notice: SuspensionNotice) -> Result<()> {
        self.once(call, async |tx: &mut Tx| {
            let mut case = self.load_partner_case(tx, &notice.case_id).await?;
            case.apply_suspension(&notice);
            self.save_and_tell(tx, &case, false, None).await?;
            tracing::info!(case_id = %notice.case_id, "employment follow-up suspension updated");
            Ok(())
        })
        .await
    }
}
