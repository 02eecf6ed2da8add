//! Handlers shared by the employment and social services. Their generated
//! request types differ only by name, so [`casework_service!`] writes the
//! trait impl for each and every method lands here: validate, call the
//! casework layer, convert back.

use passerelle_contract::{convert, v1};
use passerelle_domain::plan::PlanSummary;
use passerelle_domain::{
    Consent, DiagnosisHalf, FieldError, Institution, Referral, ReferralDecision, SuspensionNotice,
};
use passerelle_storage::institution::CounsellorEntry;
use prost::Message;
use tonic::{Request, Status};

use crate::app::InstitutionApp;
use crate::casework::{Call, CaseView, request_digest};
use crate::error::{ApiError, within};
use crate::gate::{Ticket, admission};

/// Wire path of a partner's RPC.
pub fn partner_path(partner: Institution, rpc: &str) -> String {
    let service = match partner {
        Institution::Emploi => "EmploiService",
        Institution::Social => "SocialService",
        Institution::Pilotage => "PilotageService",
    };
    format!("/passerelle.v1.{service}/{rpc}")
}

/// The caller, RPC and request digest of a local call (any of this
/// crate's services: casework, directory, title II exchanges).
pub(crate) struct Local<'a> {
    pub(crate) caller: &'a passerelle_boundary::Caller,
    method: &'a str,
    digest: String,
}

pub(crate) fn local<R: Message>(request: &Request<R>) -> Result<Local<'_>, Status> {
    let admission = admission(request)?;
    Ok(Local {
        caller: &admission.caller,
        method: &admission.rule.path,
        digest: request_digest(&request.get_ref().encode_to_vec()),
    })
}

impl<'a> Local<'a> {
    /// The call under `key`, for the casework layer's idempotency.
    pub(crate) fn call(&'a self, key: &'a str) -> Call<'a> {
        Call {
            caller: self.caller,
            method: self.method,
            key,
            digest: &self.digest,
        }
    }
}

fn required<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T, ApiError> {
    value.ok_or_else(|| FieldError::new(field, "is required").into())
}

pub async fn record_consent<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    consent: Option<&v1::ConsentRecord>,
) -> Result<v1::ConsentRecord, Status> {
    let l = local(request)?;
    let new = convert::new_consent(required("consent", consent)?).map_err(within("consent"))?;
    let consent = app.casework.record_consent(l.call(key), new).await?;
    Ok((&consent).into())
}

pub async fn withdraw_consent<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    consent_id: &str,
) -> Result<v1::ConsentRecord, Status> {
    let l = local(request)?;
    let consent_id = convert::identifier("consent_id", consent_id).map_err(ApiError::from)?;
    let consent = app
        .casework
        .withdraw_consent(l.call(key), &consent_id)
        .await?;
    Ok((&consent).into())
}

pub async fn create_referral<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    referral: Option<&v1::Referral>,
    local_note: &str,
) -> Result<v1::Referral, Status> {
    let l = local(request)?;
    let draft =
        convert::referral_draft(required("referral", referral)?).map_err(within("referral"))?;
    let target = partner_path(app.casework.partner(), "ReceiveReferral");
    let referral = app
        .casework
        .create_referral(l.call(key), draft, local_note, &target)
        .await?;
    Ok((&referral).into())
}

pub async fn record_diagnosis<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    half: Option<&v1::DiagnosisHalf>,
    local_note: &str,
) -> Result<v1::DiagnosisHalf, Status> {
    let l = local(request)?;
    let draft = convert::diagnosis_draft(required("half", half)?).map_err(within("half"))?;
    let target = partner_path(app.casework.partner(), "ReceiveDiagnosis");
    let half = app
        .casework
        .record_diagnosis(l.call(key), draft, local_note, &target)
        .await?;
    Ok((&half).into())
}

