//! `strait federation`: the trust exchange on its own, before the east-west role carries it.
//!
//! `serve-bundle` serves the local trust domain's bundle on the SPIFFE bundle endpoint
//! (`https_spiffe`, 15446) with an SVID from `--identity-dir` (as `strait ca issue` writes it).
//! The bundle is the CA's in `DATA/ca` ([`published_trust_bundle`]: a new root there raises the
//! sequence), and both it and the identity files are read again every `--watch-interval`, so a
//! rotation or a reissued certificate is served without a restart.
//!
//! `poll` follows every peer in `DATA/peers` at its refresh hint and stores each accepted bundle
//! (also in `DATA/ca/federated`, for the CA service's stream); SIGHUP asks for an early refresh
//! of every peer (rate-limited, as the east-west gateway's unknown-issuer errors do); `--once`
//! polls each peer once and says what happened.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strait_certs::{
    IdentityCell, Svid, TrustBundle, TrustBundleSet, bundle_endpoint_server_config,
    published_trust_bundle,
};
use strait_federation::bundle_endpoint::{BundleEndpoint, serve};
use strait_federation::bundle_poller::{BundlePoller, PollOutcome, PollerOptions, poll_all_once};
use strait_federation::peer_store::PeerStore;
use strait_federation::peer_watch::{PeerList, PeerWatch};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::args::parse_duration;
use crate::logging::Logging;
use crate::run::LogFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Where Strait keeps its state (`ca`, `peers`).
    #[arg(long, global = true, default_value = ".strait")]
    data: PathBuf,
    /// The log's format on standard error.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The log filter (`info`, `debug`, `strait_federation=debug`, ...).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the local trust domain's bundle on the SPIFFE bundle endpoint (https_spiffe).
    ServeBundle {
        /// Where the bundle endpoint listens.
        #[arg(long, default_value = "0.0.0.0:15446")]
        listen: SocketAddr,
        /// The endpoint's SVID: a folder with `key.pem` and `cert-chain.pem`.
        #[arg(long, value_name = "DIR")]
        identity_dir: PathBuf,
        /// The `spiffe_refresh_hint` announced; the CA's (5m by default) when unset.
        #[arg(long, value_parser = parse_duration)]
        refresh_hint: Option<Duration>,
        /// How often the CA's roots and the identity files are read again.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        watch_interval: Duration,
    },
    /// Follow the peers' bundle endpoints and store their bundles.
    Poll {
        /// Poll each peer once, print what happened and exit (1 when any failed or was
        /// refused).
        #[arg(long)]
        once: bool,
        /// The shortest interval between polls of a peer, whatever its refresh hint.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        min_refresh: Duration,
        /// The longest interval between polls of a peer.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        max_refresh: Duration,
        /// The first retry after a failed fetch (doubled on each further failure).
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        retry: Duration,
        /// How long one fetch may take.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        fetch_timeout: Duration,
        /// How often `DATA/peers` is read again for added and removed peers.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        rescan_interval: Duration,
        /// The least time between two early refreshes of one peer (SIGHUP asks for one).
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        nudge_interval: Duration,
    },
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let _logging = Logging::init(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match &args.command {
        Command::ServeBundle {
            listen,
            identity_dir,
            refresh_hint,
            watch_interval,
        } => runtime.block_on(serve_bundle(
            &args.data,
            *listen,
            identity_dir,
            *refresh_hint,
            *watch_interval,
        )),
        Command::Poll {
            once,
            min_refresh,
            max_refresh,
            retry,
            fetch_timeout,
            rescan_interval,
            nudge_interval,
        } => {
            let options = PollerOptions {
                min_interval: *min_refresh,
                max_interval: *max_refresh,
                retry_initial: *retry,
                fetch_timeout: *fetch_timeout,
                rescan_interval: *rescan_interval,
                nudge_interval: *nudge_interval,
                ..PollerOptions::default()
            };
            runtime.block_on(poll(&args.data, options, *once))
        }
    }
}

