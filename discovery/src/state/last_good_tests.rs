//! The last-known-good file: compiled gateway and sidecar snapshots read back equal to what was
//! written (compiled regexes, CIDRs, private keys and all), owner-only, with keys that stay out
//! of config dumps; a garbled file is moved aside.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strait_proxy::snapshot::{Endpoint, Snapshot, Transport, UpstreamTls};

use super::super::test_dir::TestDir;
use super::*;
use crate::compile::{GatewayOptions, SidecarOptions, compile_gateway, compile_sidecar};
use crate::resources::LoadOptions;
use crate::source::DirectorySource;
use crate::validation::ValidateOptions;

fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

fn objects(paths: Vec<PathBuf>) -> Vec<std::sync::Arc<crate::resources::Object>> {
    DirectorySource::new(paths, LoadOptions::default(), ValidateOptions::default())
        .read()
        .objects
}

/// Regexes (anchored and not), CIDRs, path templates, JWT rules, TLS termination and MUTUAL
/// origination with their keys.
const EVERYTHING: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match:
    - uri: {regex: "/api/v[0-9]+/.*"}
      headers: {x-canary: {regex: "yes|true"}}
    rewrite:
      uriRegexRewrite: {match: "^/api/v[0-9]+", rewrite: "/api"}
    fault: {abort: {httpStatus: 503, percentage: {value: 0.5}}}
    mirror: {host: api.default.svc.cluster.local}
    corsPolicy: {allowOrigins: [{regex: "https://.*\\.example\\.com"}], allowMethods: [GET]}
    route:
    - destination: {host: api.default.svc.cluster.local, port: {number: 8080}}
  - directResponse: {status: 200, body: {string: "hello"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 10s}}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}
    tls: {mode: MUTUAL, credentialName: client-cert, sni: api.internal}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.1.2.3, labels: {version: v1}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/8", "2001:db8::/32"]}}]
    to: [{operation: {paths: ["/api/{*}/items/{**}"], methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: https://issuer.example.com
    jwks: '{"keys":[]}'
"#;

fn credential(dir: &Path, name: &str) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec![format!("{name}.example.com")]).unwrap();
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let key = certified.signing_key.serialize_pem();
    std::fs::write(folder.join("tls.crt"), certified.cert.pem()).unwrap();
    std::fs::write(folder.join("tls.key"), &key).unwrap();
    std::fs::write(folder.join("ca.crt"), certified.cert.pem()).unwrap();
    key
}

fn everything(dir: &TestDir) -> (Snapshot, String, String) {
    let credentials = dir.path().join("credentials");
    let server_key = credential(&credentials, "shop-cert");
    let client_key = credential(&credentials, "client-cert");
    std::fs::write(dir.path().join("everything.yaml"), EVERYTHING).unwrap();
    let options = GatewayOptions {
        credentials: Some(credentials),
        ..GatewayOptions::default()
    };
    let compiled = compile_gateway(
        &objects(vec![dir.path().join("everything.yaml")]),
        &options,
        7,
    );
    (compiled.snapshot, server_key, client_key)
}

fn round_trip(snapshot: &Snapshot, role: &str) -> Snapshot {
    let dir = TestDir::new("last-good-round-trip");
    let file = LastGoodFile::in_data_dir(dir.path());
    file.write(role, snapshot, &NameTable::default(), 1)
        .unwrap();
    let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holds private keys");
    let loaded = file.load(role);
    assert!(loaded.problem.is_none(), "{:?}", loaded.problem);
    let available = loaded.last_good.expect("found");
    assert_eq!(available.summary.version, snapshot.version);
    available.read().expect("read back").snapshot
}

#[test]
fn a_compiled_gateway_snapshot_reads_back_equal_keys_included() {
    let dir = TestDir::new("last-good-everything");
    let (snapshot, server_key, client_key) = everything(&dir);
    // What the test relies on was compiled.
    let https = snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .find_map(|c| match &c.transport {
            Transport::Terminate(tls) => Some(tls.certificate.private_key.clone()),
            _ => None,
        });
    assert_eq!(https.as_deref(), Some(server_key.as_str()));
    let cluster = &snapshot.clusters["outbound|8080||api.default.svc.cluster.local"];
    assert!(
        matches!(&cluster.tls, UpstreamTls::Mutual { private_key, .. } if *private_key == client_key)
    );
    assert!(snapshot.policies.has_authorization());
    assert!(!snapshot.policies.jwt_rules.is_empty());

    assert_eq!(round_trip(&snapshot, "ingress"), snapshot);
}

#[test]
fn config_dumps_never_show_private_keys_state_files_do() {
    let dir = TestDir::new("last-good-redaction");
    let (snapshot, server_key, client_key) = everything(&dir);
    let dump = serde_json::to_string(&snapshot).unwrap();
    let pem_body = |key: &str| key.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        !dump.contains(&pem_body(&server_key)),
        "config dump shows a server key"
    );
    assert!(
        !dump.contains(&pem_body(&client_key)),
        "config dump shows a client key"
    );
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    let mut state = Vec::new();
    state_file::to_json_writer(&mut state, &snapshot).unwrap();
    let state = String::from_utf8(state).unwrap();
    assert!(state.contains(&pem_body(&server_key)));
    assert!(state.contains(&pem_body(&client_key)));
    // The switch is scoped: a dump after a state file still redacts.
    assert_eq!(serde_json::to_string(&snapshot).unwrap(), dump);
}

