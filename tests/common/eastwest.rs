//! What the two-cluster tests share about linking clusters (`east.mesh` and `west.mesh`): the
//! services west exports and east's view of them, an east-west gateway process
//! (`strait run --role eastwest`), its identity from files with the bundle it serves, and the
//! Peer documents `strait link` prints and `strait peer apply` stores. Needs root and `ip`
//! (scripts/install-test-deps).

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::path::Path;

use super::mesh::{Ca, capture, start_app, strait_run, supervise};
use super::netns::{Netns, Process};
use super::{TempDir, run, strait};

pub const REVIEWS: &str = "reviews.default.svc.cluster.local";
pub const RATINGS: &str = "ratings.default.svc.cluster.local";
pub const CALLER_ID: &str = "spiffe://east.mesh/ns/default/sa/caller";
pub const REVIEWS_ID: &str = "spiffe://west.mesh/ns/default/sa/reviews";

/// West's configuration: Istio's cross-network Gateway, `reviews` (exported) and `ratings` (not
/// exported) on one workload, and who may call it: `caller` of east on the HTTP port, someone
/// else on the TCP port.
pub fn west_config(reviews_ip: Ipv4Addr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network-gateway, namespace: istio-system}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: 15443, name: tls, protocol: TLS}}
    tls: {{mode: AUTO_PASSTHROUGH}}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
  labels: {{strait.io/export: "true"}}
spec:
  hosts: [{REVIEWS}]
  location: MESH_INTERNAL
  ports:
  - {{number: 9080, name: http, targetPort: 8080}}
  - {{number: 9000, name: tcp-echo}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [{RATINGS}]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, targetPort: 8080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec:
  address: {reviews_ip}
  network: west
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-callers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [east.mesh/ns/default/sa/caller]}}}}]
    to: [{{operation: {{ports: ["8080"]}}}}]
  - from: [{{source: {{principals: [east.mesh/ns/default/sa/somebody-else]}}}}]
    to: [{{operation: {{ports: ["9000"]}}}}]
"#
    )
}