async fn serve_bundle(
    data: &Path,
    listen: SocketAddr,
    identity_dir: &Path,
    refresh_hint: Option<Duration>,
    watch_interval: Duration,
) -> Result<ExitCode> {
    let ca_dir = data.join("ca");
    let bundle = published_trust_bundle(&ca_dir)
        .with_context(|| format!("reading the CA's bundle in {}", ca_dir.display()))?;
    let trust_domain = bundle.trust_domain.clone();
    let svid = read_identity(identity_dir)?;
    if svid.id().trust_domain() != trust_domain {
        bail!(
            "the identity in {} is {}, not of the CA's trust domain {trust_domain}: the endpoint serves its own trust domain's bundle",
            identity_dir.display(),
            svid.id()
        );
    }
    let announce = format!(
        "{} as {} (bundle sequence {})",
        trust_domain,
        svid.id(),
        bundle.sequence
    );
    let cell = Arc::new(IdentityCell::new(svid));
    let source = TrustBundleSet::from_bundles([bundle])
        .context("the CA's bundle")?
        .into_shared();
    let endpoint = BundleEndpoint {
        source: source.clone(),
        trust_domain,
        refresh_hint,
    };
    let serving =
        bind_bundle_endpoint(listen, cell.clone(), announce, endpoint, shutdown_signal()?).await?;
    let identity_dir = identity_dir.to_path_buf();
    let watch = tokio::spawn(async move {
        let mut tick = tokio::time::interval(watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            refresh_bundle(&ca_dir, &source);
            match read_identity(&identity_dir) {
                Ok(svid) if cell.current().is_none_or(|c| c.leaf() != svid.leaf()) => {
                    tracing::info!(identity = %svid.id(), "bundle endpoint: installing a new certificate");
                    cell.install(svid);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    "bundle endpoint: the identity cannot be read ({error:#}); keeping the current one"
                ),
            }
        }
    });
    serving.await;
    watch.abort();
    tracing::info!("bundle endpoint stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the SPIFFE bundle endpoint on `listen`, presenting the SVID in `cell`, and returns
/// it serving `endpoint` until `shutdown` completes; `announce` says what it serves in the log.
pub(crate) async fn bind_bundle_endpoint(
    listen: SocketAddr,
    cell: Arc<IdentityCell>,
    announce: String,
    endpoint: BundleEndpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<impl Future<Output = ()>> {
    let tls = Arc::new(bundle_endpoint_server_config(cell)?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the bundle endpoint on {listen}"))?;
    tracing::info!(%listen, "bundle endpoint serving {announce}");
    Ok(serve(listener, tls, endpoint, shutdown))
}

/// Serves the CA's roots as they are now, with the sequence the CA directory records.
fn refresh_bundle(ca_dir: &Path, source: &strait_certs::SharedBundles) {
    let bundle: TrustBundle = match published_trust_bundle(ca_dir) {
        Ok(bundle) => bundle,
        Err(error) => {
            tracing::warn!(
                "bundle endpoint: the CA's roots cannot be read ({error}); serving the last good ones"
            );
            return;
        }
    };
    if source.load().get(&bundle.trust_domain) == Some(&bundle) {
        return;
    }
    let (sequence, roots) = (bundle.sequence, bundle.roots.len());
    match TrustBundleSet::from_bundles([bundle]) {
        Ok(set) => {
            source.store(Arc::new(set));
            tracing::info!(sequence, roots, "bundle endpoint: serving a new bundle");
        }
        Err(error) => tracing::warn!(
            "bundle endpoint: the CA's roots are unusable ({error}); serving the last good ones"
        ),
    }
}

fn read_identity(dir: &Path) -> Result<Svid> {
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    Svid::from_pem(&read("cert-chain.pem")?, &read("key.pem")?)
        .with_context(|| format!("the identity in {}", dir.display()))
}

async fn poll(data: &Path, options: PollerOptions, once: bool) -> Result<ExitCode> {
    let store = PeerStore::new(data);
    if once {
        let results = poll_all_once(&store, &options).await?;
        let mut ok = true;
        let mut out = String::new();
        for (name, result) in results {
            let line = match result {
                Ok(PollOutcome::Updated {
                    from,
                    to,
                    roots,
                    reset,
                }) => format!(
                    "{name}: bundle updated from sequence {from} to {to} ({roots} root(s)){}",
                    if reset {
                        ", under a sequence reset"
                    } else {
                        ""
                    }
                ),
                Ok(PollOutcome::Unchanged { sequence }) => {
                    format!("{name}: bundle unchanged at sequence {sequence}")
                }
                Ok(PollOutcome::Refused(refusal)) => {
                    ok = false;
                    format!("{name}: bundle refused: {refusal}")
                }
                Err(error) => {
                    ok = false;
                    format!("{name}: fetch failed: {error}")
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        crate::ca::emit(&out)?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    tracing::info!(peers = %store.peers_dir().display(), "polling the peers' bundle endpoints");
    let watch = PeerWatch::start(store.clone(), options.rescan_interval);
    let poller = BundlePoller::new(store, options);
    follow_peers(poller, watch.subscribe(), shutdown_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}

/// Has `poller` follow every peer `peers` publishes at its refresh hint until `shutdown`
/// completes; SIGHUP asks for an early refresh of every peer (rate-limited).
pub(crate) async fn follow_peers(
    poller: BundlePoller,
    peers: watch::Receiver<PeerList>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let nudges = poller.nudges();
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let listed = peers.clone();
    let early = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let peers = listed.borrow().clone();
            for stored in peers.iter() {
                let taken = nudges.nudge(&stored.peer.trust_domain);
                tracing::info!(
                    peer = %stored.peer.name, taken,
                    "SIGHUP: early refresh asked for (taken at most once per --nudge-interval)"
                );
            }
        }
    });
    poller.follow(peers, shutdown).await;
    early.abort();
    tracing::info!("bundle poller stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
