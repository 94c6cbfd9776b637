use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::test_support::{TestDir, ca, peer, td};

const WEST_ID: &str = "spiffe://west.mesh/ns/strait-system/sa/eastwest";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn applied_peers_are_owner_only_files_and_read_back() {
    let dir = TestDir::new("store-apply");
    let bundle = ca(&dir, "west", "west.mesh").trust_bundle();
    let store = PeerStore::new(&dir.path().join("data"));
    let west = peer("west", &bundle, "https://127.0.0.1:15446", WEST_ID);
    assert_eq!(
        store.apply(&west, &td("east.mesh"), false).unwrap(),
        Applied::Created
    );
    for path in [
        store.peers_dir().join("west.yaml"),
        store.bundle_path("west"),
        store.federated_path(&td("west.mesh")),
    ] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&store.peers_dir()), 0o700);
    assert_eq!(mode(&store.federated_dir()), 0o700);
    // A new store over the same directory (a restart) reads the same.
    let listed = PeerStore::new(&dir.path().join("data")).list().unwrap();
    assert_eq!(
        listed,
        vec![StoredPeer {
            peer: west.clone(),
            latest: bundle.clone()
        }]
    );
    let federated = std::fs::read_to_string(store.federated_path(&td("west.mesh"))).unwrap();
    assert_eq!(federated, bundle.to_spiffe_json().unwrap());

    // Removing it removes every file, the CA's copy included.
    store.remove("west").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(!store.federated_path(&td("west.mesh")).exists());
    assert!(matches!(
        store.remove("west"),
        Err(StoreError::NoSuchPeer(_))
    ));
}

#[test]
fn the_local_trust_domain_and_a_taken_one_are_refused() {
    let dir = TestDir::new("store-refuse");
    let bundle = ca(&dir, "west", "west.mesh").trust_bundle();
    let store = PeerStore::new(&dir.path().join("data"));
    let west = peer("west", &bundle, "https://127.0.0.1:15446", WEST_ID);
    let error = store.apply(&west, &td("west.mesh"), false).unwrap_err();
    assert!(
        matches!(error, StoreError::LocalTrustDomain { .. }),
        "{error}"
    );
    assert!(store.list().unwrap().is_empty());

    store.apply(&west, &td("east.mesh"), false).unwrap();
    let twin = peer("west-again", &bundle, "https://127.0.0.1:15446", WEST_ID);
    let error = store.apply(&twin, &td("east.mesh"), false).unwrap_err();
    assert!(
        error.to_string().contains("already belongs to peer west"),
        "{error}"
    );
}

#[test]
fn applying_again_keeps_a_newer_stored_bundle_unless_forced() {
    let dir = TestDir::new("store-again");
    let mut bundle = ca(&dir, "west", "west.mesh").trust_bundle();
    let store = PeerStore::new(&dir.path().join("data"));
    let west = peer("west", &bundle, "https://127.0.0.1:15446", WEST_ID);
    store.apply(&west, &td("east.mesh"), false).unwrap();
    // The poller took sequence 5 meanwhile.
    bundle.sequence = 5;
    store.store_bundle(&west, &bundle).unwrap();
    assert_eq!(
        store.apply(&west, &td("east.mesh"), false).unwrap(),
        Applied::KeptLatest(5)
    );
    assert_eq!(store.get("west").unwrap().latest.sequence, 5);
    assert_eq!(
        store.apply(&west, &td("east.mesh"), true).unwrap(),
        Applied::UpdatedBundle
    );
    assert_eq!(store.get("west").unwrap().latest.sequence, 1);
}

#[test]
fn a_damaged_bundle_file_is_an_error_naming_it() {
    let dir = TestDir::new("store-damaged");
    let bundle = ca(&dir, "west", "west.mesh").trust_bundle();
    let store = PeerStore::new(&dir.path().join("data"));
    let west = peer("west", &bundle, "https://127.0.0.1:15446", WEST_ID);
    store.apply(&west, &td("east.mesh"), false).unwrap();
    std::fs::write(store.bundle_path("west"), "{\"keys\": [").unwrap();
    let error = store.get("west").unwrap_err().to_string();
    assert!(error.contains("west.bundle.json"), "{error}");
}

#[test]
fn a_sequence_reset_is_pending_until_cleared() {
    let dir = TestDir::new("store-reset");
    let bundle = ca(&dir, "west", "west.mesh").trust_bundle();
    let store = PeerStore::new(&dir.path().join("data"));
    assert!(matches!(
        store.request_sequence_reset("west"),
        Err(StoreError::NoSuchPeer(_))
    ));
    let west = peer("west", &bundle, "https://127.0.0.1:15446", WEST_ID);
    store.apply(&west, &td("east.mesh"), false).unwrap();
    assert!(!store.sequence_reset_requested("west"));
    store.request_sequence_reset("west").unwrap();
    assert!(store.sequence_reset_requested("west"));
    store.clear_sequence_reset("west").unwrap();
    assert!(!store.sequence_reset_requested("west"));
}
