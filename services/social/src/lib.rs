//! The Département's service (social side: CDAS / MDS offices).

use std::sync::Arc;

use passerelle_contract::services;
use passerelle_contract::v1::social_service_server::SocialServiceServer;
use passerelle_domain::Clock;
use passerelle_institution::app::serve_institution;
use passerelle_institution::server::Ready;
use passerelle_institution::{InstitutionApp, ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;

#[derive(Debug, Clone, Default)]
pub struct SocialApi {
    ready: Ready<InstitutionApp>,
}

passerelle_institution::casework_service!(SocialApi, SocialService, {});

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
