//! The calling side of trunks: per peer gateway, a fixed number of QUIC connections kept up by
//! a task each, reconnecting with exponential backoff and jitter; and [`TrunkClient::open`],
//! which puts one cross-cluster connection on one of them as a new stream.
//!
//! The peers can change while the client runs ([`TrunkClient::set_peers`]): a new peer gets
//! its connections, a removed one has them closed, a redefined one (address, identity or
//! number of connections) is reconnected, and an unchanged one is left alone.
//!
//! `open` never waits for a trunk to come up: when the peer has no live connection it fails at
//! once ([`OpenError::Down`]), so the caller resets its downstream connection and the sidecar
//! behind it takes the direct path. A stream is handed over only after the remote gateway
//! answered OK; a refusal is an error carrying the remote's reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint};
use strait_certs::SpiffeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::header::{FrameError, RefusalReason, StreamHeader, StreamStatus};
use super::stream::TrunkStream;
use super::tls::{TrunkIdentity, TrunkSetupError};
use super::transport::TrunkPath;

/// How long a handshake with a peer gateway may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the remote gateway may take to allow a new stream (when the connection's
/// concurrent streams are all in use), and then to answer its header (it connects to the
/// endpoint first).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// The application error code a connection is closed with when the client stops.
pub const CLOSE_SHUTDOWN: quinn::VarInt = quinn::VarInt::from_u32(0);
/// The reason sent with [`CLOSE_SHUTDOWN`] when a gateway stops.
pub const SHUTTING_DOWN: &[u8] = b"shutting down";

/// A peer cluster's east-west gateway, as the trunk reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkPeer {
    /// The peer cluster's name (what callers pick it by, and what logs say).
    pub name: String,
    /// Its trunk address (UDP, port 15443).
    pub address: SocketAddr,
    /// The SPIFFE ID its gateway presents, verified against its trust domain's bundle.
    pub identity: SpiffeId,
    /// How many connections to keep to it (at least one).
    pub connections: usize,
}

/// Reconnect delays: `initial` doubling per failure in a row up to `max`, each drawn at random
/// from its upper half so that gateways do not reconnect in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` failures in a row (0 after a
    /// connection that was up closed).
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << failures.min(20))
            .min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no trunk peer named {0:?}")]
    UnknownPeer(String),
    #[error("the trunk to {0} is down")]
    Down(String),
    #[error("the trunk connection to {peer} failed: {source}")]
    Connection {
        peer: String,
        source: quinn::ConnectionError,
    },
    #[error("{peer} allowed no further stream within {STATUS_TIMEOUT:?}")]
    NoStreamCredit { peer: String },
    #[error("sending on the trunk to {peer}: {source}")]
    Write {
        peer: String,
        source: std::io::Error,
    },
    #[error("the stream header: {0}")]
    Header(FrameError),
    #[error("the status from {peer}: {source}")]
    Status { peer: String, source: FrameError },
    #[error("{peer} did not answer the stream within {STATUS_TIMEOUT:?}")]
    StatusTimeout { peer: String },
    #[error("{peer} refused the stream ({reason}): {text}")]
    Refused {
        peer: String,
        reason: RefusalReason,
        text: String,
    },
}

/// One peer's connections.
#[derive(Debug)]
struct PeerTrunk {
    peer: TrunkPeer,
    slots: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
    /// Connections up now.
    live: watch::Sender<usize>,
    /// Why the last attempt failed or the last connection was lost.
    last_failure: Mutex<Option<String>>,
    /// The tasks keeping the slots up.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerTrunk {
    /// A live connection, round robin.
    fn pick(&self) -> Option<Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.slots.len()).find_map(|i| {
            let slot = self.slots[(start + i) % self.slots.len()].lock().ok()?;
            slot.as_ref()
                .filter(|c| c.close_reason().is_none())
                .cloned()
        })
    }

    fn failed(&self, why: String) {
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(why);
        }
    }

    fn set(&self, slot: usize, connection: Option<Connection>) {
        if let Ok(mut current) = self.slots[slot].lock() {
            let was = current.is_some();
            let is = connection.is_some();
            *current = connection;
            match (was, is) {
                (false, true) => self.live.send_modify(|n| *n += 1),
                (true, false) => self.live.send_modify(|n| *n = n.saturating_sub(1)),
                _ => {}
            }
        }
    }

    /// Stops keeping the connections up and closes them (`why` goes to the peer).
    fn stop(&self, why: &[u8]) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
        for slot in 0..self.slots.len() {
            let connection = self.slots[slot].lock().ok().and_then(|c| c.clone());
            if let Some(connection) = connection {
                connection.close(CLOSE_SHUTDOWN, why);
            }
            self.set(slot, None);
        }
    }
}

