//! The state of an institution's service (employment or social side), and
//! how it is served: the casework, the resource directory where this side
//! hosts it, the outbox relay and the deadline keeper in the background.

use std::sync::Arc;

use passerelle_boundary::{CrossingControl, Minimiser, Policy};
use passerelle_contract::v1::directory_service_server::DirectoryServiceServer;
use passerelle_directory::{Directory, DirectoryApi, HostsDirectory};
use passerelle_domain::{Clock, Side};
use passerelle_runtime::ServiceConfig;
use passerelle_runtime::partner::Outgoing;
use passerelle_runtime::server::{self, Ready, ServiceHandle, ServiceState};
use passerelle_storage::InstitutionStore;
use passerelle_storage::audit::AuditLog;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::casework::Casework;
use crate::relay::Relay;

#[derive(Debug, Clone)]
pub struct InstitutionApp {
    pub casework: Casework,
    pub directory: Directory,
    /// The contract as the DPO's documents read it, built once at start.
    pub catalogue: Arc<passerelle_rights::Catalogue>,
    /// Calls to the partner's service; `None` when none is configured.
    pub partner: Option<Outgoing>,
    relay: Option<Relay>,
    housekeeping_interval: std::time::Duration,
    anchor_interval: std::time::Duration,
}

impl InstitutionApp {
    /// Opens the database and wires the boundary's checks and the relay from configuration.
    pub async fn connect(config: &ServiceConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let side = Side::of(config.institution)
            .ok_or_else(|| anyhow::anyhow!("{} runs no casework", config.institution))?;
        let store = InstitutionStore::connect(
            &config.database_url.0,
            config.database_max_connections,
            config.institution,
        )
        .await?;
        let agreement = Arc::new(config.load_agreement()?);
        let minimiser = Minimiser::from_contract();
        let crossings = CrossingControl {
            own: side.institution(),
            minimiser: minimiser.clone(),
            audit: Arc::new(store.audit().clone()),
            clock: clock.clone(),
            consents: Some(Arc::new(store.clone())),
        };
        let casework = Casework {
            side,
            store: store.clone(),
            clock: clock.clone(),
            wake_relay: Arc::new(Notify::new()),
            agreement: agreement.clone(),
            crossings,
            term_end: agreement.term.ends_after(config.agreement_renewals),
        };
        let days_left = casework.term_days_left();
        passerelle_telemetry::metrics::record_agreement_days_left(side.code(), days_left);
        if days_left < 0 {
            tracing::warn!(agreement = %agreement.id, ended_on = %casework.term_end, "the agreement has ended: new referrals and entries are refused; cases in progress run to their end");
        } else if days_left <= 90 {
            tracing::warn!(agreement = %agreement.id, ends_on = %casework.term_end, days_left, "the agreement ends soon: record a renewal (agreement_renewals) once signed");
        }
        let directory = Directory::new(store, clock, agreement);
        let partner = side.partner().institution();
        let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
        let outgoing = match (config.endpoint(partner), config.signer()?) {
            (Some(url), Some(signer)) => Some(
                Outgoing::new(
                    url,
                    signer,
                    config.institution,
                    partner,
                    config.request_timeout(),
                    tls.as_ref(),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            _ => {
                tracing::warn!(%partner, "no partner endpoint or service identity configured: messages stay in the outbox");
                None
            }
        };
        let relay = match &outgoing {
            Some(target) => Some(Relay {
                casework: casework.clone(),
                target: target.clone(),
                minimiser,
                policy: Policy::from_contract().map_err(anyhow::Error::msg)?,
                config: config.casework.outbox.clone(),
            }),
            None => None,
        };
        Ok(InstitutionApp {
            casework,
            directory,
            catalogue: Arc::new(
                passerelle_rights::Catalogue::from_contract().map_err(anyhow::Error::msg)?,
            ),
            partner: outgoing,
            relay,
            housekeeping_interval: std::time::Duration::from_millis(
                config.casework.housekeeping_interval_ms,
            ),
            anchor_interval: std::time::Duration::from_millis(
                config.casework.audit_anchor_interval_ms,
            ),
        })
    }
}

impl InstitutionApp {
    /// Sends this log's head to the partner every `anchor_interval` when
    /// something was recorded since; a partner that is down is tried again
    /// at the next interval.
    async fn keep_anchoring(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.anchor_interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(why) = crate::dpo::anchor_if_due(&self).await {
                tracing::info!(reason = %why, "audit head not anchored at the partner; will retry");
            }
        }
    }
}

impl HostsDirectory for InstitutionApp {
    fn directory(&self) -> &Directory {
        &self.directory
    }
}

impl ServiceState for InstitutionApp {
    fn audit_log(&self) -> &AuditLog {
        self.casework.store.audit()
    }

    fn start_background(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let housekeeping = tokio::spawn(
            self.casework
                .clone()
                .keep_deadlines(self.housekeeping_interval, shutdown.clone()),
        );
        let anchors = tokio::spawn(self.clone().keep_anchoring(shutdown.clone()));
        self.relay
            .clone()
            .map(|relay| tokio::spawn(relay.run(shutdown)))
            .into_iter()
            .chain([housekeeping, anchors])
            .collect()
    }
}

/// Serves an institution's service: its API (`routes`, answering through
/// `ready`), and the directory where this side hosts it; the database opens
/// in the background.
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
        let directory = DirectoryServiceServer::new(DirectoryApi {
            ready: ready.clone(),
        });
        let limit = config.limits.max_request_bytes;
        routes = routes.add_service(directory.max_decoding_message_size(limit));
    }
    let connect_clock = clock.clone();
    server::start(&config, listener, clock, &names, ready, routes, move || {
        let config = connect_config.clone();
        let clock = connect_clock.clone();
        Box::pin(async move { InstitutionApp::connect(&config, clock).await })
    })
    .await
}
