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
//! The peers are read when the gateway starts; one applied later needs a restart to be
//! watched (its bundle is followed without one).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use strait_certs::SpiffeId;
use strait_discovery::compile::exports::FederationView;
use strait_discovery::state::now_ms;
use strait_federation::export::client::{ExportSource, watch_exports};
use strait_federation::export::server::ExportServer;
use strait_federation::export::{ExportSet, FEDERATION_API_PORT};
use strait_federation::import::{Importer, PeerImport};
use strait_federation::peer_store::PeerStore;
use strait_proxy::tls::mesh::MeshIdentity;
use tokio::sync::watch;

use crate::last_good::ServingStatus;

/// How often imports are checked for staleness.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What export and import need from the rest of the gateway.
pub struct ExportContext<'a> {
    pub data: &'a Path,
    pub mesh: &'a MeshIdentity,
    pub own_id: SpiffeId,
    pub store: PeerStore,
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
        tokio::spawn(async move {
            if let Err(error) = server
                .serve(listener, cell, bundles, std::future::pending())
                .await
            {
                tracing::error!("{error}; the exports are not served");
            }
        });
    }
    let peers = match context.store.list() {
        Ok(peers) => peers,
        Err(error) => {
            tracing::error!("reading the peers failed ({error}); no peer's exports are imported");
            Vec::new()
        }
    };
    let mut importers: Vec<SharedImporter> = Vec::new();
    for stored in peers {
        let peer = stored.peer;
        let host = address_host(&peer.eastwest_address);
        let import = PeerImport {
            peer: peer.name.clone(),
            network: peer.network.clone(),
            address: host.clone(),
        };
        let importer = Arc::new(Mutex::new(Importer::open(
            context.data,
            import,
            context.stale_after,
        )));
        importers.push(importer.clone());
        let source = ExportSource {
            peer: peer.name.clone(),
            address: if host.contains(':') {
                format!("[{host}]:{FEDERATION_API_PORT}")
            } else {
                format!("{host}:{FEDERATION_API_PORT}")
            },
            gateway_id: peer.bundle_endpoint.spiffe_id.clone(),
        };
        let (cell, bundles) = (context.mesh.cell.clone(), context.mesh.bundles.clone());
        tokio::spawn(watch_exports(source, cell, bundles, move |set| {
            with_importer(&importer, |i| i.received(set, now_ms()));
        }));
    }
    tokio::spawn(keep_imports(importers, context.view, context.status));
    Ok(())
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

/// Rewrites imports when the local services change and checks them for staleness.
async fn keep_imports(
    importers: Vec<SharedImporter>,
    mut view: watch::Receiver<Arc<FederationView>>,
    status: Arc<ServingStatus>,
) {
    let mut tick = tokio::time::interval(STALE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    view.mark_changed();
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let local = view.borrow_and_update().local.clone();
                for importer in &importers {
                    with_importer(importer, |i| i.set_local(local.clone(), now_ms()));
                }
            }
            _ = tick.tick() => {
                for importer in &importers {
                    with_importer(importer, |i| {
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