pub async fn sign_contract<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case_id: &str,
    entry: Option<&v1::CaseEntry>,
    participant: Option<&v1::ParticipantProfile>,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = convert::identifier("case_id", case_id).map_err(ApiError::from)?;
    let entry = required("entry", entry)?;
    let pair = convert::pair(required("entry.pair", entry.pair.as_ref())?)
        .map_err(within("entry.pair"))?;
    // Axe 2 only: exclusive social support starts on the social side.
    if !matches!(
        v1::Track::try_from(entry.track),
        Ok(v1::Track::Global | v1::Track::Unspecified)
    ) {
        return Err(ApiError::from(FieldError::new(
            "entry.track",
            "must be TRACK_GLOBAL: exclusive social support starts at the social service",
        ))
        .into());
    }
    let evidence = convert::entry_evidence(&entry.evidence).map_err(within("entry"))?;
    let participant = participant
        .map(convert::participant)
        .transpose()
        .map_err(within("participant"))?;
    let target = partner_path(app.casework.partner(), "ReceiveCaseEvent");
    let case = app
        .casework
        .sign_contract(l.call(key), &case_id, pair, evidence, participant, &target)
        .await?;
    Ok((&case).into())
}

pub async fn exit_case<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case_id: &str,
    exit: Option<&v1::CaseExit>,
    qualification_gained: bool,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = convert::identifier("case_id", case_id).map_err(ApiError::from)?;
    let reason = convert::enum_field(
        "exit.reason",
        required("exit", exit)?.reason,
        convert::exit_reason,
    )
    .map_err(ApiError::from)?;
    let case = app
        .casework
        .exit_case(l.call(key), &case_id, reason, qualification_gained)
        .await?;
    Ok((&case).into())
}

pub async fn renew_support<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case_id: &str,
    exceptional: bool,
    justification: &str,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = convert::identifier("case_id", case_id).map_err(ApiError::from)?;
    let target = partner_path(app.casework.partner(), "ReceiveCaseEvent");
    let case = app
        .casework
        .renew_support(l.call(key), &case_id, exceptional, justification, &target)
        .await?;
    Ok((&case).into())
}

/// The calling agent's due items.
pub async fn list_due<R>(
    app: &InstitutionApp,
    request: &Request<R>,
    within_days: u32,
    office_code: &str,
) -> Result<Vec<v1::DueItem>, Status> {
    let caller = admission(request)?.caller.agent.clone();
    let office = office_code.trim();
    let items = app
        .casework
        .due_for(&caller, within_days, (!office.is_empty()).then_some(office))
        .await?;
    Ok(items
        .iter()
        .map(|(case_id, kind, at)| convert::due_item(case_id, *kind, *at))
        .collect())
}

/// The parts of a GetCase answer, as the generated response types share them.
#[derive(Debug)]
pub struct CaseAnswer {
    pub case: v1::Case,
    pub referral: Option<v1::Referral>,
    pub diagnoses: Vec<v1::DiagnosisHalf>,
    pub consents: Vec<v1::ConsentRecord>,
    pub local_notes: Vec<String>,
    pub plan: Option<v1::Plan>,
    pub plan_summaries: Vec<v1::PlanSummary>,
}

pub async fn get_case(app: &InstitutionApp, case_id: &str) -> Result<CaseAnswer, Status> {
    let case_id = convert::identifier("case_id", case_id).map_err(ApiError::from)?;
    let CaseView {
        case,
        referral,
        diagnoses,
        consents,
        local_notes,
        plan,
        plan_summaries,
    } = app.casework.case_view(&case_id).await?;
    Ok(CaseAnswer {
        case: (&case).into(),
        referral: referral.as_ref().map(Into::into),
        diagnoses: diagnoses.iter().map(Into::into).collect(),
        consents: consents.iter().map(Into::into).collect(),
        local_notes,
        plan: plan.as_ref().map(Into::into),
        plan_summaries: plan_summaries.iter().map(Into::into).collect(),
    })
}

