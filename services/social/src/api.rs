//! The Département's service RPCs: the casework both institutions serve
//! (one line each, delegating to `passerelle_casework`), then exclusive
//! social support, the Département's own.

use passerelle_casework::CaseworkRpcs;
use passerelle_casework::api::{case_id, required};
use passerelle_contract::v1::social_service_server::SocialService;
use passerelle_contract::{convert, v1};
use passerelle_domain::Evidence;
use passerelle_domain::person::required_text;
use passerelle_runtime::{AppError, local, within};
use tonic::{Request, Response, Status};

use crate::exclusive_support::ExclusiveSupport;

type Answer<T> = Result<Response<T>, Status>;

#[derive(Debug, Clone, Default)]
pub struct SocialApi {
    pub(crate) casework: CaseworkRpcs,
}

impl SocialApi {
    fn axe3(&self) -> Result<ExclusiveSupport<'_>, Status> {
        Ok(ExclusiveSupport(&self.casework.app()?.casework))
    }
}

#[tonic::async_trait]
impl SocialService for SocialApi {
    // ---- the casework both institutions serve -------------------------------------

    async fn record_consent(
        &self,
        r: Request<v1::RecordConsentRequest>,
    ) -> Answer<v1::RecordConsentResponse> {
        self.casework.record_consent(r).await
    }
    async fn withdraw_consent(
        &self,
        r: Request<v1::WithdrawConsentRequest>,
    ) -> Answer<v1::WithdrawConsentResponse> {
        self.casework.withdraw_consent(r).await
    }
    async fn create_referral(
        &self,
        r: Request<v1::CreateReferralRequest>,
    ) -> Answer<v1::CreateReferralResponse> {
        self.casework.create_referral(r).await
    }
    async fn record_orientation(
        &self,
        r: Request<v1::RecordOrientationRequest>,
    ) -> Answer<v1::RecordOrientationResponse> {
        self.casework.record_orientation(r).await
    }
    async fn record_diagnosis(
        &self,
        r: Request<v1::RecordDiagnosisRequest>,
    ) -> Answer<v1::RecordDiagnosisResponse> {
        self.casework.record_diagnosis(r).await
    }
    async fn list_due(&self, r: Request<v1::ListDueRequest>) -> Answer<v1::ListDueResponse> {
        self.casework.list_due(r).await
    }
    async fn get_case(&self, r: Request<v1::GetCaseRequest>) -> Answer<v1::GetCaseResponse> {
        self.casework.get_case(r).await
    }
    async fn decide_referral(
        &self,
        r: Request<v1::DecideReferralRequest>,
    ) -> Answer<v1::DecideReferralResponse> {
        self.casework.decide_referral(r).await
    }
    async fn record_missed_appointment(
        &self,
        r: Request<v1::RecordMissedAppointmentRequest>,
    ) -> Answer<v1::RecordMissedAppointmentResponse> {
        self.casework.record_missed_appointment(r).await
    }
    async fn update_plan(
        &self,
        r: Request<v1::UpdatePlanRequest>,
    ) -> Answer<v1::UpdatePlanResponse> {
        self.casework.update_plan(r).await
    }
    async fn share_consent(
        &self,
        r: Request<v1::ShareConsentRequest>,
    ) -> Answer<v1::ShareConsentResponse> {
        self.casework.share_consent(r).await
    }
    async fn receive_referral(
        &self,
        r: Request<v1::ReceiveReferralRequest>,
    ) -> Answer<v1::ReceiveReferralResponse> {
        self.casework.receive_referral(r).await
    }
    async fn receive_diagnosis(
        &self,
        r: Request<v1::ReceiveDiagnosisRequest>,
    ) -> Answer<v1::ReceiveDiagnosisResponse> {
        self.casework.receive_diagnosis(r).await
    }
    async fn get_processing_register(
        &self,
        r: Request<v1::GetProcessingRegisterRequest>,
    ) -> Answer<v1::GetProcessingRegisterResponse> {
        self.casework.get_processing_register(r).await
    }
    async fn search_audit(
        &self,
        r: Request<v1::SearchAuditRequest>,
    ) -> Answer<v1::SearchAuditResponse> {
        self.casework.search_audit(r).await
    }
    async fn verify_audit(
        &self,
        r: Request<v1::VerifyAuditRequest>,
    ) -> Answer<v1::VerifyAuditResponse> {
        self.casework.verify_audit(r).await
    }
    async fn get_subject_access_report(
        &self,
        r: Request<v1::GetSubjectAccessReportRequest>,
    ) -> Answer<v1::GetSubjectAccessReportResponse> {
        self.casework.get_subject_access_report(r).await
    }
    async fn erase_subject_data(
        &self,
        r: Request<v1::EraseSubjectDataRequest>,
    ) -> Answer<v1::EraseSubjectDataResponse> {
        self.casework.erase_subject_data(r).await
    }
    async fn rectify_subject_data(
        &self,
        r: Request<v1::RectifySubjectDataRequest>,
    ) -> Answer<v1::RectifySubjectDataResponse> {
        self.casework.rectify_subject_data(r).await
    }
    async fn restrict_processing(
        &self,
        r: Request<v1::RestrictProcessingRequest>,
    ) -> Answer<v1::RestrictProcessingResponse> {
        self.casework.restrict_processing(r).await
    }
    async fn object_to_processing(
        &self,
        r: Request<v1::ObjectToProcessingRequest>,
    ) -> Answer<v1::ObjectToProcessingResponse> {
        self.casework.object_to_processing(r).await
    }
    async fn receive_rights_notice(
        &self,
        r: Request<v1::ReceiveRightsNoticeRequest>,
    ) -> Answer<v1::ReceiveRightsNoticeResponse> {
        self.casework.receive_rights_notice(r).await
    }
    async fn get_subject_access_part(
        &self,
        r: Request<v1::GetSubjectAccessPartRequest>,
    ) -> Answer<v1::GetSubjectAccessPartResponse> {
        self.casework.get_subject_access_part(r).await
    }
    async fn receive_audit_anchor(
        &self,
        r: Request<v1::ReceiveAuditAnchorRequest>,
    ) -> Answer<v1::ReceiveAuditAnchorResponse> {
        self.casework.receive_audit_anchor(r).await
    }
    async fn get_audit_anchors(
        &self,
        r: Request<v1::GetAuditAnchorsRequest>,
    ) -> Answer<v1::GetAuditAnchorsResponse> {
        self.casework.get_audit_anchors(r).await
    }
    async fn receive_end_of_processing(
        &self,
        r: Request<v1::ReceiveEndOfProcessingRequest>,
    ) -> Answer<v1::ReceiveEndOfProcessingResponse> {
        self.casework.receive_end_of_processing(r).await
    }
    async fn receive_parcours_change(
        &self,
        r: Request<v1::ReceiveParcoursChangeRequest>,
    ) -> Answer<v1::ReceiveParcoursChangeResponse> {
        self.casework.receive_parcours_change(r).await
    }
    async fn receive_case_event(
        &self,
        r: Request<v1::ReceiveCaseEventRequest>,
    ) -> Answer<v1::ReceiveCaseEventResponse> {
        self.casework.receive_case_event(r).await
    }
    async fn get_indicators(
        &self,
        r: Request<v1::GetIndicatorsRequest>,
    ) -> Answer<v1::GetIndicatorsResponse> {
        self.casework.get_indicators(r).await
    }
    async fn receive_referral_decision(
        &self,
        r: Request<v1::ReceiveReferralDecisionRequest>,
    ) -> Answer<v1::ReceiveReferralDecisionResponse> {
        self.casework.receive_referral_decision(r).await
    }
    async fn receive_plan_summary(
        &self,
        r: Request<v1::ReceivePlanSummaryRequest>,
    ) -> Answer<v1::ReceivePlanSummaryResponse> {
        self.casework.receive_plan_summary(r).await
    }

