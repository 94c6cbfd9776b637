//! The sidecar's DNS proxy (Istio's, on 15053): answers A and AAAA for the mesh's names from a
//! [`NameTable`] (`names`), built with each snapshot and swapped whole, so that a lookup never
//! waits on a rebuild; forwards everything else to the upstream resolvers (`forward`) and
//! passes their answers through unchanged.
//!
//! UDP and TCP on the same address. Bounded everywhere: a UDP query is at most 4 KiB, each
//! forwarded query has a deadline, at most [`MAX_PENDING_UDP`] forwarded UDP queries and
//! [`MAX_TCP_CONNECTIONS`] TCP connections are served at once (beyond that a UDP query is
//! dropped, and the client asks again; a TCP connection is closed), and an idle TCP connection
//! is closed. What does not parse as a DNS query is dropped (UDP) or closes the connection
//! (TCP).

mod forward;
mod message;
mod names;

pub use names::{NameEntry, NameTable};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use forward::{Upstreams, read_framed, write_framed};
use message::{Decision, Transport, decide, server_failure};

/// Istio's DNS proxy address.
pub const DEFAULT_DNS_PROXY: &str = "127.0.0.1:15053";
/// Forwarded UDP queries waiting for an upstream at once (each holds a 64 KiB buffer for
/// the answer, so this bounds their memory to 16 MiB).
pub const MAX_PENDING_UDP: usize = 256;
/// TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// The largest UDP query read.
const MAX_UDP_QUERY: usize = 4096;
/// How long a TCP connection may send nothing.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The name table in force, shared by the proxy and whoever rebuilds it.
pub type SharedNames = Arc<ArcSwap<NameTable>>;

/// Why the DNS proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsProxyError {
    #[error("binding the DNS proxy to {0} (UDP): {1}")]
    BindUdp(SocketAddr, std::io::Error),
    #[error("binding the DNS proxy to {0} (TCP): {1}")]
    BindTcp(SocketAddr, std::io::Error),
}

/// How the DNS proxy runs.
#[derive(Clone, Debug)]
pub struct DnsProxyOptions {
    /// Where it listens (UDP and TCP).
    pub listen: SocketAddr,
    /// The upstream resolvers; none: those of /etc/resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    /// `SO_MARK` on the upstream sockets, so that capture leaves them alone.
    pub socket_mark: Option<u32>,
    /// How long a forwarded query may take in all.
    pub timeout: Duration,
}

/// A bound DNS proxy; [`DnsProxy::run`] serves it.
#[derive(Debug)]
pub struct DnsProxy {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    names: SharedNames,
    upstreams: Arc<Upstreams>,
}

impl DnsProxy {
    /// Binds UDP and TCP on `options.listen` and finds the upstream resolvers (none found is
    /// logged, not an error: the mesh's names are still answered).
    pub async fn bind(
        options: &DnsProxyOptions,
        names: SharedNames,
    ) -> Result<DnsProxy, DnsProxyError> {
        let upstreams = Upstreams::new(&options.upstreams, options.socket_mark, options.timeout);
        let udp = UdpSocket::bind(options.listen)
            .await
            .map_err(|e| DnsProxyError::BindUdp(options.listen, e))?;
        // TCP on the port UDP got (they differ only when asked for port 0).
        let tcp_address = udp
            .local_addr()
            .map_err(|e| DnsProxyError::BindUdp(options.listen, e))?;
        let tcp = TcpListener::bind(tcp_address)
            .await
            .map_err(|e| DnsProxyError::BindTcp(tcp_address, e))?;
        Ok(DnsProxy {
            udp: Arc::new(udp),
            tcp,
            names,
            upstreams: Arc::new(upstreams),
        })
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }

    /// The upstream resolvers it forwards to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.upstreams.servers()
    }

    /// Serves UDP and TCP until the process ends.
    pub async fn run(self) {
        let DnsProxy {
            udp,
            tcp,
            names,
            upstreams,
        } = self;
        tokio::join!(
            serve_udp(udp, names.clone(), upstreams.clone()),
            serve_tcp(tcp, names, upstreams),
        );
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, names: SharedNames, upstreams: Arc<Upstreams>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_UDP));
    let mut buffer = vec![0u8; MAX_UDP_QUERY];
    loop {
        let (read, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(%error, "DNS proxy: receiving a UDP query");
                continue;
            }
        };
        let query = &buffer[..read];
        let decision = decide(query, &names.load(), Transport::Udp);
        match decision {
            Decision::Answer(answer) => {
                if let Err(error) = socket.send_to(&answer, client).await {
                    tracing::debug!(%client, %error, "DNS proxy: sending an answer");
                }
            }
            Decision::Drop => tracing::debug!(%client, "DNS proxy: not a DNS query; dropped"),
            Decision::Forward => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(%client, "DNS proxy: too many queries waiting upstream; dropped");
                    continue;
                };
                let query = query.to_vec();
                let socket = socket.clone();
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let answer = match upstreams.udp(&query).await {
                        Some(answer) => Some(answer),
                        None => server_failure(&query),
                    };
                    if let Some(answer) = answer
                        && let Err(error) = socket.send_to(&answer, client).await
                    {
                        tracing::debug!(%client, %error, "DNS proxy: sending an answer");
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, names: SharedNames, upstreams: Arc<Upstreams>) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "DNS proxy: accepting a TCP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%client, "DNS proxy: too many TCP connections; closed");
            continue;
        };
        let names = names.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_tcp_connection(stream, &names, &upstreams).await;
        });
    }
}

/// Answers the queries of one TCP connection in turn, until it ends, idles, or sends
/// something that is not a DNS query.
async fn serve_tcp_connection(mut stream: TcpStream, names: &SharedNames, upstreams: &Upstreams) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(Some(query))) => query,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, "DNS proxy: reading a TCP query; closed");
                return;
            }
        };
        let answer = match decide(&query, &names.load(), Transport::Tcp) {
            Decision::Answer(answer) => answer,
            Decision::Drop => {
                tracing::debug!("DNS proxy: not a DNS query over TCP; closed");
                return;
            }
            Decision::Forward => match upstreams.tcp(&query).await {
                Some(answer) => answer,
                None => match server_failure(&query) {
                    Some(failure) => failure,
                    None => return,
                },
            },
        };
        if write_framed(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}
