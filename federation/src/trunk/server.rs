//! The answering side of trunks: accepts peer gateways' QUIC connections (mTLS; the peer's
//! SPIFFE ID goes to the authorizer, which may close the connection, and goes again to it for
//! every open connection when the owner calls [`TrunkServer::reauthorize`], after its peers
//! changed), and for each stream reads
//! the header, asks the resolver for the local endpoint, connects to it, answers the status and
//! splices the bytes. A refusal (a service not exported, say) is answered with its reason and
//! logged, and no byte of the stream reaches any endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::SHUTTING_DOWN;

use quinn::{Connection, Endpoint, Incoming};
use strait_certs::SpiffeId;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::header::{RefusalReason, StreamHeader, StreamStatus};
use super::stream::{STREAM_REFUSED, TrunkStream, splice};
use super::tls::{TrunkIdentity, TrunkSetupError, peer_id};
use super::transport::TrunkPath;

/// How long a stream may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the local endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The application error code a connection from a peer the authorizer refuses is closed with.
pub const CLOSE_UNAUTHORIZED: quinn::VarInt = quinn::VarInt::from_u32(3);

/// Whether a peer gateway, by its verified SPIFFE ID, may use the trunk; `Err` says why not.
pub type PeerAuthorizer = Arc<dyn Fn(&SpiffeId) -> Result<(), String> + Send + Sync>;

/// The local endpoint for a stream a peer gateway opened, or why it is refused.
pub type EndpointResolver =
    Arc<dyn Fn(&SpiffeId, &StreamHeader) -> Result<SocketAddr, Refusal> + Send + Sync>;

/// A stream refused, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub text: String,
}

/// A trunk listener, serving until dropped.
pub struct TrunkServer {
    endpoint: Endpoint,
    local: SocketAddr,
    task: JoinHandle<()>,
    authorize: PeerAuthorizer,
    connections: OpenConnections,
}

impl std::fmt::Debug for TrunkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkServer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The authorized connections open now, by quinn's stable ID, with their peers.
type OpenConnections = Arc<Mutex<HashMap<usize, (Connection, Arc<SpiffeId>)>>>;

impl TrunkServer {
    /// Binds UDP `bind` and serves peer gateways' trunks (within a Tokio runtime).
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound or the TLS configuration not built.
    pub fn start(
        bind: SocketAddr,
        identity: &TrunkIdentity,
        path: &TrunkPath,
        authorize: PeerAuthorizer,
        resolve: EndpointResolver,
    ) -> Result<TrunkServer, TrunkSetupError> {
        let config = identity.server_config(path)?;
        let endpoint = Endpoint::server(config, bind).map_err(|source| TrunkSetupError::Bind {
            address: bind,
            source,
        })?;
        let local = endpoint
            .local_addr()
            .map_err(|source| TrunkSetupError::Bind {
                address: bind,
                source,
            })?;
        let connections = OpenConnections::default();
        let task = tokio::spawn(accept_loop(
            endpoint.clone(),
            authorize.clone(),
            resolve,
            connections.clone(),
        ));
        Ok(TrunkServer {
            endpoint,
            local,
            task,
            authorize,
            connections,
        })
    }

    /// Asks the authorizer again about every open connection's peer and closes those it now
    /// refuses (a peer removed); returns how many were closed.
    pub fn reauthorize(&self) -> usize {
        let open: Vec<(Connection, Arc<SpiffeId>)> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut closed = 0;
        for (connection, peer) in open {
            if let Err(why) = (self.authorize)(&peer) {
                tracing::info!(%peer, remote = %connection.remote_address(), reason = %why, "trunk peer no longer authorized; its connection is closed");
                connection.close(CLOSE_UNAUTHORIZED, b"not authorized");
                closed += 1;
            }
        }
        closed
    }

    /// The address bound (differs from the one asked for with port 0).
    /// Closes every peer's connection with a CONNECTION_CLOSE ("shutting down"), so that the
    /// peers learn it at once rather than at their idle timeout, and waits up to `limit` for
    /// the close to go out.
    pub async fn shut_down(&self, limit: Duration) {
        self.endpoint
            .close(super::client::CLOSE_SHUTDOWN, SHUTTING_DOWN);
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TrunkServer {
    fn drop(&mut self) {
        self.task.abort();
        self.endpoint
            .close(super::client::CLOSE_SHUTDOWN, SHUTTING_DOWN);
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    authorize: PeerAuthorizer,
    resolve: EndpointResolver,
    connections: OpenConnections,
) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(
            incoming,
            authorize.clone(),
            resolve.clone(),
            connections.clone(),
        ));
    }
}

