//! What the east-west role runs beside its listeners when it has a mesh identity: the SPIFFE
//! bundle endpoint serving its own trust domain's bundle (TCP 15446), the poller that
//! follows every peer in `DATA/peers`, with each accepted peer bundle put into the gateway's
//! own verifier set (so that mTLS with the peer's gateways trusts it), and the QUIC trunks
//! (`crate::trunk`: UDP 15443, trunk ingress on TCP 15444), and the export and import of
//! services (`crate::exports`: the federation API on TCP 15445).
//!
//! One [`PeerWatch`] reads `DATA/peers` (every `--peer-rescan-interval`) for all of them: the
//! poller, the verifier set, the trunks and the imports follow peers applied, redefined or
//! removed while the gateway runs. When the gateway's own TLS with a peer's gateway (trunk,
//! federation API; either side) meets a certificate that chains to no root held for the peer's
//! trust domain, the poller is asked for an early refresh of that peer's bundle
//! ([`unknown_issuer_nudge`]), rate-limited by the poller.
//!
//! The bundle endpoint and the poller are the ones `strait federation serve-bundle|poll` run
//! (`crate::federation`); here the bundle served is the gateway's trust bundle for its own
//! trust domain, as its identity has it (the identity folder's `root-cert.pem`, or the CA's
//! stream), read on every request.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use strait_certs::{SharedBundles, TrustDomain, UnknownIssuerObserver};
use strait_discovery::compile::exports::FederationView;
use strait_federation::bundle_endpoint::BundleEndpoint;
use strait_federation::bundle_poller::{BundlePoller, Nudges, PollerOptions};
use strait_federation::peer_store::PeerStore;
use strait_federation::peer_watch::{PeerList, PeerWatch};
use strait_proxy::tls::mesh::MeshIdentity;
use tokio::sync::watch;

use crate::args::parse_duration;

/// How often the peers' accepted bundles are compared with the gateway's verifier set.
const TRUST_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The east-west role's federation flags.
#[derive(Debug, clap::Args)]
pub struct EastwestArgs {
    /// Where the east-west role serves its trust domain's SPIFFE bundle endpoint
    /// (`https_spiffe`, authenticated by the gateway's SVID), `HOST:PORT`; `off` serves none.
    /// Needs a mesh identity (`--identity-dir` or `--ca-address`).
    #[arg(long, value_name = "HOST:PORT|off", default_value = "0.0.0.0:15446")]
    bundle_endpoint: String,
    /// The `spiffe_refresh_hint` the bundle endpoint announces; the bundle's own when unset.
    #[arg(long, value_parser = parse_duration)]
    bundle_refresh_hint: Option<Duration>,
    /// The shortest interval between two polls of a peer's bundle endpoint, whatever its
    /// refresh hint.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    peer_min_refresh: Duration,
    /// How often `DATA/peers` is read again for peers applied, redefined or removed (their
    /// bundles, trunks and imports follow without a restart).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    peer_rescan_interval: Duration,
    /// Where the trunk server takes peer gateways' QUIC trunks (UDP), `HOST:PORT`; `off` takes
    /// none.
    #[arg(long, value_name = "HOST:PORT|off", default_value = "0.0.0.0:15443")]
    trunk_listen: String,
    /// Where local sidecars hand connections to the trunks (TCP), `HOST:PORT`; `off` serves
    /// none.
    #[arg(long, value_name = "HOST:PORT|off", default_value = "0.0.0.0:15444")]
    trunk_ingress: String,
    /// Where the federation API (gRPC over mesh mTLS) streams the exported services to the
    /// gateways of known peers, `HOST:PORT`; `off` serves none.
    #[arg(long, value_name = "HOST:PORT|off", default_value = "0.0.0.0:15445")]
    federation_api: String,
    /// How often the federation API sends an unchanged export set again (so that peers can
    /// tell a quiet gateway from a gone one).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    export_keepalive: Duration,
    /// How long a peer's import may go without a set before it is marked stale (it is kept,
    /// never removed for silence).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    import_stale_after: Duration,
}

/// An address flag's value, or `None` for `off`.
fn address_or_off(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("{flag} {value}: not IP:PORT or off"))
}

