//! `strait run --role ingress|egress|eastwest|sidecar`: the proxy process and its lifecycle.
//!
//! Start: open the state under `--data` (the store of DNS answers and the last-known-good
//! snapshot, see `last_good`), read the configuration directory, compile the snapshot (or,
//! when the configuration source is unavailable or compiles to nothing, take the
//! last-known-good one), bind its listeners and the admin, metrics and health endpoints. Then,
//! until a signal: re-read when the configuration or the credentials change (`watch`: file
//! notifications and a slow poll, then debounced) or on SIGHUP, and install the new snapshot
//! without restarting unchanged listeners (`reload`: a configuration source that became
//! unavailable leaves the snapshot in force, and says so; a rejected object keeps its last good
//! version and a snapshot that cannot be installed leaves the running one in place). SIGTERM
//! (or SIGINT) drains:
//! readiness fails, connections are asked to close (`Connection: close`, GOAWAY) for the drain
//! period while listeners still accept, then listeners stop and in-flight work gets up to the
//! drain timeout; an east-west gateway then closes its QUIC trunks with a reason its peers see
//! at once; the process exits 0.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use strait_discovery::compile::{EgressOptions, GatewayOptions};
use strait_discovery::dns::{DnsCache, DnsOptions, run_resolver};
use strait_discovery::dns_proxy::{DnsProxy, DnsProxyOptions, SharedNames};
use strait_discovery::resources::LoadOptions;
use strait_discovery::source::DirectorySource;
use strait_discovery::validation::ValidateOptions;
use strait_proxy::telemetry::Telemetry;
use strait_proxy::telemetry::access_log::{AccessLog, AccessLogFormat, AccessLogTarget};
use strait_proxy::telemetry::metrics::Metrics;
use strait_proxy::tls::mesh::MeshIdentity;
use strait_proxy::{Proxy, ProxyOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{self, AdminState, Endpoints};
use crate::args::{parse_duration, parse_labels, parse_port_map};
use crate::identity::IdentityArgs;
use crate::last_good::{LastGoodWriter, Restored, ServingStatus};
use crate::logging::Logging;
use crate::reload::{Reloader, Target};
use crate::sidecar;
use crate::watch::ConfigWatch;

#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The role this process plays.
    #[arg(long, value_enum)]
    role: Role,
    /// Configuration files and directories (Istio YAML), watched for changes (every role but
    /// control).
    #[arg(long)]
    config: Vec<PathBuf>,
    /// The proxy's labels: a gateway serves the Gateways whose selector they satisfy
    /// (default `istio=ingressgateway`, `istio=egressgateway` for the egress role,
    /// `istio=eastwestgateway` for the east-west role); a sidecar's are its workload's.
    #[arg(long, value_name = "K=V,...")]
    labels: Option<String>,
    /// The network the proxy is on (Istio's `ISTIO_META_NETWORK`): endpoints on other networks
    /// are reached through their MeshNetworks gateways; an east-west gateway forwards only to
    /// endpoints on it. None: the same network as every endpoint.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// The proxy's locality (Istio's node locality): with outlier detection, locality load
    /// balancing prefers endpoints that share its region, zone and subzone.
    #[arg(long, value_name = "REGION/ZONE/SUBZONE")]
    locality: Option<String>,
    /// The gateway's namespace (DestinationRule lookup, `.` in server hosts).
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// The namespace of configuration objects that name none.
    #[arg(long, default_value = "default")]
    config_namespace: String,
    /// The suffix short host names resolve under.
    #[arg(long, default_value = "cluster.local")]
    domain_suffix: String,
    /// The credential store: a folder per `credentialName` holding tls.crt, tls.key, ca.crt.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Where Strait keeps its state.
    #[arg(long, default_value = ".strait")]
    data: PathBuf,
    /// The admin endpoint (config_dump, proxy-config); keep it on localhost.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Prometheus metrics (/stats/prometheus).
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics: SocketAddr,
    /// The readiness probe (/healthz/ready).
    #[arg(long, default_value = "0.0.0.0:15021")]
    health: SocketAddr,
    /// The address Gateway servers bind, unless a server sets `bind`.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Bind a server port elsewhere, as a Service maps port to targetPort (repeatable).
    #[arg(long = "port", value_name = "SERVER_PORT=LISTEN_PORT")]
    ports: Vec<String>,
    /// The access log's format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    access_log_format: LogFormat,
    /// Write the access log to this file instead of standard output; `off` disables it.
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// The format of the program's own log (standard error).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The program's log filter (tracing's `EnvFilter` syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// After SIGTERM: how long to keep serving (and accepting) while asking clients to go.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    drain_period: Duration,
    /// After the drain period: how long in-flight requests get to finish.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// Changes to the configuration and credentials are noticed by file notifications; this
    /// poll catches what notifications miss.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    watch_interval: Duration,
    /// A DNS server `resolution: DNS` hosts are resolved with, and the sidecar's DNS proxy
    /// forwards to, as HOST:PORT (repeatable); none: the servers of /etc/resolv.conf.
    #[arg(long = "dns-server", value_name = "HOST:PORT")]
    dns_servers: Vec<std::net::SocketAddr>,
    /// Overrides MeshConfig `dnsRefreshRate` (default 60s): the least time between two lookups
    /// of a name. Lower values are for tests.
    #[arg(long, value_parser = parse_duration)]
    dns_refresh_rate: Option<Duration>,
    /// How long a name that resolved before may answer NXDOMAIN before its endpoints go.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    dns_nxdomain_grace: Duration,
    /// How long a change must settle before it is read.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    reload_debounce: Duration,
    /// Do not watch the configuration: read it again only on SIGHUP.
    #[arg(long)]
    no_watch: bool,
    /// Proxies in front whose X-Forwarded-For entries are trusted (`numTrustedProxies`).
    #[arg(long, default_value_t = 0)]
    trusted_hops: u32,
    /// The most request header bytes (HTTP/1.1) or header list bytes (HTTP/2) accepted; at
    /// least 8192, the smallest buffer the HTTP/1.1 server reads headers into.
    #[arg(long, default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..))]
    max_request_header_bytes: u32,
    /// How long a client may take to send its request headers: those of the first request on
    /// any connection, and of every request on HTTP/1.1.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    header_read_timeout: Duration,
    /// How long an HTTP/2 client may send nothing before it is sent a PING.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    http2_keepalive_interval: Duration,
    /// How long an HTTP/2 client has to answer a PING before its connection is closed.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    http2_keepalive_timeout: Duration,
    /// How often a JWKS fetched from a RequestAuthentication's `jwksUri` is fetched again
    /// (Istio's default: 20 minutes).
    #[arg(long, value_parser = parse_duration, default_value = "20m")]
    jwks_refresh_interval: Duration,
    /// How long a client on a TLS server may take to send its ClientHello and finish the
    /// handshake.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    client_hello_timeout: Duration,
    /// The workload name this gateway reports in metrics (`source_workload`); by default
    /// `strait-ingressgateway`, `strait-egressgateway` or `strait-eastwestgateway`.
    #[arg(long)]
    workload_name: Option<String>,
    /// How many threads serve traffic (the async runtime's workers); the number of CPUs when
    /// unset (reading and compiling configuration run on blocking threads).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Set this `SO_MARK` on every connection to an endpoint, so that capture rules
    /// (`strait capture install --mark`) leave the proxy's own traffic alone. Needs
    /// CAP_NET_ADMIN; the alternative is running the proxy as the excluded uid.
    #[arg(long, value_name = "MARK")]
    socket_mark: Option<u32>,
    #[command(flatten)]
    sidecar: sidecar::SidecarArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    control: crate::control::ControlArgs,
    #[command(flatten)]
    eastwest: crate::eastwest::EastwestArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Ingress,
    Egress,
    Eastwest,
    Sidecar,
    Control,
}

