//! The `main` of every service binary: configuration, logs, listen, serve
//! until SIGTERM, drain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use clap::Parser;
use passerelle_domain::{Clock, Institution, SystemClock};
use tokio::net::TcpListener;

use crate::config::ServiceConfig;
use crate::server::{ServiceHandle, termination_signal};
use crate::simulated_clock::SimulatedClock;

#[derive(Debug, Parser)]
#[command(
    about = "A Passerelle service. Settings: defaults, then --config FILE, then PASSERELLE_* variables."
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "PASSERELLE_CONFIG")]
    config: Option<PathBuf>,
    /// Load and check the configuration, print it (secrets redacted), and exit.
    #[arg(long)]
    check_config: bool,
}

pub type Start = fn(
    ServiceConfig,
    TcpListener,
    Arc<dyn Clock>,
) -> Pin<Box<dyn Future<Output = anyhow::Result<ServiceHandle>> + Send>>;

pub async fn run(institution: Institution, start: Start) -> anyhow::Result<()> {
    run_with_args(institution, start, std::env::args_os()).await
}

/// The same, with the arguments given (`passerelle serve` runs a service so).
pub async fn run_with_args(
    institution: Institution,
    start: Start,
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> anyhow::Result<()> {
    let args = Args::parse_from(args);
    if args.check_config {
        let config = ServiceConfig::load(institution, args.config.as_deref())?;
        #[allow(clippy::print_stdout)]
        {
            println!("{config:#?}");
        }
        return Ok(());
    }
    let telemetry = passerelle_telemetry::init(passerelle_telemetry::TelemetryConfig::from_env(
        &format!("passerelle-{}", institution.code()),
        passerelle_telemetry::Format::Json,
        "info",
    ));
    let config = ServiceConfig::load(institution, args.config.as_deref())?;
    tracing::info!(?config, "starting");
    let listener = TcpListener::bind(config.listen).await?;
    let clock: Arc<dyn Clock> = match &config.simulated_clock_file {
        Some(file) => {
            tracing::warn!(file = %file.display(), "simulated clock: for replays and fault tests only");
            Arc::new(SimulatedClock::open(file)?)
        }
        None => Arc::new(SystemClock),
    };
    let handle = start(config, listener, clock).await?;
    termination_signal().await;
    tracing::info!("termination requested; draining");
    let stopped = handle.shutdown().await;
    telemetry.shutdown().await;
    stopped
}
