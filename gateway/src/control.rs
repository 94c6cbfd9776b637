//! `strait run --role control`: the cluster's CA service on 15012 (gRPC over mesh TLS:
//! certificates from CSRs, the trust bundle stream), with the same health, metrics and admin
//! endpoints as the other roles.
//!
//! It loads the CA that `strait ca init` left in `DATA/ca` (and says so when there is none),
//! issues its own SVID, and serves until SIGTERM or SIGINT. It follows `DATA/ca` while it runs:
//! roots added or removed (`strait ca rotate prepare|finish`) are published to the proxies, and
//! a new signing intermediate (`strait ca rotate switch`) issues from the next request on, with
//! no restart; then readiness fails for the drain
//! period while the service still answers, the service stops accepting, and open calls (bundle
//! streams end at once) get up to the drain timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use strait_certs::authority::files;
use strait_certs::service::{CaServer, CaServerOptions};
use strait_proxy::telemetry::Telemetry;
use strait_proxy::telemetry::access_log::AccessLog;
use strait_proxy::telemetry::metrics::Metrics;
use strait_proxy::{Proxy, ProxyOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{self, AdminState, Endpoints};
use crate::args::parse_duration;
use crate::logging::Logging;
use crate::run::LogFormat;

/// The flags of the control role.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Control role: where the CA service (gRPC over mesh TLS) listens.
    #[arg(long, default_value = "0.0.0.0:15012")]
    ca_listen: SocketAddr,
    /// Control role: the lifetime of the workload certificates the CA service issues when none
    /// is asked for, and the longest it grants; the CA's own default when unset.
    #[arg(long, value_parser = parse_duration)]
    workload_ttl: Option<Duration>,
    /// Control role: how often the federated bundle folder (`DATA/ca/federated`) is read.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    federated_poll_interval: Duration,
}

/// What the control role takes from `strait run`'s flags.
#[derive(Debug)]
pub struct Settings {
    pub control: ControlArgs,
    pub data: PathBuf,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    pub drain_period: Duration,
    pub drain_timeout: Duration,
    pub worker_threads: Option<u16>,
}

pub fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let logging = Logging::init(settings.log_format, &settings.log_level)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = settings.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(serve(settings, logging));
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn serve(settings: Settings, logging: Logging) -> anyhow::Result<ExitCode> {
    let dir = settings.data.join("ca");
    if !dir.join(files::AUTHORITY).exists() {
        bail!(
            "no CA in {}: create one first with `strait ca init --data {} --trust-domain TD`",
            dir.display(),
            settings.data.display()
        );
    }
    let authority = strait_certs::Authority::load(&dir)
        .with_context(|| format!("loading the CA in {}", dir.display()))?;
    let trust_domain = authority.trust_domain().clone();
    let mut options = CaServerOptions::new(&dir);
    options.workload_ttl = settings.control.workload_ttl;
    options.poll_interval = settings.control.federated_poll_interval;
    let server = CaServer::new(authority, options).context("starting the CA service")?;
    let server_id = server.server_id().clone();
    let listener = TcpListener::bind(settings.control.ca_listen)
        .await
        .with_context(|| format!("binding the CA service on {}", settings.control.ca_listen))?;
    let address = listener.local_addr().unwrap_or(settings.control.ca_listen);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    tracing::info!(%address, %trust_domain, identity = %server_id, "CA service listening");

    // The endpoints report on a proxy that carries no traffic in this role.
    let state = Arc::new(AdminState {
        proxy: Arc::new(Proxy::new(
            Telemetry::new(AccessLog::disabled(), Metrics::new(Vec::new())),
            ProxyOptions::default(),
        )),
        ready: true.into(),
        set_log_level: logging.setter(),
        status: None,
    });
    for (endpoints, address) in [
        (Endpoints::Admin, settings.admin),
        (Endpoints::Metrics, settings.metrics),
        (Endpoints::Health, settings.health),
    ] {
        let bound = admin::start(endpoints, address, state.clone()).await?;
        tracing::info!(?endpoints, address = %bound, "endpoint ready");
    }

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        result = &mut serving => {
            return match result {
                Ok(Ok(())) => bail!("the CA service stopped"),
                Ok(Err(error)) => Err(error).context("the CA service failed"),
                Err(error) => Err(error).context("the CA service task failed"),
            };
        }
    }
    tracing::info!(period = ?settings.drain_period, "draining");
    state.ready.store(false, Ordering::Relaxed);
    tokio::time::sleep(settings.drain_period).await;
    let _ = stop.send(());
    match tokio::time::timeout(settings.drain_timeout, serving).await {
        Ok(Ok(Ok(()))) => tracing::info!("drained"),
        Ok(Ok(Err(error))) => tracing::error!("the CA service failed while draining: {error}"),
        Ok(Err(error)) => tracing::error!("the CA service task failed: {error}"),
        Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
    }
    Ok(ExitCode::SUCCESS)
}
