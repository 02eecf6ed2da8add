//! The employment side's service (France Travail).

use std::sync::Arc;

use passerelle_contract::{services, v1};
use passerelle_domain::Clock;
use passerelle_institution::app::serve_institution;
use passerelle_institution::server::Ready;
use passerelle_institution::{InstitutionApp, ServiceConfig, ServiceHandle};
use passerelle_institution::{api, title2};
use tokio::net::TcpListener;
use tonic::service::Routes;
use v1::emploi_service_server::EmploiServiceServer;

#[derive(Debug, Clone, Default)]
pub struct EmploiApi {
    ready: Ready<InstitutionApp>,
}

passerelle_institution::casework_service!(EmploiApi, EmploiService, {
    type StreamRsaJobseekerListStream = title2::RsaStream;

    #[tracing::instrument(skip_all, fields(rpc = "RecordJobseekers"))]
    async fn record_jobseekers(
        &self,
        request: tonic::Request<v1::RecordJobseekersRequest>,
    ) -> Result<tonic::Response<v1::RecordJobseekersResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            title2::record_jobseekers(self.ready.get()?, &request).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GrantHabilitation"))]
    async fn grant_habilitation(
        &self,
        request: tonic::Request<v1::GrantHabilitationRequest>,
    ) -> Result<tonic::Response<v1::GrantHabilitationResponse>, tonic::Status> {
        let m = request.get_ref();
        title2::set_habilitation(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.agent,
            m.scope,
            false,
        )
        .await?;
        Ok(tonic::Response::new(v1::GrantHabilitationResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeHabilitation"))]
    async fn revoke_habilitation(
        &self,
        request: tonic::Request<v1::RevokeHabilitationRequest>,
    ) -> Result<tonic::Response<v1::RevokeHabilitationResponse>, tonic::Status> {
        let m = request.get_ref();
        title2::set_habilitation(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.agent,
            m.scope,
            true,
        )
        .await?;
        Ok(tonic::Response::new(v1::RevokeHabilitationResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CountHabilitations"))]
    async fn count_habilitations(
        &self,
        _request: tonic::Request<v1::CountHabilitationsRequest>,
    ) -> Result<tonic::Response<v1::CountHabilitationsResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            title2::count_habilitations(self.ready.get()?).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RequestHabilitationChange"))]
    async fn request_habilitation_change(
        &self,
        request: tonic::Request<v1::RequestHabilitationChangeRequest>,
    ) -> Result<tonic::Response<v1::RequestHabilitationChangeResponse>, tonic::Status> {
        title2::request_habilitation_change(self.ready.get()?, &request).await?;
        Ok(tonic::Response::new(
            v1::RequestHabilitationChangeResponse {},
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PublishRsaJobseekerList"))]
    async fn publish_rsa_jobseeker_list(
        &self,
        request: tonic::Request<v1::PublishRsaJobseekerListRequest>,
    ) -> Result<tonic::Response<v1::PublishRsaJobseekerListResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            title2::publish_rsa_list(self.ready.get()?, &request).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "StreamRsaJobseekerList"))]
    async fn stream_rsa_jobseeker_list(
        &self,
        request: tonic::Request<v1::StreamRsaJobseekerListRequest>,
    ) -> Result<tonic::Response<Self::StreamRsaJobseekerListStream>, tonic::Status> {
        title2::stream_rsa_list(self.ready.get()?, request).await
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetJobseekerFile"))]
    async fn get_jobseeker_file(
        &self,
        request: tonic::Request<v1::GetJobseekerFileRequest>,
    ) -> Result<tonic::Response<v1::GetJobseekerFileResponse>, tonic::Status> {
        title2::jobseeker_file(self.ready.get()?, request).await
    }

    #[tracing::instrument(skip_all, fields(rpc = "RegisterCounsellor"))]
    async fn register_counsellor(
        &self,
        request: tonic::Request<v1::RegisterCounsellorRequest>,
    ) -> Result<tonic::Response<v1::RegisterCounsellorResponse>, tonic::Status> {
        let answer =
            api::register_counsellor(self.ready.get()?, &request, request.get_ref()).await?;
        Ok(tonic::Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordFollowUp"))]
    async fn record_follow_up(
        &self,
        request: tonic::Request<v1::RecordFollowUpRequest>,
    ) -> Result<tonic::Response<v1::RecordFollowUpResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = api::record_follow_up(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.in_employment,
        )
        .await?;
        Ok(tonic::Response::new(v1::RecordFollowUpResponse {
            case: Some(case),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveSuspensionNotice"))]
    async fn receive_suspension_notice(
        &self,
        request: tonic::Request<v1::ReceiveSuspensionNoticeRequest>,
    ) -> Result<tonic::Response<v1::ReceiveSuspensionNoticeResponse>, tonic::Status> {
        let app = self.ready.get()?;
        let (t, m, digest) = api::admit_push(app, request, |m| &m.case_id).await?;
        api::receive_suspension(
            app,
            &t,
            &m.idempotency_key,
            &digest,
            &m.case_id,
            m.notice.as_ref(),
        )
        .await?;
        Ok(tonic::Response::new(Default::default()))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RenewSupport"))]
    async fn renew_support(
        &self,
        request: tonic::Request<v1::RenewSupportRequest>,
    ) -> Result<tonic::Response<v1::RenewSupportResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = api::renew_support(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.exceptional,
            &m.justification,
        )
        .await?;
        Ok(tonic::Response::new(v1::RenewSupportResponse {
            case: Some(case),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SignContract"))]
    async fn sign_contract(
        &self,
        request: tonic::Request<v1::SignContractRequest>,
    ) -> Result<tonic::Response<v1::SignContractResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = api::sign_contract(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.entry.as_ref(),
            m.participant.as_ref(),
        )
        .await?;
        Ok(tonic::Response::new(v1::SignContractResponse {
            case: Some(case),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ExitCase"))]
    async fn exit_case(
        &self,
        request: tonic::Request<v1::ExitCaseRequest>,
    ) -> Result<tonic::Response<v1::ExitCaseResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = api::exit_case(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.exit.as_ref(),
            m.qualification_gained,
        )
        .await?;
        Ok(tonic::Response::new(v1::ExitCaseResponse {
            case: Some(case),
        }))
    }
});

/// Serves the employment service on `listener` until shut down.
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ServiceHandle> {
    let api = EmploiApi::default();
    let ready = api.ready.clone();
    serve_institution(
        config,
        listener,
        clock,
        services::EMPLOI,
        ready,
        Routes::new(EmploiServiceServer::new(api)),
    )
    .await
}