/// Starts the bundle endpoint, the peer poller, the trunks (whose context `trunk` makes) and
/// the export and import of services (following the compilations' `view`) of an east-west
/// gateway on `network` whose identity is `mesh`; without one there is nothing to serve or
/// authenticate with, and this says so.
pub async fn start(
    args: &EastwestArgs,
    data: &Path,
    mesh: Option<&MeshIdentity>,
    network: Option<String>,
    view: tokio::sync::watch::Receiver<Arc<FederationView>>,
    status: Arc<crate::last_good::ServingStatus>,
    trunk: impl FnOnce(MeshIdentity, PeerStore) -> crate::trunk::TrunkContext,
) -> anyhow::Result<Option<Federation>> {
    let Some(mesh) = mesh else {
        tracing::info!(
            "the east-west gateway has no identity (--identity-dir or --ca-address): no bundle endpoint, no peer polling, no trunk"
        );
        return Ok(None);
    };
    let Some(svid) = mesh.cell.current() else {
        bail!("the east-west gateway's identity has no certificate yet");
    };
    let trust_domain = svid.id().trust_domain();
    if let Some(listen) = address_or_off("--bundle-endpoint", &args.bundle_endpoint)? {
        let sequence = mesh
            .bundles
            .load()
            .get(&trust_domain)
            .map(|bundle| bundle.sequence);
        let announce = format!(
            "{trust_domain} as {} (bundle sequence {})",
            svid.id(),
            sequence.map_or_else(|| "none yet".to_owned(), |s| s.to_string())
        );
        let endpoint = BundleEndpoint {
            source: mesh.bundles.clone(),
            trust_domain: trust_domain.clone(),
            refresh_hint: args.bundle_refresh_hint,
        };
        let serving = crate::federation::bind_bundle_endpoint(
            listen,
            mesh.cell.clone(),
            announce,
            endpoint,
            std::future::pending(),
        )
        .await?;
        tokio::spawn(serving);
    }
    let store = PeerStore::new(data);
    let options = PollerOptions {
        min_interval: args.peer_min_refresh,
        rescan_interval: args.peer_rescan_interval,
        ..PollerOptions::default()
    };
    let peers = PeerWatch::start(store.clone(), options.rescan_interval);
    let poller = BundlePoller::new(store.clone(), options);
    let nudges = poller.nudges();
    let nudge = |via| unknown_issuer_nudge(nudges.clone(), peers.subscribe(), via);
    let following = peers.subscribe();
    tokio::spawn(async move {
        if let Err(error) =
            crate::federation::follow_peers(poller, following, std::future::pending()).await
        {
            tracing::error!("{error:#}; the peers' bundles are not followed");
        }
    });
    tokio::spawn(keep_peers_trusted(
        peers.subscribe(),
        mesh.bundles.clone(),
        trust_domain,
    ));
    crate::exports::start(crate::exports::ExportContext {
        data,
        mesh,
        own_id: svid.id().clone(),
        store: store.clone(),
        peers: peers.subscribe(),
        unknown_issuer: Some(nudge("federation API")),
        network,
        view,
        listen: address_or_off("--federation-api", &args.federation_api)?,
        keepalive: args.export_keepalive,
        stale_after: args.import_stale_after,
        status,
    })
    .await?;
    let trunks = crate::trunk::start(
        trunk(mesh.clone(), store),
        address_or_off("--trunk-listen", &args.trunk_listen)?,
        address_or_off("--trunk-ingress", &args.trunk_ingress)?,
        peers.subscribe(),
        Some(nudge("trunk")),
    )
    .await?;
    Ok(Some(Federation {
        trunks,
        _peers: peers,
    }))
}

/// What runs for the east-west role's federation as long as the gateway does: the trunks and
/// the peer watch; the rest runs in tasks of its own.
pub struct Federation {
    trunks: crate::trunk::Trunks,
    _peers: PeerWatch,
}

impl Federation {
    /// At the end of a drain: closes the trunks with a reason the peers see at once.
    pub async fn shut_down(&self) {
        self.trunks.shut_down().await;
    }
}