// ---- crossings ------------------------------------------------------------------

/// Admits a push crossing about `case_id` and minimises what arrived.
pub async fn admit_push<M>(
    app: &InstitutionApp,
    request: Request<M>,
    case_id: impl Fn(&M) -> &str,
) -> Result<(Ticket, M, String), Status>
where
    M: Message + prost::Name + Default,
{
    let subject =
        convert::identifier("case_id", case_id(request.get_ref())).map_err(ApiError::from)?;
    let ticket = app.gate.admit(&request, Some(&subject)).await?;
    let message = app.gate.receive(&ticket, request.into_inner()).await?;
    let digest = request_digest(&message.encode_to_vec());
    Ok((ticket, message, digest))
}

fn inbound<'a>(t: &'a Ticket, key: &'a str, digest: &'a str) -> Call<'a> {
    Call {
        caller: &t.caller,
        method: &t.method,
        key,
        digest,
    }
}

fn same_case(field: &'static str, inner: &str, subject: &str) -> Result<(), ApiError> {
    if inner == subject {
        Ok(())
    } else {
        Err(FieldError::new(field, "does not match case_id").into())
    }
}

pub async fn receive_consent(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    consent: Option<&v1::ConsentRecord>,
) -> Result<(), Status> {
    let consent = Consent::try_from(required("consent", consent)?).map_err(within("consent"))?;
    same_case("consent.case_id", &consent.case_id, case_id)?;
    Ok(app
        .casework
        .receive_consent(inbound(t, key, digest), consent)
        .await?)
}

pub async fn receive_referral(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    referral: Option<&v1::Referral>,
) -> Result<(), Status> {
    let referral =
        Referral::try_from(required("referral", referral)?).map_err(within("referral"))?;
    same_case("referral.case_id", &referral.case_id, case_id)?;
    Ok(app
        .casework
        .receive_referral(inbound(t, key, digest), referral)
        .await?)
}

pub async fn receive_diagnosis(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    half: Option<&v1::DiagnosisHalf>,
) -> Result<(), Status> {
    let half = DiagnosisHalf::try_from(required("half", half)?).map_err(within("half"))?;
    same_case("half.case_id", &half.case_id, case_id)?;
    Ok(app
        .casework
        .receive_diagnosis(inbound(t, key, digest), half)
        .await?)
}

pub async fn receive_case_event(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    event: Option<&v1::CaseEvent>,
) -> Result<(), Status> {
    let proto = required("event", event)?;
    same_case("event.case_id", &proto.case_id, case_id)?;
    let event = passerelle_domain::CaseEvent::try_from(proto).map_err(within("event"))?;
    Ok(app
        .casework
        .receive_case_event(inbound(t, key, digest), case_id, event)
        .await?)
}

pub async fn receive_referral_decision(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    decision: Option<&v1::ReferralDecision>,
) -> Result<(), Status> {
    let decision =
        ReferralDecision::try_from(required("decision", decision)?).map_err(within("decision"))?;
    Ok(app
        .casework
        .receive_referral_decision(inbound(t, key, digest), case_id, decision)
        .await?)
}

pub async fn receive_plan_summary(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    summary: Option<&v1::PlanSummary>,
) -> Result<(), Status> {
    let summary =
        PlanSummary::try_from(required("summary", summary)?).map_err(within("summary"))?;
    same_case("summary.case_id", &summary.case_id, case_id)?;
    Ok(app
        .casework
        .receive_plan_summary(inbound(t, key, digest), summary)
        .await?)
}

pub async fn receive_suspension(
    app: &InstitutionApp,
    t: &Ticket,
    key: &str,
    digest: &str,
    case_id: &str,
    notice: Option<&v1::SuspensionNotice>,
) -> Result<(), Status> {
    let notice =
        SuspensionNotice::try_from(required("notice", notice)?).map_err(within("notice"))?;
    same_case("notice.case_id", &notice.case_id, case_id)?;
    Ok(app
        .casework
        .receive_suspension(inbound(t, key, digest), notice)
        .await?)
}

