//! The east-west role's service export and import (`strait_federation::export`, `::import`),
//! wired to its configuration and peers:
//!
//! - every compilation's [`FederationView`] gives the gateway's export set (a new version
//!   when the exported services change), which the federation API (`--federation-api`, TCP
//!   15445) streams to the gateways of known peers;
//! - the gateway watches every peer's federation API (the host of its `eastwestAddress`,
//!   port 15445) and keeps its import under `DATA/imports/PEER.yaml`, rewritten when a set
//!   arrives, when the local services change (namespace sameness) and when it turns stale
//!   (`--import-stale-after` without a set).
//!
//! The imports follow the peers as `DATA/peers` changes (the east-west role's one
//! [`PeerWatch`](strait_federation::peer_watch::PeerWatch)): a peer applied is watched at
//! once, a removed one has its watch stopped and its import removed, and one whose east-west
//! address, network or gateway identity changed is watched again; the others are left alone.
//! The federation API (both as client and as server) tells the unknown-issuer observer it is
//! given about a peer gateway whose chain ends at no root held for its trust domain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use strait_certs::{IdentityCell, SharedBundles, SpiffeId, UnknownIssuerObserver};
use strait_discovery::compile::exports::FederationView;
use strait_discovery::compile::exports::LocalService;
use strait_discovery::state::now_ms;
use strait_federation::export::client::{ExportSource, watch_exports};
use strait_federation::export::server::ExportServer;
use strait_federation::export::{ExportSet, FEDERATION_API_PORT};
use strait_federation::import::{Importer, PeerImport};
use strait_federation::peer::Peer;
use strait_federation::peer_store::PeerStore;
use strait_federation::peer_watch::PeerList;
use strait_proxy::tls::mesh::MeshIdentity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::last_good::ServingStatus;

/// How often imports are checked for staleness.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What export and import need from the rest of the gateway.
pub struct ExportContext<'a> {
    pub data: &'a Path,
    pub mesh: &'a MeshIdentity,
    pub own_id: SpiffeId,
    pub store: PeerStore,
    /// The peers as they change.
    pub peers: watch::Receiver<PeerList>,
    /// Told the trust domain of a peer gateway whose chain ends at no root held for it.
    pub unknown_issuer: Option<UnknownIssuerObserver>,
    pub network: Option<String>,
    pub view: watch::Receiver<Arc<FederationView>>,
    /// `--federation-api`: where the federation API listens, if anywhere.
    pub listen: Option<SocketAddr>,
    pub keepalive: Duration,
    pub stale_after: Duration,
    /// Where stale imports are reported (`/healthz/details`).
    pub status: Arc<ServingStatus>,
}

/// One peer's import, shared by its watch and the stale check.
type SharedImporter = Arc<Mutex<Importer>>;

/// Starts the federation API and the watches of every peer's exports.
pub async fn start(context: ExportContext<'_>) -> anyhow::Result<()> {
    // The first set is the configuration's already compiled: a peer never sees an empty set
    // that is only the start.
    let exports = watch::Sender::new(Arc::new(ExportSet {
        version: now_ms(),
        trust_domain: context.own_id.trust_domain_name().to_owned(),
        network: context.network.clone().unwrap_or_default(),
        services: context.view.borrow().exported.clone(),
    }));
    tokio::spawn(follow_exports(context.view.clone(), exports.clone()));
    if let Some(listen) = context.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the federation API on {listen}"))?;
        tracing::info!(address = %listen, "federation API ready");
        let server = ExportServer {
            exports: exports.subscribe(),
            peers: context.store.clone(),
            keepalive: context.keepalive,
        };
        let (cell, bundles) = (context.mesh.cell.clone(), context.mesh.bundles.clone());
        let unknown_issuer = context.unknown_issuer.clone();
        tokio::spawn(async move {
            if let Err(error) = server
                .serve(
                    listener,
                    cell,
                    bundles,
                    unknown_issuer,
                    std::future::pending(),
                )
                .await
            {
                tracing::error!("{error}; the exports are not served");
            }
        });
    }
    let imports = Imports {
        data: context.data.to_path_buf(),
        cell: context.mesh.cell.clone(),
        bundles: context.mesh.bundles.clone(),
        unknown_issuer: context.unknown_issuer,
        stale_after: context.stale_after,
        peers: BTreeMap::new(),
    };
    tokio::spawn(keep_imports(
        imports,
        context.peers,
        context.view,
        context.status,
    ));
    Ok(())
}

/// Where and who a peer's gateway is, for its import: a change of any of it restarts the
/// import.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImportedPeer {
    import: PeerImport,
    source_address: String,
    gateway_id: SpiffeId,
}

impl ImportedPeer {
    fn of(peer: &Peer) -> ImportedPeer {
        let host = address_host(&peer.eastwest_address);
        ImportedPeer {
            source_address: if host.contains(':') {
                format!("[{host}]:{FEDERATION_API_PORT}")
            } else {
                format!("{host}:{FEDERATION_API_PORT}")
            },
            import: PeerImport {
                peer: peer.name.clone(),
                network: peer.network.clone(),
                address: host,
            },
            gateway_id: peer.bundle_endpoint.spiffe_id.clone(),
        }
    }
}

/// One peer's import: its importer and the watch of its exports feeding it.
struct Import {
    peer: ImportedPeer,
    importer: SharedImporter,
    watch: JoinHandle<()>,
}