/// What [`TrunkClient::set_peers`] changed, by peer name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeersChanged {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Redefined: their connections were closed and are made again.
    pub restarted: Vec<String>,
}

/// Trunks to every peer gateway, kept up in the background until dropped.
#[derive(Debug)]
pub struct TrunkClient {
    endpoint: Endpoint,
    identity: TrunkIdentity,
    path: TrunkPath,
    backoff: Backoff,
    peers: Mutex<HashMap<String, Arc<PeerTrunk>>>,
}

impl TrunkClient {
    /// Closes every trunk connection with a CONNECTION_CLOSE ("shutting down"), so that the
    /// peers learn it at once rather than at their idle timeout, and waits up to `limit` for
    /// the close to go out. The client does not connect again.
    pub async fn shut_down(&self, limit: Duration) {
        self.close();
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    /// Stops every connection task and closes the endpoint's connections.
    fn close(&self) {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        for trunk in peers.values() {
            if let Ok(tasks) = trunk.tasks.lock() {
                for task in tasks.iter() {
                    task.abort();
                }
            }
        }
        drop(peers);
        self.endpoint.close(CLOSE_SHUTDOWN, SHUTTING_DOWN);
    }

    /// Binds a UDP socket on `bind` and starts connecting to `peers` (within a Tokio runtime).
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound, the TLS configuration not built, or two peers have one
    /// name.
    pub fn start(
        bind: SocketAddr,
        identity: &TrunkIdentity,
        path: &TrunkPath,
        backoff: Backoff,
        peers: Vec<TrunkPeer>,
    ) -> Result<TrunkClient, TrunkSetupError> {
        let endpoint = Endpoint::client(bind).map_err(|source| TrunkSetupError::Bind {
            address: bind,
            source,
        })?;
        let client = TrunkClient {
            endpoint,
            identity: identity.clone(),
            path: *path,
            backoff,
            peers: Mutex::new(HashMap::new()),
        };
        client.set_peers(peers)?;
        Ok(client)
    }

    /// Makes `peers` the peers kept connected: connects to the new ones, closes the
    /// connections of those no longer listed, reconnects those whose definition changed, and
    /// leaves the others' connections alone.
    ///
    /// # Errors
    ///
    /// When two peers have one name or a peer's TLS configuration cannot be built; nothing
    /// changed then.
    pub fn set_peers(&self, peers: Vec<TrunkPeer>) -> Result<PeersChanged, TrunkSetupError> {
        let mut wanted: HashMap<String, TrunkPeer> = HashMap::new();
        for peer in peers {
            if wanted.contains_key(&peer.name) {
                return Err(TrunkSetupError::DuplicatePeer(peer.name));
            }
            wanted.insert(peer.name.clone(), peer);
        }
        let mut current = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut starting = Vec::new();
        for peer in wanted.values() {
            if current.get(&peer.name).is_none_or(|t| t.peer != *peer) {
                let config = self.identity.client_config(&peer.identity, &self.path)?;
                starting.push((peer.clone(), config));
            }
        }
        let mut changed = PeersChanged::default();
        current.retain(|name, trunk| {
            let keep = wanted.contains_key(name);
            if !keep {
                trunk.stop(b"peer removed");
                changed.removed.push(name.clone());
            }
            keep
        });
        for (peer, config) in starting {
            let name = peer.name.clone();
            match current.remove(&name) {
                Some(old) => {
                    old.stop(b"peer redefined");
                    changed.restarted.push(name.clone());
                }
                None => changed.added.push(name.clone()),
            }
            current.insert(name, self.keep_up(peer, config));
        }
        changed.added.sort();
        changed.removed.sort();
        changed.restarted.sort();
        Ok(changed)
    }

    /// Starts keeping `peer`'s connections up.
    fn keep_up(&self, peer: TrunkPeer, config: quinn::ClientConfig) -> Arc<PeerTrunk> {
        let trunk = Arc::new(PeerTrunk {
            slots: (0..peer.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            live: watch::channel(0).0,
            last_failure: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            peer,
        });
        let tasks: Vec<JoinHandle<()>> = (0..trunk.slots.len())
            .map(|slot| {
                tokio::spawn(keep_up(
                    self.endpoint.clone(),
                    config.clone(),
                    trunk.clone(),
                    slot,
                    self.backoff,
                ))
            })
            .collect();
        if let Ok(mut held) = trunk.tasks.lock() {
            *held = tasks;
        }
        trunk
    }

    /// The peer named `peer`, if kept connected.
    fn peer(&self, peer: &str) -> Option<Arc<PeerTrunk>> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .cloned()
    }

    /// How many connections to `peer` are up now, as it changes (`None` for an unknown peer).
    pub fn live_connections(&self, peer: &str) -> Option<watch::Receiver<usize>> {
        self.peer(peer).map(|p| p.live.subscribe())
    }

    /// Why the last connection attempt to `peer` failed or its last connection was lost.
    pub fn last_failure(&self, peer: &str) -> Option<String> {
        self.peer(peer)?.last_failure.lock().ok()?.clone()
    }

    /// Opens a stream to `peer` for the connection `header` describes, sends the header and
    /// `early` (bytes the caller already read from its client, such as the ClientHello) at
    /// once, and returns the stream when the remote gateway answers OK.
    ///
    /// # Errors
    ///
    /// At once when the peer has no connection up; the remote's refusal; a broken connection.
    pub async fn open(
        &self,
        peer: &str,
        header: &StreamHeader,
        early: &[u8],
    ) -> Result<TrunkStream, OpenError> {
        let trunk = self
            .peer(peer)
            .ok_or_else(|| OpenError::UnknownPeer(peer.to_owned()))?;
        let connection = trunk
            .pick()
            .ok_or_else(|| OpenError::Down(peer.to_owned()))?;
        let mut first = header.encode().map_err(OpenError::Header)?;
        first.extend_from_slice(early);
        let (send, recv) = tokio::time::timeout(STATUS_TIMEOUT, connection.open_bi())
            .await
            .map_err(|_| OpenError::NoStreamCredit {
                peer: peer.to_owned(),
            })?
            .map_err(|source| OpenError::Connection {
                peer: peer.to_owned(),
                source,
            })?;
        let mut stream = TrunkStream::new(send, recv);
        if let Err(source) = stream.send_mut().write_all(&first).await {
            stream.reset();
            return Err(OpenError::Write {
                peer: peer.to_owned(),
                source: source.into(),
            });
        }
        let status =
            tokio::time::timeout(STATUS_TIMEOUT, StreamStatus::read(stream.recv_mut())).await;
        match status {
            Ok(Ok(StreamStatus::Ok)) => Ok(stream),
            Ok(Ok(StreamStatus::Refused { reason, text })) => {
                stream.reset();
                Err(OpenError::Refused {
                    peer: peer.to_owned(),
                    reason,
                    text,
                })
            }
            Ok(Err(source)) => {
                stream.reset();
                Err(OpenError::Status {
                    peer: peer.to_owned(),
                    source,
                })
            }
            Err(_) => {
                stream.reset();
                Err(OpenError::StatusTimeout {
                    peer: peer.to_owned(),
                })
            }
        }
    }
}

impl Drop for TrunkClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Keeps one connection of `slot` to the peer up: connects, waits for it to close, and
/// connects again after a backoff delay.
async fn keep_up(
    endpoint: Endpoint,
    config: quinn::ClientConfig,
    trunk: Arc<PeerTrunk>,
    slot: usize,
    backoff: Backoff,
) {
    let peer = &trunk.peer;
    let server_name = peer.identity.trust_domain_name().to_owned();
    let mut failures = 0u32;
    loop {
        match connect(&endpoint, &config, peer.address, &server_name).await {
            Ok(connection) => {
                failures = 0;
                tracing::info!(peer = %peer.name, address = %peer.address, slot, "trunk connection up");
                trunk.set(slot, Some(connection.clone()));
                let why = connection.closed().await;
                trunk.set(slot, None);
                trunk.failed(why.to_string());
                tracing::warn!(peer = %peer.name, address = %peer.address, slot, reason = %why, "trunk connection lost");
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                trunk.failed(why.clone());
                tracing::warn!(peer = %peer.name, address = %peer.address, slot, failures, reason = %why, "trunk connection failed");
            }
        }
        tokio::time::sleep(backoff.delay(failures)).await;
    }
}

async fn connect(
    endpoint: &Endpoint,
    config: &quinn::ClientConfig,
    address: SocketAddr,
    server_name: &str,
) -> Result<Connection, String> {
    let connecting = endpoint
        .connect_with(config.clone(), address, server_name)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_with_jitter_in_the_upper_half() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let first = backoff.delay(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            let late = backoff.delay(u32::MAX);
            assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5));
        }
    }
}
