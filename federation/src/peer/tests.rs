use super::*;
use crate::test_support::{TestDir, ca, td};

fn west_bundle(dir: &TestDir) -> TrustBundle {
    ca(dir, "west", "west.mesh").trust_bundle()
}

fn document(bundle_json: &str) -> String {
    let indented: String = bundle_json.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: strait.io/v1alpha1
kind: Peer
metadata:
  name: west
spec:
  trustDomain: west.mesh
  network: net-west
  eastwestAddress: 192.0.2.1:15443
  bundleEndpoint:
    url: https://192.0.2.1:15446
    spiffeId: spiffe://west.mesh/ns/strait-system/sa/eastwest
  trustBundle: |
{indented}"
    )
}

#[test]
fn a_peer_document_reads_and_writes_back_the_same() {
    let dir = TestDir::new("peer-parse");
    let bundle = west_bundle(&dir);
    let json = bundle.to_spiffe_json().unwrap();
    let peer = parse_peer(&document(&json), "west.yaml").unwrap();
    assert_eq!(peer.name, "west");
    assert_eq!(peer.trust_domain, td("west.mesh"));
    assert_eq!(peer.network, "net-west");
    assert_eq!(peer.eastwest_address, "192.0.2.1:15443");
    assert_eq!(peer.bundle_endpoint.host(), "192.0.2.1");
    assert_eq!(peer.bundle_endpoint.port(), 15446);
    assert_eq!(peer.bundle_endpoint.path(), "/");
    assert_eq!(
        peer.bundle_endpoint.spiffe_id.as_str(),
        "spiffe://west.mesh/ns/strait-system/sa/eastwest"
    );
    assert_eq!(peer.trust_bundle, bundle);
    let again = parse_peer(&peer.to_yaml().unwrap(), "again.yaml").unwrap();
    assert_eq!(again, peer);
}

#[test]
fn every_problem_is_named_with_file_line_and_field() {
    let dir = TestDir::new("peer-errors");
    let json = west_bundle(&dir).to_spiffe_json().unwrap();
    let text = document(&json)
        .replace("name: west", "name: West_1")
        .replace("net-west", "\"net west\"")
        .replace("192.0.2.1:15443", "192.0.2.1")
        .replace("https://192.0.2.1:15446", "http://192.0.2.1:15446")
        .replace("spiffe://west.mesh/ns", "spiffe://east.mesh/ns");
    let error = parse_peer(&text, "bad.yaml").unwrap_err();
    let text = error.to_string();
    for expected in [
        "bad.yaml:4:9: error: Peer West_1: metadata.name: \"West_1\" is not a DNS label",
        "bad.yaml:7:12: error: Peer West_1: spec.network:",
        "bad.yaml:8:20: error: Peer West_1: spec.eastwestAddress: \"192.0.2.1\" is not HOST:PORT",
        "spec.bundleEndpoint.url: \"http://192.0.2.1:15446\": a bundle endpoint is https",
        "spec.bundleEndpoint.spiffeId: is in trust domain east.mesh, not the peer's west.mesh",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(error.findings.len(), 5, "{text}");
}

#[test]
fn unknown_fields_missing_fields_and_wrong_kinds_are_refused() {
    let error = parse_peer(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: west\nspec:\n  trustDomian: west.mesh\n",
        "typo.yaml",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "apiVersion: must be strait.io/v1alpha1",
        "kind: must be Peer",
        "spec.trustDomian",
        "spec.trustDomain: is required",
        "spec.bundleEndpoint.url: is required",
        "spec.trustBundle: is required",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
    let several = parse_peer("kind: Peer\n---\nkind: Peer\n", "two.yaml").unwrap_err();
    assert!(several.to_string().contains("one Peer document per file"));
    let syntax = parse_peer("spec: [unclosed\n", "broken.yaml").unwrap_err();
    assert!(syntax.to_string().starts_with("broken.yaml:"), "{syntax}");
}

#[test]
fn a_first_contact_bundle_of_another_trust_domain_or_without_roots_is_refused() {
    let dir = TestDir::new("peer-bundle");
    let east = ca(&dir, "east", "east.mesh").trust_bundle();
    // East's roots carry spiffe://east.mesh: they cannot stand for west.mesh.
    let error = parse_peer(&document(&east.to_spiffe_json().unwrap()), "east.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("spec.trustBundle: root 0 names trust domain east.mesh"),
        "{error}"
    );
    let error = parse_peer(&document("{\"keys\": []}"), "empty.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("the bundle has no X.509 roots"), "{error}");
    let error = parse_peer(&document("-----BEGIN CERTIFICATE-----"), "pem.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a SPIFFE bundle"), "{error}");
}

#[test]
fn fields_are_validated_as_a_document_is() {
    let dir = TestDir::new("peer-fields");
    let bundle = west_bundle(&dir);
    let fields = PeerFields {
        name: "west".into(),
        trust_domain: "west.mesh".into(),
        network: "net-west".into(),
        eastwest_address: "gw.west.example:15443".into(),
        bundle_endpoint_url: "https://gw.west.example:15446".into(),
        bundle_endpoint_id: "spiffe://west.mesh/ns/strait-system/sa/eastwest".into(),
        trust_bundle: bundle.to_spiffe_json().unwrap(),
        trunk: false,
    };
    let peer = Peer::from_fields(fields.clone()).unwrap();
    assert_eq!(peer.trust_bundle, bundle);
    assert!(!peer.trunk);
    assert!(!peer.to_yaml().unwrap().contains("trunk"));
    // `trunk` is written only when set, and read back.
    let trunked = Peer::from_fields(PeerFields {
        trunk: true,
        ..fields.clone()
    })
    .unwrap();
    let yaml = trunked.to_yaml().unwrap();
    assert!(yaml.contains("  trunk: true\n"), "{yaml}");
    assert!(parse_peer(&yaml, "west.yaml").unwrap().trunk);
    assert_eq!(peer.bundle_endpoint.host(), "gw.west.example");
    let error = Peer::from_fields(PeerFields {
        trust_domain: "West.Mesh".into(),
        ..fields
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("error: Peer west: spec.trustDomain:"),
        "{error}"
    );
}
