//! The Département's service (social side: CDAS / MDS offices): the casework
//! it shares with the employment side, exclusive social support (axe 3),
//! and by default the resource directory (axe 1).

use std::sync::Arc;

use passerelle_casework::serve_institution;
use passerelle_contract::services;
use passerelle_contract::v1::social_service_server::SocialServiceServer;
use passerelle_domain::Clock;
use passerelle_runtime::{ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub mod api;
pub mod exclusive_support;

pub use api::SocialApi;

/// Serves the social service on `listener` until shut down.
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ServiceHandle> {
    let api = SocialApi::default();
    let ready = api.casework.ready.clone();
    let server =
        SocialServiceServer::new(api).max_decoding_message_size(config.limits.max_request_bytes);
    serve_institution(
        config,
        listener,
        clock,
        services::SOCIAL,
        ready,
        Routes::new(server),
    )
    .await
}
