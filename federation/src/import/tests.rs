//! Import generation: namespace sameness, weights, staleness, restarts.

use std::sync::Arc;

use strait_discovery::compile::exports::ExportedPort;
use strait_discovery::resources::{LoadOptions, Loaded, Spec, load_text};

use super::ExportedService;
use super::*;
use crate::test_support::TestDir;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn import() -> PeerImport {
    PeerImport {
        peer: "west".to_owned(),
        network: "west".to_owned(),
        address: "192.0.2.10".to_owned(),
    }
}

fn set(version: u64, hosts: &[&str]) -> ExportSet {
    ExportSet {
        version,
        trust_domain: "west.mesh".to_owned(),
        network: "west".to_owned(),
        services: hosts
            .iter()
            .map(|host| ExportedService {
                host: (*host).to_owned(),
                namespace: "default".to_owned(),
                ports: vec![ExportedPort {
                    number: 9080,
                    name: "http".to_owned(),
                    protocol: "HTTP".to_owned(),
                }],
                endpoints: vec![
                    EndpointGroup {
                        labels: BTreeMap::from([("version".to_owned(), "v1".to_owned())]),
                        locality: "eu/a".to_owned(),
                        spiffe_id: "spiffe://west.mesh/ns/default/sa/reviews".to_owned(),
                        count: 3,
                    },
                    EndpointGroup {
                        labels: BTreeMap::from([("version".to_owned(), "v2".to_owned())]),
                        locality: String::new(),
                        spiffe_id: String::new(),
                        count: 1,
                    },
                ],
            })
            .collect(),
    }
}

/// The generated YAML, read by the configuration loader (which must find nothing wrong).
fn load(yaml: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_text(
        &Arc::from("west.yaml"),
        yaml,
        &LoadOptions::default(),
        &mut loaded,
    );
    assert!(loaded.findings.is_empty(), "{:?}\n{yaml}", loaded.findings);
    loaded
}

#[test]
fn an_import_without_a_local_service_writes_the_service_and_weighted_entries() {
    let loaded = load(&import_yaml(
        &import(),
        &set(5, &[REVIEWS]),
        &BTreeMap::new(),
        false,
    ));
    let kinds: Vec<(&str, &str)> = loaded
        .objects
        .iter()
        .map(|o| (o.kind.as_str(), o.name()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "ServiceEntry",
                "imported-west-reviews-default-svc-cluster-local"
            ),
            (
                "WorkloadEntry",
                "imported-west-reviews-default-svc-cluster-local-0"
            ),
            (
                "WorkloadEntry",
                "imported-west-reviews-default-svc-cluster-local-1"
            ),
        ]
    );
    let Spec::ServiceEntry(entry) = &loaded.objects[0].spec else {
        panic!("not a ServiceEntry");
    };
    assert_eq!(entry.hosts.as_deref(), Some(&[REVIEWS.to_owned()][..]));
    let selector = &entry.workload_selector.as_ref().unwrap().labels;
    let Spec::WorkloadEntry(first) = &loaded.objects[1].spec else {
        panic!("not a WorkloadEntry");
    };
    assert_eq!(first.weight, Some(3));
    assert_eq!(first.network.as_deref(), Some("west"));
    assert_eq!(first.address.as_deref(), Some("192.0.2.10"));
    assert_eq!(first.locality.as_deref(), Some("eu/a"));
    assert_eq!(first.service_account.as_deref(), Some("reviews"));
    assert_eq!(first.labels["version"], "v1");
    assert_eq!(first.labels["security.istio.io/tlsMode"], "istio");
    assert!(selector.iter().all(|(k, v)| first.labels.get(k) == Some(v)));
    assert_eq!(
        loaded.objects[1].meta.annotations[TRUST_DOMAIN_ANNOTATION],
        "west.mesh"
    );
    assert!(
        !loaded.objects[1]
            .meta
            .annotations
            .contains_key(STALE_ANNOTATION)
    );
}

