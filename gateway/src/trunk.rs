//! The east-west gateway's QUIC trunks (`strait_federation::trunk`), wired to its peers and
//! its snapshot:
//!
//! - the trunk server (UDP 15443) admits the east-west gateways of known peers, by the SPIFFE
//!   ID each Peer document names for its bundle endpoint (the east-west gateway serves that
//!   endpoint itself, with the same SVID), and resolves a stream's (service, port, subset) to
//!   an endpoint of the gateway's own `AUTO_PASSTHROUGH` cluster `outbound_.PORT_.SUBSET_.HOST`
//!   in its current snapshot: exactly what 15443 forwards, so only exported services are
//!   reachable over the trunk too;
//! - the trunk client keeps a connection to every peer whose document says `trunk: true`, at
//!   the UDP port of its `eastwestAddress`;
//! - the trunk ingress (TCP 15444) sends a connection to the peer whose network holds
//!   endpoints of the SNI's host ([`RemoteNetworks`], from the gateway's compilation), and
//!   resets it at once when that peer's trunk is down, so that the sidecar takes its next
//!   endpoint: the peer's 15443, directly.
//!
//! The trunks follow the peers as `DATA/peers` changes (the east-west role's one
//! [`PeerWatch`](strait_federation::peer_watch::PeerWatch)): a peer applied with `trunk: true`
//! gets its connection, a removed one (or one no longer asking for a trunk) has it closed and
//! leaves the ingress's routing, one whose address or gateway identity changed is reconnected,
//! and the others are left alone; the trunk server closes the connections of peers no longer
//! stored. Either side of a trunk handshake tells the unknown-issuer observer it is given
//! about a peer gateway whose chain ends at no root held for its trust domain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use strait_certs::UnknownIssuerObserver;
use strait_discovery::compile::RemoteNetworks;
use strait_federation::peer_store::{PeerStore, StoredPeer};
use strait_federation::peer_watch::PeerList;
use strait_federation::trunk::{
    Backoff, EndpointResolver, PeerAuthorizer, PeerSelector, Refusal, RefusalReason, StreamHeader,
    TrunkClient, TrunkIdentity, TrunkIngress, TrunkPath, TrunkPeer, TrunkServer,
};
use strait_proxy::Proxy;
use strait_proxy::snapshot::Snapshot;
use strait_proxy::tls::mesh::MeshIdentity;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the trunks need from the rest of the gateway.
pub struct TrunkContext {
    /// The gateway's identity: the SVID its trunks present and the bundles they trust.
    pub mesh: MeshIdentity,
    /// The gateway's proxy, whose snapshot resolves streams.
    pub proxy: Arc<Proxy>,
    /// The peers.
    pub store: PeerStore,
    /// The gateway's network (what stream headers say the caller comes from).
    pub network: Option<String>,
    /// The networks holding each host's endpoints, as the last compilation found them.
    pub remote_networks: watch::Receiver<Arc<RemoteNetworks>>,
}

/// The running trunks; they stop when this is dropped.
pub struct Trunks {
    server: Option<Arc<TrunkServer>>,
    client: Arc<TrunkClient>,
    _ingress: Option<TrunkIngress>,
    following: tokio::task::JoinHandle<()>,
}

impl Trunks {
    /// Closes the trunks both ways with a reason the peers see at once, instead of leaving
    /// them to notice at their idle timeout; waits up to a second for the closes to go out.
    pub async fn shut_down(&self) {
        self.following.abort();
        let limit = Duration::from_secs(1);
        match &self.server {
            Some(server) => {
                tokio::join!(self.client.shut_down(limit), server.shut_down(limit));
            }
            None => self.client.shut_down(limit).await,
        }
    }
}

impl Drop for Trunks {
    fn drop(&mut self) {
        self.following.abort();
    }
}

