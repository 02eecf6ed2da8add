//! The employment service's RPCs: the casework both institutions serve
//! (one line each, delegating to `passerelle_casework`), then this side's
//! own. Handlers stay thin: validate, call the operation, convert back.

use passerelle_casework::CaseworkRpcs;
use passerelle_casework::api::{case_id, required, same_case};
use passerelle_contract::v1::emploi_service_server::EmploiService;
use passerelle_contract::{convert, v1};
use passerelle_domain::SuspensionNotice;
use passerelle_domain::person::required_text;
use passerelle_runtime::{AppError, local, within};
use passerelle_storage::institution::CounsellorEntry;
use tonic::{Request, Response, Status};

use crate::jobseekers::{self, HabilitationChange};
use crate::support::EmploymentSupport;

type Answer<T> = Result<Response<T>, Status>;

#[derive(Debug, Clone, Default)]
pub struct EmploiApi {
    pub(crate) casework: CaseworkRpcs,
}

impl EmploiApi {
    fn support(&self) -> Result<EmploymentSupport<'_>, Status> {
        Ok(EmploymentSupport(&self.casework.app()?.casework))
    }
}

#[tonic::async_trait]
impl EmploiService for EmploiApi {
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

    // ---- entry, renewal, exit, follow-up, capacity --------------------------------

