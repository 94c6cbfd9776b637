use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::authority::Authority;
use crate::bundle::TrustBundleSet;
use crate::fs::test_dir::TestDir;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::verify::{Authorizer, MeshServerVerifier, unix_now};

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn web() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap()
}

/// A CA whose workload certificates live at most an hour.
fn init(name: &str) -> (TestDir, std::path::PathBuf) {
    let dir = TestDir::new(name);
    let ca_dir = dir.path().join("ca");
    let options = AuthorityOptions {
        default_workload_ttl: Duration::from_secs(3600),
        max_workload_ttl: Duration::from_secs(3600),
        ..AuthorityOptions::default()
    };
    Authority::init(td(), &ca_dir, &options).unwrap();
    (dir, ca_dir)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `chain` (leaf first) verifies against `roots` as a mesh server SVID.
fn verifies(chain: &[CertificateDer<'static>], roots: &[CertificateDer<'static>]) -> bool {
    let bundle = TrustBundle::new(td(), roots.to_vec());
    let set = TrustBundleSet::from_bundles([bundle])
        .unwrap()
        .into_shared();
    MeshServerVerifier::new(set, Authorizer::Any)
        .verify(&chain[0], &chain[1..], unix_now())
        .is_ok()
}

fn order_error(result: Result<RotationStatus, AuthorityError>) -> String {
    match result {
        Err(AuthorityError::RotationOrder(message)) => message,
        other => panic!("expected an out-of-order refusal, got {other:?}"),
    }
}

#[test]
fn a_rotation_overlaps_the_roots_and_each_step_is_idempotent() {
    let (_dir, ca_dir) = init("rotate");
    let before = Authority::load(&ca_dir).unwrap();
    let old_root = before.trust_bundle().roots[0].clone();
    let old_leaf = before.sign_csr_for_test(&web());
    assert_eq!(before.trust_bundle().sequence, 1);

    // prepare: the new material in an owner-only next/, both roots published, sequence up.
    let prepared = prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    assert_eq!(prepared.phase, Some(RotationPhase::Prepared));
    assert!(prepared.changed);
    assert_eq!(prepared.bundle.sequence, 2);
    assert_eq!(prepared.bundle.roots.len(), 2);
    assert_eq!(prepared.bundle.roots[0], old_root);
    let new_root = prepared.bundle.roots[1].clone();
    let next = ca_dir.join(files::NEXT);
    assert_eq!(mode(&next), 0o700);
    assert_eq!(mode(&next.join(files::CA_KEY)), 0o600);
    assert_eq!(mode(&next.join(files::ROOT_KEY)), 0o600);
    assert_eq!(mode(&next.join(files::CA_CERT)), 0o644);
    // Still signing under the old intermediate; its leaves verify against the two roots.
    let during = Authority::load(&ca_dir).unwrap();
    assert_eq!(during.issuer_sha256(), before.issuer_sha256());
    assert!(verifies(&old_leaf, &prepared.bundle.roots));
    // Again: nothing changes, the sequence stays.
    let again = prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    assert!(!again.changed);
    assert_eq!(again.bundle.sequence, 2);
    assert_eq!(again.bundle.roots, prepared.bundle.roots);

    // switch: the new intermediate signs; the old files wait in previous/.
    let switched = switch(&ca_dir).unwrap();
    assert_eq!(switched.phase, Some(RotationPhase::Switched));
    assert!(switched.changed);
    assert_eq!(switched.bundle.sequence, 2, "the roots did not change");
    assert!(!next.exists());
    let previous = ca_dir.join(files::PREVIOUS);
    assert_eq!(mode(&previous), 0o700);
    assert_eq!(mode(&previous.join(files::CA_KEY)), 0o600);
    assert_eq!(mode(&previous.join(files::ROOT_KEY)), 0o600);
    assert_eq!(mode(&ca_dir.join(files::CA_KEY)), 0o600);
    let until = switched.old_leaves_valid_until.unwrap();
    assert!(until > SystemTime::now() + Duration::from_secs(3500));
    assert!(until <= SystemTime::now() + Duration::from_secs(3600));
    let after = Authority::load(&ca_dir).unwrap();
    assert_ne!(after.issuer_sha256(), before.issuer_sha256());
    let new_leaf = after.sign_csr_for_test(&web());
    // During the overlap leaves of both chains verify against the published bundle, each only
    // through its own root.
    assert!(verifies(&new_leaf, &switched.bundle.roots));
    assert!(verifies(&old_leaf, &switched.bundle.roots));
    assert!(verifies(&new_leaf, std::slice::from_ref(&new_root)));
    assert!(!verifies(&new_leaf, std::slice::from_ref(&old_root)));
    assert!(!switch(&ca_dir).unwrap().changed);

    // finish: refused while old leaves may live, unless forced or once that time passed.
    match finish(&ca_dir, false, None) {
        Err(AuthorityError::OldCertificatesLive { left_secs, .. }) => {
            assert!(left_secs > 3500, "{left_secs}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A shorter lifetime granted by the issuer shortens the wait.
    assert!(matches!(
        finish(&ca_dir, false, Some(Duration::from_secs(600))),
        Err(AuthorityError::OldCertificatesLive { left_secs, .. }) if left_secs <= 600
    ));
    let soon = SystemTime::now() + Duration::from_secs(601);
    assert!(
        finish_at(&ca_dir, false, Some(Duration::from_secs(600)), soon)
            .unwrap()
            .changed
    );
    // Done: a later finish (past every deadline) changes nothing.
    let finished = finish_at(&ca_dir, false, None, until + Duration::from_secs(1)).unwrap();
    assert!(!finished.changed);
    assert_eq!(finished.phase, Some(RotationPhase::Finished));
    assert_eq!(finished.bundle.sequence, 3);
    assert_eq!(finished.bundle.roots, vec![new_root.clone()]);
    assert!(!previous.exists());
    assert!(verifies(&new_leaf, &finished.bundle.roots));
    assert!(!verifies(&old_leaf, &finished.bundle.roots));
    let again = finish(&ca_dir, false, None).unwrap();
    assert!(!again.changed);
    assert_eq!(again.bundle.sequence, 3);
    // The CA reloads and keeps signing under the new root; a later rotation may start.
    let reloaded = Authority::load(&ca_dir).unwrap();
    assert_eq!(reloaded.issuer_sha256(), after.issuer_sha256());
    assert_eq!(reloaded.trust_bundle().sequence, 3);
    assert_eq!(
        status(&ca_dir).unwrap().phase,
        Some(RotationPhase::Finished)
    );
    let next_rotation = prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    assert_eq!(next_rotation.bundle.sequence, 4);
    assert_eq!(next_rotation.bundle.roots[0], new_root);
}

#[test]
fn steps_out_of_order_are_refused_with_the_step_to_run() {
    let (_dir, ca_dir) = init("rotate-order");
    assert!(order_error(switch(&ca_dir)).contains("rotate prepare"));
    assert!(order_error(finish(&ca_dir, true, None)).contains("nothing to finish"));
    prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    assert!(order_error(finish(&ca_dir, true, None)).contains("rotate switch"));
    switch(&ca_dir).unwrap();
    assert!(order_error(prepare(&ca_dir, &AuthorityOptions::default())).contains("rotate finish"));
    finish(&ca_dir, true, None).unwrap();
    assert!(order_error(switch(&ca_dir)).contains("rotate prepare"));
}

#[test]
fn an_interrupted_switch_is_completed_by_running_it_again() {
    let (_dir, ca_dir) = init("rotate-torn");
    prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    let old = Authority::load(&ca_dir).unwrap();
    let record = read_record(&ca_dir).unwrap().unwrap();
    // A crash after previous/ was made and the new key written, before the certificate.
    keep_previous(&ca_dir, &td(), &read_roots(&ca_dir).unwrap(), &record).unwrap();
    let key = std::fs::read(ca_dir.join(files::NEXT).join(files::CA_KEY)).unwrap();
    std::fs::write(ca_dir.join(files::CA_KEY), key).unwrap();
    // A CA service reading now refuses the torn pair (and keeps the chain it has).
    assert!(matches!(
        Authority::load(&ca_dir),
        Err(AuthorityError::KeyMismatch { .. })
    ));
    // finish refuses: the signing chain is not the new one.
    assert!(order_error(finish(&ca_dir, true, None)).contains("rotate switch"));
    let switched = switch(&ca_dir).unwrap();
    assert_eq!(switched.phase, Some(RotationPhase::Switched));
    let new = Authority::load(&ca_dir).unwrap();
    assert_ne!(new.issuer_sha256(), old.issuer_sha256());
    // previous/ holds the old, working chain under the old root alone.
    let previous = Material::read(&ca_dir.join(files::PREVIOUS)).unwrap();
    assert_eq!(previous.roots, old.trust_bundle().roots[..1]);
    assert_eq!(x509::sha256_hex(&previous.ca_cert), old.issuer_sha256());
    previous.check(&td()).unwrap();
}

#[test]
fn an_interrupted_prepare_keeps_its_new_root() {
    let (_dir, ca_dir) = init("rotate-prepare-torn");
    let first = prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    // A crash before the state was recorded: the same next/ is used, no third root appears.
    std::fs::remove_file(ca_dir.join(files::ROTATION)).unwrap();
    let again = prepare(&ca_dir, &AuthorityOptions::default()).unwrap();
    assert_eq!(again.bundle.roots, first.bundle.roots);
    assert_eq!(again.bundle.sequence, first.bundle.sequence);
}

#[test]
fn a_plug_in_ca_is_not_rotated_here() {
    let (dir, source) = init("rotate-plug-in-source");
    assert_eq!(status(&source).unwrap().phase, None);
    let target = dir.path().join("plugged");
    Authority::plug_in(td(), &source, &target, &AuthorityOptions::default()).unwrap();
    assert!(order_error(prepare(&target, &AuthorityOptions::default())).contains("plug-in"));
}

impl Authority {
    /// A certificate chain for `id` (leaf first), for these tests.
    fn sign_csr_for_test(&self, id: &SpiffeId) -> Vec<CertificateDer<'static>> {
        self.issue(id, Duration::ZERO).unwrap().1.chain_der
    }
}