/// Starts the trunk server on UDP `listen` and the trunk ingress on TCP `ingress` (either
/// may be off), with a client to every peer in `peers` whose document asks for a trunk, as
/// `peers` changes; `unknown_issuer` hears of peer gateways whose chain ends at no root held.
pub async fn start(
    context: TrunkContext,
    listen: Option<SocketAddr>,
    ingress: Option<SocketAddr>,
    mut peers: watch::Receiver<PeerList>,
    unknown_issuer: Option<UnknownIssuerObserver>,
) -> anyhow::Result<Trunks> {
    let identity = TrunkIdentity {
        cell: context.mesh.cell.clone(),
        bundles: context.mesh.bundles.clone(),
        unknown_issuer,
    };
    let path = TrunkPath::default();
    let server = match listen {
        Some(listen) => {
            let server = TrunkServer::start(
                listen,
                &identity,
                &path,
                authorizer(context.store.clone()),
                resolver(context.proxy.clone()),
            )
            .with_context(|| format!("the trunk server on UDP {listen}"))?;
            tracing::info!(address = %server.local_addr(), "trunk server listening (UDP)");
            Some(Arc::new(server))
        }
        None => None,
    };
    let unspecified: SocketAddr = ([0, 0, 0, 0], 0).into();
    let client = Arc::new(
        TrunkClient::start(
            unspecified,
            &identity,
            &path,
            Backoff::default(),
            Vec::new(),
        )
        .context("the trunk client")?,
    );
    let networks = watch::Sender::new(Arc::new(BTreeMap::new()));
    let mut trunked = TrunkedPeers::default();
    // Cloned first: the receiver's guard must not live across the await.
    let current = peers.borrow_and_update().clone();
    trunked.apply(&client, &networks, &current).await;
    let following = tokio::spawn(follow_peers(
        client.clone(),
        server.clone(),
        networks.clone(),
        peers,
        trunked,
    ));
    let ingress = match ingress {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the trunk ingress on {address}"))?;
            let ingress = TrunkIngress::start(
                listener,
                client.clone(),
                context.network.clone().unwrap_or_default(),
                selector(networks.subscribe(), context.remote_networks),
            )
            .with_context(|| format!("the trunk ingress on {address}"))?;
            tracing::info!(address = %ingress.local_addr(), "trunk ingress listening");
            Some(ingress)
        }
        None => None,
    };
    Ok(Trunks {
        server,
        client,
        _ingress: ingress,
        following,
    })
}

/// Applies every change of the peers to the trunk client and the ingress's routing, and has
/// the server close the connections of peers no longer stored.
async fn follow_peers(
    client: Arc<TrunkClient>,
    server: Option<Arc<TrunkServer>>,
    networks: watch::Sender<Arc<BTreeMap<String, String>>>,
    mut peers: watch::Receiver<PeerList>,
    mut trunked: TrunkedPeers,
) {
    while peers.changed().await.is_ok() {
        let list = peers.borrow_and_update().clone();
        trunked.apply(&client, &networks, &list).await;
        if let Some(server) = &server {
            server.reauthorize();
        }
    }
}

/// The peers the client keeps trunks to, each with its network.
#[derive(Default)]
struct TrunkedPeers {
    peers: BTreeMap<String, (TrunkPeer, String)>,
}

impl TrunkedPeers {
    /// Makes the client keep trunks to the peers of `list` that ask for one, and routes
    /// their networks to them; logs what changed.
    async fn apply(
        &mut self,
        client: &TrunkClient,
        networks: &watch::Sender<Arc<BTreeMap<String, String>>>,
        list: &[StoredPeer],
    ) {
        let mut next = BTreeMap::new();
        for stored in list.iter().filter(|s| s.peer.trunk) {
            let previous = self.peers.get(&stored.peer.name);
            if let Some(wanted) = trunk_peer(stored, previous).await {
                next.insert(stored.peer.name.clone(), wanted);
            }
        }
        if next == self.peers {
            return;
        }
        let changed = match client.set_peers(next.values().map(|(peer, _)| peer.clone()).collect())
        {
            Ok(changed) => changed,
            Err(error) => {
                tracing::error!("{error}; the trunks stay as they were");
                return;
            }
        };
        for name in changed.added.iter().chain(&changed.restarted) {
            if let Some((peer, network)) = next.get(name) {
                tracing::info!(
                    peer = %peer.name, %network, address = %peer.address, identity = %peer.identity,
                    restarted = changed.restarted.contains(name),
                    "keeping a trunk to the peer's east-west gateway"
                );
            }
        }
        for name in &changed.removed {
            tracing::info!(peer = %name, "the peer is gone or wants no trunk; its trunk is closed");
        }
        networks.send_replace(Arc::new(
            next.values()
                .map(|(peer, network)| (network.clone(), peer.name.clone()))
                .collect(),
        ));
        self.peers = next;
    }
}

