//! Serving one Passerelle service: the boundary layer in front of the
//! contract's RPCs, gRPC health (readiness NOT_SERVING until the database is
//! up), reflection v1 and v1alpha, and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use passerelle_boundary::audit::AuditEntry;
use passerelle_boundary::layer::BoxFuture;
use passerelle_boundary::{AuditSink, BoundaryLayer, Policy};
use passerelle_domain::Clock;
use passerelle_storage::audit::AuditLog;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::config::ServiceConfig;

/// The health service name probes use for liveness: SERVING while the process runs.
pub const LIVENESS: &str = "liveness";

/// Set once the service's database is up; handlers answer UNAVAILABLE until then.
#[derive(Debug)]
pub struct Ready<A>(Arc<OnceCell<A>>);

impl<A> Clone for Ready<A> {
    fn clone(&self) -> Self {
        Ready(self.0.clone())
    }
}

impl<A> Default for Ready<A> {
    fn default() -> Self {
        Ready(Arc::new(OnceCell::new()))
    }
}

impl<A> Ready<A> {
    pub fn get(&self) -> Result<&A, Status> {
        self.0
            .get()
            .ok_or_else(|| Status::unavailable("starting: the database is not ready yet"))
    }
}

/// What the serving loop needs from a service's application state.
pub trait ServiceState: Send + Sync + 'static {
    fn audit_log(&self) -> &AuditLog;
    /// Starts background work (the outbox relay) once the state exists.
    fn start_background(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>>;
}

/// The layer's audit sink: the service's own log, once it is ready.
struct ReadyAudit<A>(Ready<A>);

