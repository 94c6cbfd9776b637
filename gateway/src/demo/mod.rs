//! `strait demo`: two clusters linked into one mesh, in this one process, on loopback.
//!
//! East (trust domain `east.mesh`, network `net-east`) runs an ingress gateway, `frontend`, a
//! standby copy of `reviews`, an egress gateway and an east-west gateway; west (`west.mesh`,
//! `net-west`) runs `reviews` and its east-west gateway, which exports it. Each cluster has its
//! own CA; the east-west gateways peer, exchange bundles, stream west's exports to east and
//! keep a QUIC trunk. Every proxy is the same `strait run` a real installation runs, on its own
//! loopback address (`clusters`), and every application is a small echo server (`workload`)
//! that shows who called it. Once a request has gone from the ingress gateway through
//! `frontend` to `reviews` in west, the demo prints the curl commands that show it, the
//! failover to east's standby when west's `reviews` is stopped (through the demo's console),
//! and egress allowed and refused. Ctrl-C stops everything.

mod clusters;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use http::StatusCode;
use tokio::task::JoinSet;
use tracing::Instrument;

use self::clusters::{EAST, Kind, PARTNER_API, PROXIES, WEST};
use self::workload::{Call, Reply, Workload, Workloads, answered_by, get};
use crate::args::parse_duration;
use crate::logging::Logging;

/// `strait demo`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the ingress gateway serves its port 80.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress: SocketAddr,
    /// The demo's console: `GET /` lists the workloads, `POST /workloads/CLUSTER/NAME/stop`
    /// (or `start`) stops or starts one.
    #[arg(long, default_value = "127.0.0.1:8081")]
    console: SocketAddr,
    /// A folder for the demo's state (CAs, identities, configuration, logs), kept after it
    /// stops; it must be empty or new. Unset: a temporary folder, removed when the demo stops
    /// (and kept when it fails, for its log).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// How long the mesh may take to answer end to end before the demo gives up.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    ready_timeout: Duration,
}

/// `strait run`'s flags, parsed from the command line each demo proxy is given.
#[derive(Debug, Parser)]
#[command(name = "strait")]
struct RunCommand {
    #[command(subcommand)]
    run: RunSubcommand,
}