    // ---- exclusive social support (axe 3) --------------------------------------------

    #[tracing::instrument(skip_all, fields(rpc = "StartExclusiveSupport"))]
    async fn start_exclusive_support(
        &self,
        request: Request<v1::StartExclusiveSupportRequest>,
    ) -> Answer<v1::StartExclusiveSupportResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let evaluation =
            Evidence::try_from(required("social_evaluation", m.social_evaluation.as_ref())?)
                .map_err(within("social_evaluation"))?;
        let case = self
            .axe3()?
            .start_exclusive_support(l.call(&m.idempotency_key), &case_id, evaluation)
            .await?;
        Ok(Response::new(v1::StartExclusiveSupportResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DecideExclusiveSupportEnd"))]
    async fn decide_exclusive_support_end(
        &self,
        request: Request<v1::DecideExclusiveSupportEndRequest>,
    ) -> Answer<v1::DecideExclusiveSupportEndResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let outcome = convert::enum_field("outcome", m.outcome, convert::exclusive_outcome)
            .map_err(AppError::from)?;
        let case = self
            .axe3()?
            .decide_exclusive_end(l.call(&m.idempotency_key), &case_id, outcome)
            .await?;
        Ok(Response::new(v1::DecideExclusiveSupportEndResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetOfficeQuota"))]
    async fn set_office_quota(
        &self,
        request: Request<v1::SetOfficeQuotaRequest>,
    ) -> Answer<v1::SetOfficeQuotaResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let office = required_text("office_code", &m.office_code, 64).map_err(AppError::from)?;
        let view = self
            .axe3()?
            .set_office_quota(l.call(&m.idempotency_key), &office, m.year, m.quota)
            .await?;
        Ok(Response::new(v1::SetOfficeQuotaResponse {
            quota: view.quota,
            used: view.used,
        }))
    }
}