impl<A: ServiceState> AuditSink for ReadyAudit<A> {
    fn append(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let state = self.0.get().map_err(|s| s.message().to_owned())?;
            state
                .audit_log()
                .append(entry)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

pub type Connect<A> = Pin<Box<dyn Future<Output = anyhow::Result<A>> + Send>>;

/// A running service.
#[derive(Debug)]
pub struct ServiceHandle {
    pub addr: SocketAddr,
    /// The plaintext health-only listener, when TLS is on.
    pub health_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ServiceHandle {
    /// Stops accepting calls, drains those in flight, stops background work.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }

    /// Waits until the service stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }

    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts serving on `listener` at once; `connect` opens the database (it is
/// retried until it succeeds) and readiness turns SERVING when it has.
pub async fn start<A: ServiceState>(
    config: &ServiceConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    service_names: &[&'static str],
    ready: Ready<A>,
    routes: Routes,
    connect: impl Fn() -> Connect<A> + Send + 'static,
) -> anyhow::Result<ServiceHandle> {
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for name in service_names {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;

    // Advertise what this process serves, not every service of the contract.
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(passerelle_contract::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in service_names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection_v1 = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?;
    let reflection_v1alpha = reflection()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?;

    let policy = Policy::from_contract().map_err(anyhow::Error::msg)?;
    let mut layer = BoundaryLayer::new(
        config.verifier()?,
        policy,
        Arc::new(ReadyAudit(ready.clone())),
        clock,
    )
    .with_denial_budget(
        config.limits.refused_calls_per_peer,
        Duration::from_millis(config.limits.refusal_window_ms),
    );
    let limits = &config.limits;
    let mut server = Server::builder()
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_max_header_list_size(Some(limits.max_header_list_bytes))
        .timeout(Duration::from_millis(limits.request_timeout_ms))
        // A client that went silent is noticed, and a drain does not wait on it.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    let mut health_addr = None;
    if let Some(tls) = &config.tls {
        let material = tls.load()?;
        let tls_config = ServerTlsConfig::new()
            .identity(material.identity)
            .client_ca_root(material.ca)
            .client_auth_optional(!material.require_client_certificate);
        server = server.tls_config(tls_config)?;
        layer = layer.binding_certificates();
        if let Some(listen) = tls.health_listen {
            // Probes speak neither TLS nor tokens: health alone, in plaintext.
            let health_listener = TcpListener::bind(listen).await?;
            health_addr = Some(health_listener.local_addr()?);
            let health_only = Server::builder().add_service(health_service.clone());
            let mut probe_shutdown = shutdown_rx.clone();
            tokio::spawn(async move {
                let signal = async move {
                    let _ = probe_shutdown.wait_for(|stop| *stop).await;
                };
                if let Err(e) = health_only
                    .serve_with_incoming_shutdown(incoming(health_listener), signal)
                    .await
                {
                    tracing::error!(error = %e, "health listener stopped");
                }
            });
        }
    }
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let mut initial_shutdown = shutdown_rx.clone();
    let background_shutdown = shutdown_rx.clone();
    let init_health = health.clone();
    let init_ready = ready.clone();
    let names = service_names.to_vec();
    let init: JoinHandle<Vec<JoinHandle<()>>> = tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        loop {
            match connect().await {
                Ok(state) => {
                    let background = state.start_background(background_shutdown);
                    if init_ready.0.set(state).is_err() {
                        tracing::error!("state set twice");
                    }
                    init_health
                        .set_service_status("", ServingStatus::Serving)
                        .await;
                    for name in &names {
                        init_health
                            .set_service_status(*name, ServingStatus::Serving)
                            .await;
                    }
                    tracing::info!(services = ?names, "ready");
                    return background;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database not ready");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = initial_shutdown.changed() => return vec![],
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    });

    layer.spawn_coalescer();
    let refusals = layer.clone();
    let mut serve_shutdown = shutdown_rx.clone();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = serve_shutdown.wait_for(|stop| *stop).await;
        };
        let served = server
            .layer(RpcTelemetryLayer)
            .layer(layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), signal)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // The window under way is counted too before the log closes.
        refusals.flush_refusals().await;
        let background = init.await.unwrap_or_default();
        for task in background {
            let _ = task.await;
        }
        if let Ok(state) = ready.get() {
            state.audit_log().close().await;
        }
        served.map_err(anyhow::Error::from)
    });
    tracing::info!(%addr, services = ?service_names, "listening");
    Ok(ServiceHandle {
        addr,
        health_addr,
        shutdown: shutdown_tx,
        task,
    })
}

/// Outermost layer: one server span per contract RPC, child of the caller's
/// trace context, and the RPC's duration and status as a metric.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTelemetryLayer;

impl<S> tower::Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RpcTelemetry<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if !path.starts_with("/passerelle.") {
            // Probes and reflection: no span, no metric.
            return Box::pin(inner.call(request));
        }
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %path,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        passerelle_telemetry::propagation::set_parent(
            &span,
            passerelle_telemetry::propagation::extract_from_headers(request.headers()),
        );
        let started = std::time::Instant::now();
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = inner.call(request).await.map(plain_decode_errors);
                // Errors travel in the headers of a trailers-only answer; OK is 0.
                let code = response
                    .as_ref()
                    .ok()
                    .and_then(|r| r.headers().get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                recorded.record("rpc.grpc.status_code", code);
                passerelle_telemetry::metrics::record_rpc(
                    &path,
                    code,
                    started.elapsed().as_secs_f64() * 1000.0,
                );
                response
            }
            .instrument(span),
        )
    }
}

/// A request that does not decode (invalid UTF-8 in a string, a truncated
/// body) is the client's error, not the service's: tonic answers INTERNAL with
/// the decoder's own words; the client gets INVALID_ARGUMENT and a sentence.
fn plain_decode_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
    let from_decoder = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .is_some_and(|m| {
            m.starts_with("failed to decode Protobuf message") || m.contains("Unexpected EOF")
        });
    if internal && from_decoder {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the%20request%20is%20not%20a%20valid%20message%20of%20this%20RPC%27s%20request%20type",
            ),
        );
    }
    response
}

/// Accepted connections with TCP_NODELAY: gRPC writes headers, data and
/// trailers separately, and Nagle's algorithm with delayed ACKs would add
/// ~40 ms to small answers. (`serve_with_incoming` ignores the builder's TCP settings.)
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
