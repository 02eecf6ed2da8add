//! The employment side's service (France Travail).

use std::sync::Arc;

use passerelle_contract::{services, v1};
use passerelle_domain::Clock;
use passerelle_institution::api;
use passerelle_institution::app::serve_institution;
use passerelle_institution::server::Ready;
use passerelle_institution::{InstitutionApp, ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;
use v1::emploi_service_server::EmploiServiceServer;

#[derive(Debug, Clone, Default)]
pub struct EmploiApi {
    ready: Ready<InstitutionApp>,
}

passerelle_institution::casework_service!(EmploiApi, EmploiService, {
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