/// The trunk `stored` asks for, with its network: its east-west address resolved now. When the
/// address does not resolve, the log says so and the trunk already kept (`previous`) stays.
async fn trunk_peer(
    stored: &StoredPeer,
    previous: Option<&(TrunkPeer, String)>,
) -> Option<(TrunkPeer, String)> {
    let peer = &stored.peer;
    let address = match tokio::net::lookup_host(&peer.eastwest_address).await {
        Ok(mut addresses) => addresses.next(),
        Err(error) => {
            tracing::warn!(
                peer = %peer.name,
                "the east-west address {} does not resolve ({error}); {}",
                peer.eastwest_address,
                if previous.is_some() { "the trunk stays as it is" } else { "no trunk to it" }
            );
            return previous.cloned();
        }
    };
    Some((
        TrunkPeer {
            name: peer.name.clone(),
            address: address?,
            identity: peer.bundle_endpoint.spiffe_id.clone(),
            connections: 1,
        },
        peer.network.clone(),
    ))
}

/// Admits the east-west gateway of a peer stored now (by its bundle endpoint's SPIFFE ID).
fn authorizer(store: PeerStore) -> PeerAuthorizer {
    Arc::new(move |id| {
        let peers = store
            .list()
            .map_err(|error| format!("the peers cannot be read: {error}"))?;
        if peers
            .iter()
            .any(|p| p.peer.bundle_endpoint.spiffe_id == *id)
        {
            Ok(())
        } else {
            Err(format!(
                "{id} is no peer's east-west gateway (the bundle endpoint ID of a Peer)"
            ))
        }
    })
}

/// Resolves a stream to an endpoint of the `AUTO_PASSTHROUGH` cluster its header names, in
/// the snapshot in force; endpoints are taken in turn.
fn resolver(proxy: Arc<Proxy>) -> EndpointResolver {
    let next = Arc::new(AtomicUsize::new(0));
    Arc::new(move |_peer, header: &StreamHeader| {
        resolve(
            &proxy.snapshot(),
            header,
            next.fetch_add(1, Ordering::Relaxed),
        )
    })
}

/// The `turn`-th endpoint (modulo their number) of the east-west cluster
/// `outbound_.PORT_.SUBSET_.HOST` that `header` names in `snapshot`, or why there is none.
fn resolve(snapshot: &Snapshot, header: &StreamHeader, turn: usize) -> Result<SocketAddr, Refusal> {
    let name = format!(
        "outbound_.{}_.{}_.{}",
        header.port, header.subset, header.service
    );
    let cluster =
        match snapshot.clusters.get(&name) {
            Some(cluster) if !snapshot.blackhole_clusters.contains(&name) => cluster,
            _ => {
                let text = snapshot.missing_clusters.get(&name).cloned().unwrap_or_else(|| {
                format!("{name} names no service, port and subset this east-west gateway exposes")
            });
                return Err(Refusal {
                    reason: RefusalReason::NotExported,
                    text,
                });
            }
        };
    let endpoints: Vec<SocketAddr> = cluster
        .endpoints
        .iter()
        .filter(|e| e.weight > 0)
        .map(|e| e.address)
        .collect();
    if endpoints.is_empty() {
        return Err(Refusal {
            reason: RefusalReason::NoHealthyEndpoint,
            text: format!("{name} has no endpoint"),
        });
    }
    Ok(endpoints[turn % endpoints.len()])
}