#[derive(Debug, clap::Subcommand)]
enum RunSubcommand {
    Run(Box<crate::run::Args>),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => {
            let empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
                Err(error) => bail!("--dir {}: {error}", dir.display()),
            };
            if !empty {
                bail!(
                    "--dir {}: not empty (the demo starts from nothing: give a new or empty folder)",
                    dir.display()
                );
            }
            (dir.clone(), false)
        }
        None => {
            let dir = std::env::temp_dir().join(format!("strait-demo-{}", std::process::id()));
            // Left by an earlier process of the same id.
            let _ = std::fs::remove_dir_all(&dir);
            (dir, true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
    let result = prepare_and_serve(&args, &dir);
    // A demo that failed keeps its folder: the error names the log in it.
    if temporary && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn prepare_and_serve(args: &Args, dir: &Path) -> anyhow::Result<ExitCode> {
    clusters::prepare(dir)?;
    let logging = Logging::init_file("info", &clusters::logs_dir(dir).join("strait.log"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(serve(args, dir, logging));
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

async fn serve(args: &Args, dir: &Path, logging: Logging) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut workloads = Vec::new();
    for proxy in &PROXIES {
        if let Some((listen, via)) = proxy.application() {
            workloads.push(Workload::new(&proxy.name(), listen, via));
        }
    }
    workloads.push(Workload::new(
        "outside/api.partner.example",
        PARTNER_API,
        None,
    ));
    for workload in &workloads {
        workload.start().await?;
    }
    let workloads = Arc::new(Workloads(workloads));
    let console = tokio::net::TcpListener::bind(args.console)
        .await
        .with_context(|| format!("--console {}: binding", args.console))?;
    tokio::spawn(workload::serve_console(console, workloads.clone()));

    let mut proxies = JoinSet::new();
    for proxy in &PROXIES {
        let name = proxy.name();
        let command = std::iter::once("strait".to_owned()).chain(proxy.args(dir, args.ingress));
        let RunSubcommand::Run(run_args) = RunCommand::try_parse_from(command)
            .with_context(|| format!("{name}: its command line"))?
            .run;
        let span = tracing::info_span!("proxy", name = %name);
        let serving = crate::run::serve(*run_args, logging.clone()).instrument(span);
        proxies.spawn(async move { (name, serving.await) });
    }

    tokio::select! {
        ready = ready(args) => match ready {
            Ok(()) => print_guide(args, dir, started.elapsed()),
            Err(error) => {
                bail!("{error:#}\nthe proxies' log: {}", clusters::logs_dir(dir).join("strait.log").display())
            }
        },
        Some(stopped) = proxies.join_next() => {
            return Err(stopped_early(stopped, dir));
        }
    }
    // Until Ctrl-C (or SIGTERM): every proxy drains and stops on it.
    let mut failed = false;
    while let Some(stopped) = proxies.join_next().await {
        if let Ok((name, Err(error))) = stopped {
            eprintln!("{name}: {error:#}");
            failed = true;
        }
    }
    println!("\nThe demo stopped.");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a proxy stopped before the demo was ready.
fn stopped_early(
    stopped: Result<(String, anyhow::Result<ExitCode>), tokio::task::JoinError>,
    dir: &Path,
) -> anyhow::Error {
    let log = clusters::logs_dir(dir).join("strait.log");
    match stopped {
        Ok((name, Err(error))) => anyhow::anyhow!("{name}: {error:#}"),
        Ok((name, Ok(_))) => anyhow::anyhow!("{name} stopped before the demo was ready"),
        Err(error) => anyhow::anyhow!("a proxy failed: {error}"),
    }
    .context(format!("the proxies' log: {}", log.display()))
}

/// Waits until every proxy is ready and a request crosses from the ingress gateway through
/// frontend to reviews in west (once west's export has reached east).
async fn ready(args: &Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.ready_timeout;
    let mut last;
    for proxy in &PROXIES {
        let url = format!("http://{}/healthz/ready", proxy.health());
        loop {
            match get(proxy.health(), &url).await {
                Ok((StatusCode::OK, _)) => break,
                Ok((status, body)) => {
                    last = format!("{status}: {}", String::from_utf8_lossy(&body).trim());
                }
                Err(error) => last = format!("{error:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {:?}: {last}",
                    proxy.name(),
                    args.ready_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let url = format!("http://{}{}", args.ingress, reviews_path());
    loop {
        match get(args.ingress, &url).await {
            Ok((StatusCode::OK, body)) => {
                match answered_by(&body, EAST.name, "frontend").map(|a| a.call) {
                    Ok(Some(Call {
                        answer: Some(Reply::Echo(reviews)),
                        ..
                    })) if reviews.cluster == WEST.name => return Ok(()),
                    Ok(call) => last = format!("frontend's call: {call:?}"),
                    Err(error) => last = format!("{error:#}"),
                }
            }
            Ok((status, body)) => {
                last = format!("{status}: {}", String::from_utf8_lossy(&body).trim());
            }
            Err(error) => last = format!("{error:#}"),
        }
        if Instant::now() > deadline {
            bail!(
                "no request crossed from east's ingress gateway to reviews in west within {:?}; the last answer: {last}",
                args.ready_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ingress path that has frontend call reviews.
fn reviews_path() -> String {
    "/call/reviews.default.svc.cluster.local:9080/".to_owned()
}

fn print_guide(args: &Args, dir: &Path, took: Duration) {
    let ingress = args.ingress;
    let console = args.console;
    let logs = clusters::logs_dir(dir);
    let mut proxies = String::new();
    for proxy in &PROXIES {
        let what = match proxy.kind {
            Kind::Ingress => format!("ingress gateway     {ingress}"),
            Kind::Eastwest => format!("east-west gateway   {}", proxy.ip()),
            Kind::Egress => format!("egress gateway      {}:8443", proxy.ip()),
            Kind::Sidecar { workload, .. } => format!("{workload:<19} {}", proxy.ip()),
        };
        proxies.push_str(&format!(
            "    {:<5} {what:<40} {}\n",
            proxy.cluster.name,
            proxy.spiffe_id()
        ));
    }
    let reviews = reviews_path();
    println!(
        r#"Strait demo: two clusters, one mesh, ready in {took:.1?}.

  cluster east: trust domain east.mesh, network net-east, its own CA
  cluster west: trust domain west.mesh, network net-west, its own CA
  east's east-west gateway keeps a QUIC trunk to west's; west exports reviews to east

{proxies}    outside api.partner.example         {PARTNER_API}

Every application answers with who it is and who called it (the SPIFFE ID its sidecar
verified); /call/HOST:PORT/PATH has it call on through its sidecar.

1. The ingress gateway -> frontend (east) -> reviews (west), with the caller's identity end to end:

   curl -s {ingress}{reviews}

   frontend's caller is east's ingress gateway; reviews, in west, sees
   spiffe://east.mesh/ns/default/sa/frontend: the mTLS crossed the east-west gateways untouched.
   frontend's sidecar spreads its connections to west over the QUIC trunk (east's gateway,
   127.10.1.2:15444) and to west's gateway directly (127.10.2.2:15443); its access log,
   {logs}/east-frontend-access.log, names the one each request took.

2. Failover: stop west's reviews, and east's standby copy answers (outlier detection ejects
   west, the DestinationRule's failoverPriority falls back to net-east):

   curl -s -X POST {console}/workloads/west/reviews/stop
   curl -s {ingress}{reviews}
   curl -s -X POST {console}/workloads/west/reviews/start

   After the ejection time (10 s) the answers come from west again.

3. Egress: frontend may call the partner API, through the egress gateway; anything else is
   refused (REGISTRY_ONLY):

   curl -s {ingress}/call/api.partner.example/
   curl -s {ingress}/call/unknown.example/

The workloads, running or stopped:

   curl -s {console}/

Configuration: {config} (one folder per cluster); logs: {logs}
Ctrl-C stops the demo."#,
        config = dir.display(),
        logs = logs.display(),
    );
}
