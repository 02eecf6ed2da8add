//! The Département's service (social side: CDAS / MDS offices).

use std::sync::Arc;

use passerelle_contract::v1::social_service_server::SocialServiceServer;
use passerelle_contract::{services, v1};
use passerelle_domain::Clock;
use passerelle_institution::api;
use passerelle_institution::app::serve_institution;
use passerelle_institution::server::Ready;
use passerelle_institution::{InstitutionApp, ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;

#[derive(Debug, Clone, Default)]
pub struct SocialApi {
    ready: Ready<InstitutionApp>,
}

passerelle_institution::casework_service!(SocialApi, SocialService, {
    #[tracing::instrument(skip_all, fields(rpc = "StartExclusiveSupport"))]
    async fn start_exclusive_support(
        &self,
        request: tonic::Request<v1::StartExclusiveSupportRequest>,
    ) -> Result<tonic::Response<v1::StartExclusiveSupportResponse>, tonic::Status> {
        let case =
            api::start_exclusive_support(self.ready.get()?, &request, request.get_ref()).await?;
        Ok(tonic::Response::new(v1::StartExclusiveSupportResponse {
            case: Some(case),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DecideExclusiveSupportEnd"))]
    async fn decide_exclusive_support_end(
        &self,
        request: tonic::Request<v1::DecideExclusiveSupportEndRequest>,
    ) -> Result<tonic::Response<v1::DecideExclusiveSupportEndResponse>, tonic::Status> {
        let case =
            api::decide_exclusive_end(self.ready.get()?, &request, request.get_ref()).await?;
        Ok(tonic::Response::new(
            v1::DecideExclusiveSupportEndResponse { case: Some(case) },
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetOfficeQuota"))]
    async fn set_office_quota(
        &self,
        request: tonic::Request<v1::SetOfficeQuotaRequest>,
    ) -> Result<tonic::Response<v1::SetOfficeQuotaResponse>, tonic::Status> {
        let answer = api::set_office_quota(self.ready.get()?, &request, request.get_ref()).await?;
        Ok(tonic::Response::new(answer))
    }
});

/// Serves the social service on `listener` until shut down.
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ServiceHandle> {
    let api = SocialApi::default();
    let ready = api.ready.clone();
    serve_institution(
        config,
        listener,
        clock,
        services::SOCIAL,
        ready,
        Routes::new(SocialServiceServer::new(api)),
    )
    .await
}