/// The peer (by name) with a trunk whose network holds endpoints of the SNI's host.
fn selector(
    networks: watch::Receiver<Arc<BTreeMap<String, String>>>,
    remote_networks: watch::Receiver<Arc<RemoteNetworks>>,
) -> PeerSelector {
    Arc::new(move |name| {
        let remote = remote_networks.borrow().clone();
        let networks = networks.borrow().clone();
        remote
            .get(&name.host)?
            .iter()
            .find_map(|network| networks.get(network).cloned())
    })
}

#[cfg(test)]
mod tests {
    use strait_discovery::compile::{GatewayOptions, compile_gateway};
    use strait_discovery::resources::{LoadOptions, Loaded, load_text};

    use super::*;

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default, labels: {strait.io/export: "true"}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, targetPort: 8080}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 10.2.0.1, network: west}
  - {address: 10.2.0.2, network: west}
  - {address: 10.9.0.1, network: south}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.2.0.3, network: west}]
"#;

    fn compiled() -> strait_discovery::compile::Compiled {
        let mut loaded = Loaded::default();
        load_text(
            &Arc::from("test.yaml"),
            CONFIG,
            &LoadOptions::default(),
            &mut loaded,
        );
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        let options = GatewayOptions {
            labels: [("istio".to_owned(), "eastwestgateway".to_owned())].into(),
            network: Some("west".to_owned()),
            eastwest: true,
            ..GatewayOptions::default()
        };
        compile_gateway(&loaded.objects, &options, 1)
    }

    fn header(service: &str, port: u16) -> StreamHeader {
        StreamHeader {
            service: service.to_owned(),
            port,
            subset: String::new(),
            original_sni: String::new(),
            source_network: "east".to_owned(),
        }
    }

    #[test]
    fn streams_resolve_to_local_endpoints_of_exported_services_only() {
        let snapshot = compiled().snapshot;
        let reviews = header("reviews.default.svc.cluster.local", 9080);
        let turns: Vec<String> = (0..3)
            .map(|turn| resolve(&snapshot, &reviews, turn).unwrap().to_string())
            .collect();
        // West's endpoints in turn, at the target port; south's is not the gateway's to reach.
        assert_eq!(turns, ["10.2.0.1:8080", "10.2.0.2:8080", "10.2.0.1:8080"]);

        let refused = resolve(
            &snapshot,
            &header("ratings.default.svc.cluster.local", 9080),
            0,
        )
        .unwrap_err();
        assert_eq!(refused.reason, RefusalReason::NotExported);
        assert!(refused.text.contains("is not exported"), "{}", refused.text);

        let unknown = resolve(
            &snapshot,
            &header("reviews.default.svc.cluster.local", 1),
            0,
        )
        .unwrap_err();
        assert_eq!(unknown.reason, RefusalReason::NotExported);
        assert!(
            unknown.text.contains("names no service"),
            "{}",
            unknown.text
        );
    }

    #[test]
    fn the_ingress_picks_the_trunked_peer_whose_network_holds_the_host() {
        let (_sender, receiver) = watch::channel(Arc::new(compiled().remote_networks));
        let (_networks, trunked) = watch::channel(Arc::new(BTreeMap::from([(
            "south".to_owned(),
            "south-cluster".to_owned(),
        )])));
        let select = selector(trunked, receiver);
        let name = |host: &str| strait_federation::sni::OutboundName {
            host: host.to_owned(),
            port: 9080,
            subset: String::new(),
        };
        assert_eq!(
            select(&name("reviews.default.svc.cluster.local")).as_deref(),
            Some("south-cluster")
        );
        // ratings is on the gateway's own network only; nothing else is known.
        assert_eq!(select(&name("ratings.default.svc.cluster.local")), None);
        assert_eq!(select(&name("nothing.local")), None);
    }
}
