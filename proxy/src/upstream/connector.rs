//! The hook through which other crates carry connections to endpoints over their own transports
//! (the federation crate's QUIC trunk to a peer cluster's east-west gateway, say), so that the
//! proxy core needs to know none of them.
//!
//! A proxy made with an [`UpstreamConnector`] (`Proxy::with_upstream_connector`) offers it
//! every connection a TCP route (or TLS passthrough) opens to an endpoint, described by an
//! [`UpstreamTarget`]. The connector either takes it, returning a future of a byte stream, or
//! declines (`None`), and the core opens TCP itself as it always does. A connector that fails
//! (or does not finish within the cluster's connect timeout) is a connect failure like any
//! other: the endpoint is reported to outlier detection, the next endpoint is tried, and the
//! access log says why. When the cluster originates TLS (mesh mTLS), the handshake runs inside
//! the connector's stream. HTTP clusters' pooled connections do not consult the connector yet.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// The endpoint label Istio puts the endpoint's network in (`topology.istio.io/network`).
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// A byte stream a connector returns: anything that reads and writes like a TCP connection,
/// where shutting down the write side sends end-of-stream and the rest keeps flowing.
pub trait UpstreamIo: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug> UpstreamIo for T {}

/// A connector's connection, boxed.
pub type BoxedUpstreamIo = Box<dyn UpstreamIo>;

/// A connector's connection being made.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxedUpstreamIo>> + Send + 'a>>;

/// The connection the core is about to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// The cluster, `outbound|PORT|SUBSET|HOST`.
    pub cluster: String,
    /// The endpoint picked by the cluster's balancer.
    pub address: SocketAddr,
    /// The endpoint's network ([`NETWORK_LABEL`]), when it has one.
    pub network: Option<String>,
    /// The SNI the connection's TLS carries: the one the proxy originates, or for a
    /// passthrough connection the client's.
    pub server_name: Option<String>,
}

/// Opens connections to endpoints over a transport of its own.
pub trait UpstreamConnector: Send + Sync + fmt::Debug {
    /// Starts a connection to `target`, or declines it (`None`) so that the core connects over
    /// TCP itself. An error is a connect failure to that endpoint.
    fn connect(&self, target: UpstreamTarget) -> Option<ConnectFuture<'_>>;
}