/// Asks `nudges` for an early refresh of a peer's bundle when a handshake of `via` (what the
/// log says) meets a certificate of the peer's trust domain that chains to no root held for
/// it; trust domains that are no peer's are ignored (the trust domain comes from an
/// unverified certificate).
fn unknown_issuer_nudge(
    nudges: Nudges,
    peers: watch::Receiver<PeerList>,
    via: &'static str,
) -> UnknownIssuerObserver {
    UnknownIssuerObserver::new(move |trust_domain: &TrustDomain| {
        let peer = peers
            .borrow()
            .iter()
            .find(|stored| stored.peer.trust_domain == *trust_domain)
            .map(|stored| stored.peer.name.clone());
        let Some(peer) = peer else {
            return;
        };
        if nudges.nudge(trust_domain) {
            tracing::info!(
                %peer, %trust_domain, via,
                "a certificate of the peer chains to no root held for its trust domain (unknown issuer); early refresh of its bundle asked for"
            );
        } else {
            tracing::debug!(
                %peer, %trust_domain, via,
                "a certificate of the peer chains to no root held for its trust domain (unknown issuer) again; an early refresh was taken less than the nudge interval (10s) ago"
            );
        }
    })
}

/// Keeps every stored peer's latest accepted bundle in `bundles` (the gateway's verifier set),
/// and drops the trust domain of a peer that was removed: when the peers change, and every
/// [`TRUST_SYNC_INTERVAL`], so that a refreshed identity (which replaces the set from its own
/// files or the CA's stream) gets the peers' bundles back at once.
async fn keep_peers_trusted(
    mut peers: watch::Receiver<PeerList>,
    bundles: SharedBundles,
    own: TrustDomain,
) {
    let mut merged: BTreeSet<TrustDomain> = BTreeSet::new();
    let mut tick = tokio::time::interval(TRUST_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = peers.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let peers = peers.borrow_and_update().clone();
        let current = bundles.load_full();
        let mut next = (*current).clone();
        let mut changed = false;
        let mut present = BTreeSet::new();
        for stored in peers.iter() {
            let latest = stored.latest.clone();
            if latest.trust_domain == own {
                continue;
            }
            present.insert(latest.trust_domain.clone());
            if next.get(&latest.trust_domain) == Some(&latest) {
                continue;
            }
            let (peer, sequence) = (&stored.peer.name, latest.sequence);
            match next.insert(latest) {
                Ok(_) => {
                    changed = true;
                    tracing::info!(%peer, sequence, "the gateway trusts the peer's bundle");
                }
                Err(error) => {
                    tracing::warn!(%peer, "the peer's bundle is unusable ({error}); not trusted")
                }
            }
        }
        for gone in merged.difference(&present) {
            if next.remove(gone).is_some() {
                changed = true;
                tracing::info!(trust_domain = %gone, "peer removed; its bundle is no longer trusted");
            }
        }
        merged = present;
        if changed {
            // Unless the set changed meanwhile (an identity refresh): then the next tick merges.
            let _ = bundles.compare_and_swap(&current, Arc::new(next));
        }
    }
}

#[cfg(test)]
mod tests {
    use strait_certs::{Authority, AuthorityOptions, SpiffeId};
    use strait_federation::peer::{BundleEndpointRef, Peer};
    use strait_federation::peer_store::StoredPeer;

    use super::*;

    #[test]
    fn an_unknown_issuer_of_a_peer_s_trust_domain_asks_for_its_bundle_early() {
        let dir = std::env::temp_dir().join(format!("strait-nudge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let west = TrustDomain::new("west.mesh").unwrap();
        let ca = Authority::init(west.clone(), &dir, &AuthorityOptions::default()).unwrap();
        let peer = Peer {
            name: "west".to_owned(),
            trust_domain: west.clone(),
            network: "west".to_owned(),
            eastwest_address: "192.0.2.1:15443".to_owned(),
            bundle_endpoint: BundleEndpointRef {
                url: "https://192.0.2.1:15446".parse().unwrap(),
                spiffe_id: SpiffeId::parse("spiffe://west.mesh/ns/istio-system/sa/eastwest")
                    .unwrap(),
            },
            trust_bundle: ca.trust_bundle(),
            trunk: true,
        };
        let latest = ca.trust_bundle();
        let (_sender, peers) = watch::channel(Arc::new(vec![StoredPeer { peer, latest }]));
        let nudges = Nudges::new(Duration::from_secs(3600));
        let observer = unknown_issuer_nudge(nudges.clone(), peers, "trunk");

        // A trust domain that is no peer's asks for nothing: its budget is untouched.
        let rogue = TrustDomain::new("rogue.mesh").unwrap();
        observer.tell(&rogue);
        assert!(nudges.nudge(&rogue));

        // The peer's: its early refresh is taken (a second one within the interval is not).
        observer.tell(&west);
        assert!(!nudges.nudge(&west));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
