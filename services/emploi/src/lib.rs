//! The employment side's service (France Travail).

use std::sync::Arc;

use passerelle_contract::services;
use passerelle_contract::v1::emploi_service_server::EmploiServiceServer;
use passerelle_domain::Clock;
use passerelle_institution::app::serve_institution;
use passerelle_institution::server::Ready;
use passerelle_institution::{InstitutionApp, ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;

#[derive(Debug, Clone, Default)]
pub struct EmploiApi {
    ready: Ready<InstitutionApp>,
}

passerelle_institution::casework_service!(EmploiApi, EmploiService, {
    #[tracing::instrument(skip_all, fields(rpc = "RenewSupport"))]
    async fn renew_support(
        &self,
        request: tonic::Request<passerelle_contract::v1::RenewSupportRequest>,
    ) -> Result<tonic::Response<passerelle_contract::v1::RenewSupportResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = passerelle_institution::api::renew_support(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.exceptional,
            &m.justification,
        )
        .await?;
        Ok(tonic::Response::new(
            passerelle_contract::v1::RenewSupportResponse { case: Some(case) },
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SignContract"))]
    async fn sign_contract(
        &self,
        request: tonic::Request<passerelle_contract::v1::SignContractRequest>,
    ) -> Result<tonic::Response<passerelle_contract::v1::SignContractResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = passerelle_institution::api::sign_contract(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.entry.as_ref(),
        )
        .await?;
        Ok(tonic::Response::new(
            passerelle_contract::v1::SignContractResponse { case: Some(case) },
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ExitCase"))]
    async fn exit_case(
        &self,
        request: tonic::Request<passerelle_contract::v1::ExitCaseRequest>,
    ) -> Result<tonic::Response<passerelle_contract::v1::ExitCaseResponse>, tonic::Status> {
        let m = request.get_ref();
        let case = passerelle_institution::api::exit_case(
            self.ready.get()?,
            &request,
            &m.idempotency_key,
            &m.case_id,
            m.exit.as_ref(),
        )
        .await?;
        Ok(tonic::Response::new(
            passerelle_contract::v1::ExitCaseResponse { case: Some(case) },
        ))
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
