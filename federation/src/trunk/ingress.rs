//! Trunk ingress (TCP 15444): where the local sidecars hand cross-cluster connections to the
//! trunk. Each connection's ClientHello is peeked (never terminated: it is the sidecar's own
//! mTLS to the remote workload) for its SNI `outbound_.PORT_.SUBSET_.HOST`; the peer selector
//! says which peer cluster serves it; the connection becomes a trunk stream whose header names
//! the service, and the peeked bytes travel with the header. Anything that keeps the bytes
//! from flowing (no SNI, no peer, the trunk down, the remote refusing) resets the TCP connection
//! at once, which the sidecar treats as a connect failure and so takes its direct path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use strait_proxy::tls::client_hello::{Parsed, read_client_hello};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::client::TrunkClient;
use super::header::StreamHeader;
use super::stream::{reset_tcp, splice};
use crate::sni::OutboundName;

/// How long a sidecar may take to send its ClientHello.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer cluster (a [`super::TrunkPeer`]'s name) that serves a destination, if any.
pub type PeerSelector = Arc<dyn Fn(&OutboundName) -> Option<String> + Send + Sync>;

/// A trunk-ingress listener, serving until dropped.
#[derive(Debug)]
pub struct TrunkIngress {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl TrunkIngress {
    /// Serves `listener` (within a Tokio runtime): connections go to the peers `select` names
    /// over `client`, with headers naming `source_network` as where they come from.
    pub fn start(
        listener: TcpListener,
        client: Arc<TrunkClient>,
        source_network: String,
        select: PeerSelector,
    ) -> std::io::Result<TrunkIngress> {
        let local = listener.local_addr()?;
        let context = Arc::new(Context {
            client,
            source_network,
            select,
        });
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, remote)) => {
                        tokio::spawn(serve(tcp, remote, context.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "trunk ingress accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(TrunkIngress { local, task })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TrunkIngress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Context {
    client: Arc<TrunkClient>,
    source_network: String,
    select: PeerSelector,
}

async fn serve(mut tcp: TcpStream, remote: SocketAddr, context: Arc<Context>) {
    let _ = tcp.set_nodelay(true);
    let mut peeked = BytesMut::new();
    let hello = tokio::time::timeout(
        CLIENT_HELLO_TIMEOUT,
        read_client_hello(&mut tcp, &mut peeked),
    )
    .await;
    let sni = match hello {
        Ok(Ok(Parsed::Complete(hello))) => hello.server_name,
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, "trunk ingress: no usable ClientHello");
            return reset_tcp(tcp);
        }
        Err(_) => {
            tracing::info!(%remote, "trunk ingress: no ClientHello within {CLIENT_HELLO_TIMEOUT:?}");
            return reset_tcp(tcp);
        }
    };
    let Some((sni, destination)) = sni.and_then(|sni| OutboundName::parse(&sni).map(|d| (sni, d)))
    else {
        tracing::info!(%remote, "trunk ingress: the ClientHello names no outbound_.PORT_.SUBSET_.HOST");
        return reset_tcp(tcp);
    };
    let Some(peer) = (context.select)(&destination) else {
        tracing::info!(%remote, %sni, "trunk ingress: no trunk peer serves this destination");
        return reset_tcp(tcp);
    };
    let header = StreamHeader {
        service: destination.host,
        port: destination.port,
        subset: destination.subset,
        original_sni: sni,
        source_network: context.source_network.clone(),
    };
    match context.client.open(&peer, &header, &peeked).await {
        Ok(stream) => {
            if let Err(error) = splice(stream, tcp).await {
                tracing::debug!(%remote, %peer, %error, "trunk ingress connection ended with an error");
            }
        }
        Err(error) => {
            tracing::info!(%remote, %peer, sni = %header.original_sni, %error, "trunk ingress: resetting the connection");
            reset_tcp(tcp);
        }
    }
}