/// Every peer's import, following the peers.
struct Imports {
    data: PathBuf,
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    unknown_issuer: Option<UnknownIssuerObserver>,
    stale_after: Duration,
    peers: BTreeMap<String, Import>,
}

impl Imports {
    /// Starts the imports of peers new in `list` (and again of those redefined), with the
    /// `local` services, and ends those of peers no longer in it.
    fn follow(
        &mut self,
        list: &PeerList,
        local: &BTreeMap<String, LocalService>,
        status: &ServingStatus,
    ) {
        let wanted: BTreeMap<String, ImportedPeer> = list
            .iter()
            .map(|stored| (stored.peer.name.clone(), ImportedPeer::of(&stored.peer)))
            .collect();
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(name, import)| wanted.get(*name) != Some(&import.peer))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let Some(import) = self.peers.remove(&name) else {
                continue;
            };
            import.watch.abort();
            if wanted.contains_key(&name) {
                tracing::info!(peer = %name, "the peer's gateway changed; watching its exports again");
                continue;
            }
            status.import_stale(&name, None);
            let mut importer = import.importer.lock().unwrap_or_else(|e| e.into_inner());
            match importer.forget() {
                Ok(()) => {
                    tracing::info!(peer = %name, "peer removed; its exports are no longer watched and its import is removed")
                }
                Err(error) => {
                    tracing::error!(peer = %name, "peer removed; its import could not be removed: {error}")
                }
            }
        }
        for (name, peer) in wanted {
            if self.peers.contains_key(&name) {
                continue;
            }
            let importer = Arc::new(Mutex::new(Importer::open(
                &self.data,
                peer.import.clone(),
                self.stale_after,
            )));
            with_importer(&importer, |i| i.set_local(local.clone(), now_ms()));
            let source = ExportSource {
                peer: name.clone(),
                address: peer.source_address.clone(),
                gateway_id: peer.gateway_id.clone(),
                unknown_issuer: self.unknown_issuer.clone(),
            };
            tracing::info!(peer = %name, address = %source.address, "watching the peer's exports");
            let fed = importer.clone();
            let watch = tokio::spawn(watch_exports(
                source,
                self.cell.clone(),
                self.bundles.clone(),
                move |set| with_importer(&fed, |i| i.received(set, now_ms())),
            ));
            self.peers.insert(
                name,
                Import {
                    peer,
                    importer,
                    watch,
                },
            );
        }
    }
}

/// Publishes a new export set whenever a compilation exports something else.
async fn follow_exports(
    mut view: watch::Receiver<Arc<FederationView>>,
    exports: watch::Sender<Arc<ExportSet>>,
) {
    loop {
        let exported = view.borrow_and_update().exported.clone();
        exports.send_if_modified(|current| {
            if current.services == exported {
                return false;
            }
            let mut next = ExportSet::clone(current);
            next.version = now_ms().max(current.version + 1);
            next.services = exported;
            tracing::info!(
                version = next.version,
                services = next.services.len(),
                "the exported services changed"
            );
            *current = Arc::new(next);
            true
        });
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Follows the peers, rewrites imports when the local services change and checks them for
/// staleness.
async fn keep_imports(
    mut imports: Imports,
    mut peers: watch::Receiver<PeerList>,
    mut view: watch::Receiver<Arc<FederationView>>,
    status: Arc<ServingStatus>,
) {
    let mut tick = tokio::time::interval(STALE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let list = peers.borrow_and_update().clone();
    let local = view.borrow_and_update().local.clone();
    imports.follow(&list, &local, &status);
    loop {
        tokio::select! {
            changed = peers.changed() => {
                if changed.is_err() {
                    return;
                }
                let list = peers.borrow_and_update().clone();
                let local = view.borrow().local.clone();
                imports.follow(&list, &local, &status);
            }
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let local = view.borrow_and_update().local.clone();
                for import in imports.peers.values() {
                    with_importer(&import.importer, |i| i.set_local(local.clone(), now_ms()));
                }
            }
            _ = tick.tick() => {
                for import in imports.peers.values() {
                    with_importer(&import.importer, |i| {
                        let refreshed = i.refresh(now_ms());
                        let why = match i.status() {
                            (true, Some(version)) => Some(format!(
                                "the import from peer {} is stale: its exports (version {version}) were last received more than {:?} ago",
                                i.peer(),
                                i.stale_after(),
                            )),
                            _ => None,
                        };
                        status.import_stale(i.peer(), why);
                        refreshed
                    });
                }
            }
        }
    }
}

/// Runs `action` on the importer and logs its failure (the import stays as it was).
fn with_importer(
    importer: &SharedImporter,
    action: impl FnOnce(&mut Importer) -> Result<(), strait_federation::import::ImportError>,
) {
    let mut importer = match importer.lock() {
        Ok(importer) => importer,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Err(error) = action(&mut importer) {
        tracing::error!(peer = %importer.peer(), "{error}; the import stays as it was");
    }
}

/// The host of a `HOST:PORT` address (brackets of an IPv6 address removed).
fn address_host(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(address_host("192.0.2.1:15443"), "192.0.2.1");
        assert_eq!(address_host("[2001:db8::1]:15443"), "2001:db8::1");
        assert_eq!(address_host("gw.west.example:15443"), "gw.west.example");
    }
}