// ---- further local operations ---------------------------------------------------

fn case_id(value: &str) -> Result<String, ApiError> {
    convert::identifier("case_id", value).map_err(ApiError::from)
}

pub async fn decide_referral<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case: &str,
    decision: i32,
    refusal_reason: &str,
    local_note: &str,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = case_id(case)?;
    let state = convert::enum_field("decision", decision, convert::referral_state)
        .map_err(ApiError::from)?;
    let reason = passerelle_domain::person::optional_text("refusal_reason", refusal_reason, 64)
        .map_err(ApiError::from)?;
    let target = partner_path(app.casework.partner(), "ReceiveReferralDecision");
    let case = app
        .casework
        .decide_referral(l.call(key), &case_id, state, reason, local_note, &target)
        .await?;
    Ok((&case).into())
}

pub async fn record_missed_appointment<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case: &str,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = case_id(case)?;
    let target = partner_path(app.casework.partner(), "ReceiveCaseEvent");
    let case = app
        .casework
        .record_missed_appointment(l.call(key), &case_id, &target)
        .await?;
    Ok((&case).into())
}

pub async fn update_plan<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    plan: Option<&v1::Plan>,
) -> Result<v1::PlanSummary, Status> {
    let l = local(request)?;
    let (case_id, kind, themes) =
        convert::plan_themes(required("plan", plan)?).map_err(within("plan"))?;
    let target = partner_path(app.casework.partner(), "ReceivePlanSummary");
    let summary = app
        .casework
        .update_plan(l.call(key), &case_id, kind, themes, &target)
        .await?;
    Ok((&summary).into())
}

pub async fn record_follow_up<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    key: &str,
    case: &str,
    in_employment: bool,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = case_id(case)?;
    let case = app
        .casework
        .record_follow_up(l.call(key), &case_id, in_employment)
        .await?;
    Ok((&case).into())
}

pub async fn register_counsellor<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    m: &v1::RegisterCounsellorRequest,
) -> Result<v1::RegisterCounsellorResponse, Status> {
    let l = local(request)?;
    let entry = CounsellorEntry {
        counsellor: passerelle_domain::person::required_text("counsellor", &m.counsellor, 64)
            .map_err(ApiError::from)?,
        working_time_per_mille: m.working_time_per_mille,
        office_code: passerelle_domain::person::required_text("office_code", &m.office_code, 64)
            .map_err(ApiError::from)?,
    };
    let view = app
        .casework
        .register_counsellor(l.call(&m.idempotency_key), entry)
        .await?;
    Ok(v1::RegisterCounsellorResponse {
        max_portfolio: view.max_portfolio,
        portfolio: view.portfolio,
    })
}

pub async fn start_exclusive_support<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    m: &v1::StartExclusiveSupportRequest,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = case_id(&m.case_id)?;
    let evaluation = passerelle_domain::Evidence::try_from(required(
        "social_evaluation",
        m.social_evaluation.as_ref(),
    )?)
    .map_err(within("social_evaluation"))?;
    let target = partner_path(app.casework.partner(), "ReceiveSuspensionNotice");
    let case = app
        .casework
        .start_exclusive_support(l.call(&m.idempotency_key), &case_id, evaluation, &target)
        .await?;
    Ok((&case).into())
}

pub async fn decide_exclusive_end<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    m: &v1::DecideExclusiveSupportEndRequest,
) -> Result<v1::Case, Status> {
    let l = local(request)?;
    let case_id = case_id(&m.case_id)?;
    let outcome = convert::enum_field("outcome", m.outcome, convert::exclusive_outcome)
        .map_err(ApiError::from)?;
    let target = partner_path(app.casework.partner(), "ReceiveSuspensionNotice");
    let case = app
        .casework
        .decide_exclusive_end(l.call(&m.idempotency_key), &case_id, outcome, &target)
        .await?;
    Ok((&case).into())
}