impl Role {
    /// The role's name, as the last-known-good file records it.
    fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Egress => "egress",
            Role::Eastwest => "eastwest",
            Role::Sidecar => "sidecar",
            Role::Control => "control",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.role == Role::Control {
        return crate::control::run(crate::control::Settings {
            control: args.control,
            data: args.data,
            admin: args.admin,
            metrics: args.metrics,
            health: args.health,
            log_format: args.log_format,
            log_level: args.log_level,
            drain_period: args.drain_period,
            drain_timeout: args.drain_timeout,
            worker_threads: args.worker_threads,
        });
    }
    if args.config.is_empty() {
        bail!("--config is required for --role {:?}", args.role);
    }
    let logging = Logging::init(args.log_format, &args.log_level)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(serve(args, logging));
    // Pending access log lines are written before the process exits.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

pub(crate) async fn serve(args: Args, logging: Logging) -> anyhow::Result<ExitCode> {
    let default_labels = match args.role {
        Role::Sidecar => "",
        Role::Egress => "istio=egressgateway",
        Role::Eastwest => "istio=eastwestgateway",
        _ => "istio=ingressgateway",
    };
    let labels = parse_labels("--labels", args.labels.as_deref().unwrap_or(default_labels))?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    // State first: DNS answers must be in the cache before the first compilation.
    let restored = Restored::open(&args.data, args.role.name());
    let dns = restored.dns_cache();
    let status = Arc::new(ServingStatus::new(restored.problems.clone(), dns.clone()));
    let writer = LastGoodWriter::start(
        restored.file.clone(),
        args.role.name().to_owned(),
        status.clone(),
    );
    let (target, mesh) = target(&args, &labels, &dns).await?;
    let source = DirectorySource::new(
        args.config.clone(),
        LoadOptions {
            default_namespace: args.config_namespace.clone(),
        },
        ValidateOptions {
            domain_suffix: args.domain_suffix.clone(),
            gateway_labels: vec![labels.clone()],
        },
    );
    let proxy = Arc::new(Proxy::new(
        telemetry(&args, &labels, mesh.as_ref(), &dns)?,
        proxy_options(&args, mesh.clone()),
    ));

    let mut watched = args.config.clone();
    watched.extend(args.credentials.iter().cloned());
    watched.extend(args.identity.identity_dir.iter().cloned());
    let mut watch = (!args.no_watch)
        .then(|| ConfigWatch::new(watched, args.watch_interval, args.reload_debounce));
    let dns_options = DnsOptions {
        servers: args.dns_servers.clone(),
        refresh_rate: args.dns_refresh_rate,
        nxdomain_grace: args.dns_nxdomain_grace,
        socket_mark: args.socket_mark,
    };
    let resolver_cache = dns.clone();
    tokio::spawn(async move {
        if let Err(error) = run_resolver(resolver_cache, dns_options).await {
            tracing::error!("{error}; DNS names in the configuration get no endpoints");
        }
    });
    let names = SharedNames::default();
    let dns_proxy = match args.role {
        Role::Sidecar => start_dns_proxy(&args, &names).await?,
        _ => None,
    };
    let remote_networks = tokio::sync::watch::Sender::new(Arc::default());
    let federation_view = tokio::sync::watch::Sender::new(Arc::default());
    let mut reloader = Reloader {
        remote_networks: remote_networks.clone(),
        federation_view: federation_view.clone(),
        proxy: proxy.clone(),
        target,
        version: 0,
        last_findings: Vec::new(),
        objects: Arc::default(),
        read_findings: Vec::new(),
        names,
        source: Arc::new(std::sync::Mutex::new(source)),
        config_paths: args.config.clone(),
        source_unavailable: false,
        last_good: restored.last_good,
        status: status.clone(),
        writer,
    };
    reloader
        .reload()
        .await
        .context("serving the initial configuration")?;
    if let Some(dns_proxy) = dns_proxy {
        tokio::spawn(dns_proxy.run());
    }
    status.log_restored_dns();
    let mut federation = None;
    if args.role == Role::Eastwest {
        let context = |mesh, store| crate::trunk::TrunkContext {
            mesh,
            proxy: proxy.clone(),
            store,
            network: args.network.clone(),
            remote_networks: remote_networks.subscribe(),
        };
        federation = crate::eastwest::start(
            &args.eastwest,
            &args.data,
            mesh.as_ref(),
            args.network.clone(),
            federation_view.subscribe(),
            status.clone(),
            context,
        )
        .await?;
    }

    let state = Arc::new(AdminState {
        proxy: proxy.clone(),
        ready: true.into(),
        set_log_level: logging.setter(),
        status: Some(status),
    });
    for (endpoints, address) in [
        (Endpoints::Admin, args.admin),
        (Endpoints::Metrics, args.metrics),
        (Endpoints::Health, args.health),
    ] {
        let bound = admin::start(endpoints, address, state.clone()).await?;
        tracing::info!(?endpoints, address = %bound, "endpoint ready");
    }
    for (name, address) in proxy.listening() {
        tracing::info!(listener = %name, %address, "listening");
    }

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again");
                if let Some(watch) = &mut watch {
                    watch.mark_seen();
                }
                refresh_identity(&args, mesh.as_ref());
                if let Err(error) = reloader.reload().await {
                    tracing::error!("{error:#}");
                }
            }
            () = dns.changed() => {
                // A DNS answer changed: the configuration last read is compiled again with
                // the new endpoints (nothing is read); clusters keep the live state of
                // endpoints whose address stays, and unchanged listeners are not touched.
                if let Err(error) = reloader.recompile().await {
                    tracing::error!("{error:#}");
                }
            }
            () = changed(&mut watch) => {
                refresh_identity(&args, mesh.as_ref());
                if let Err(error) = reloader.reload().await {
                    tracing::error!("{error:#}");
                }
            }
        }
    }
    drain(&proxy, &state, args.drain_period, args.drain_timeout).await;
    if let Some(federation) = federation {
        federation.shut_down().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the configuration is compiled for, and the proxy's mesh identity: a sidecar always has
/// one; a gateway has one when `--identity-dir` or `--ca-address` gives it (it then terminates
/// ISTIO_MUTUAL servers and originates mesh mTLS).
async fn target(
    args: &Args,
    labels: &BTreeMap<String, String>,
    dns: &DnsCache,
) -> anyhow::Result<(Target, Option<MeshIdentity>)> {
    let ports = args
        .ports
        .iter()
        .map(|p| parse_port_map(p))
        .collect::<anyhow::Result<BTreeMap<u32, u16>>>()?;
    Ok(match args.role {
        Role::Sidecar => {
            let workload = args.sidecar.workload()?;
            let mesh = args
                .identity
                .identity(&workload.namespace, args.socket_mark)
                .await?;
            let mut options = args.sidecar.options(
                &workload,
                labels.clone(),
                &args.domain_suffix,
                &args.identity.service_account,
            );
            options.dns = dns.clone();
            options.network = args.network.clone();
            options.locality = args.locality.clone();
            (Target::Sidecar(options), Some(mesh))
        }
        _ => {
            // A gateway with an identity terminates ISTIO_MUTUAL servers and originates mesh
            // mTLS; without one it serves the rest.
            let mesh = if args.identity.configured() {
                Some(
                    args.identity
                        .identity(&args.namespace, args.socket_mark)
                        .await?,
                )
            } else {
                None
            };
            let target = Target::Gateway(GatewayOptions {
                labels: labels.clone(),
                namespace: args.namespace.clone(),
                domain_suffix: args.domain_suffix.clone(),
                credentials: args.credentials.clone(),
                bind: args.bind,
                ports,
                last_good: Default::default(),
                mesh_identity: mesh.is_some(),
                dns: dns.clone(),
                egress: (args.role == Role::Egress).then(|| EgressOptions {
                    own_ips: args.sidecar.instance_ip.into_iter().collect(),
                }),
                network: args.network.clone(),
                locality: args.locality.clone(),
                eastwest: args.role == Role::Eastwest,
            });
            (target, mesh)
        }
    })
}

/// Binds the sidecar's DNS proxy (unless `--dns-proxy off`); it serves once spawned.
async fn start_dns_proxy(args: &Args, names: &SharedNames) -> anyhow::Result<Option<DnsProxy>> {
    let Some(listen) = args.sidecar.dns_proxy()? else {
        return Ok(None);
    };
    let options = DnsProxyOptions {
        listen,
        upstreams: args.dns_servers.clone(),
        socket_mark: args.socket_mark,
        timeout: Duration::from_secs(5),
    };
    let proxy = DnsProxy::bind(&options, names.clone()).await?;
    tracing::info!(
        address = %proxy.local_addr().unwrap_or(listen),
        upstreams = ?proxy.upstreams(),
        "DNS proxy ready"
    );
    Ok(Some(proxy))
}

/// Reads the identity files again; a bad file keeps the identity in force.
fn refresh_identity(args: &Args, mesh: Option<&MeshIdentity>) {
    if let Some(mesh) = mesh
        && let Err(error) = args.identity.refresh(mesh)
    {
        tracing::error!("{error:#}; the current identity stays in force");
    }
}

/// The next settled change, or never when watching is off.
async fn changed(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Readiness fails, clients are asked to go, listeners stop after the drain period, and
/// in-flight work gets up to the drain timeout.
async fn drain(proxy: &Proxy, state: &AdminState, period: Duration, timeout: Duration) {
    tracing::info!(?period, ?timeout, "draining");
    state.ready.store(false, Ordering::Relaxed);
    proxy.drain();
    tokio::time::sleep(period).await;
    proxy.stop_accepting();
    if tokio::time::timeout(timeout, proxy.idle()).await.is_err() {
        tracing::warn!(
            open = proxy.open_connections(),
            "drain timeout reached; closing the remaining connections"
        );
    } else {
        tracing::info!("drained");
    }
}

fn telemetry(
    args: &Args,
    labels: &BTreeMap<String, String>,
    mesh: Option<&MeshIdentity>,
    dns: &DnsCache,
) -> anyhow::Result<Telemetry> {
    let format = match args.access_log_format {
        LogFormat::Text => AccessLogFormat::Text,
        LogFormat::Json => AccessLogFormat::Json,
    };
    let access_log = match &args.access_log {
        Some(path) if path.as_os_str() == "off" => AccessLog::disabled(),
        Some(path) => AccessLog::start(AccessLogTarget::File(path.clone()), format)
            .with_context(|| format!("opening the access log {}", path.display()))?,
        None => {
            AccessLog::start(AccessLogTarget::Stdout, format).context("starting the access log")?
        }
    };
    let (workload, namespace) = match args.sidecar.workload() {
        Ok(workload) if args.role == Role::Sidecar => (workload.name, workload.namespace),
        _ => (gateway_workload_name(args), args.namespace.clone()),
    };
    let principal = mesh
        .and_then(|m| m.cell.current())
        .map_or_else(|| "unknown".to_owned(), |svid| svid.id().to_string());
    let app = labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| workload.clone());
    let metrics = Metrics::new(vec![
        ("reporter".to_owned(), "source".to_owned()),
        ("source_workload".to_owned(), workload),
        ("source_workload_namespace".to_owned(), namespace),
        ("source_principal".to_owned(), principal),
        ("source_app".to_owned(), app),
        ("source_version".to_owned(), "unknown".to_owned()),
        ("source_cluster".to_owned(), "unknown".to_owned()),
    ]);
    metrics.register_counter(
        "strait_dns_lookup_failures",
        "DNS lookups of ServiceEntry hosts that failed (timeout, SERVFAIL, no server); the last answer stays",
        dns.failures(),
    );
    Ok(Telemetry::new(access_log, metrics))
}

/// The workload name a gateway reports: `--workload-name`, else its role's default.
fn gateway_workload_name(args: &Args) -> String {
    match (&args.workload_name, args.role) {
        (Some(name), _) => name.clone(),
        (None, Role::Egress) => "strait-egressgateway".to_owned(),
        (None, Role::Eastwest) => "strait-eastwestgateway".to_owned(),
        (None, _) => "strait-ingressgateway".to_owned(),
    }
}

fn proxy_options(args: &Args, mesh: Option<MeshIdentity>) -> ProxyOptions {
    ProxyOptions {
        trusted_hops: args.trusted_hops,
        header_read_timeout: args.header_read_timeout,
        client_hello_timeout: args.client_hello_timeout,
        http2_keepalive_interval: args.http2_keepalive_interval,
        http2_keepalive_timeout: args.http2_keepalive_timeout,
        max_header_bytes: args.max_request_header_bytes as usize,
        max_header_list_bytes: args.max_request_header_bytes,
        socket_mark: args.socket_mark,
        mesh,
        jwks_refresh_interval: args.jwks_refresh_interval,
    }
}
