//! The state of an institution's service (employment or social side).

use std::sync::Arc;

use passerelle_boundary::{Minimiser, Policy};
use passerelle_contract::v1::directory_service_server::DirectoryServiceServer;
use passerelle_domain::Clock;
use passerelle_storage::InstitutionStore;
use passerelle_storage::audit::AuditLog;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::casework::Casework;
use crate::config::ServiceConfig;
use crate::directory::DirectoryApi;
use crate::gate::Gate;
use crate::partner::Outgoing;
use crate::relay::Relay;
use crate::server::{self, Ready, ServiceHandle, ServiceState};

#[derive(Debug, Clone)]
pub struct InstitutionApp {
    pub casework: Casework,
    pub gate: Gate,
    relay: Option<Relay>,
    housekeeping_interval: std::time::Duration,
}

impl InstitutionApp {
    /// Opens the database and wires the gate and the relay from configuration.
    pub async fn connect(config: &ServiceConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = InstitutionStore::connect(
            &config.database_url.0,
            config.database_max_connections,
            config.institution,
        )
        .await?;
        let casework = Casework {
            own: config.institution,
            store: store.clone(),
            clock: clock.clone(),
            wake_relay: Arc::new(Notify::new()),
            agreement: Arc::new(config.load_agreement()?),
            directory_index: Default::default(),
        };
        let minimiser = Minimiser::from_contract();
        let gate = Gate {
            own: config.institution,
            minimiser: minimiser.clone(),
            audit: store.audit().clone(),
            clock,
            consents: Some(store),
        };
        let partner = casework.partner();
        let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
        let relay = match (config.endpoint(partner), config.signer()?) {
            (Some(url), Some(signer)) => Some(Relay {
                casework: casework.clone(),
                target: Outgoing::new(
                    url,
                    signer,
                    config.institution,
                    partner,
                    config.request_timeout(),
                    tls.as_ref(),
                )
                .map_err(anyhow::Error::msg)?,
                minimiser,
                policy: Policy::from_contract().map_err(anyhow::Error::msg)?,
                config: config.outbox.clone(),
            }),
            _ => {
                tracing::warn!(%partner, "no partner endpoint or service identity configured: messages stay in the outbox");
                None
            }
        };
        Ok(InstitutionApp {
            casework,
            gate,
            relay,
            housekeeping_interval: std::time::Duration::from_millis(
                config.housekeeping_interval_ms,
            ),
        })
    }
}

impl ServiceState for InstitutionApp {
    fn audit_log(&self) -> &AuditLog {
        self.casework.store.audit()
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.casework.clock
    }

    fn start_background(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let housekeeping = tokio::spawn(
            self.casework
                .clone()
                .keep_deadlines(self.housekeeping_interval, shutdown.clone()),
        );
        self.relay
            .clone()
            .map(|relay| tokio::spawn(relay.run(shutdown)))
            .into_iter()
            .chain([housekeeping])
            .collect()
    }
}

/// Serves an institution's service: its API (`routes`, answering through
/// `ready`), opening the database in the background.
pub async fn serve_institution(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    service_name: &'static str,
    ready: Ready<InstitutionApp>,
    routes: Routes,
) -> anyhow::Result<ServiceHandle> {
    let connect_config = config.clone();
    let mut names = vec![service_name];
    let mut routes = routes;
    if config.hosts_directory() {
        names.push(passerelle_contract::services::DIRECTORY);
        routes = routes.add_service(DirectoryServiceServer::new(DirectoryApi {
            ready: ready.clone(),
        }));
    }
    server::start(&config, listener, &names, ready, routes, move || {
        let config = connect_config.clone();
        let clock = clock.clone();
        Box::pin(async move { InstitutionApp::connect(&config, clock).await })
    })
    .await
}
