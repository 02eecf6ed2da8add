//! The handlers of the casework RPCs both institutions serve. Their messages
//! are the same at either service (`casework_requests.proto`), so each is
//! written once here; each service's `impl` delegates to it in one line.
//! Handlers stay thin: validate, call the casework layer, convert back.

use passerelle_boundary::layer::{admission, caller};
use passerelle_boundary::{PendingRecord, Ticket};
use passerelle_contract::{convert, v1};
use passerelle_domain::orientation::Orientation;
use passerelle_domain::plan::PlanSummary;
use passerelle_domain::{
    Consent, DiagnosisHalf, EndOfProcessing, FieldError, Referral, ReferralDecision,
    person::optional_text,
};
use passerelle_runtime::idempotency::{Call, local, request_digest};
use passerelle_runtime::{AppError, Ready, within};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::app::InstitutionApp;
use crate::casework::CaseView;

type Answer<T> = Result<Response<T>, Status>;

/// A required sub-message, or INVALID_ARGUMENT naming it.
pub fn required<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T, AppError> {
    value.ok_or_else(|| FieldError::new(field, "is required").into())
}

/// A case identifier from the request, or INVALID_ARGUMENT naming `field`.
pub fn case_id(field: &str, value: &str) -> Result<String, AppError> {
    convert::identifier(field, value).map_err(AppError::from)
}

impl From<&CaseView<'_>> for v1::GetCaseResponse {
    fn from(view: &CaseView<'_>) -> Self {
        let parts = view.parts;
        v1::GetCaseResponse {
            case: Some((&parts.case).into()),
            referral: parts.referral.as_ref().map(Into::into),
            diagnoses: parts.diagnoses.iter().map(Into::into).collect(),
            consents: parts.consents.iter().map(Into::into).collect(),
            local_notes: view.local_notes.iter().map(|n| (*n).to_owned()).collect(),
            plan: parts.plan.as_ref().map(Into::into),
            plan_summaries: parts.plan_summaries.iter().map(Into::into).collect(),
            orientations: parts.orientations.iter().map(Into::into).collect(),
        }
    }
}

/// A push crossing, admitted and minimised: who sent it, under which
/// ticket, the request's digest for idempotency, and its audit record, to
/// be committed with the change it makes.
#[derive(Debug)]
pub struct Pushed<M> {
    pub ticket: Ticket,
    pub message: M,
    digest: String,
    record: PendingRecord,
}

impl<M> Pushed<M> {
    /// The call under the sender's message key.
    pub fn call<'a>(&'a self, key: &'a str) -> Call<'a> {
        Call {
            caller: &self.ticket.caller,
            method: &self.ticket.method,
            key,
            digest: &self.digest,
            crossing: Some(&self.record),
        }
    }
}

/// A partner message whose inner case is not the one its envelope names is refused.
pub fn same_case(field: &'static str, inner: &str, subject: &str) -> Result<(), AppError> {
    if inner == subject {
        Ok(())
    } else {
        Err(FieldError::new(field, "does not match case_id").into())
    }
}

/// The casework RPCs both services serve, over the institution's state.
#[derive(Debug, Clone, Default)]
pub struct CaseworkRpcs {
    pub ready: Ready<InstitutionApp>,
}

impl CaseworkRpcs {
    pub fn app(&self) -> Result<&InstitutionApp, Status> {
        self.ready.get()
    }

    /// Need to know: the caller reaches `case_id` only as the contract's
    /// scope for this RPC allows (refusals audited, PERMISSION_DENIED).
    pub async fn reach<T>(&self, request: &Request<T>, case_id: &str) -> Result<(), Status> {
        let admission = admission(request)?;
        let casework = &self.app()?.casework;
        Ok(casework
            .reach(&admission.caller, &admission.rule, case_id)
            .await?)
    }