#[test]
fn bookinfo_gateway_and_sidecar_snapshots_read_back_equal() {
    let bookinfo = objects(vec![examples("bookinfo")]);
    let gateway = compile_gateway(&bookinfo, &GatewayOptions::default(), 3).snapshot;
    assert!(!gateway.listeners.is_empty() && !gateway.clusters.is_empty());
    assert_eq!(round_trip(&gateway, "ingress"), gateway);

    let sidecar = compile_sidecar(
        &bookinfo,
        &SidecarOptions {
            namespace: "bookinfo".to_owned(),
            labels: BTreeMap::from([
                ("app".to_owned(), "productpage".to_owned()),
                ("version".to_owned(), "v1".to_owned()),
            ]),
            domain_suffix: "cluster.local".to_owned(),
            outbound: SocketAddr::from(([0, 0, 0, 0], 15001)),
            inbound: SocketAddr::from(([0, 0, 0, 0], 15006)),
            captured: true,
            instance_ip: None,
            workload_name: "productpage-v1".to_owned(),
            service_account: "bookinfo-productpage".to_owned(),
            http_proxy: None,
            dns: Default::default(),
            network: None,
            locality: None,
        },
        4,
    )
    .snapshot;
    assert!(!sidecar.listeners.is_empty() && !sidecar.clusters.is_empty());
    assert_eq!(round_trip(&sidecar, "sidecar"), sidecar);

    let ingress = compile_gateway(
        &objects(vec![examples("ingress")]),
        &GatewayOptions::default(),
        5,
    )
    .snapshot;
    assert_eq!(round_trip(&ingress, "ingress"), ingress);
}

#[test]
fn a_garbled_file_is_moved_aside_and_reported() {
    let dir = TestDir::new("last-good-garbled");
    let file = LastGoodFile::in_data_dir(dir.path());
    file.write("ingress", &Snapshot::default(), &NameTable::default(), 1)
        .unwrap();
    let text = std::fs::read(file.path()).unwrap();
    std::fs::write(file.path(), &text[..text.len() / 2]).unwrap();
    let loaded = file.load("ingress");
    assert!(loaded.last_good.is_none());
    let problem = loaded.problem.expect("reported");
    assert!(
        problem.contains(&file.path().display().to_string()),
        "{problem}"
    );
    assert!(problem.contains("moved to"), "{problem}");
    assert!(!file.path().exists(), "moved aside");
    // Nothing there now: no snapshot, no problem.
    let again = file.load("ingress");
    assert!(again.last_good.is_none() && again.problem.is_none());
}

#[test]
fn another_roles_snapshot_is_not_served() {
    let dir = TestDir::new("last-good-role");
    let file = LastGoodFile::in_data_dir(dir.path());
    file.write("sidecar", &Snapshot::default(), &NameTable::default(), 1)
        .unwrap();
    let loaded = file.load("ingress");
    assert!(loaded.last_good.is_none());
    assert!(loaded.problem.expect("reported").contains("role sidecar"));
}

#[test]
fn the_summary_read_at_start_carries_the_dns_answers_and_the_snapshot_waits() {
    let dir = TestDir::new("last-good-summary");
    let (mut snapshot, _, _) = everything(&dir);
    let endpoint = |ip: [u8; 4], name: Option<&str>| Endpoint {
        address: SocketAddr::from((ip, 443)),
        weight: 1,
        locality: None,
        labels: BTreeMap::new(),
        dns_name: name.map(str::to_owned),
        network_gateway: None,
        priority: 0,
    };
    let cluster = snapshot.clusters.values_mut().next().expect("a cluster");
    std::sync::Arc::make_mut(cluster).endpoints = vec![
        endpoint([10, 0, 0, 1], Some("api.example.com")),
        endpoint([10, 0, 0, 2], Some("api.example.com")),
        endpoint([10, 0, 0, 1], Some("api.example.com")),
        endpoint([10, 0, 0, 9], None),
    ];
    let file = LastGoodFile::in_data_dir(dir.path());
    file.write("ingress", &snapshot, &NameTable::default(), 1234)
        .unwrap();

    let available = file.load("ingress").last_good.expect("found");
    let summary = &available.summary;
    assert_eq!(summary.version, 7);
    assert_eq!(summary.compiled_at_ms, 1234);
    assert!(summary.written_at_ms >= 1234);
    assert_eq!(
        summary.dns_answers,
        BTreeMap::from([(
            "api.example.com".to_owned(),
            vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]
        )]),
        "each name once, each address once, endpoints without a name left out"
    );
    assert_eq!(available.read().expect("read back").snapshot, snapshot);
}

#[test]
fn a_snapshot_damaged_past_what_the_start_reads_is_moved_aside_when_it_is_needed() {
    let dir = TestDir::new("last-good-late-damage");
    let (snapshot, _, _) = everything(&dir);
    let file = LastGoodFile::in_data_dir(dir.path());
    file.write("ingress", &snapshot, &NameTable::default(), 1)
        .unwrap();
    // Valid JSON with the header and the clusters intact, but listeners that are no listeners.
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
    value["snapshot"]["listeners"] = serde_json::json!([{"name": 5}]);
    std::fs::write(file.path(), serde_json::to_vec(&value).unwrap()).unwrap();

    let loaded = file.load("ingress");
    assert!(loaded.problem.is_none(), "{:?}", loaded.problem);
    let problem = loaded
        .last_good
        .expect("the summary reads")
        .read()
        .expect_err("the snapshot does not");
    assert!(
        problem.contains("does not decode") && problem.contains("moved to"),
        "{problem}"
    );
    assert!(!file.path().exists(), "moved aside");
}
