//! The benchmarks' own load generator, for what wrk and h2load do not measure:
//!
//! - `rate`: HTTP/1.1 at a fixed request rate over keep-alive connections, open loop, with
//!   latency corrected for coordinated omission (see [`Schedule`]).
//! - `hold`: opens many keep-alive connections, makes one request on each, and holds them idle.
//! - `tls`: HTTPS with a new connection, and a full handshake, for every request.
//! - `bulk`: streams bytes over TCP as fast as the path takes them.
//! - `live`: makes a configuration change (a file moved into place, a command run) and polls
//!   until responses show it.
//! - `wait`: polls until an address answers a request with 2xx.
//! - `fresh`: a new connection for every request, one after another or all at once, timing
//!   each to its first response byte.
//!
//! Each prints one line of `key=value` pairs on standard output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(
    name = "bench-load",
    about = "Load for benchmarks that wrk and h2load do not cover"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The address to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// The Host header.
    #[arg(long, default_value = "bench.example.com")]
    host: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP/1.1 GETs at a fixed rate; latency percentiles corrected for coordinated omission.
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second, over all connections.
        #[arg(long)]
        rate: f64,
        /// Keep-alive connections the requests are spread over (round robin).
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// Opens connections, makes one request on each, and holds them open.
    Hold {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold them after they are all open.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
    },
    /// HTTPS GETs, each on a new connection with a full handshake (no session resumption), as
    /// fast as they go. The client offers X25519 only and does not verify the certificate, so
    /// that its side of the handshake costs less than the server's.
    Tls {
        #[command(flatten)]
        target: Target,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Resume sessions instead (TLS 1.3 tickets or session IDs, whichever the server offers).
        #[arg(long)]
        resume: bool,
    },
    /// Writes bytes over TCP as fast as they are taken, for a while.
    Bulk {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Seconds to write for.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Bytes per write.
        #[arg(long, default_value_t = 64 * 1024)]
        chunk: usize,
        /// Open each connection with a TLS ClientHello for this name, as a sidecar's mesh TLS
        /// does towards an east-west gateway's trunk ingress, which routes by it; what follows
        /// is not TLS (the path forwards bytes, it does not read them).
        #[arg(long)]
        sni: Option<String>,
    },
    /// Makes a change and polls until a response carries `--header` with `--value`.
    Live {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        header: String,
        #[arg(long)]
        value: String,
        /// Move this file ...
        #[arg(long, requires = "to")]
        write: Option<PathBuf>,
        /// ... to this path (a rename: the change appears at once).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Then run this shell command (say, to signal the proxy).
        #[arg(long)]
        run: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// GETs with `Connection: close`, each on a new connection: the time from before the
    /// connect to the first byte of the response, per connection, and the wall time until the
    /// last response ended. One after another, or with `--concurrent` all started at once.
    Fresh {
        #[command(flatten)]
        target: Target,
        /// How many connections.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Start them all at once instead of one after another.
        #[arg(long)]
        concurrent: bool,
        /// Give up on a connection after this many seconds (it counts as an error).
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Polls until the address answers 2xx; prints how long that took.
    Wait {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
}

fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Rate {
                target,
                rate,
                connections,
                duration,
                warmup,
            } => fixed_rate(target, rate, connections, duration, warmup).await,
            Command::Hold {
                target,
                connections,
                seconds,
            } => hold(target, connections, seconds).await,
            Command::Tls {
                target,
                connections,
                duration,
                resume,
            } => tls(target, connections, duration, resume).await,
            Command::Bulk {
                addr,
                connections,
                duration,
                chunk,
                sni,
            } => bulk(addr, connections, duration, chunk, sni.as_deref()).await,
            Command::Live {
                target,
                header,
                value,
                write,
                to,
                run,
                timeout,
            } => live(target, &header, &value, write.zip(to), run, timeout).await,
            Command::Fresh {
                target,
                count,
                concurrent,
                timeout,
            } => fresh(target, count, concurrent, timeout).await,
            Command::Wait { target, timeout } => wait(target, timeout).await,
        }
    })
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET; the response body is read to the end. Returns the status and the response headers.
async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
) -> Result<(u16, http::HeaderMap), Error> {
    sender.ready().await?;
    let request = Request::get(&target.path)
        .header(header::HOST, &target.host)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    body.collect().await?;
    Ok((status, parts.headers))
}

/// When each request should be sent: request `i` at `start + i / rate`, spread round robin over
/// the connections (as wrk2 does). A request's latency is measured from the time it was due, not
/// from when it could be sent: a request held up behind a slow response on its connection counts
/// the wait. The exception is the timer's own lateness: when a connection was idle at the due
/// time and only the timer woke it late, the latency is measured from the actual send, since
/// nothing under test held it up.
struct Schedule {
    start: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
}

