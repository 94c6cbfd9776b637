//! What is live: the installed snapshot compiled for serving (route tables indexed, cluster
//! state linked, TLS configurations built, JWT keys resolved), swapped atomically as one `Active` value, and what
//! outlives snapshots (the clusters' live state, the connection pools, telemetry).
//!
//! A new connection takes the `Active` current when it arrives; each request on it takes the
//! current one again and keeps it for its whole life, retries included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::authn::jwks::JwksStore;
use crate::authn::{self, ActiveJwtRule};
use crate::authz::{Attributes, Protocol};
use crate::http::routing::Router;
use crate::snapshot::{Application, Cluster, Snapshot, Transport, UpstreamTls};
use crate::telemetry::Telemetry;
use crate::tls::mesh::{MeshIdentity, MeshPeer, MeshTlsError};
use crate::tls::server::{TlsConfigError, server_config};
use crate::upstream::cluster::ClusterState;
use crate::upstream::connect::{SocketSetup, TlsOrigination};
use crate::upstream::connector::UpstreamConnector;
use crate::upstream::pool::Pools;

/// Settings of the proxy process that are not configuration.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Proxies in front of this one whose `x-forwarded-*` headers are trusted
    /// (`numTrustedProxies`).
    pub trusted_hops: u32,
    /// How long a connection may take to send its TLS ClientHello and, where TLS is
    /// terminated, to complete the handshake.
    pub client_hello_timeout: Duration,
    /// How long a connection may take to send the headers of its first request (HTTP/1.1 and
    /// HTTP/2), and an HTTP/1.1 connection those of each later one.
    pub header_read_timeout: Duration,
    /// How long an HTTP/2 connection may go without a request from the client before it is
    /// sent a PING.
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 client has to answer that PING before its connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// The most request header bytes an HTTP/1.1 request may carry.
    pub max_header_bytes: usize,
    /// The most header list bytes an HTTP/2 request may carry.
    pub max_header_list_bytes: u32,
    /// `SO_MARK` on every connection to an endpoint, so that capture rules exclude the
    /// proxy's own traffic (needs CAP_NET_ADMIN).
    pub socket_mark: Option<u32>,
    /// The proxy's SPIFFE identity and trust bundles, for `ISTIO_MUTUAL` on either side.
    pub mesh: Option<MeshIdentity>,
    /// How often a JWKS fetched from a `jwksUri` is fetched again.
    pub jwks_refresh_interval: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            trusted_hops: 0,
            client_hello_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_header_bytes: 64 * 1024,
            max_header_list_bytes: 64 * 1024,
            socket_mark: None,
            mesh: None,
            jwks_refresh_interval: crate::authn::jwks::DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// The snapshot being served, ready for the request path.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) routers: HashMap<String, Arc<Router>>,
    pub(crate) clusters: HashMap<String, Arc<ClusterState>>,
    /// By `(listener, filter chain)`.
    pub(crate) server_tls: HashMap<(String, String), Arc<ServerConfig>>,
    /// By cluster: the origination and its settings' identity for pool keys.
    pub(crate) upstream_tls: HashMap<String, (Arc<TlsOrigination>, String)>,
    /// The policies' JWT rules with their keys.
    pub(crate) jwt_rules: Vec<ActiveJwtRule>,
}

impl Active {
    fn empty() -> Active {
        Active {
            snapshot: Arc::new(Snapshot::default()),
            routers: HashMap::new(),
            clusters: HashMap::new(),
            server_tls: HashMap::new(),
            upstream_tls: HashMap::new(),
            jwt_rules: Vec::new(),
        }
    }
}

/// What a connection knows about itself.
#[derive(Debug)]
pub(crate) struct Downstream {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Where the client meant to connect, when the listener reads it (captured traffic).
    pub(crate) original_destination: Option<SocketAddr>,
    pub(crate) listener: String,
    pub(crate) route_table: String,
    pub(crate) tls: bool,
    pub(crate) sni: Option<String>,
    /// The client's IP as `x-forwarded-for` writes it, formatted once per connection.
    pub(crate) peer_ip: http::HeaderValue,
    /// The verified peer of a mesh mTLS connection.
    pub(crate) mesh_peer: Option<MeshPeer>,
    /// The `x-forwarded-client-cert` element for a client certificate a gateway verified.
    pub(crate) client_certificate: Option<http::HeaderValue>,
    /// Whether the listener is an explicit HTTP proxy: requests are routed by their target
    /// through the listener's `HttpProxy` (read from the snapshot for each request).
    pub(crate) http_proxy: bool,
}