    /// Serves a push crossing about the request's case: admits it,
    /// minimises what arrived and hands it to `handle`. Its audit record
    /// commits with the change `handle` writes (the call's key in hand,
    /// [`Pushed::call`]); if none took it, it is written on its own before
    /// any answer leaves.
    pub async fn push<M, R>(
        &self,
        request: Request<M>,
        case_id: impl Fn(&M) -> &str,
        handle: impl AsyncFnOnce(&Pushed<M>) -> Result<R, Status>,
    ) -> Answer<R>
    where
        M: Message + prost::Name + Default,
    {
        let app = self.app()?;
        let subject = self::case_id("case_id", case_id(request.get_ref()))?;
        let crossings = &app.casework.crossings;
        let ticket = crossings.admit(&request, Some(&subject)).await?;
        let (message, record) = crossings.arrive(&ticket, request.into_inner())?;
        let digest = request_digest(&message.encode_to_vec());
        let pushed = Pushed {
            ticket,
            message,
            digest,
            record,
        };
        let answer = handle(&pushed).await;
        pushed.record.settle().await?;
        answer.map(Response::new)
    }

    // ---- an agent's own institution ---------------------------------------------

    #[tracing::instrument(skip_all, fields(rpc = "RecordConsent"))]
    pub async fn record_consent(
        &self,
        request: Request<v1::RecordConsentRequest>,
    ) -> Answer<v1::RecordConsentResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let consent = required("consent", m.consent.as_ref())?;
        // A consent for a case already known is for its people; one without
        // a case opens a new one.
        if !consent.case_id.trim().is_empty() {
            let case_id = case_id("consent.case_id", &consent.case_id)?;
            self.reach(&request, &case_id).await?;
        }
        let new = convert::new_consent(consent).map_err(within("consent"))?;
        let consent = app
            .casework
            .record_consent(l.call(&m.idempotency_key), new)
            .await?;
        Ok(Response::new(v1::RecordConsentResponse {
            consent: Some((&consent).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "WithdrawConsent"))]
    pub async fn withdraw_consent(
        &self,
        request: Request<v1::WithdrawConsentRequest>,
    ) -> Answer<v1::WithdrawConsentResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let consent_id =
            convert::identifier("consent_id", &m.consent_id).map_err(AppError::from)?;
        let known = app.casework.store.consent_case(&consent_id).await;
        if let Some(case_id) = known.map_err(AppError::from)? {
            self.reach(&request, &case_id).await?;
        }
        let consent = app
            .casework
            .withdraw_consent(l.call(&m.idempotency_key), &consent_id)
            .await?;
        Ok(Response::new(v1::WithdrawConsentResponse {
            consent: Some((&consent).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CreateReferral"))]
    pub async fn create_referral(
        &self,
        request: Request<v1::CreateReferralRequest>,
    ) -> Answer<v1::CreateReferralResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let referral = required("referral", m.referral.as_ref())?;
        self.reach(&request, &case_id("referral.case_id", &referral.case_id)?)
            .await?;
        let draft = convert::referral_draft(referral).map_err(within("referral"))?;
        let referral = app
            .casework
            .create_referral(l.call(&m.idempotency_key), draft, &m.local_note)
            .await?;
        Ok(Response::new(v1::CreateReferralResponse {
            referral: Some((&referral).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordOrientation"))]
    pub async fn record_orientation(
        &self,
        request: Request<v1::RecordOrientationRequest>,
    ) -> Answer<v1::RecordOrientationResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let orientation = required("orientation", m.orientation.as_ref())?;
        self.reach(
            &request,
            &case_id("orientation.case_id", &orientation.case_id)?,
        )
        .await?;
        let draft = convert::orientation_draft(orientation, &m.criteria).map_err(AppError::from)?;
        let orientation = app
            .casework
            .record_orientation(l.call(&m.idempotency_key), draft)
            .await?;
        Ok(Response::new(v1::RecordOrientationResponse {
            orientation: Some((&orientation).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordDiagnosis"))]
    pub async fn record_diagnosis(
        &self,
        request: Request<v1::RecordDiagnosisRequest>,
    ) -> Answer<v1::RecordDiagnosisResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let half = required("half", m.half.as_ref())?;
        self.reach(&request, &case_id("half.case_id", &half.case_id)?)
            .await?;
        let draft = convert::diagnosis_draft(half).map_err(within("half"))?;
        let half = app
            .casework
            .record_diagnosis(l.call(&m.idempotency_key), draft, &m.local_note)
            .await?;
        Ok(Response::new(v1::RecordDiagnosisResponse {
            half: Some((&half).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetCase"))]
    pub async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Answer<v1::GetCaseResponse> {
        let app = self.app()?;
        let case_id = case_id("case_id", &request.get_ref().case_id)?;
        let admission = admission(&request)?;
        // Read once: the need to know is judged on the case it shows.
        let parts = app.casework.case_parts(&case_id).await?;
        let (caller, rule) = (&admission.caller, &admission.rule);
        app.casework
            .reach_read(caller, rule, &case_id, parts.as_deref())
            .await?;
        let view = app.casework.case_view(caller, parts.as_deref())?;
        Ok(Response::new((&view).into()))
    }

    /// The calling agent's due items.
    #[tracing::instrument(skip_all, fields(rpc = "ListDue"))]
    pub async fn list_due(
        &self,
        request: Request<v1::ListDueRequest>,
    ) -> Answer<v1::ListDueResponse> {
        let (app, m) = (self.app()?, request.get_ref());
        let agent = &caller(&request)?.agent;
        let office = m.office_code.trim();
        let items = app
            .casework
            .due_for(agent, m.within_days, (!office.is_empty()).then_some(office))
            .await?;
        Ok(Response::new(v1::ListDueResponse {
            items: items
                .iter()
                .map(|due| convert::due_item(&due.case_id, due.kind, due.at))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DecideReferral"))]
    pub async fn decide_referral(
        &self,
        request: Request<v1::DecideReferralRequest>,
    ) -> Answer<v1::DecideReferralResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.reach(&request, &case_id).await?;
        let state = convert::enum_field("decision", m.decision, convert::referral_state)
            .map_err(AppError::from)?;
        let reason =
            optional_text("refusal_reason", &m.refusal_reason, 64).map_err(AppError::from)?;
        let case = app
            .casework
            .decide_referral(
                l.call(&m.idempotency_key),
                &case_id,
                state,
                reason,
                &m.local_note,
            )
            .await?;
        Ok(Response::new(v1::DecideReferralResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordMissedAppointment"))]
    pub async fn record_missed_appointment(
        &self,
        request: Request<v1::RecordMissedAppointmentRequest>,
    ) -> Answer<v1::RecordMissedAppointmentResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.reach(&request, &case_id).await?;
        let case = app
            .casework
            .record_missed_appointment(l.call(&m.idempotency_key), &case_id)
            .await?;
        Ok(Response::new(v1::RecordMissedAppointmentResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UpdatePlan"))]
    pub async fn update_plan(
        &self,
        request: Request<v1::UpdatePlanRequest>,
    ) -> Answer<v1::UpdatePlanResponse> {
        let (app, l, m) = (self.app()?, local(&request)?, request.get_ref());
        let plan = required("plan", m.plan.as_ref())?;
        self.reach(&request, &case_id("plan.case_id", &plan.case_id)?)
            .await?;
        let (case_id, kind, themes) = convert::plan_themes(plan).map_err(within("plan"))?;
        let summary = app
            .casework
            .update_plan(l.call(&m.idempotency_key), &case_id, kind, themes)
            .await?;
        Ok(Response::new(v1::UpdatePlanResponse {
            summary: Some((&summary).into()),
        }))
    }

    // ---- crossings from the partner -------------------------------------------------

    #[tracing::instrument(skip_all, fields(rpc = "ShareConsent"))]
    pub async fn share_consent(
        &self,
        request: Request<v1::ShareConsentRequest>,
    ) -> Answer<v1::ShareConsentResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let consent = Consent::try_from(required("consent", m.consent.as_ref())?)
                    .map_err(within("consent"))?;
                same_case("consent.case_id", &consent.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                self.app()?.casework.receive_consent(call, consent).await?;
                Ok(v1::ShareConsentResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveReferral"))]
    pub async fn receive_referral(
        &self,
        request: Request<v1::ReceiveReferralRequest>,
    ) -> Answer<v1::ReceiveReferralResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let referral = Referral::try_from(required("referral", m.referral.as_ref())?)
                    .map_err(within("referral"))?;
                same_case("referral.case_id", &referral.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                self.app()?
                    .casework
                    .receive_referral(call, referral)
                    .await?;
                Ok(v1::ReceiveReferralResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveDiagnosis"))]
    pub async fn receive_diagnosis(
        &self,
        request: Request<v1::ReceiveDiagnosisRequest>,
    ) -> Answer<v1::ReceiveDiagnosisResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let half = DiagnosisHalf::try_from(required("half", m.half.as_ref())?)
                    .map_err(within("half"))?;
                same_case("half.case_id", &half.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                self.app()?.casework.receive_diagnosis(call, half).await?;
                Ok(v1::ReceiveDiagnosisResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveCaseEvent"))]
    pub async fn receive_case_event(
        &self,
        request: Request<v1::ReceiveCaseEventRequest>,
    ) -> Answer<v1::ReceiveCaseEventResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let proto = required("event", m.event.as_ref())?;
                same_case("event.case_id", &proto.case_id, &m.case_id)?;
                let event =
                    passerelle_domain::CaseEvent::try_from(proto).map_err(within("event"))?;
                let call = p.call(&m.idempotency_key);
                let casework = &self.app()?.casework;
                casework.receive_case_event(call, &m.case_id, event).await?;
                Ok(v1::ReceiveCaseEventResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveParcoursChange"))]
    pub async fn receive_parcours_change(
        &self,
        request: Request<v1::ReceiveParcoursChangeRequest>,
    ) -> Answer<v1::ReceiveParcoursChangeResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let orientation =
                    Orientation::try_from(required("orientation", m.orientation.as_ref())?)
                        .map_err(within("orientation"))?;
                same_case("orientation.case_id", &orientation.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                self.app()?
                    .casework
                    .receive_parcours_change(call, orientation)
                    .await?;
                Ok(v1::ReceiveParcoursChangeResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveEndOfProcessing"))]
    pub async fn receive_end_of_processing(
        &self,
        request: Request<v1::ReceiveEndOfProcessingRequest>,
    ) -> Answer<v1::ReceiveEndOfProcessingResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let end = EndOfProcessing::try_from(required("notice", m.notice.as_ref())?)
                    .map_err(within("notice"))?;
                same_case("notice.case_id", &end.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                let casework = &self.app()?.casework;
                casework.receive_end_of_processing(call, end).await?;
                Ok(v1::ReceiveEndOfProcessingResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveReferralDecision"))]
    pub async fn receive_referral_decision(
        &self,
        request: Request<v1::ReceiveReferralDecisionRequest>,
    ) -> Answer<v1::ReceiveReferralDecisionResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let decision =
                    ReferralDecision::try_from(required("decision", m.decision.as_ref())?)
                        .map_err(within("decision"))?;
                let call = p.call(&m.idempotency_key);
                let casework = &self.app()?.casework;
                casework
                    .receive_referral_decision(call, &m.case_id, decision)
                    .await?;
                Ok(v1::ReceiveReferralDecisionResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceivePlanSummary"))]
    pub async fn receive_plan_summary(
        &self,
        request: Request<v1::ReceivePlanSummaryRequest>,
    ) -> Answer<v1::ReceivePlanSummaryResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let summary = PlanSummary::try_from(required("summary", m.summary.as_ref())?)
                    .map_err(within("summary"))?;
                same_case("summary.case_id", &summary.case_id, &m.case_id)?;
                let call = p.call(&m.idempotency_key);
                self.app()?
                    .casework
                    .receive_plan_summary(call, summary)
                    .await?;
                Ok(v1::ReceivePlanSummaryResponse {})
            },
        )
        .await
    }

    /// Aggregates for the steering service (a pull crossing on the public task).
    #[tracing::instrument(skip_all, fields(rpc = "GetIndicators"))]
    pub async fn get_indicators(
        &self,
        request: Request<v1::GetIndicatorsRequest>,
    ) -> Answer<v1::GetIndicatorsResponse> {
        let app = self.app()?;
        let crossings = &app.casework.crossings;
        let ticket = crossings.admit(&request, None).await?;
        let indicators = app.casework.indicators().await?;
        let answer = v1::GetIndicatorsResponse {
            indicators: Some((&indicators).into()),
        };
        crossings.release(&ticket, answer).await
    }
}
