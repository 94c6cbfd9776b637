//! Two clusters on two networks, linked through west's east-west gateway: each cluster has its
//! own CA and trust domain (`east.mesh`, `west.mesh`) and trusts the other's bundle (the
//! `federated/` folder of each identity). East's workload `caller` (captured, `--network east`)
//! calls west's service `reviews` by name; east's sidecar sees it behind west's gateway
//! (MeshNetworks) and opens mesh mTLS with Istio's SNI to the gateway (`--role eastwest`),
//! which passes it through to west's sidecar, where the caller's own SPIFFE ID arrives and
//! authorization decides by it. A service west does not export is refused at the gateway with
//! the reason logged, and with the gateway down east's access log says so.
//!
//! East cannot reach west's workload address: a rule in east's namespace rejects it, so only
//! the gateway's address leads to west. Needs root, `ip`, iptables, python3, dig and openssl
//! (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;

use common::TempDir;
use common::bridge::Bridge;
use common::mesh::{
    Ca, call, capture, http_get, json_body, recorded, sidecar, start_app, supervise,
    wait_for_line_in,
};
use common::netns::{Netns, Process};

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
const CALLER_ID: &str = "spiffe://east.mesh/ns/default/sa/caller";
const REVIEWS_ID: &str = "spiffe://west.mesh/ns/default/sa/reviews";