impl Downstream {
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Where the client connected, as Envoy logs `DOWNSTREAM_LOCAL_ADDRESS`: the original
    /// destination under capture, not the capture port.
    pub(crate) fn local_address(&self) -> SocketAddr {
        self.original_destination.unwrap_or(self.local)
    }

    /// The verified SPIFFE ID of a mesh peer.
    pub(crate) fn peer_principal(&self) -> Option<&str> {
        self.mesh_peer.as_ref().map(|p| p.principal.as_str())
    }

    /// What authorization knows about the connection: the peer, its verified identity, the
    /// destination it meant (the original one under capture) and the SNI.
    pub(crate) fn attributes(&self, protocol: Protocol) -> Attributes<'_> {
        Attributes {
            source_principal: self.peer_principal(),
            sni: self.sni.as_deref(),
            ..Attributes::connection(protocol, self.peer.ip(), self.local_address())
        }
    }
}

/// Why a snapshot was not installed; the previous one stays live.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("listener {listener}, filter chain {chain}: {source}")]
    ServerTls {
        listener: String,
        chain: String,
        source: TlsConfigError,
    },
    #[error("cluster {cluster}: {source}")]
    UpstreamTls {
        cluster: String,
        source: TlsConfigError,
    },
    #[error("listener {listener}, filter chain {chain}: {source}")]
    MeshTls {
        listener: String,
        chain: String,
        source: MeshTlsError,
    },
    #[error("cluster {cluster}: {source}")]
    MeshUpstreamTls {
        cluster: String,
        source: MeshTlsError,
    },
    #[error("listener {listener} on {address}: {source}")]
    Bind {
        listener: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("building the snapshot's state failed: {0}")]
    Interrupted(String),
}

/// Everything the listeners and requests share.
#[derive(Debug)]
pub(crate) struct Shared {
    active: ArcSwap<Active>,
    /// Live cluster state by name, kept across snapshots.
    clusters: Mutex<HashMap<String, Arc<ClusterState>>>,
    pub(crate) pools: Pools,
    /// Remote JWKS by URI, fetched and refreshed in the background.
    jwks: JwksStore,
    pub(crate) telemetry: Telemetry,
    pub(crate) options: ProxyOptions,
    /// Offered every connection a TCP route opens to an endpoint (see
    /// [`crate::UpstreamConnector`]); without one, or when it declines, TCP.
    pub(crate) upstream_connector: Option<Arc<dyn UpstreamConnector>>,
    /// Set to true when the proxy drains: connections finish what they are doing and close.
    pub(crate) draining: watch::Sender<bool>,
    /// Downstream connections open now.
    pub(crate) connections: watch::Sender<usize>,
    /// Bumped whenever an installed snapshot changes the policies, so that open TCP
    /// connections are checked again.
    pub(crate) policy_changes: watch::Sender<u64>,
}

/// Counts a downstream connection as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .connections
            .send_modify(|open| *open = open.saturating_sub(1));
    }
}

impl Shared {
    pub(crate) fn new(
        telemetry: Telemetry,
        options: ProxyOptions,
        upstream_connector: Option<Arc<dyn UpstreamConnector>>,
    ) -> Shared {
        Shared {
            upstream_connector,
            active: ArcSwap::new(Arc::new(Active::empty())),
            clusters: Mutex::new(HashMap::new()),
            pools: Pools::default(),
            jwks: JwksStore::new(options.jwks_refresh_interval, options.socket_mark),
            telemetry,
            options,
            draining: watch::channel(false).0,
            connections: watch::channel(0).0,
            policy_changes: watch::channel(0).0,
        }
    }

    /// How connections to `cluster`'s endpoints are set up.
    pub(crate) fn socket_setup(&self, cluster: &Cluster) -> SocketSetup {
        SocketSetup {
            source: cluster.upstream_bind,
            mark: self.options.socket_mark,
        }
    }