async fn serve_connection(
    incoming: Incoming,
    authorize: PeerAuthorizer,
    resolve: EndpointResolver,
    connections: OpenConnections,
) {
    let remote = incoming.remote_address();
    let connection = match tokio::time::timeout(super::client::HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::warn!(%remote, %error, "trunk handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "trunk handshake timed out");
            return;
        }
    };
    let Some(peer) = peer_id(&connection) else {
        connection.close(CLOSE_UNAUTHORIZED, b"no SPIFFE identity");
        return;
    };
    if let Err(why) = authorize(&peer) {
        tracing::warn!(%remote, %peer, reason = %why, "trunk peer refused");
        connection.close(CLOSE_UNAUTHORIZED, b"not authorized");
        return;
    }
    tracing::info!(%remote, %peer, "trunk peer connected");
    let peer = Arc::new(peer);
    let id = connection.stable_id();
    connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, (connection.clone(), peer.clone()));
    let error = accept_streams(&connection, &peer, &resolve).await;
    connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    tracing::info!(%remote, %peer, reason = %error, "trunk peer disconnected");
}

async fn accept_streams(
    connection: &Connection,
    peer: &Arc<SpiffeId>,
    resolve: &EndpointResolver,
) -> quinn::ConnectionError {
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let stream = TrunkStream::new(send, recv);
                tokio::spawn(serve_stream(stream, peer.clone(), resolve.clone()));
            }
            Err(error) => return error,
        }
    }
}

async fn serve_stream(mut stream: TrunkStream, peer: Arc<SpiffeId>, resolve: EndpointResolver) {
    let header =
        match tokio::time::timeout(HEADER_TIMEOUT, StreamHeader::read(stream.recv_mut())).await {
            Ok(Ok(header)) => header,
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "trunk stream with a malformed header");
                let refusal = Refusal {
                    reason: RefusalReason::MalformedHeader,
                    text: error.to_string(),
                };
                return refuse(stream, refusal).await;
            }
            Err(_) => {
                tracing::warn!(%peer, "trunk stream sent no header within {HEADER_TIMEOUT:?}");
                return stream.reset();
            }
        };
    let address = match resolve(&peer, &header) {
        Ok(address) => address,
        Err(refusal) => {
            tracing::warn!(
                %peer,
                service = %header.service,
                port = header.port,
                subset = %header.subset,
                sni = %header.original_sni,
                source_network = %header.source_network,
                reason = %refusal.reason,
                text = %refusal.text,
                "trunk stream refused"
            );
            return refuse(stream, refusal).await;
        }
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        failed => {
            let text = match failed {
                Ok(Err(error)) => format!("connecting to {address}: {error}"),
                _ => format!("connecting to {address} timed out after {CONNECT_TIMEOUT:?}"),
            };
            tracing::warn!(%peer, service = %header.service, port = header.port, %text, "trunk stream refused");
            let refusal = Refusal {
                reason: RefusalReason::UpstreamConnectFailure,
                text,
            };
            return refuse(stream, refusal).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    if stream
        .send_mut()
        .write_all(&StreamStatus::Ok.encode())
        .await
        .is_err()
    {
        stream.reset();
        return super::stream::reset_tcp(tcp);
    }
    if let Err(error) = splice(stream, tcp).await {
        tracing::debug!(%peer, service = %header.service, port = header.port, %error, "trunk stream ended with an error");
    }
}

/// Answers a refusal and ends the stream; whatever the caller sent after the header is
/// discarded (STOP_SENDING).
async fn refuse(mut stream: TrunkStream, refusal: Refusal) {
    let status = StreamStatus::refused(refusal.reason, refusal.text);
    let _ = stream.send_mut().write_all(&status.encode()).await;
    let _ = stream.send_mut().finish();
    let _ = stream.recv_mut().stop(STREAM_REFUSED);
}
