//! Federated trust in one process, over real HTTPS on loopback with certificates from real CAs:
//! west serves its bundle on an `https_spiffe` endpoint, east follows it from the Peer west's
//! bundle made for first contact, through a rotation, and refuses what it must (an endpoint of the
//! wrong trust domain or SPIFFE ID, a lower sequence, the same sequence with other roots, a bundle
//! claiming another trust domain), keeping its files across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_certs::{
    Authority, AuthorityOptions, CertificateRequest, IdentityCell, SharedBundles, SpiffeId,
    TrustBundle, TrustBundleSet, TrustDomain, bundle_endpoint_server_config,
    published_trust_bundle,
};
use strait_federation::bundle_endpoint::{BundleEndpoint, serve};
use strait_federation::bundle_fetch::FetchError;
use strait_federation::bundle_poller::{
    BundlePoller, PollError, PollOutcome, PollerOptions, Refusal, poll_peer,
};
use strait_federation::peer::{BundleEndpointRef, Peer, parse_peer};
use strait_federation::peer_store::PeerStore;
use tokio::net::TcpListener;

const WEST_ENDPOINT_ID: &str = "spiffe://west.mesh/ns/strait-system/sa/eastwest";
const TIMEOUT: Duration = Duration::from_secs(5);

struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "strait-federation-it-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn new_ca(dir: &Path, trust_domain: &str) -> Authority {
    Authority::init(td(trust_domain), dir, &AuthorityOptions::default()).unwrap()
}

fn identity(ca: &Authority, id: &str) -> Arc<IdentityCell> {
    let id = SpiffeId::parse(id).unwrap();
    let request = CertificateRequest::new(&id).unwrap();
    let issued = ca
        .sign_csr(request.csr_der(), &id, Duration::from_secs(600))
        .unwrap();
    Arc::new(IdentityCell::new(
        request
            .into_svid(issued.chain_der, issued.issued_at)
            .unwrap(),
    ))
}

/// A bundle endpoint serving `source`'s bundle of west.mesh with `cell`'s SVID; its URL.
async fn endpoint(cell: Arc<IdentityCell>, source: SharedBundles) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let tls = Arc::new(bundle_endpoint_server_config(cell).unwrap());
    let endpoint = BundleEndpoint {
        source,
        trust_domain: td("west.mesh"),
        refresh_hint: Some(Duration::from_secs(1)),
    };
    tokio::spawn(serve(listener, tls, endpoint, std::future::pending()));
    url
}

fn source(bundle: TrustBundle) -> SharedBundles {
    TrustBundleSet::from_bundles([bundle])
        .unwrap()
        .into_shared()
}

fn serve_bundle(source: &SharedBundles, bundle: TrustBundle) {
    source.store(Arc::new(TrustBundleSet::from_bundles([bundle]).unwrap()));
}

fn west_peer(url: &str, endpoint_id: &str, bundle: &TrustBundle) -> Peer {
    Peer {
        name: "west".into(),
        trust_domain: td("west.mesh"),
        network: "net-west".into(),
        eastwest_address: "127.0.0.1:15443".into(),
        bundle_endpoint: BundleEndpointRef {
            url: url.parse().unwrap(),
            spiffe_id: SpiffeId::parse(endpoint_id).unwrap(),
        },
        trust_bundle: bundle.clone(),
        trunk: false,
    }
}

async fn poll(store: &PeerStore) -> Result<PollOutcome, PollError> {
    let stored = store.get("west").unwrap();
    poll_peer(store, &stored, TIMEOUT).await.map(|(o, _)| o)
}