#[test]
fn a_local_service_of_the_same_host_gets_only_the_entries_with_its_selector() {
    let local = BTreeMap::from([(
        REVIEWS.to_owned(),
        LocalService {
            namespace: "bookinfo".to_owned(),
            selector: Some(BTreeMap::from([("app".to_owned(), "reviews".to_owned())])),
        },
    )]);
    let loaded = load(&import_yaml(&import(), &set(5, &[REVIEWS]), &local, false));
    assert_eq!(loaded.objects.len(), 2);
    for object in &loaded.objects {
        let Spec::WorkloadEntry(entry) = &object.spec else {
            panic!("{} is not a WorkloadEntry", object.kind.as_str());
        };
        assert_eq!(object.namespace, "bookinfo");
        assert_eq!(entry.labels["app"], "reviews");
    }
    // Inline endpoints cannot be extended: nothing is written for the host.
    let inline = BTreeMap::from([(
        REVIEWS.to_owned(),
        LocalService {
            namespace: "default".to_owned(),
            selector: None,
        },
    )]);
    let yaml = import_yaml(&import(), &set(5, &[REVIEWS]), &inline, false);
    assert!(load(&yaml).objects.is_empty(), "{yaml}");
}

#[test]
fn silence_marks_the_import_stale_and_keeps_it_and_a_new_set_replaces_it() {
    let data = TestDir::new("import-stale");
    let output = imports_dir(data.path()).join("west.yaml");
    let mut importer = Importer::open(data.path(), import(), Duration::from_secs(60));
    let ratings = "ratings.default.svc.cluster.local";
    importer
        .received(set(1, &[REVIEWS, ratings]), 1_000)
        .unwrap();
    let fresh = std::fs::read_to_string(&output).unwrap();
    assert_eq!(load(&fresh).objects.len(), 6);
    assert_eq!(importer.status(), (false, Some(1)));

    importer.refresh(61_000).unwrap();
    let stale = load(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(stale.objects.len(), 6, "a stale import keeps everything");
    assert!(
        stale
            .objects
            .iter()
            .all(|o| o.meta.annotations.get(STALE_ANNOTATION).map(String::as_str) == Some("true"))
    );
    assert_eq!(importer.status(), (true, Some(1)));

    // The state survives a restart, still stale by its receive time.
    let mut reopened = Importer::open(data.path(), import(), Duration::from_secs(60));
    reopened.refresh(62_000).unwrap();
    assert_eq!(reopened.status(), (true, Some(1)));

    // A set without ratings removes it, and the import is current again.
    reopened.received(set(2, &[REVIEWS]), 63_000).unwrap();
    let current = load(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(current.objects.len(), 3);
    assert!(current.objects.iter().all(|o| o.name().contains("reviews")));
    assert_eq!(reopened.status(), (false, Some(2)));
}

#[test]
fn long_hosts_and_odd_hosts() {
    let long = format!("{}.example.com", "a".repeat(80));
    let value = label_value(&object_name(&long).unwrap());
    assert!(value.len() <= 63, "{value}");
    assert_eq!(object_name("Bad_Host"), None);
}

#[test]
fn forgetting_a_removed_peer_s_import_removes_its_file_and_state() {
    let data = TestDir::new("import-forget");
    let output = imports_dir(data.path()).join("west.yaml");
    let state = data.path().join("import-state/west.json");
    let mut importer = Importer::open(data.path(), import(), Duration::from_secs(60));
    importer.received(set(1, &[REVIEWS]), 1_000).unwrap();
    assert!(output.exists() && state.exists());
    importer.forget().unwrap();
    assert!(!output.exists() && !state.exists());
    // A set still in flight writes nothing.
    importer.received(set(2, &[REVIEWS]), 2_000).unwrap();
    importer.refresh(3_000).unwrap();
    assert!(!output.exists() && !state.exists());
    // Reopened, nothing is left of it; forgetting an import never written is fine too.
    let mut reopened = Importer::open(data.path(), import(), Duration::from_secs(60));
    assert_eq!(reopened.status(), (false, None));
    reopened.forget().unwrap();
}