async fn fixed_rate(
    target: Target,
    rate: f64,
    connections: usize,
    duration: f64,
    warmup: f64,
) -> Result<(), Error> {
    let connections = connections.max(1);
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(target.addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let schedule = std::sync::Arc::new(Schedule {
        start,
        interval: Duration::from_secs_f64(1.0 / rate),
        measure_from: start + Duration::from_secs_f64(warmup),
        end: start + Duration::from_secs_f64(warmup + duration),
    });
    let target = std::sync::Arc::new(target);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut sender) in senders.into_iter().enumerate() {
        let schedule = schedule.clone();
        let target = target.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut i = k as u32;
            loop {
                let due = schedule.start + schedule.interval * i;
                if due >= schedule.end {
                    break;
                }
                let slept = Instant::now() < due;
                if slept {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                let from = if slept { sent } else { due };
                let ok = match get(&mut sender, &target).await {
                    Ok((status, _)) => (200..300).contains(&status),
                    Err(_) => {
                        // Reconnect for the next request; this one counts as an error.
                        if let Ok(fresh) = connect(target.addr).await {
                            sender = fresh;
                        }
                        false
                    }
                };
                if due >= schedule.measure_from {
                    if ok {
                        tally.latencies.push(from.elapsed());
                    } else {
                        tally.errors += 1;
                    }
                }
                i += connections as u32;
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(result) = tasks.join_next().await {
        if let Ok(tally) = result {
            all.latencies.extend(tally.latencies);
            all.errors += tally.errors;
        }
    }
    all.latencies.sort_unstable();
    let pct = |p: f64| percentile(&all.latencies, p) * 1e6;
    println!(
        "requests={} errors={} rate={:.1} p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0}",
        all.latencies.len(),
        all.errors,
        all.latencies.len() as f64 / duration,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0),
    );
    Ok(())
}

/// The `p`th percentile (0 to 100) of `sorted` (ascending), in seconds: the smallest sample
/// that `p` % of them do not exceed. NaN when there are none.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[at.clamp(1, sorted.len()) - 1].as_secs_f64()
}

async fn hold(target: Target, connections: usize, seconds: f64) -> Result<(), Error> {
    let target = std::sync::Arc::new(target);
    let mut held = Vec::with_capacity(connections);
    let mut ok = 0;
    // Open them in batches, so that the requests overlap as real clients' would.
    for batch in (0..connections).collect::<Vec<_>>().chunks(50) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in batch {
            let target = target.clone();
            tasks.spawn(async move {
                let mut sender = connect(target.addr).await?;
                let (status, _) = get(&mut sender, &target).await?;
                Ok::<_, Error>((sender, status))
            });
        }
        while let Some(result) = tasks.join_next().await {
            if let Ok(Ok((sender, status))) = result {
                if (200..300).contains(&status) {
                    ok += 1;
                }
                held.push(sender);
            }
        }
    }
    println!("open={} ok={ok}", held.len());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    drop(held);
    Ok(())
}

/// The TLS client: X25519 only (so that no server picks a post-quantum hybrid another cannot),
/// any certificate accepted, resumption on or off.
fn tls_client_config(resume: bool) -> Result<rustls::ClientConfig, Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(schemes)))
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

/// The first bytes a TLS client sends to `sni`: its ClientHello.
fn client_hello(sni: &str) -> Result<Vec<u8>, Error> {
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned())?;
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(tls_client_config(false)?), name)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    Ok(hello)
}

async fn tls(target: Target, connections: usize, duration: f64, resume: bool) -> Result<(), Error> {
    let config = tls_client_config(resume)?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (connector, name, request) = (connector.clone(), name.clone(), request.clone());
        let addr = target.addr;
        tasks.spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut response = Vec::with_capacity(4096);
            while Instant::now() < end {
                response.clear();
                let exchange = async {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    let mut stream = connector.connect(name.clone(), stream).await?;
                    stream.write_all(request.as_bytes()).await?;
                    // The server closes after the response; some close without close_notify.
                    let _ = stream.read_to_end(&mut response).await;
                    Ok::<_, std::io::Error>(())
                };
                match exchange.await {
                    Ok(()) if response.starts_with(b"HTTP/1.1 200") => ok += 1,
                    _ => errors += 1,
                }
            }
            (ok, errors)
        });
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let (o, e) = result?;
        ok += o;
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "requests={ok} errors={errors} seconds={seconds:.3} rate={:.1}",
        ok as f64 / seconds
    );
    Ok(())
}

/// Accepts any certificate and any signature: the benchmark measures the server's handshake.
#[derive(Debug)]
struct AnyCertificate(Vec<rustls::SignatureScheme>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls_pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls_pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.clone()
    }
}

