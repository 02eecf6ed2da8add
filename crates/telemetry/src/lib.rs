//! Logs, traces and metrics for every Passerelle binary.
//!
//! - Logs: JSON lines for services (what log pipelines ingest), compact text
//!   for the CLI; `RUST_LOG` filters.
//! - Traces and metrics: OpenTelemetry, exported over OTLP/gRPC when an
//!   endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), off otherwise.
//!   Spans always get W3C trace ids, so the trace context crosses services
//!   (see [`propagation`]) and shows in logs even without export.
//!
//! Never put a personal value in a span or a metric attribute: identifiers of
//! records and agents, codes and counts only.

pub mod metrics;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tokio::runtime::Handle;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of the exported telemetry (`OTEL_SERVICE_NAME` wins).
    pub service_name: String,
    pub format: Format,
    /// Used when `RUST_LOG` is not set.
    pub default_filter: String,
    /// OTLP/gRPC collector; `None` turns export off.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed.
    pub metrics_interval: Duration,
}

impl TelemetryConfig {
    /// Reads the standard OpenTelemetry variables.
    pub fn from_env(service_name: &str, format: Format, default_filter: &str) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        TelemetryConfig {
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.to_owned()),
            format,
            default_filter: default_filter.to_owned(),
            otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
            metrics_interval: Duration::from_secs(30),
        }
    }
}

/// Flushes and stops the exporters when the process ends.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Pushes what is buffered now (tests, and before a planned stop). It
    /// blocks: call it from a blocking thread in async code.
    pub fn force_flush(&self) {
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
        }
        if let Some(m) = &self.meter {
            let _ = m.force_flush();
        }
    }

    /// Flushes and stops, off the async worker threads (exports need them).
    pub async fn shutdown(mut self) {
        let (tracer, meter) = (self.tracer.take(), self.meter.take());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(t) = tracer {
                let _ = t.shutdown();
            }
            if let Some(m) = meter {
                let _ = m.shutdown();
            }
        })
        .await;
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
    }
}

/// Installs logging, tracing and metrics. The first call in a process wins;
/// later calls return an empty guard.
pub fn init(config: TelemetryConfig) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let runtime = Handle::try_current().ok();

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter = None;
    let mut exporting = false;
    match (&config.otlp_endpoint, &runtime) {
        (Some(endpoint), Some(handle)) => {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
            {
                Ok(exporter) => {
                    exporting = true;
                    tracer_builder = tracer_builder.with_batch_exporter(OnRuntime {
                        inner: exporter,
                        handle: handle.clone(),
                    })
                }
                Err(e) => eprintln!("OTLP trace exporter not started: {e}"),
            }
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
            {
                Ok(exporter) => {
                    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(OnRuntime {
                        inner: exporter,
                        handle: handle.clone(),
                    })
                    .with_interval(config.metrics_interval)
                    .build();
                    let provider = SdkMeterProvider::builder()
                        .with_resource(resource)
                        .with_reader(reader)
                        .build();
                    opentelemetry::global::set_meter_provider(provider.clone());
                    meter = Some(provider);
                }
                Err(e) => eprintln!("OTLP metric exporter not started: {e}"),
            }
        }
        (Some(_), None) => eprintln!("OTLP export needs a Tokio runtime; telemetry stays local"),
        (None, _) => {}
    }
    let tracer_provider = tracer_builder.build();
    let tracer = tracer_provider.tracer("passerelle");
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    let logs = match config.format {
        Format::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        Format::Text => fmt::layer().compact().with_writer(std::io::stderr).boxed(),
    };
    // Logs follow RUST_LOG; traces keep every INFO span of ours, whatever the
    // log level, and leave out the transport crates' internals.
    let traces =
        EnvFilter::new("info,h2=off,hyper=off,hyper_util=off,tower=off,tonic=off,sqlx=off");
    // Without an exporter, spans would be built for nobody (~5% of a
    // request's time): the layer is only there when traces leave.
    let otel = exporting.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(traces)
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init();
    match installed {
        Ok(()) => TelemetryGuard {
            tracer: Some(tracer_provider),
            meter,
        },
        // Someone else set the global subscriber first (tests): keep theirs.
        Err(_) => TelemetryGuard::default(),
    }
}

/// Runs an exporter's calls on the service's Tokio runtime: the SDK calls
/// exporters from its own threads, where tonic finds no reactor.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    handle: Handle,
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match Handle::try_current() {
            Ok(_) => self.inner.export(batch).await,
            Err(_) => self.handle.block_on(self.inner.export(batch)),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        match Handle::try_current() {
            Ok(_) => self.inner.export(metrics).await,
            Err(_) => self.handle.block_on(self.inner.export(metrics)),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