/// West's configuration: Istio's cross-network Gateway, `reviews` (exported) and `ratings` (not
/// exported) on one workload, and who may call it: `caller` of east on the HTTP port, someone
/// else on the TCP port.
fn west_config(reviews_ip: Ipv4Addr) -> String {
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
fn east_config(reviews_ip: Ipv4Addr, gateway_ip: Ipv4Addr) -> String {
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

/// Both clusters, running.
struct Clusters {
    bridge: Bridge,
    east: TempDir,
    west: TempDir,
    reviews_ip: Ipv4Addr,
    gateway_ip: Ipv4Addr,
    gateway: Option<Process>,
    _processes: Vec<Process>,
}

impl Clusters {
    fn start(label: &str) -> Clusters {
        let bridge = Bridge::new(label, &["caller", "gateway", "reviews"]);
        let (reviews_ip, gateway_ip) = (bridge.member("reviews").ip, bridge.member("gateway").ip);
        let east = TempDir::new(&format!("{label}-east"));
        let west = TempDir::new(&format!("{label}-west"));

        // A CA per cluster, and each workload trusting the other cluster's bundle too.
        let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
        let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");
        let (caller_dir, reviews_dir) = (east.path().join("caller"), west.path().join("reviews"));
        east_ca.issue_id(CALLER_ID, &caller_dir);
        west_ca.issue_id(REVIEWS_ID, &reviews_dir);
        federate(&caller_dir, &reviews_dir, "east.mesh");
        federate(&reviews_dir, &caller_dir, "west.mesh");

        east.write("config/mesh.yaml", "trustDomain: east.mesh\n");
        east.write("config/services.yaml", &east_config(reviews_ip, gateway_ip));
        west.write("config/mesh.yaml", "trustDomain: west.mesh\n");
        west.write("config/services.yaml", &west_config(reviews_ip));

        let mut processes = Vec::new();
        let reviews = &bridge.member("reviews").netns;
        processes.push(start_app(
            reviews,
            "0.0.0.0",
            8080,
            9000,
            &west.path().join("reviews-app.log"),
        ));
        capture(reviews, &["install"]);
        processes.push(sidecar(reviews, &west, "reviews", &["--network", "west"]));
        let gateway = east_west_gateway(&bridge.member("gateway").netns, &west);

        let caller = &bridge.member("caller").netns;
        // East reaches west only through west's gateway.
        caller.ok(
            "iptables",
            &[
                "-A",
                "OUTPUT",
                "-d",
                &reviews_ip.to_string(),
                "-j",
                "REJECT",
            ],
        );
        capture(caller, &["install"]);
        processes.push(sidecar(caller, &east, "caller", &["--network", "east"]));
        Clusters {
            bridge,
            east,
            west,
            reviews_ip,
            gateway_ip,
            gateway: Some(gateway),
            _processes: processes,
        }
    }

    fn netns(&self, name: &str) -> &Netns {
        &self.bridge.member(name).netns
    }

    /// The address east's DNS proxy gives `host` (a VIP: east has no address for it).
    fn resolve(&self, host: &str) -> Ipv4Addr {
        let answer = self
            .netns("caller")
            .ok("dig", &["@127.0.0.1", "-p", "15053", "+short", host, "A"]);
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{host}: {answer:?}"))
    }

    /// `GET /hello` from east's workload to `host` on port 9080, by name.
    fn get(&self, host: &str) -> String {
        let vip = self.resolve(host);
        http_get(self.netns("caller"), vip, 9080, "0", host, "")
    }

    fn east_log(&self, parts: &[&str]) -> String {
        wait_for_line_in(&self.east.path().join("caller-access.log"), parts)
    }

    fn west_log(&self, workload: &str, parts: &[&str]) -> String {
        wait_for_line_in(
            &self.west.path().join(format!("{workload}-access.log")),
            parts,
        )
    }
}

/// Puts the trust bundle of `from`'s identity folder, of `trust_domain`, into `into`'s
/// `federated/TRUST_DOMAIN.pem`.
fn federate(from: &Path, into: &Path, trust_domain: &str) {
    let bundle = std::fs::read(from.join("root-cert.pem")).unwrap();
    std::fs::create_dir_all(into.join("federated")).unwrap();
    std::fs::write(into.join(format!("federated/{trust_domain}.pem")), bundle).unwrap();
}

/// West's east-west gateway: no identity of its own (it never terminates).
fn east_west_gateway(netns: &Netns, west: &TempDir) -> Process {
    let path = |name: &str| west.path().join(name);
    let (config, data, access_log) = (
        path("config"),
        path("gateway-data"),
        path("gateway-access.log"),
    );
    let mut command: Vec<&OsStr> = vec![OsStr::new(env!("CARGO_BIN_EXE_strait"))];
    command.extend(
        [
            "run",
            "--role",
            "eastwest",
            "--network",
            "west",
            "--drain-period",
            "0s",
            "--drain-timeout",
            "1s",
        ]
        .map(OsStr::new),
    );
    for (flag, value) in [
        ("--config", &config),
        ("--data", &data),
        ("--access-log", &access_log),
    ] {
        command.extend([OsStr::new(flag), value.as_os_str()]);
    }
    supervise(netns, &command, &path("gateway.log"), "endpoint ready")
}

#[test]
fn a_call_crosses_networks_through_the_gateway_with_the_caller_s_own_identity() {
    let clusters = Clusters::start("ew-call");
    let gateway = format!("{}:15443", clusters.gateway_ip);
    let reviews = format!("{}:8080", clusters.reviews_ip);

    // HTTP by name: east's sidecar sends it to west's gateway, which passes the mTLS through;
    // west's sidecar terminates it and the application sees east's caller.
    let response = clusters.get(REVIEWS);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"));
    assert!(xfcc.starts_with(&format!("By={REVIEWS_ID};")), "{xfcc}");
    assert!(xfcc.ends_with(&format!("URI={CALLER_ID}")), "{xfcc}");
    let outbound = clusters.east_log(&["GET /hello", "outbound|9080||reviews"]);
    assert!(outbound.contains(&gateway), "{outbound}");
    let inbound = clusters.west_log("reviews", &["GET /hello", "inbound|8080||"]);
    assert!(
        inbound.contains(&format!("peer=\"{CALLER_ID}\"")),
        "{inbound}"
    );

    // The TCP port admits another principal only: the same caller is denied there.
    let vip = clusters.resolve(REVIEWS);
    let echoed = call(clusters.netns("caller"), vip, 9000, "0", "ping\\n");
    assert!(!echoed.contains("echo=ping"), "{echoed}");
    let denied = clusters.west_log("reviews", &["TCP", "outbound_.9000_.", "RBAC"]);
    assert!(
        denied.contains(&format!("peer=\"{CALLER_ID}\"")),
        "{denied}"
    );
    let app = recorded(&clusters.west.path().join("reviews-app.log"));
    assert!(!app.contains("tcp line ping"), "{app}");
    // The gateway logs each connection it passed through when it ends (east's HTTP connection
    // stays pooled; this one was closed by west's sidecar).
    let passed = clusters.west_log(
        "gateway",
        &["outbound_.9000_._.reviews.default.svc.cluster.local"],
    );
    assert!(
        passed.contains(&format!("{}:9000", clusters.reviews_ip)),
        "{passed}"
    );

    // The other SNI form, `outbound|PORT|SUBSET|HOST`, which Istio's gateways accept too, from
    // a client holding the caller's identity: the gateway routes it to the same destination.
    // (West's sidecar then refuses the handshake: its TLS server, rustls, takes only SNI values
    // that are DNS names, and Istio's sidecars send the `outbound_.` form.)
    let caller = clusters.east.path().join("caller");
    let chain = caller.join("cert-chain.pem").display().to_string();
    let key = caller.join("key.pem").display().to_string();
    let sni = format!("outbound|9080||{REVIEWS}");
    let request = format!(
        "openssl s_client -connect {gateway} -servername '{sni}' -cert {chain} \
         -cert_chain {chain} -key {key} -alpn istio-http/1.1,istio,http/1.1 </dev/null"
    );
    clusters.netns("gateway").run("sh", &["-c", &request]);
    let piped = clusters.west_log("gateway", &[&sni]);
    assert!(
        piped.contains(" outbound_.9080_._.reviews.default.svc.cluster.local ")
            && piped.contains(&reviews),
        "{piped}"
    );
}

#[test]
fn the_gateway_refuses_what_is_not_exported_and_the_caller_logs_why_calls_fail() {
    let mut clusters = Clusters::start("ew-refuse");

    // ratings runs on the same workload, but west does not export it: the gateway resets the
    // connection and says why; the workload never sees it.
    let response = clusters.get(RATINGS);
    assert!(response.contains("HTTP/1.1 503"), "{response}");
    let refused = clusters.west_log(
        "gateway",
        &["outbound_.9080_._.ratings.default.svc.cluster.local"],
    );
    assert!(refused.contains("is not exported"), "{refused}");
    let failed = clusters.east_log(&["GET /hello", "outbound|9080||ratings"]);
    assert!(
        failed.contains("through network west's gateway"),
        "{failed}"
    );
    let app = recorded(&clusters.west.path().join("reviews-app.log"));
    assert!(!app.contains("http request"), "{app}");

    // An SNI that names nothing is refused by the catch-all.
    let nothing = format!(
        "openssl s_client -connect {}:15443 -servername outbound_.1_._.nothing.local \
         </dev/null >/dev/null 2>&1; true",
        clusters.gateway_ip
    );
    clusters.netns("gateway").ok("sh", &["-c", &nothing]);
    let unknown = clusters.west_log("gateway", &["outbound_.1_._.nothing.local"]);
    assert!(
        unknown.contains("names no service, port and subset"),
        "{unknown}"
    );

    // With west's gateway down, east's access log names the network and its gateway.
    drop(clusters.gateway.take());
    let response = clusters.get(REVIEWS);
    assert!(response.contains("HTTP/1.1 503"), "{response}");
    let down = clusters.east_log(&["GET /hello", "outbound|9080||reviews", "unreachable"]);
    assert!(
        down.contains(&format!(
            "network west's gateway {}:15443 unreachable",
            clusters.gateway_ip
        )),
        "{down}"
    );
}
