//! `strait run --role control`: the CA service over gRPC. Bootstrap tokens are good once and
//! refused when replayed, forged or expired; bad CSRs are refused without spending the token;
//! renewal over mTLS keeps the caller's identity whatever the CSR asks and keeps a cell rotated;
//! the bundle stream carries federated bundles dropped in a folder; an SVID from another CA is
//! refused; a root rotation's new signing chain issues without a restart, is announced on the
//! stream, and renewing clients move onto it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use common::control::{ControlPlane, ca, init_ca};
use strait_certs::service::proto::CsrRequest;
use strait_certs::service::{IdentityClient, RetryOptions, control_id};
use strait_certs::verify::unix_now;
use strait_certs::{
    Authorizer, CertificateRequest, IdentityCell, MeshServerVerifier, SpiffeId, Svid, TrustBundle,
    TrustBundleSet, TrustDomain, peer_identity,
};
use tonic::Code;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const DB: &str = "spiffe://cluster.local/ns/vms/sa/db";

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

fn bundle(plane: &ControlPlane) -> TrustBundle {
    TrustBundle::from_pem(td(), &std::fs::read_to_string(plane.bundle_file()).unwrap()).unwrap()
}

async fn client(plane: &ControlPlane) -> IdentityClient {
    IdentityClient::connect(
        &plane.ca.to_string(),
        bundle(plane),
        control_id(&td()).unwrap(),
    )
    .await
    .unwrap()
}