/// East's view of west: both services, their workload on network west behind west's gateway,
/// running as an identity of west's trust domain.
pub fn east_config(reviews_ip: Ipv4Addr, gateway_ip: Ipv4Addr) -> String {
    format!(
        r#"
networks:
  west:
    gateways: [{{address: {gateway_ip}, port: 15443}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS}]
  location: MESH_INTERNAL
  ports:
  - {{number: 9080, name: http, targetPort: 8080}}
  - {{number: 9000, name: tcp-echo}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [{RATINGS}]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, targetPort: 8080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-west
  namespace: default
  annotations: {{strait.io/trust-domain: west.mesh}}
spec:
  address: {reviews_ip}
  network: west
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
"#
    )
}

/// Puts the trust bundle of `from`'s identity folder, of `trust_domain`, into `into`'s
/// `federated/TRUST_DOMAIN.pem`.
pub fn federate(from: &Path, into: &Path, trust_domain: &str) {
    let bundle = std::fs::read(from.join("root-cert.pem")).unwrap();
    std::fs::create_dir_all(into.join("federated")).unwrap();
    std::fs::write(into.join(format!("federated/{trust_domain}.pem")), bundle).unwrap();
}

/// An east-west gateway on `network` reading `DIR/config`, with its state in `DIR/NAME-data`,
/// its access log in `DIR/NAME-access.log` and its log in `DIR/LOG.log`; `extra` adds flags.
/// Returns once it serves.
pub fn gateway(
    netns: &Netns,
    dir: &TempDir,
    network: &str,
    name: &str,
    log: &str,
    extra: &[impl AsRef<OsStr>],
) -> Process {
    let mut flags: Vec<&OsStr> = vec![OsStr::new("--network"), OsStr::new(network)];
    flags.extend(extra.iter().map(AsRef::as_ref));
    let command = strait_run(dir, "eastwest", name, &flags);
    supervise(
        netns,
        &command.iter().map(OsString::as_os_str).collect::<Vec<_>>(),
        &dir.path().join(format!("{log}.log")),
        "endpoint ready",
    )
}

/// `reviews`' application in `netns` (HTTP on 8080, a TCP echo on 9000, its log in
/// `DIR/reviews-app.log`), with the namespace's traffic captured for its sidecar.
pub fn reviews_app(netns: &Netns, dir: &TempDir) -> Process {
    let app = start_app(
        netns,
        "0.0.0.0",
        8080,
        9000,
        &dir.path().join("reviews-app.log"),
    );
    capture(netns, &["install"]);
    app
}

/// The CA's bundle in `ca_data` as SPIFFE bundle JSON (with its sequence).
pub fn spiffe_bundle(ca_data: &Path) -> serde_json::Value {
    let bundle = run(strait()
        .args(["ca", "bundle", "--format", "spiffe", "--data"])
        .arg(ca_data));
    assert_eq!(bundle.code, Some(0), "strait ca bundle: {}", bundle.stderr);
    serde_json::from_str(&bundle.stdout).unwrap()
}

/// Issues an east-west gateway's identity `id` from the CA in `DIR/ca-data` into
/// `DIR/gateway-id`, with its own trust domain's bundle as SPIFFE JSON (`bundle.json`, carrying
/// the CA's sequence, which the bundle endpoint serves); returns the gateway's identity flags,
/// with a bundle refresh hint and a poll interval short enough for a test.
pub fn gateway_identity(dir: &TempDir, ca: &Ca, id: &str) -> Vec<OsString> {
    let out = dir.path().join("gateway-id");
    ca.issue_id(id, &out);
    let bundle = spiffe_bundle(&dir.path().join("ca-data"));
    std::fs::write(out.join("bundle.json"), bundle.to_string()).unwrap();
    [
        OsStr::new("--identity-dir"),
        out.as_os_str(),
        OsStr::new("--trust-bundle"),
        out.join("bundle.json").as_os_str(),
        OsStr::new("--service-account"),
        OsStr::new("eastwest"),
        OsStr::new("--peer-min-refresh"),
        OsStr::new("1s"),
        OsStr::new("--bundle-refresh-hint"),
        OsStr::new("1s"),
    ]
    .map(|s| s.to_os_string())
    .to_vec()
}

/// The port of the SPIFFE bundle endpoint an east-west gateway serves by default.
pub const BUNDLE_PORT: u16 = 15446;

/// What `strait link` prints in the cluster `name` (trust domain `NAME.mesh`, network
/// `name`, CA in `DIR/ca-data`) for its gateway at `ip` running as `gateway_id`, whose bundle
/// endpoint listens on `bundle_port`; `trunk` asks the other side for a QUIC trunk.
pub fn link(
    dir: &TempDir,
    name: &str,
    ip: Ipv4Addr,
    gateway_id: &str,
    bundle_port: u16,
    trunk: bool,
) -> String {
    let mut command = strait();
    command
        .args(["link", "--data"])
        .arg(dir.path().join("ca-data"))
        .args([
            "--name",
            name,
            "--trust-domain",
            &format!("{name}.mesh"),
            "--network",
            name,
            "--eastwest",
            &format!("{ip}:15443"),
            "--bundle-endpoint",
            &format!("https://{ip}:{bundle_port}"),
            "--bundle-endpoint-id",
            gateway_id,
        ]);
    if trunk {
        command.arg("--trunk");
    }
    let linked = run(&mut command);
    assert_eq!(linked.code, Some(0), "strait link: {}", linked.stderr);
    linked.stdout
}

/// `strait peer apply` of `document` into the state of the gateway in `dir`, of the cluster
/// whose trust domain is `local`.
pub fn apply_peer(dir: &TempDir, local: &str, document: &str) {
    let file = dir.write("peer.yaml", document);
    let applied = run(strait()
        .args(["peer", "apply", "--local-trust-domain", local, "-f"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path().join("gateway-data")));
    assert_eq!(
        applied.code,
        Some(0),
        "strait peer apply: {}",
        applied.stderr
    );
}
