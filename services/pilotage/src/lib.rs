//! The steering service. It pulls aggregates from the two institutions'
//! services, keeps snapshots of them, and publishes the committee's figures
//! under statistical secrecy. It never receives a per-person row.

use std::sync::Arc;

use passerelle_contract::v1::pilotage_service_server::{PilotageService, PilotageServiceServer};
use passerelle_contract::{services, v1};
use passerelle_domain::{Clock, Dashboard, Indicators, Institution, Side};
use passerelle_runtime::error::{AppError, within};
use passerelle_runtime::partner::Outgoing;
use passerelle_runtime::server::{self, Ready, ServiceState};
use passerelle_runtime::{ServiceConfig, ServiceHandle};
use passerelle_storage::PilotageStore;
use passerelle_storage::audit::AuditLog;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct PilotageApp {
    store: PilotageStore,
    clock: Arc<dyn Clock>,
    sources: Vec<(Side, Outgoing)>,
    min_cell_size: u64,
    agreement: Arc<passerelle_domain::agreement::Agreement>,
    agreement_renewals: u32,
}

impl PilotageApp {
    pub async fn connect(config: &ServiceConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store =
            PilotageStore::connect(&config.database_url.0, config.database_max_connections).await?;
        let mut sources = vec![];
        let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
        if let Some(signer) = config.signer()? {
            for side in [Side::Emploi, Side::Social] {
                if let Some(url) = config.endpoint(side.institution()) {
                    let out = Outgoing::new(
                        url,
                        signer.clone(),
                        Institution::Pilotage,
                        side.institution(),
                        config.request_timeout(),
                        tls.as_ref(),
                    )
                    .map_err(anyhow::Error::msg)?;
                    sources.push((side, out));
                }
            }
        }
        if sources.is_empty() {
            tracing::warn!(
                "no source endpoints or service identity configured: the dashboard shows stored snapshots only"
            );
        }
        Ok(PilotageApp {
            store,
            clock,
            sources,
            min_cell_size: config.steering.min_cell_size,
            agreement: Arc::new(config.load_agreement()?),
            agreement_renewals: config.agreement_renewals,
        })
    }

    async fn pull(&self, source: Side, out: &Outgoing) -> Result<Indicators, Status> {
        let path = services::path(source, "GetIndicators");
        let answer: v1::GetIndicatorsResponse = out
            .unary(&path, out.request(v1::GetIndicatorsRequest {})?)
            .await?;
        let proto = answer.indicators;
        let proto = proto.ok_or_else(|| Status::data_loss("indicators missing from the answer"))?;
        let indicators = Indicators::try_from(&proto)
            .map_err(within("indicators"))
            .map_err(Status::from)?;
        if indicators.source != source {
            return Err(Status::data_loss("indicators came from another source"));
        }
        Ok(indicators)
    }

    /// Fresh figures from every source that answers, the last snapshot of
    /// those that do not.
    pub async fn dashboard(&self) -> Result<Dashboard, AppError> {
        // Ask every source at once: one that is down must not delay the others.
        let mut pulls = tokio::task::JoinSet::new();
        for (index, (source, out)) in self.sources.iter().enumerate() {
            let (app, source, out) = (self.clone(), *source, out.clone());
            pulls.spawn(
                async move { (index, source, app.pull(source, &out).await) }
                    .instrument(tracing::Span::current()),
            );
        }
        let mut answers = Vec::with_capacity(self.sources.len());
        while let Some(joined) = pulls.join_next().await {
            answers
                .push(joined.map_err(|e| AppError(passerelle_domain::DomainError::internal(e)))?);
        }
        // Sources stay in their configured order on the dashboard.
        answers.sort_by_key(|(index, _, _)| *index);
        let mut snapshots = vec![];
        for (_, source, answer) in answers {
            match answer {
                Ok(indicators) => {
                    self.store
                        .save_snapshot(&indicators, self.clock.now())
                        .await?;
                    snapshots.push((indicators, true));
                }
                Err(status) => {
                    tracing::warn!(%source, code = ?status.code(), "source did not answer; using its last snapshot");
                    if let Some(stale) = self.store.latest_snapshot(source.institution()).await? {
                        snapshots.push((stale, false));
                    }
                }
            }
        }
        Ok(Dashboard::publish(
            &snapshots,
            &(&*self.agreement).into(),
            self.min_cell_size,
            self.clock.now(),
        ))
    }
}

impl PilotageApp {
    /// The agreement's dated life and what is due next, on the service's clock.
    fn calendar(&self) -> v1::AgreementCalendar {
        use passerelle_domain::agreement::{Milestone, MilestoneKind};
        let kind = |k: MilestoneKind| match k {
            MilestoneKind::Start => v1::MilestoneKind::Start,
            MilestoneKind::Committee => v1::MilestoneKind::Committee,
            MilestoneKind::RenewalDecisionDeadline => v1::MilestoneKind::RenewalDecisionDeadline,
            MilestoneKind::NoticeDeadline => v1::MilestoneKind::NoticeDeadline,
            MilestoneKind::End => v1::MilestoneKind::End,
        };
        let proto = |m: &Milestone| v1::Milestone {
            on: m.on.to_string(),
            kind: kind(m.kind) as i32,
            label: m.label.clone(),
        };
        let today = self.clock.now().date_naive();
        let renewals = self.agreement_renewals;
        v1::AgreementCalendar {
            agreement_id: self.agreement.id.clone(),
            agreement_name: self.agreement.name.clone(),
            renewals,
            milestones: self
                .agreement
                .calendar(renewals)
                .iter()
                .map(proto)
                .collect(),
            next: self
                .agreement
                .next_milestones(renewals, today)
                .first()
                .map(proto),
        }
    }
}

impl ServiceState for PilotageApp {
    fn audit_log(&self) -> &AuditLog {
        self.store.audit()
    }

    fn start_background(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let database = self.store.database().clone();
        vec![tokio::spawn(async move {
            loop {
                let (in_use, idle) = database.connections();
                passerelle_telemetry::metrics::record_pool("pilotage", in_use, idle);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })]
    }
}

#[derive(Debug, Clone, Default)]
pub struct PilotageApi {
    ready: Ready<PilotageApp>,
}

#[tonic::async_trait]
impl PilotageService for PilotageApi {
    #[tracing::instrument(skip_all, fields(rpc = "GetDashboard"))]
    async fn get_dashboard(
        &self,
        request: Request<v1::GetDashboardRequest>,
    ) -> Result<Response<v1::GetDashboardResponse>, Status> {
        passerelle_boundary::caller(&request)?;
        let app = self.ready.get()?;
        let dashboard = app.dashboard().await?;
        Ok(Response::new(v1::GetDashboardResponse {
            dashboard: Some((&dashboard).into()),
            calendar: Some(app.calendar()),
        }))
    }
}

/// Serves the steering service on `listener` until shut down.
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ServiceHandle> {
    let api = PilotageApi::default();
    let ready = api.ready.clone();
    let connect_config = config.clone();
    let connect_clock = clock.clone();
    server::start(
        &config,
        listener,
        clock,
        &[services::PILOTAGE],
        ready,
        Routes::new(
            PilotageServiceServer::new(api)
                .max_decoding_message_size(config.limits.max_request_bytes),
        ),
        move || {
            let config = connect_config.clone();
            let clock = connect_clock.clone();
            Box::pin(async move { PilotageApp::connect(&config, clock).await })
        },
    )
    .await
}