async fn bulk(
    addr: SocketAddr,
    connections: usize,
    duration: f64,
    chunk: usize,
    sni: Option<&str>,
) -> Result<(), Error> {
    let hello = sni.map(client_hello).transpose()?.unwrap_or_default();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let hello = hello.clone();
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(&hello).await?;
            let buffer = vec![0u8; chunk];
            let mut sent: u64 = 0;
            while Instant::now() < end {
                stream.write_all(&buffer).await?;
                sent += buffer.len() as u64;
            }
            stream.shutdown().await?;
            Ok::<u64, std::io::Error>(sent)
        });
    }
    let mut bytes = 0;
    while let Some(result) = tasks.join_next().await {
        bytes += result??;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "bytes={bytes} seconds={seconds:.3} mb_per_s={:.1}",
        bytes as f64 / seconds / 1e6
    );
    Ok(())
}

async fn live(
    target: Target,
    header: &str,
    value: &str,
    write: Option<(PathBuf, PathBuf)>,
    run: Option<String>,
    timeout: f64,
) -> Result<(), Error> {
    let mut sender = connect(target.addr).await?;
    let start = Instant::now();
    if let Some((from, to)) = write {
        std::fs::rename(&from, &to)?;
    }
    if let Some(command) = run {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()?;
        if !status.success() {
            return Err(format!("{command}: {status}").into());
        }
    }
    let deadline = start + Duration::from_secs_f64(timeout);
    let mut polls = 0u64;
    while Instant::now() < deadline {
        polls += 1;
        match get(&mut sender, &target).await {
            Ok((_, headers)) => {
                if headers
                    .get(header)
                    .is_some_and(|v| v.as_bytes() == value.as_bytes())
                {
                    println!(
                        "live_ms={:.1} polls={polls}",
                        start.elapsed().as_secs_f64() * 1e3
                    );
                    return Ok(());
                }
            }
            Err(_) => {
                // The proxy may close connections when it reloads.
                if let Ok(fresh) = connect(target.addr).await {
                    sender = fresh;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("{header}: {value} not seen within {timeout} s").into())
}

async fn fresh(target: Target, count: usize, concurrent: bool, timeout: f64) -> Result<(), Error> {
    let request = std::sync::Arc::new(format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.path, target.host
    ));
    let (addr, limit) = (target.addr, Duration::from_secs_f64(timeout));
    let exchange = move |request: std::sync::Arc<String>| async move {
        tokio::time::timeout(limit, first_byte(addr, request.as_bytes()))
            .await
            .unwrap_or_else(|_| Err("no response within the timeout".into()))
    };
    let start = Instant::now();
    let mut results = Vec::with_capacity(count);
    if concurrent {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            tasks.spawn(exchange(request.clone()));
        }
        while let Some(result) = tasks.join_next().await {
            results.push(result.unwrap_or_else(|e| Err(e.into())));
        }
    } else {
        for _ in 0..count {
            results.push(exchange(request.clone()).await);
        }
    }
    let wall = start.elapsed();
    let mut firsts: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied().flatten())
        .collect();
    firsts.sort_unstable();
    let errors = count - firsts.len();
    if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
        eprintln!("bench-load fresh: {errors} failed; the first: {error}");
    }
    let ms = |p: f64| percentile(&firsts, p) * 1e3;
    println!(
        "connections={count} ok={} errors={errors} wall_ms={:.1} ttfb_min_ms={:.1} ttfb_p50_ms={:.1} ttfb_p90_ms={:.1} ttfb_p99_ms={:.1} ttfb_max_ms={:.1}",
        firsts.len(),
        wall.as_secs_f64() * 1e3,
        ms(0.0),
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0),
    );
    Ok(())
}

/// Connects, sends `request` and reads the response to its end (the server closes). Returns
/// the time from before the connect to the response's first byte, `None` when the response is
/// not a 200.
async fn first_byte(addr: SocketAddr, request: &[u8]) -> Result<Option<Duration>, Error> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut response = Vec::with_capacity(1024);
    if stream.read_buf(&mut response).await? == 0 {
        return Err("the connection closed before a response".into());
    }
    let first = start.elapsed();
    // Some servers close without waiting for the client's side; the response is in by then.
    let _ = stream.read_to_end(&mut response).await;
    Ok(response.starts_with(b"HTTP/1.1 200").then_some(first))
}

async fn wait(target: Target, timeout: f64) -> Result<(), Error> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(timeout);
    while Instant::now() < deadline {
        if let Ok(mut sender) = connect(target.addr).await
            && let Ok((status, _)) = get(&mut sender, &target).await
            && (200..300).contains(&status)
        {
            println!("ready_ms={:.1}", start.elapsed().as_secs_f64() * 1e3);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("{} did not answer 2xx within {timeout} s", target.addr).into())
}