/// Verifies a chain as a mesh peer would, against the CA's bundle, and returns its identity.
fn verify(plane: &ControlPlane, chain: &[rustls_pki_types::CertificateDer<'static>]) -> SpiffeId {
    let bundles = TrustBundleSet::from_bundles([bundle(plane)])
        .unwrap()
        .into_shared();
    MeshServerVerifier::new(bundles, Authorizer::Any)
        .verify(&chain[0], &chain[1..], unix_now())
        .unwrap()
}

#[test]
fn a_bootstrap_token_gets_its_identity_once() {
    let plane = ControlPlane::start(&[]);
    let token = plane.token(DB, "1h");
    let out = plane.dir.path().join("vm");
    let issued = plane.request(DB, &token, &out);
    assert_eq!(issued.code, Some(0), "{}\n{}", issued.stderr, plane.log());
    assert!(issued.stdout.contains(DB), "{}", issued.stdout);

    // The files make an SVID of the token's identity that verifies against the bundle.
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let svid = Svid::from_pem(&read("cert-chain.pem"), &read("key.pem")).unwrap();
    assert_eq!(svid.id(), &id(DB));
    assert_eq!(verify(&plane, svid.chain()), id(DB));
    assert_eq!(read("root-cert.pem"), bundle(&plane).to_pem());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The same token again: refused, nothing written.
    let again_out = plane.dir.path().join("vm-again");
    let again = plane.request(DB, &token, &again_out);
    assert_eq!(again.code, Some(2), "{}", again.stdout);
    assert!(
        again.stderr.contains("Unauthenticated") && again.stderr.contains("already used"),
        "{}",
        again.stderr
    );
    assert!(!again_out.exists());
    plane.wait_log("token was already used");
}

#[test]
fn forged_expired_and_malformed_tokens_are_refused() {
    let plane = ControlPlane::start(&[]);
    let refused = |token: &str, reason: &str| {
        let out = plane.dir.path().join("refused");
        let answer = plane.request(DB, token, &out);
        assert_eq!(answer.code, Some(2), "{token}: {}", answer.stdout);
        assert!(
            answer.stderr.contains("Unauthenticated") && answer.stderr.contains(reason),
            "{token}: {}",
            answer.stderr
        );
        assert!(!out.exists(), "{token}: files were written");
    };
    // Well-formed, but never minted.
    refused(&"A".repeat(43), "token is unknown");
    refused("not-a-token", "token is malformed");
    let expiring = plane.token(DB, "1s");
    std::thread::sleep(Duration::from_secs(2));
    refused(&expiring, "token expired");
    // A token for one identity cannot be used for another: the CA grants the token's identity,
    // which the requester then refuses as not what it asked for.
    let token = plane.token(DB, "1h");
    let out = plane.dir.path().join("other");
    let other = plane.request(WEB, &token, &out);
    assert_eq!(other.code, Some(2));
    assert!(other.stderr.contains(DB), "{}", other.stderr);
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_are_refused_without_spending_the_token() {
    let plane = ControlPlane::start(&[]);
    let client = client(&plane).await;
    let token = plane.token(WEB, "1h");
    let call = |csr_der: Vec<u8>| {
        let mut request = tonic::Request::new(CsrRequest {
            csr_der,
            requested_ttl_seconds: 0,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    // Larger messages than the server decodes need a client that encodes them.
    let mut grpc = client.grpc_client().max_encoding_message_size(1 << 20);

    let garbage = grpc.create_certificate(call(b"not a CSR".to_vec())).await;
    let status = garbage.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("CSR"), "{status:?}");

    // Above the CA's CSR cap (8 KiB), within the message limit.
    let big = grpc.create_certificate(call(vec![0x30; 10_000])).await;
    let status = big.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("more than"), "{status:?}");

    // Above the message limit (64 KiB): tonic refuses to decode it.
    let huge = grpc.create_certificate(call(vec![0x30; 200_000])).await;
    let status = huge.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // No credential at all.
    let anonymous = grpc
        .create_certificate(CsrRequest {
            csr_der: CertificateRequest::new(&id(WEB))
                .unwrap()
                .csr_der()
                .to_vec(),
            requested_ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");

    // The token was never redeemed: it still works once.
    let svid = client.bootstrap(&id(WEB), &token).await.unwrap();
    assert_eq!(svid.id(), &id(WEB));
    let replay = client.bootstrap(&id(WEB), &token).await.unwrap_err();
    assert!(replay.to_string().contains("already used"), "{replay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_grants_the_callers_identity_whatever_the_csr_asks() {
    let plane = ControlPlane::start(&[]);
    let client = client(&plane).await;
    let token = plane.token(WEB, "1h");
    let first = client.bootstrap(&id(WEB), &token).await.unwrap();

    let renewed = client.renew(&first).await.unwrap();
    assert_eq!(renewed.id(), &id(WEB));
    assert_ne!(renewed.leaf(), first.leaf());
    assert_eq!(verify(&plane, renewed.chain()), id(WEB));

    // Authenticated as web, asking for db: the CA issues web.
    let greedy = CertificateRequest::new(&id(DB)).unwrap();
    let issued = client
        .create_certificate_as(&greedy, &renewed, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(peer_identity(&issued.chain).unwrap(), id(WEB));
    plane.wait_log("authenticated_by=\"client SVID\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewing_client_keeps_its_cell_rotated() {
    let plane = ControlPlane::start(&["--workload-ttl", "8s"]);
    let client = Arc::new(client(&plane).await);
    let token = plane.token(WEB, "1h");
    let first = client.bootstrap(&id(WEB), &token).await.unwrap();
    let lifetime = first.not_after().duration_since(first.issued_at()).unwrap();
    assert!(lifetime <= Duration::from_secs(8), "{lifetime:?}");
    let cell = Arc::new(IdentityCell::new(first));
    let renewing = tokio::spawn({
        let (client, cell) = (client.clone(), cell.clone());
        async move { client.keep_renewed(cell, RetryOptions::default()).await }
    });

    // Two rotations: three different leaves, one identity, each living longer than the last.
    let mut seen: Vec<Arc<Svid>> = vec![cell.current().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(18);
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {} certificates in 18 s:\n{}",
            seen.len(),
            plane.log()
        );
        let current = cell.current().expect("the cell is never empty");
        if current.leaf() != seen[seen.len() - 1].leaf() {
            seen.push(current);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pair in seen.windows(2) {
        assert_eq!(pair[1].id(), &id(WEB));
        assert!(pair[1].not_after() > pair[0].not_after());
        // Replaced before it expired.
        assert!(pair[0].not_after() > pair[1].issued_at());
    }
    assert!(!renewing.is_finished());
    renewing.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_stream_carries_federated_bundles() {
    let plane = ControlPlane::start(&[]);
    let client = client(&plane).await;
    let mut stream = client.watch_bundles().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let names = |s: &strait_certs::service::proto::BundleSnapshot| -> Vec<String> {
        s.bundles.iter().map(|b| b.trust_domain.clone()).collect()
    };
    assert_eq!(names(&first), ["cluster.local"]);
    let own = TrustBundle::from_spiffe_json(td(), first.bundles[0].spiffe_json.as_bytes()).unwrap();
    assert_eq!(own.roots, bundle(&plane).roots);

    // A follower applies snapshots to a shared set, starting from the file alone.
    let shared = client.bundles();
    let following = tokio::spawn({
        let (client, shared) = (client.clone(), shared.clone());
        async move { client.follow_bundles(shared, RetryOptions::default()).await }
    });

    // A peer cluster's bundle dropped in the folder.
    let peer = TempDir::new("peer-ca");
    init_ca(peer.path(), "west.mesh");
    let peer_json = ca(peer.path(), &["bundle", "--format", "spiffe"]).stdout;
    let folder = plane.federated_dir();
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("west.mesh.tmp"), &peer_json).unwrap();
    std::fs::rename(folder.join("west.mesh.tmp"), folder.join("west.mesh.json")).unwrap();

    let second = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a second snapshot")
        .unwrap()
        .unwrap();
    assert!(second.sequence > first.sequence);
    assert_eq!(names(&second), ["cluster.local", "west.mesh"]);
    let west = TrustDomain::new("west.mesh").unwrap();
    let expected = TrustBundle::from_spiffe_json(west.clone(), peer_json.as_bytes()).unwrap();
    let streamed =
        TrustBundle::from_spiffe_json(west.clone(), second.bundles[1].spiffe_json.as_bytes())
            .unwrap();
    assert_eq!(streamed.roots, expected.roots);

    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.load().get(&west).is_none() {
        assert!(
            Instant::now() < deadline,
            "the follower never got west.mesh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Kept per trust domain: our own roots are still exactly ours.
    assert_eq!(shared.load().get(&td()).unwrap().roots, own.roots);

    // A broken file over it: logged, and the last good bundle stays published.
    std::fs::write(folder.join("west.mesh.json"), "{broken").unwrap();
    plane.wait_log("federated bundle refused");
    assert!(shared.load().get(&west).is_some());
    following.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_from_another_ca_is_refused() {
    let plane = ControlPlane::start(&[]);
    let client = client(&plane).await;
    // Same trust domain, another root.
    let other = TempDir::new("other-ca");
    init_ca(other.path(), "cluster.local");
    let out = other.path().join("web");
    let issued = ca(
        other.path(),
        &["issue", "--spiffe-id", WEB, "--out", out.to_str().unwrap()],
    );
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let foreign = Svid::from_pem(&read("cert-chain.pem"), &read("key.pem")).unwrap();

    let refused = client.renew(&foreign).await;
    assert!(refused.is_err(), "renewed with a foreign SVID");
    plane.wait_log("refused in the handshake");
    assert!(
        !plane.log().contains("certificate issued"),
        "{}",
        plane.log()
    );
}

#[test]
fn the_control_role_needs_a_ca() {
    let dir = TempDir::new("control-no-ca");
    let started = common::run(
        common::strait()
            .args(["run", "--role", "control", "--data"])
            .arg(dir.path().join("data"))
            .args(["--ca-listen", "127.0.0.1:0", "--health", "127.0.0.1:0"])
            .args(["--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]),
    );
    assert_eq!(started.code, Some(2));
    assert!(
        started.stderr.contains("no CA in") && started.stderr.contains("strait ca init"),
        "{}",
        started.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_added_to_the_ca_reaches_the_bundle_stream() {
    let plane = ControlPlane::start(&[]);
    let client = client(&plane).await;
    let mut stream = client.watch_bundles().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let roots = |s: &strait_certs::service::proto::BundleSnapshot| {
        TrustBundle::from_spiffe_json(td(), s.bundles[0].spiffe_json.as_bytes())
            .unwrap()
            .roots
    };
    assert_eq!(roots(&first).len(), 1);

    // The first step of a root rotation: the new root is published beside the old one.
    let next = TempDir::new("next-root");
    init_ca(next.path(), "cluster.local");
    let new_root = std::fs::read_to_string(next.path().join("ca/root-cert.pem")).unwrap();
    let path = plane.data().join("ca/root-cert.pem");
    let old_root = std::fs::read_to_string(&path).unwrap();
    std::fs::write(path.with_extension("tmp"), format!("{old_root}{new_root}")).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();

    let second = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a second snapshot")
        .unwrap()
        .unwrap();
    assert!(second.sequence > first.sequence);
    let published = roots(&second);
    assert_eq!(published.len(), 2);
    assert_eq!(published[0], roots(&first)[0]);
    assert_eq!(
        published[1],
        TrustBundle::from_pem(td(), &new_root).unwrap().roots[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_signing_chain_issues_at_once_and_renewing_clients_move_onto_it() {
    // A 60 s lifetime: the normal renewal is half a minute away, the reissue a few seconds.
    let plane = ControlPlane::start(&["--workload-ttl", "60s"]);
    let client = Arc::new(client(&plane).await);
    let mut stream = client.watch_bundles().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    let old_issuer = first.issuing_ca_sha256.clone();
    assert_eq!(old_issuer.len(), 64, "{first:?}");
    let token = plane.token(WEB, "1h");
    let svid = client.bootstrap(&id(WEB), &token).await.unwrap();
    assert_eq!(svid.issuer_sha256(), Some(old_issuer.clone()));
    let cell = Arc::new(IdentityCell::new(svid.clone()));
    let shared = client.bundles();
    let following = tokio::spawn({
        let (client, shared) = (client.clone(), shared.clone());
        async move { client.follow_bundles(shared, RetryOptions::default()).await }
    });
    let renewing = tokio::spawn({
        let (client, cell) = (client.clone(), cell.clone());
        async move { client.keep_renewed(cell, RetryOptions::default()).await }
    });

    let prepared = ca(&plane.data(), &["rotate", "prepare"]);
    assert_eq!(prepared.code, Some(0), "{}", prepared.stderr);
    let snapshot = next_snapshot(&mut stream).await;
    let roots = TrustBundle::from_spiffe_json(td(), snapshot.bundles[0].spiffe_json.as_bytes())
        .unwrap()
        .roots;
    assert_eq!(roots.len(), 2);
    assert_eq!(snapshot.issuing_ca_sha256, old_issuer);

    let switched = ca(&plane.data(), &["rotate", "switch"]);
    assert_eq!(switched.code, Some(0), "{}", switched.stderr);
    let snapshot = next_snapshot(&mut stream).await;
    let new_issuer = snapshot.issuing_ca_sha256.clone();
    assert_ne!(new_issuer, old_issuer);
    plane.wait_log("issuing under it now");

    // The next certificate is under the new chain, no restart; it verifies against the two
    // roots the clients hold, and not against the old root alone.
    let renewed = client.renew(&svid).await.unwrap();
    assert_eq!(renewed.issuer_sha256(), Some(new_issuer.clone()));
    let verifier = |roots: Vec<rustls_pki_types::CertificateDer<'static>>| {
        let set = TrustBundleSet::from_bundles([TrustBundle::new(td(), roots)]).unwrap();
        MeshServerVerifier::new(set.into_shared(), Authorizer::Any)
    };
    let chain = renewed.chain();
    assert!(
        verifier(roots.clone())
            .verify(&chain[0], &chain[1..], unix_now())
            .is_ok()
    );
    assert!(
        verifier(roots[..1].to_vec())
            .verify(&chain[0], &chain[1..], unix_now())
            .is_err()
    );

    // The renewing client did not wait for half-life: the stream told it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cell.current().unwrap().issuer_sha256() != Some(new_issuer.clone()) {
        assert!(
            Instant::now() < deadline,
            "the cell was not renewed onto the new chain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    following.abort();
    renewing.abort();
}

/// The next snapshot on a bundle stream, within 10 s.
async fn next_snapshot(
    stream: &mut tonic::Streaming<strait_certs::service::proto::BundleSnapshot>,
) -> strait_certs::service::proto::BundleSnapshot {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a snapshot")
        .unwrap()
        .unwrap()
}