fn refused_reason(result: Result<PollOutcome, PollError>) -> String {
    match result {
        Err(PollError::Fetch(FetchError::Refused { reason, .. })) => reason,
        other => panic!("expected a refused certificate, got {other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_follows_west_through_a_rotation_and_refuses_what_it_must() {
    let scratch = Scratch::new("follow");
    let west_ca_dir = scratch.0.join("west/ca");
    let west = new_ca(&west_ca_dir, "west.mesh");
    let first = published_trust_bundle(&west_ca_dir).unwrap();
    let served = source(first.clone());
    let url = endpoint(identity(&west, WEST_ENDPOINT_ID), served.clone()).await;

    // East applies the Peer made for first contact; its document survives the round trip.
    let peer = west_peer(&url, WEST_ENDPOINT_ID, &first);
    let peer = parse_peer(&peer.to_yaml().unwrap(), "west.yaml").unwrap();
    let east_data = scratch.0.join("east");
    let store = PeerStore::new(&east_data);
    store.apply(&peer, &td("east.mesh"), false).unwrap();
    assert_eq!(
        poll(&store).await.unwrap(),
        PollOutcome::Unchanged { sequence: 1 }
    );

    // The poller runs; west adds a second root; east has it within the refresh hint.
    let options = PollerOptions {
        min_interval: Duration::from_secs(1),
        rescan_interval: Duration::from_millis(200),
        ..PollerOptions::default()
    };
    let poller = BundlePoller::new(PeerStore::new(&east_data), options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(poller.run(async {
        let _ = stopped.await;
    }));
    let next = new_ca(&scratch.0.join("west-next/ca"), "west.mesh");
    let both = format!("{}{}", first.to_pem(), next.trust_bundle().to_pem());
    std::fs::write(west_ca_dir.join("root-cert.pem"), both).unwrap();
    let rotated = published_trust_bundle(&west_ca_dir).unwrap();
    assert_eq!(rotated.sequence, 2);
    serve_bundle(&served, rotated.clone());
    // The peer's file and the CA service's copy both get it (in that order).
    let federated = || {
        let text = std::fs::read_to_string(store.federated_path(&td("west.mesh"))).unwrap();
        TrustBundle::from_spiffe_json(td("west.mesh"), text.as_bytes()).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while federated().sequence != 2 {
        assert!(Instant::now() < deadline, "east never took sequence 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    assert_eq!(federated().roots, rotated.roots);
    let latest = store.get("west").unwrap().latest;
    assert_eq!((latest.sequence, &latest.roots), (2, &rotated.roots));
    assert_eq!(latest.refresh_hint, Some(Duration::from_secs(1)));

    // A lower sequence is refused; so is sequence 2 with other roots.
    serve_bundle(&served, first.clone());
    assert_eq!(
        poll(&store).await.unwrap(),
        PollOutcome::Refused(Refusal::LowerSequence {
            offered: 1,
            current: 2
        })
    );
    let mut same_sequence = first.clone();
    same_sequence.sequence = 2;
    serve_bundle(&served, same_sequence.clone());
    assert_eq!(
        poll(&store).await.unwrap(),
        PollOutcome::Refused(Refusal::SameSequenceOtherRoots { sequence: 2 })
    );
    assert_eq!(store.get("west").unwrap().latest.roots, rotated.roots);

    // The operator's override takes the next bundle whatever its sequence, once.
    store.request_sequence_reset("west").unwrap();
    serve_bundle(&served, first.clone());
    assert!(matches!(
        poll(&store).await.unwrap(),
        PollOutcome::Updated {
            from: 2,
            to: 1,
            reset: true,
            ..
        }
    ));
    assert!(!store.sequence_reset_requested("west"));
    serve_bundle(&served, rotated.clone());
    assert!(matches!(
        poll(&store).await.unwrap(),
        PollOutcome::Updated {
            from: 1,
            to: 2,
            reset: false,
            ..
        }
    ));

    // A restart reads the same latest bundle from owner-only files.
    let restarted = PeerStore::new(&east_data);
    let stored = restarted.get("west").unwrap();
    assert_eq!(stored.latest.sequence, 2);
    assert_eq!(stored.latest.roots, rotated.roots);
    for path in [
        restarted.peers_dir().join("west.yaml"),
        restarted.bundle_path("west"),
        restarted.federated_path(&td("west.mesh")),
    ] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_the_wrong_identity_or_content_are_refused() {
    let scratch = Scratch::new("refuse");
    let west_dir = scratch.0.join("west/ca");
    let west = new_ca(&west_dir, "west.mesh");
    let east = new_ca(&scratch.0.join("east/ca"), "east.mesh");
    let bundle = published_trust_bundle(&west_dir).unwrap();
    let store = PeerStore::new(&scratch.0.join("east"));
    let apply = |url: &str| {
        store
            .apply(
                &west_peer(url, WEST_ENDPOINT_ID, &bundle),
                &td("east.mesh"),
                false,
            )
            .unwrap();
    };

    // The right trust domain, another workload.
    let url = endpoint(
        identity(&west, "spiffe://west.mesh/ns/default/sa/web"),
        source(bundle.clone()),
    )
    .await;
    apply(&url);
    let reason = refused_reason(poll(&store).await);
    assert!(reason.contains("is not authorized"), "{reason}");

    // An SVID of another trust domain: west's bundle cannot vouch for it.
    let url = endpoint(
        identity(&east, "spiffe://east.mesh/ns/strait-system/sa/eastwest"),
        source(bundle.clone()),
    )
    .await;
    apply(&url);
    let reason = refused_reason(poll(&store).await);
    assert!(
        reason.contains("no trust bundle for trust domain east.mesh"),
        "{reason}"
    );

    // West's ID from a CA whose root east does not hold: unknown issuer.
    let impostor = new_ca(&scratch.0.join("impostor/ca"), "west.mesh");
    let url = endpoint(
        identity(&impostor, WEST_ENDPOINT_ID),
        source(bundle.clone()),
    )
    .await;
    apply(&url);
    match poll(&store).await {
        Err(PollError::Fetch(error)) => assert!(error.is_unknown_issuer(), "{error}"),
        other => panic!("{other:?}"),
    }

    // The right endpoint serving east's roots as west's bundle: the content claims east.mesh.
    let mut claims_east = east.trust_bundle();
    claims_east.trust_domain = td("west.mesh");
    claims_east.sequence = 9;
    let url = endpoint(identity(&west, WEST_ENDPOINT_ID), source(claims_east)).await;
    apply(&url);
    match poll(&store).await {
        Err(PollError::Fetch(FetchError::Unusable { reason, .. })) => {
            assert!(reason.contains("names trust domain east.mesh"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing refused was stored.
    assert_eq!(store.get("west").unwrap().latest, bundle);
}
