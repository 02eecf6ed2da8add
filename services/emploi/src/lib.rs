//! The employment side's service (France Travail): the casework it shares
//! with the Département, and its own part of a case's life (entry, renewal,
//! exit, follow-up, the counsellors' register) and of the agreement's title
//! II exchanges (jobseeker register, RSA list, jobseeker file).

use std::sync::Arc;

use passerelle_casework::serve_institution;
use passerelle_contract::services;
use passerelle_contract::v1::emploi_service_server::EmploiServiceServer;
use passerelle_domain::Clock;
use passerelle_runtime::{ServiceConfig, ServiceHandle};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub mod api;
pub mod jobseekers;
pub mod support;

pub use api::EmploiApi;

/// Serves the employment service on `listener` until shut down.
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ServiceHandle> {
    let api = EmploiApi::default();
    let ready = api.casework.ready.clone();
    let server =
        EmploiServiceServer::new(api).max_decoding_message_size(config.limits.max_request_bytes);
    serve_institution(
        config,
        listener,
        clock,
        services::EMPLOI,
        ready,
        Routes::new(server),
    )
    .await
}