    /// Counts a connection as open for as long as the returned guard lives.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections.send_modify(|open| *open += 1);
        OpenConnection(self.clone())
    }

    /// The snapshot being served now.
    pub(crate) fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Compiles `snapshot` and makes it the one served. Nothing changes when it fails.
    pub(crate) fn install(&self, snapshot: Arc<Snapshot>) -> Result<(), InstallError> {
        let mut server_tls = HashMap::new();
        let mut mesh_server = None;
        for listener in &snapshot.listeners {
            for chain in &listener.filter_chains {
                let config = match &chain.transport {
                    Transport::Terminate(tls) => {
                        server_config(tls).map_err(|source| InstallError::ServerTls {
                            listener: listener.name.clone(),
                            chain: chain.name.clone(),
                            source,
                        })?
                    }
                    Transport::IstioMutual | Transport::IstioMutualInnerSni => match &mesh_server {
                        Some(config) => Arc::clone(config),
                        None => {
                            let config = self
                                .options
                                .mesh
                                .as_ref()
                                .ok_or(MeshTlsError::NoIdentity)
                                .and_then(MeshIdentity::server_config)
                                .map_err(|source| InstallError::MeshTls {
                                    listener: listener.name.clone(),
                                    chain: chain.name.clone(),
                                    source,
                                })?;
                            mesh_server = Some(config.clone());
                            config
                        }
                    },
                    Transport::Plaintext | Transport::Passthrough => continue,
                };
                server_tls.insert((listener.name.clone(), chain.name.clone()), config);
            }
        }
        let mut upstream_tls = HashMap::new();
        let tcp_clusters = tcp_clusters(&snapshot);
        for (name, cluster) in &snapshot.clusters {
            let origination = if let UpstreamTls::IstioMutual {
                sni,
                subject_alt_names,
            } = &cluster.tls
            {
                let mesh = self.options.mesh.as_ref().ok_or(MeshTlsError::NoIdentity);
                let tcp = tcp_clusters.contains(name.as_str());
                let origination = mesh
                    .and_then(|m| m.origination(sni, subject_alt_names, cluster.protocol, tcp))
                    .map_err(|source| InstallError::MeshUpstreamTls {
                        cluster: name.clone(),
                        source,
                    })?;
                let key = format!("istio;sni={sni};names={subject_alt_names:?};tcp={tcp}");
                Some((Arc::new(origination), key))
            } else {
                crate::tls::upstream::origination(&cluster.tls, cluster.protocol).map_err(
                    |source| InstallError::UpstreamTls {
                        cluster: name.clone(),
                        source,
                    },
                )?
            };
            if let Some(origination) = origination {
                upstream_tls.insert(name.clone(), origination);
            }
        }
        let routers = snapshot
            .route_tables
            .iter()
            .map(|(name, table)| (name.clone(), Arc::new(Router::new(table.clone()))))
            .collect();
        let clusters = self.link_clusters(&snapshot);
        let jwt_rules = authn::activate(&snapshot.policies.jwt_rules, &self.jwks);
        self.telemetry.metrics.reset_bases();
        let policies_changed = self.active.load().snapshot.policies != snapshot.policies;
        self.active.store(Arc::new(Active {
            snapshot,
            routers,
            clusters,
            server_tls,
            upstream_tls,
            jwt_rules,
        }));
        if policies_changed {
            self.policy_changes
                .send_modify(|generation| *generation += 1);
        }
        Ok(())
    }

    /// The live state for each of the snapshot's clusters: kept for clusters that stay, new for
    /// new ones; clusters that went are forgotten.
    fn link_clusters(&self, snapshot: &Snapshot) -> HashMap<String, Arc<ClusterState>> {
        let Ok(mut registry) = self.clusters.lock() else {
            return HashMap::new();
        };
        registry.retain(|name, _| snapshot.clusters.contains_key(name));
        for (name, config) in &snapshot.clusters {
            match registry.get(name) {
                Some(state) => {
                    if state.config() != *config {
                        state.update(config.clone());
                    }
                }
                None => {
                    registry.insert(name.clone(), ClusterState::new(config.clone()));
                }
            }
        }
        registry.clone()
    }
}

/// The clusters TCP routes (and CONNECT tunnels) send to: their mesh mTLS offers Istio's TCP ALPN list.
fn tcp_clusters(snapshot: &Snapshot) -> std::collections::HashSet<&str> {
    snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .flat_map(|c| match &c.application {
            Application::Tcp { routes } => routes.iter().collect(),
            Application::HttpProxy(proxy) => proxy
                .tunnels
                .values()
                .flatten()
                .chain(&proxy.default_tunnel)
                .collect(),
            Application::Http { .. } => Vec::new(),
        })
        .flat_map(|r| r.clusters.iter().map(|(name, _)| name.as_str()))
        .collect()
}