pub async fn set_office_quota<R: Message>(
    app: &InstitutionApp,
    request: &Request<R>,
    m: &v1::SetOfficeQuotaRequest,
) -> Result<v1::SetOfficeQuotaResponse, Status> {
    let l = local(request)?;
    let office = passerelle_domain::person::required_text("office_code", &m.office_code, 64)
        .map_err(ApiError::from)?;
    let view = app
        .casework
        .set_office_quota(l.call(&m.idempotency_key), &office, m.year, m.quota)
        .await?;
    Ok(v1::SetOfficeQuotaResponse {
        quota: view.quota,
        used: view.used,
    })
}

/// Aggregates for the steering service (a pull crossing on the public task).
pub async fn indicators<M: Message>(
    app: &InstitutionApp,
    request: &Request<M>,
) -> Result<(Ticket, v1::Indicators), Status> {
    let ticket = app.gate.admit(request, None).await?;
    let indicators = app.casework.indicators().await?;
    Ok((ticket, (&indicators).into()))
}

/// Writes the impl of an institution service's casework RPCs for `$api`
/// (a type with a `ready: Ready<InstitutionApp>` field). `$extra` holds the
/// service's own RPCs.
#[macro_export]
macro_rules! casework_service {
    ($api:ty, $service:ident, { $($extra:tt)* }) => {
        $crate::pastey::paste! {
            #[tonic::async_trait]
            impl $crate::v1::[<$service:snake _server>]::$service for $api {
                #[tracing::instrument(skip_all, fields(rpc = "RecordConsent"))]
                async fn record_consent(&self, request: tonic::Request<$crate::v1::[<$service RecordConsentRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service RecordConsentResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let consent = $crate::api::record_consent(self.ready.get()?, &request, &m.idempotency_key, m.consent.as_ref()).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service RecordConsentResponse>] { consent: Some(consent) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "WithdrawConsent"))]
                async fn withdraw_consent(&self, request: tonic::Request<$crate::v1::[<$service WithdrawConsentRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service WithdrawConsentResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let consent = $crate::api::withdraw_consent(self.ready.get()?, &request, &m.idempotency_key, &m.consent_id).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service WithdrawConsentResponse>] { consent: Some(consent) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "CreateReferral"))]
                async fn create_referral(&self, request: tonic::Request<$crate::v1::[<$service CreateReferralRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service CreateReferralResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let referral = $crate::api::create_referral(self.ready.get()?, &request, &m.idempotency_key, m.referral.as_ref(), &m.local_note).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service CreateReferralResponse>] { referral: Some(referral) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "RecordDiagnosis"))]
                async fn record_diagnosis(&self, request: tonic::Request<$crate::v1::[<$service RecordDiagnosisRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service RecordDiagnosisResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let half = $crate::api::record_diagnosis(self.ready.get()?, &request, &m.idempotency_key, m.half.as_ref(), &m.local_note).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service RecordDiagnosisResponse>] { half: Some(half) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "GetCase"))]
                async fn get_case(&self, request: tonic::Request<$crate::v1::[<$service GetCaseRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service GetCaseResponse>]>, tonic::Status> {
                    let a = $crate::api::get_case(self.ready.get()?, &request.get_ref().case_id).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service GetCaseResponse>] {
                        case: Some(a.case), referral: a.referral, diagnoses: a.diagnoses, consents: a.consents, local_notes: a.local_notes,
                        plan: a.plan, plan_summaries: a.plan_summaries,
                    }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ListDue"))]
                async fn list_due(&self, request: tonic::Request<$crate::v1::[<$service ListDueRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ListDueResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let items = $crate::api::list_due(self.ready.get()?, &request, m.within_days, &m.office_code).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service ListDueResponse>] { items }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ShareConsent"))]
                async fn share_consent(&self, request: tonic::Request<$crate::v1::[<$service ShareConsentRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ShareConsentResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_consent(app, &t, &m.idempotency_key, &digest, &m.case_id, m.consent.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ReceiveReferral"))]
                async fn receive_referral(&self, request: tonic::Request<$crate::v1::[<$service ReceiveReferralRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ReceiveReferralResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_referral(app, &t, &m.idempotency_key, &digest, &m.case_id, m.referral.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ReceiveDiagnosis"))]
                async fn receive_diagnosis(&self, request: tonic::Request<$crate::v1::[<$service ReceiveDiagnosisRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ReceiveDiagnosisResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_diagnosis(app, &t, &m.idempotency_key, &digest, &m.case_id, m.half.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ReceiveCaseEvent"))]
                async fn receive_case_event(&self, request: tonic::Request<$crate::v1::[<$service ReceiveCaseEventRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ReceiveCaseEventResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_case_event(app, &t, &m.idempotency_key, &digest, &m.case_id, m.event.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                #[tracing::instrument(skip_all, fields(rpc = "GetIndicators"))]
                async fn get_indicators(&self, request: tonic::Request<$crate::v1::[<$service GetIndicatorsRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service GetIndicatorsResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (ticket, indicators) = $crate::api::indicators(app, &request).await?;
                    app.gate.release(&ticket, $crate::v1::[<$service GetIndicatorsResponse>] { indicators: Some(indicators) }).await
                }

                #[tracing::instrument(skip_all, fields(rpc = "DecideReferral"))]
                async fn decide_referral(&self, request: tonic::Request<$crate::v1::[<$service DecideReferralRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service DecideReferralResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let case = $crate::api::decide_referral(self.ready.get()?, &request, &m.idempotency_key, &m.case_id, m.decision, &m.refusal_reason, &m.local_note).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service DecideReferralResponse>] { case: Some(case) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "RecordMissedAppointment"))]
                async fn record_missed_appointment(&self, request: tonic::Request<$crate::v1::[<$service RecordMissedAppointmentRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service RecordMissedAppointmentResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let case = $crate::api::record_missed_appointment(self.ready.get()?, &request, &m.idempotency_key, &m.case_id).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service RecordMissedAppointmentResponse>] { case: Some(case) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "UpdatePlan"))]
                async fn update_plan(&self, request: tonic::Request<$crate::v1::[<$service UpdatePlanRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service UpdatePlanResponse>]>, tonic::Status> {
                    let m = request.get_ref();
                    let summary = $crate::api::update_plan(self.ready.get()?, &request, &m.idempotency_key, m.plan.as_ref()).await?;
                    Ok(tonic::Response::new($crate::v1::[<$service UpdatePlanResponse>] { summary: Some(summary) }))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ReceiveReferralDecision"))]
                async fn receive_referral_decision(&self, request: tonic::Request<$crate::v1::[<$service ReceiveReferralDecisionRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ReceiveReferralDecisionResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_referral_decision(app, &t, &m.idempotency_key, &digest, &m.case_id, m.decision.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                #[tracing::instrument(skip_all, fields(rpc = "ReceivePlanSummary"))]
                async fn receive_plan_summary(&self, request: tonic::Request<$crate::v1::[<$service ReceivePlanSummaryRequest>]>)
                    -> Result<tonic::Response<$crate::v1::[<$service ReceivePlanSummaryResponse>]>, tonic::Status> {
                    let app = self.ready.get()?;
                    let (t, m, digest) = $crate::api::admit_push(app, request, |m| &m.case_id).await?;
                    $crate::api::receive_plan_summary(app, &t, &m.idempotency_key, &digest, &m.case_id, m.summary.as_ref()).await?;
                    Ok(tonic::Response::new(Default::default()))
                }

                $($extra)*
            }
        }
    };
}