    #[tracing::instrument(skip_all, fields(rpc = "SignContract"))]
    async fn sign_contract(
        &self,
        request: Request<v1::SignContractRequest>,
    ) -> Answer<v1::SignContractResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let entry = required("entry", m.entry.as_ref())?;
        let pair = convert::pair(required("entry.pair", entry.pair.as_ref())?)
            .map_err(within("entry.pair"))?;
        // Axe 2 only: exclusive social support starts on the social side.
        if !matches!(
            v1::Track::try_from(entry.track),
            Ok(v1::Track::Global | v1::Track::Unspecified)
        ) {
            return Err(AppError::from(passerelle_domain::FieldError::new(
                "entry.track",
                "must be TRACK_GLOBAL: exclusive social support starts at the social service",
            ))
            .into());
        }
        let evidence = convert::entry_evidence(&entry.evidence).map_err(within("entry"))?;
        let participant = m
            .participant
            .as_ref()
            .map(convert::participant)
            .transpose()
            .map_err(within("participant"))?;
        let case = self
            .support()?
            .sign_contract(
                l.call(&m.idempotency_key),
                &case_id,
                pair,
                evidence,
                participant,
            )
            .await?;
        Ok(Response::new(v1::SignContractResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ExitCase"))]
    async fn exit_case(
        &self,
        request: Request<v1::ExitCaseRequest>,
    ) -> Answer<v1::ExitCaseResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let exit = required("exit", m.exit.as_ref())?;
        let reason = convert::enum_field("exit.reason", exit.reason, convert::exit_reason)
            .map_err(AppError::from)?;
        let case = self
            .support()?
            .exit_case(
                l.call(&m.idempotency_key),
                &case_id,
                reason,
                m.qualification_gained,
            )
            .await?;
        Ok(Response::new(v1::ExitCaseResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RenewSupport"))]
    async fn renew_support(
        &self,
        request: Request<v1::RenewSupportRequest>,
    ) -> Answer<v1::RenewSupportResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let case = self
            .support()?
            .renew_support(
                l.call(&m.idempotency_key),
                &case_id,
                m.exceptional,
                &m.justification,
            )
            .await?;
        Ok(Response::new(v1::RenewSupportResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordFollowUp"))]
    async fn record_follow_up(
        &self,
        request: Request<v1::RecordFollowUpRequest>,
    ) -> Answer<v1::RecordFollowUpResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let case_id = case_id("case_id", &m.case_id)?;
        self.casework.reach(&request, &case_id).await?;
        let case = self
            .support()?
            .record_follow_up(l.call(&m.idempotency_key), &case_id, m.in_employment)
            .await?;
        Ok(Response::new(v1::RecordFollowUpResponse {
            case: Some((&case).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RegisterCounsellor"))]
    async fn register_counsellor(
        &self,
        request: Request<v1::RegisterCounsellorRequest>,
    ) -> Answer<v1::RegisterCounsellorResponse> {
        let (l, m) = (local(&request)?, request.get_ref());
        let entry = CounsellorEntry {
            counsellor: required_text("counsellor", &m.counsellor, 64).map_err(AppError::from)?,
            working_time_per_mille: m.working_time_per_mille,
            office_code: required_text("office_code", &m.office_code, 64)
                .map_err(AppError::from)?,
        };
        let view = self
            .support()?
            .register_counsellor(l.call(&m.idempotency_key), entry)
            .await?;
        Ok(Response::new(v1::RegisterCounsellorResponse {
            max_portfolio: view.max_portfolio,
            portfolio: view.portfolio,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveSuspensionNotice"))]
    async fn receive_suspension_notice(
        &self,
        request: Request<v1::ReceiveSuspensionNoticeRequest>,
    ) -> Answer<v1::ReceiveSuspensionNoticeResponse> {
        self.casework
            .push(
                request,
                |m| &m.case_id,
                async |p| {
                    let m = &p.message;
                    let notice = SuspensionNotice::try_from(required("notice", m.notice.as_ref())?)
                        .map_err(within("notice"))?;
                    same_case("notice.case_id", &notice.case_id, &m.case_id)?;
                    self.support()?
                        .receive_suspension(p.call(&m.idempotency_key), notice)
                        .await?;
                    Ok(v1::ReceiveSuspensionNoticeResponse {})
                },
            )
            .await
    }

    // ---- title II: jobseeker register, RSA list, jobseeker file, habilitations ----

    type StreamRsaJobseekerListStream = jobseekers::RsaStream;

    #[tracing::instrument(skip_all, fields(rpc = "RecordJobseekers"))]
    async fn record_jobseekers(
        &self,
        request: Request<v1::RecordJobseekersRequest>,
    ) -> Answer<v1::RecordJobseekersResponse> {
        Ok(Response::new(
            jobseekers::record_jobseekers(self.casework.app()?, &request).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GrantHabilitation"))]
    async fn grant_habilitation(
        &self,
        request: Request<v1::GrantHabilitationRequest>,
    ) -> Answer<v1::GrantHabilitationResponse> {
        let m = request.get_ref();
        let (key, agent, scope) = (&m.idempotency_key, &m.agent, m.scope);
        let grant = HabilitationChange {
            key,
            agent,
            scope,
            revoke: false,
        };
        jobseekers::set_habilitation(self.casework.app()?, &request, grant).await?;
        Ok(Response::new(v1::GrantHabilitationResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeHabilitation"))]
    async fn revoke_habilitation(
        &self,
        request: Request<v1::RevokeHabilitationRequest>,
    ) -> Answer<v1::RevokeHabilitationResponse> {
        let m = request.get_ref();
        let (key, agent, scope) = (&m.idempotency_key, &m.agent, m.scope);
        let withdrawal = HabilitationChange {
            key,
            agent,
            scope,
            revoke: true,
        };
        jobseekers::set_habilitation(self.casework.app()?, &request, withdrawal).await?;
        Ok(Response::new(v1::RevokeHabilitationResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CountHabilitations"))]
    async fn count_habilitations(
        &self,
        _request: Request<v1::CountHabilitationsRequest>,
    ) -> Answer<v1::CountHabilitationsResponse> {
        Ok(Response::new(
            jobseekers::count_habilitations(self.casework.app()?).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RequestHabilitationChange"))]
    async fn request_habilitation_change(
        &self,
        request: Request<v1::RequestHabilitationChangeRequest>,
    ) -> Answer<v1::RequestHabilitationChangeResponse> {
        jobseekers::request_habilitation_change(self.casework.app()?, &request).await?;
        Ok(Response::new(v1::RequestHabilitationChangeResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PublishRsaJobseekerList"))]
    async fn publish_rsa_jobseeker_list(
        &self,
        request: Request<v1::PublishRsaJobseekerListRequest>,
    ) -> Answer<v1::PublishRsaJobseekerListResponse> {
        Ok(Response::new(
            jobseekers::publish_rsa_list(self.casework.app()?, &request).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "StreamRsaJobseekerList"))]
    async fn stream_rsa_jobseeker_list(
        &self,
        request: Request<v1::StreamRsaJobseekerListRequest>,
    ) -> Answer<Self::StreamRsaJobseekerListStream> {
        jobseekers::stream_rsa_list(self.casework.app()?, request).await
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetJobseekerFile"))]
    async fn get_jobseeker_file(
        &self,
        request: Request<v1::GetJobseekerFileRequest>,
    ) -> Answer<v1::GetJobseekerFileResponse> {
        jobseekers::jobseeker_file(self.casework.app()?, request).await
    }
}
