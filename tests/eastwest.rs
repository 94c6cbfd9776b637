//! Two clusters on two networks, linked through west's east-west gateway: each cluster has its
//! own CA and trust domain (`east.mesh`, `west.mesh`) and trusts the other's bundle (the
//! `federated/` folder of each identity). East's workload `caller` (captured, `--network east`)
//! calls west's service `reviews` by name; east's sidecar sees it behind west's gateway
//! (MeshNetworks) and opens mesh mTLS with Istio's SNI to the gateway (`--role eastwest`),
//! which passes it through to west's sidecar, where the caller's own SPIFFE ID arrives and
//! authorization decides by it. A service west does not export is refused at the gateway with
//! the reason logged, and with the gateway down east's access log says so.
//!
//! With an identity, the east-west gateways also federate and trunk: east's gateway follows
//! the bundle west's gateway serves (the Peer from `strait link`), and with a gateway on each
//! side peered with `trunk: true`, east's sidecar reaches west through its own gateway's trunk
//! ingress and the QUIC trunk. With the trunk ingress in the sidecar's locality and west's
//! gateway in another, and outlier detection, the trunk is preferred: while it is blocked the
//! calls go directly to west's 15443, and once it is back they return to the trunk.
//!
//! Failover across networks: with `reviews` also running in east and a DestinationRule in east
//! preferring network west (`failoverPriority: ["topology.istio.io/network=west"]`) with
//! outlier detection, the calls cross to west until west's workload stops, are then served in
//! east, and go back to west once it runs again and its ejection ends.
//!
//! East's gateway also imports what west's exports (the federation API): with no object of
//! `reviews` of its own, east's sidecar reads the generated import, its DNS proxy answers the
//! name, and the call crosses west's gateway; the import stays (stale) while west's gateway
//! is down and goes when west stops exporting.
//!
//! The networks (tests/common/router.rs): each cluster's hosts are namespaces on the cluster's
//! own routed /24, and the clusters are joined only through a router namespace. Workload
//! addresses are on each cluster's own range, to which the router has no route: east cannot
//! reach west's workload address (a test checks that a connection to it fails and one to
//! west's gateway is made), so the only way into west is its gateway's address, as between
//! real networks. No firewall rule stands in for that; the only rule, in the trunk tests, blocks
//! the trunk's UDP. Needs root, `ip`, iptables, python3, dig and openssl
//! (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::TempDir;
use common::eastwest::{
    BUNDLE_PORT, CALLER_ID, RATINGS, REVIEWS, REVIEWS_ID, apply_peer, east_config, federate,
    gateway, gateway_identity, link, reviews_app, spiffe_bundle, west_config,
};
use common::mesh::{
    CROSS_NETWORK_GATEWAY, Ca, EAST_GATEWAY_ID, MARK, WEST_GATEWAY_ID, call, capture, get_by_name,
    json_body, recorded, resolve, sidecar, start_app, wait_for_line_in,
};
use common::netns::{Netns, Process};
use common::router::{Router, connect};

/// Both clusters, running.
struct Clusters {
    net: Router,
    east: TempDir,
    west: TempDir,
    reviews_ip: Ipv4Addr,
    gateway_ip: Ipv4Addr,
    gateway: Option<Process>,
    _processes: Vec<Process>,
}

impl Clusters {
    fn start(label: &str) -> Clusters {
        let net = Router::new(label, &["caller"], &["gateway", "reviews"]);
        let (reviews_ip, gateway_ip) = (
            net.west.host("reviews").workload_ip,
            net.west.host("gateway").ip,
        );
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
        let reviews = &net.west.host("reviews").netns;
        processes.push(reviews_app(reviews, &west));
        processes.push(sidecar(reviews, &west, "reviews", &["--network", "west"]));
        let gateway = east_west_gateway(&net.west.host("gateway").netns, &west);

        let caller = &net.east.host("caller").netns;
        capture(caller, &["install"]);
        processes.push(sidecar(caller, &east, "caller", &["--network", "east"]));
        Clusters {
            net,
            east,
            west,
            reviews_ip,
            gateway_ip,
            gateway: Some(gateway),
            _processes: processes,
        }
    }

    fn netns(&self, name: &str) -> &Netns {
        &self.net.host(name).netns
    }

    /// `GET /hello` from east's workload to `host` on port 9080, by name.
    fn get(&self, host: &str) -> String {
        get_by_name(self.netns("caller"), host, 9080)
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

/// West's east-west gateway: no identity of its own (it never terminates).
fn east_west_gateway(netns: &Netns, west: &TempDir) -> Process {
    gateway(netns, west, "west", "gateway", "gateway", &[] as &[&str])
}

#[test]
fn a_call_crosses_networks_through_the_gateway_with_the_caller_s_own_identity() {
    let clusters = Clusters::start("ew-call");
    let gateway = format!("{}:15443", clusters.gateway_ip);
    let reviews = format!("{}:8080", clusters.reviews_ip);

    // East's workload cannot reach west's workload address: the router has no route to it (no
    // firewall rule is involved); west's gateway address is routed, and inside west the
    // workload address is reached. (The probes from east carry the sidecars' mark, so that
    // capture lets them go where they are sent.)
    let caller = clusters.netns("caller");
    let unrouted = connect(caller, clusters.reviews_ip, 8080, MARK).unwrap_err();
    assert!(unrouted.contains("unreachable"), "{unrouted}");
    connect(caller, clusters.gateway_ip, 15443, MARK).unwrap();
    connect(clusters.netns("gateway"), clusters.reviews_ip, 8080, "0").unwrap();

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
    let vip = resolve(clusters.netns("caller"), REVIEWS);
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
        failed.contains(&format!(
            "network west's gateway {}:15443 closed the connection during the mesh TLS handshake: it refused the destination",
            clusters.gateway_ip
        )),
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

/// East's own workload of `reviews` (east's trust domain).
const EAST_REVIEWS_ID: &str = "spiffe://east.mesh/ns/default/sa/reviews";

/// Added to east's view in the failover test: east's own workload of `reviews`, and a rule that
/// prefers network west (tier 0: endpoints whose `topology.istio.io/network` is `west`, that is
/// west's gateway) over east's own workload (tier 1), with outlier detection to tell when
/// west's tier is unhealthy.
fn east_failover_config(east_reviews_ip: Ipv4Addr) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-east, namespace: default}}
spec:
  address: {east_reviews_ip}
  network: east
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS}
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        failoverPriority: ["topology.istio.io/network=west"]
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 200ms
      baseEjectionTime: 3s
      maxEjectionPercent: 100
"#
    )
}

/// The SPIFFE ID of the workload that answered `response` (the `By` of the XFCC it saw),
/// checking that the caller's own identity reached it.
fn served_by(response: &str) -> String {
    let seen = json_body(response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"));
    assert!(xfcc.ends_with(&format!("URI={CALLER_ID}")), "{xfcc}");
    let by = xfcc
        .strip_prefix("By=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("XFCC without By: {xfcc}"));
    by.to_owned()
}

#[test]
fn calls_fail_over_from_west_s_workload_to_east_s_and_return_when_it_is_back() {
    let label = "ew-failover";
    let net = Router::new(label, &["caller", "reviews"], &["gateway", "reviews"]);
    let (east_reviews, west_reviews) = (net.east.host("reviews"), net.west.host("reviews"));
    let gateway_ip = net.west.host("gateway").ip;
    let east = TempDir::new(&format!("{label}-east"));
    let west = TempDir::new(&format!("{label}-west"));
    let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
    let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");
    let (caller_dir, reviews_dir) = (east.path().join("caller"), west.path().join("reviews"));
    east_ca.issue_id(CALLER_ID, &caller_dir);
    east_ca.issue_id(EAST_REVIEWS_ID, &east.path().join("reviews"));
    west_ca.issue_id(REVIEWS_ID, &reviews_dir);
    federate(&caller_dir, &reviews_dir, "east.mesh");
    federate(&reviews_dir, &caller_dir, "west.mesh");
    east.write("config/mesh.yaml", "trustDomain: east.mesh\n");
    east.write(
        "config/services.yaml",
        &(east_config(west_reviews.workload_ip, gateway_ip)
            + &east_failover_config(east_reviews.workload_ip)),
    );
    west.write("config/mesh.yaml", "trustDomain: west.mesh\n");
    west.write(
        "config/services.yaml",
        &west_config(west_reviews.workload_ip),
    );

    let west_app_log = west.path().join("reviews-app.log");
    let start_west_app = || start_app(&west_reviews.netns, "0.0.0.0", 8080, 9000, &west_app_log);
    let mut west_app = Some(start_west_app());
    let mut processes = Vec::new();
    capture(&west_reviews.netns, &["install"]);
    processes.push(sidecar(
        &west_reviews.netns,
        &west,
        "reviews",
        &["--network", "west"],
    ));
    processes.push(east_west_gateway(&net.west.host("gateway").netns, &west));
    processes.push(reviews_app(&east_reviews.netns, &east));
    processes.push(sidecar(
        &east_reviews.netns,
        &east,
        "reviews",
        &["--network", "east"],
    ));
    let caller = &net.east.host("caller").netns;
    capture(caller, &["install"]);
    processes.push(sidecar(caller, &east, "caller", &["--network", "east"]));
    let get = || get_by_name(caller, REVIEWS, 9080);

    // Healthy, network west (tier 0) takes every call, through west's gateway.
    for _ in 0..4 {
        let response = get();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(served_by(&response), REVIEWS_ID);
    }

    // West's workload stops: west's sidecar answers 503, east's sidecar ejects west's gateway
    // (one 5xx in a row is the threshold) and the calls go to east's own workload (tier 1).
    // Istio's default retry (503 is retriable) sends the call that met the failure to the next
    // tier, so no call fails at all.
    drop(west_app.take());
    for _ in 0..6 {
        let response = get();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(served_by(&response), EAST_REVIEWS_ID, "{response}");
    }
    let west_path = format!("{gateway_ip}:15443");
    let east_path = format!("{}:8080", east_reviews.workload_ip);
    wait_for_line_in(
        &east.path().join("caller.log"),
        &["outlier detection ejected an endpoint", &west_path],
    );
    let retried = wait_for_line_in(
        &east.path().join("caller-access.log"),
        &[
            "GET /hello",
            &format!("try 1 got 503 from {west_path}; retrying"),
        ],
    );
    assert!(retried.contains(&format!("\"{east_path}\"")), "{retried}");
    let calls = logged_calls(&east.path().join("caller-access.log"), 10);
    assert!(
        calls[..4].iter().all(|c| c.contains(&west_path)),
        "{calls:?}"
    );
    assert!(
        calls[4..].iter().all(|c| c.contains(&east_path)),
        "{calls:?}"
    );

    // West's workload is back: once the ejection has run its course (baseEjectionTime), west
    // takes the calls again; every call meanwhile is answered.
    west_app = Some(start_west_app());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = get();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if served_by(&response) == REVIEWS_ID {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "west did not take the calls back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for _ in 0..3 {
        let response = get();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(served_by(&response), REVIEWS_ID);
    }
    drop(west_app);
}

#[test]
fn east_s_gateway_follows_the_bundle_west_s_gateway_serves() {
    let net = Router::new("ew-bundle", &["gateway"], &["gateway"]);
    let west_ip = net.west.host("gateway").ip;
    let east = TempDir::new("ew-bundle-east");
    let west = TempDir::new("ew-bundle-west");
    let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
    let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");
    for (dir, domain) in [(&east, "east.mesh"), (&west, "west.mesh")] {
        dir.write("config/mesh.yaml", &format!("trustDomain: {domain}\n"));
        dir.write("config/gateway.yaml", CROSS_NETWORK_GATEWAY);
    }

    // West's gateway serves west's bundle on 15446 with its own SVID.
    let west_flags = gateway_identity(&west, &west_ca, WEST_GATEWAY_ID);
    let _west_gateway = gateway(
        &net.west.host("gateway").netns,
        &west,
        "west",
        "gateway",
        "gateway",
        &west_flags,
    );
    let serving = wait_for_line_in(
        &west.path().join("gateway.log"),
        &["bundle endpoint serving"],
    );
    assert!(
        serving.contains(&format!(
            "west.mesh as {WEST_GATEWAY_ID} (bundle sequence 1)"
        )),
        "{serving}"
    );

    // East applies the Peer `strait link` printed in west; its gateway follows west's endpoint
    // and trusts the bundle it holds.
    apply_peer(
        &east,
        "east.mesh",
        &link(&west, "west", west_ip, WEST_GATEWAY_ID, BUNDLE_PORT, false),
    );
    let east_flags = gateway_identity(&east, &east_ca, EAST_GATEWAY_ID);
    let _east_gateway = gateway(
        &net.east.host("gateway").netns,
        &east,
        "east",
        "gateway",
        "gateway",
        &east_flags,
    );
    let east_log = east.path().join("gateway.log");
    wait_for_line_in(&east_log, &["polling the peer's bundle endpoint", "west"]);
    wait_for_line_in(
        &east_log,
        &[
            "the gateway trusts the peer's bundle",
            "peer=west",
            "sequence=1",
        ],
    );

    // West's bundle gains a second root under sequence 2 (its identity files change, the
    // gateway reads them again): east's gateway fetches it, stores it and trusts it.
    Ca::init_for(&west, "next-ca-data", "west.mesh");
    let mut bundle = spiffe_bundle(&west.path().join("ca-data"));
    let extra = spiffe_bundle(&west.path().join("next-ca-data"));
    let more = extra["keys"].as_array().unwrap().clone();
    bundle["keys"].as_array_mut().unwrap().extend(more);
    bundle["spiffe_sequence"] = serde_json::json!(2);
    std::fs::write(
        west.path().join("gateway-id/bundle.json"),
        bundle.to_string(),
    )
    .unwrap();
    let updated = wait_for_line_in(&east_log, &["peer bundle updated", "from=1", "to=2"]);
    assert!(updated.contains("roots=2"), "{updated}");
    wait_for_line_in(
        &east_log,
        &[
            "the gateway trusts the peer's bundle",
            "peer=west",
            "sequence=2",
        ],
    );
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(east.path().join("gateway-data/peers/west.bundle.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["spiffe_sequence"], 2, "{stored}");
    assert_eq!(stored["keys"].as_array().map(Vec::len), Some(2), "{stored}");
}

/// How east's sidecars reach network west when the gateways keep a trunk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// Only through east's trunk ingress (15444).
    TrunkOnly,
    /// Through east's trunk ingress first and west's gateway (15443) second: the trunk ingress
    /// has the sidecar's own locality, west's gateway another, and `reviews` has outlier
    /// detection, so the trunk ingress is tier 0 and west's gateway tier 1.
    TrunkFirst,
}

/// The caller's locality, and so the trunk ingress's in [`Paths::TrunkFirst`].
const EAST_LOCALITY: &str = "east-1/a";

/// Both clusters with an east-west gateway each, peered both ways with a QUIC trunk; east's
/// sidecar reaches network west as `paths` says.
struct Trunked {
    net: Router,
    east: TempDir,
    west: TempDir,
    east_gateway_ip: Ipv4Addr,
    gateway_ip: Ipv4Addr,
    _processes: Vec<Process>,
}

/// The rule in east's gateway namespace that drops its UDP to west's gateway (the trunk).
fn trunk_block(gateway_ip: Ipv4Addr) -> [String; 7] {
    [
        "OUTPUT",
        "-p",
        "udp",
        "-d",
        &gateway_ip.to_string(),
        "-j",
        "DROP",
    ]
    .map(str::to_owned)
}

impl Trunked {
    /// Starts both clusters; with `block_trunk`, east's gateway cannot reach west's over UDP
    /// (its trunk stays down until [`Trunked::unblock_trunk`]).
    fn start(label: &str, paths: Paths, block_trunk: bool) -> Trunked {
        let net = Router::new(label, &["caller", "eastgw"], &["gateway", "reviews"]);
        let reviews_ip = net.west.host("reviews").workload_ip;
        let (gateway_ip, east_gateway_ip) =
            (net.west.host("gateway").ip, net.east.host("eastgw").ip);
        let east = TempDir::new(&format!("{label}-east"));
        let west = TempDir::new(&format!("{label}-west"));
        let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
        let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");
        let (caller_dir, reviews_dir) = (east.path().join("caller"), west.path().join("reviews"));
        east_ca.issue_id(CALLER_ID, &caller_dir);
        west_ca.issue_id(REVIEWS_ID, &reviews_dir);
        federate(&caller_dir, &reviews_dir, "east.mesh");
        federate(&reviews_dir, &caller_dir, "west.mesh");

        // East's sidecars see network west behind the local trunk ingress (first).
        let direct = format!("gateways: [{{address: {gateway_ip}, port: 15443}}]");
        let (gateways, policy) = match paths {
            Paths::TrunkOnly => (
                format!("gateways: [{{address: {east_gateway_ip}, port: 15444}}]"),
                "loadBalancer: {simple: ROUND_ROBIN}".to_owned(),
            ),
            Paths::TrunkFirst => (
                format!(
                    "gateways: [{{address: {east_gateway_ip}, port: 15444, locality: {EAST_LOCALITY}}}, \
                     {{address: {gateway_ip}, port: 15443, locality: west-1/a}}]"
                ),
                "loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, \
                 interval: 200ms, baseEjectionTime: 2s, maxEjectionPercent: 100}"
                    .to_owned(),
            ),
        };
        let east_services = east_config(reviews_ip, gateway_ip);
        assert!(east_services.contains(&direct));
        east.write("config/mesh.yaml", "trustDomain: east.mesh\n");
        east.write(
            "config/services.yaml",
            &east_services.replace(&direct, &gateways),
        );
        east.write("config/gateway.yaml", CROSS_NETWORK_GATEWAY);
        east.write(
            "config/reviews-lb.yaml",
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
                 metadata: {{name: reviews, namespace: default}}\n\
                 spec: {{host: {REVIEWS}, trafficPolicy: {{{policy}}}}}\n"
            ),
        );
        west.write("config/mesh.yaml", "trustDomain: west.mesh\n");
        west.write("config/services.yaml", &west_config(reviews_ip));

        // Each side applies the Peer the other's `strait link --trunk` printed.
        apply_peer(
            &east,
            "east.mesh",
            &link(
                &west,
                "west",
                gateway_ip,
                WEST_GATEWAY_ID,
                BUNDLE_PORT,
                true,
            ),
        );
        apply_peer(
            &west,
            "west.mesh",
            &link(
                &east,
                "east",
                east_gateway_ip,
                EAST_GATEWAY_ID,
                BUNDLE_PORT,
                true,
            ),
        );

        let mut processes = Vec::new();
        let reviews = &net.west.host("reviews").netns;
        processes.push(reviews_app(reviews, &west));
        processes.push(sidecar(reviews, &west, "reviews", &["--network", "west"]));
        let flags = gateway_identity(&west, &west_ca, WEST_GATEWAY_ID);
        processes.push(gateway(
            &net.west.host("gateway").netns,
            &west,
            "west",
            "gateway",
            "gateway",
            &flags,
        ));
        let east_gateway = &net.east.host("eastgw").netns;
        if block_trunk {
            let mut rule: Vec<&str> = vec!["-w", "-A"];
            let block = trunk_block(gateway_ip);
            rule.extend(block.iter().map(String::as_str));
            east_gateway.ok("iptables", &rule);
        }
        let flags = gateway_identity(&east, &east_ca, EAST_GATEWAY_ID);
        processes.push(gateway(
            east_gateway,
            &east,
            "east",
            "gateway",
            "gateway",
            &flags,
        ));

        let caller = &net.east.host("caller").netns;
        capture(caller, &["install"]);
        processes.push(sidecar(
            caller,
            &east,
            "caller",
            &["--network", "east", "--locality", EAST_LOCALITY],
        ));
        Trunked {
            net,
            east,
            west,
            east_gateway_ip,
            gateway_ip,
            _processes: processes,
        }
    }

    /// Lets east's gateway reach west's over UDP again.
    fn unblock_trunk(&self) {
        let mut rule: Vec<&str> = vec!["-w", "-D"];
        let block = trunk_block(self.gateway_ip);
        rule.extend(block.iter().map(String::as_str));
        self.net.east.host("eastgw").netns.ok("iptables", &rule);
    }

    /// `GET /hello` from east's workload to `host` on port 9080, by name.
    fn get(&self, host: &str) -> String {
        get_by_name(&self.net.east.host("caller").netns, host, 9080)
    }
}

#[test]
fn a_call_crosses_networks_through_the_quic_trunk_with_the_caller_s_own_identity() {
    let clusters = Trunked::start("ew-trunk", Paths::TrunkOnly, false);
    let east_log = clusters.east.path().join("gateway.log");
    wait_for_line_in(&east_log, &["trunk connection up", "peer=west"]);
    wait_for_line_in(
        &clusters.west.path().join("gateway.log"),
        &["trunk peer connected", EAST_GATEWAY_ID],
    );

    // East's sidecar hands the connection to its gateway's trunk ingress; it crosses as a QUIC
    // stream, west's gateway connects it to the workload, and west's sidecar terminates the
    // caller's own mTLS.
    let response = clusters.get(REVIEWS);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"));
    assert!(xfcc.starts_with(&format!("By={REVIEWS_ID};")), "{xfcc}");
    assert!(xfcc.ends_with(&format!("URI={CALLER_ID}")), "{xfcc}");
    let outbound = wait_for_line_in(
        &clusters.east.path().join("caller-access.log"),
        &["GET /hello", "outbound|9080||reviews"],
    );
    assert!(
        outbound.contains(&format!("{}:15444", clusters.east_gateway_ip)),
        "{outbound}"
    );
    let inbound = wait_for_line_in(
        &clusters.west.path().join("reviews-access.log"),
        &["GET /hello", "inbound|8080||"],
    );
    assert!(
        inbound.contains(&format!("peer=\"{CALLER_ID}\"")),
        "{inbound}"
    );

    // ratings is not exported: west's gateway refuses the stream and says why, east's trunk
    // ingress resets the connection, and the call fails without reaching the workload.
    let response = clusters.get(RATINGS);
    assert!(response.contains("HTTP/1.1 503"), "{response}");
    let refused = wait_for_line_in(
        &clusters.west.path().join("gateway.log"),
        &["trunk stream refused", RATINGS],
    );
    assert!(refused.contains("is not exported"), "{refused}");
    let app = recorded(&clusters.west.path().join("reviews-app.log"));
    assert_eq!(app.matches("http request").count(), 1, "{app}");
}

#[test]
fn the_trunk_is_preferred_the_direct_path_serves_while_it_is_down_and_the_trunk_returns() {
    let clusters = Trunked::start("ew-trunk-first", Paths::TrunkFirst, true);
    let east_log = clusters.east.path().join("gateway.log");
    let access_log = clusters.east.path().join("caller-access.log");
    let trunk_ingress = format!("{}:15444", clusters.east_gateway_ip);
    let direct = format!("{}:15443", clusters.gateway_ip);

    // The trunk is blocked: the trunk ingress (tier 0) resets the connection it is handed, the
    // sidecar counts a connect failure, ejects it and takes west's gateway (tier 1), so every
    // call is answered, directly.
    for _ in 0..3 {
        let response = clusters.get(REVIEWS);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let reset = wait_for_line_in(&east_log, &["trunk ingress: resetting the connection"]);
    assert!(reset.contains("peer=west"), "{reset}");
    wait_for_line_in(
        &clusters.east.path().join("caller.log"),
        &["outlier detection ejected an endpoint", &trunk_ingress],
    );
    let calls = logged_calls(&access_log, 3);
    assert!(calls.iter().all(|c| c.contains(&direct)), "{calls:?}");
    // The first call met the reset before the ejection and was retried on the direct path.
    assert!(
        calls[0].contains(&format!(
            "gateway {trunk_ingress} closed the connection during the mesh TLS handshake"
        )),
        "{calls:?}"
    );

    // Unblocked, the trunk comes up, and once the ejection has run its course (baseEjectionTime)
    // the calls take the trunk again.
    clusters.unblock_trunk();
    wait_for_file(&east_log, "the trunk up", |t| {
        t.contains("trunk connection up")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = clusters.get(REVIEWS);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let calls = calls_to_reviews(&access_log);
        if calls.last().is_some_and(|c| c.contains(&trunk_ingress)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the calls did not return to the trunk: {calls:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = calls_to_reviews(&access_log).len();
    for _ in 0..3 {
        let response = clusters.get(REVIEWS);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let calls = logged_calls(&access_log, before + 3);
    assert!(
        calls[before..].iter().all(|c| c.contains(&trunk_ingress)),
        "{calls:?}"
    );
    let crossed = wait_for_line_in(
        &clusters.west.path().join("reviews-access.log"),
        &["GET /hello", "inbound|8080||"],
    );
    assert!(
        crossed.contains(&format!("peer=\"{CALLER_ID}\"")),
        "{crossed}"
    );
}

/// The lines of east's caller's access log (at `path`) for its calls to `reviews`, in order.
fn calls_to_reviews(path: &Path) -> Vec<String> {
    calls_in(&std::fs::read_to_string(path).unwrap_or_default())
}

fn calls_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("GET /hello") && l.contains("outbound|9080||reviews"))
        .map(str::to_owned)
        .collect()
}

/// [`calls_to_reviews`] once there are `count` of them (the access log is written off the
/// request path, so the last call's line can come just after its response).
fn logged_calls(path: &Path, count: usize) -> Vec<String> {
    let text = wait_for_file(path, &format!("{count} calls to reviews"), |t| {
        calls_in(t).len() >= count
    });
    calls_in(&text)
}

/// Waits until the file at `path` satisfies `check` (up to 20 s), and returns its text.
fn wait_for_file(path: &Path, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if check(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {what}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn east_imports_what_west_exports_and_keeps_it_when_west_goes_quiet() {
    let label = "ew-import";
    let net = Router::new(label, &["caller", "eastgw"], &["gateway", "reviews"]);
    let reviews_ip = net.west.host("reviews").workload_ip;
    let (gateway_ip, east_gateway_ip) = (net.west.host("gateway").ip, net.east.host("eastgw").ip);
    let east = TempDir::new(&format!("{label}-east"));
    let west = TempDir::new(&format!("{label}-west"));
    let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
    let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");
    let (caller_dir, reviews_dir) = (east.path().join("caller"), west.path().join("reviews"));
    east_ca.issue_id(CALLER_ID, &caller_dir);
    west_ca.issue_id(REVIEWS_ID, &reviews_dir);
    federate(&caller_dir, &reviews_dir, "east.mesh");
    federate(&reviews_dir, &caller_dir, "west.mesh");

    // East declares no service of west's: only where network west's gateway is.
    east.write("config/mesh.yaml", "trustDomain: east.mesh\n");
    east.write(
        "config/networks.yaml",
        &format!("networks:\n  west:\n    gateways: [{{address: {gateway_ip}, port: 15443}}]\n"),
    );
    west.write("config/mesh.yaml", "trustDomain: west.mesh\n");
    let west_services = west_config(reviews_ip);
    west.write("config/services.yaml", &west_services);
    apply_peer(
        &east,
        "east.mesh",
        &link(
            &west,
            "west",
            gateway_ip,
            WEST_GATEWAY_ID,
            BUNDLE_PORT,
            false,
        ),
    );
    apply_peer(
        &west,
        "west.mesh",
        &link(
            &east,
            "east",
            east_gateway_ip,
            EAST_GATEWAY_ID,
            BUNDLE_PORT,
            false,
        ),
    );

    let mut processes = Vec::new();
    let reviews = &net.west.host("reviews").netns;
    processes.push(reviews_app(reviews, &west));
    processes.push(sidecar(reviews, &west, "reviews", &["--network", "west"]));
    let mut west_flags = gateway_identity(&west, &west_ca, WEST_GATEWAY_ID);
    west_flags.extend(["--export-keepalive", "1s"].map(std::ffi::OsString::from));
    let west_netns = &net.west.host("gateway").netns;
    let mut west_gateway = Some(gateway(
        west_netns,
        &west,
        "west",
        "gateway",
        "gateway",
        &west_flags,
    ));
    let mut east_flags = gateway_identity(&east, &east_ca, EAST_GATEWAY_ID);
    east_flags.extend(["--import-stale-after", "3s"].map(std::ffi::OsString::from));
    processes.push(gateway(
        &net.east.host("eastgw").netns,
        &east,
        "east",
        "gateway",
        "gateway",
        &east_flags,
    ));

    // East's gateway watches west's exports: reviews (labelled), not ratings.
    let east_log = east.path().join("gateway.log");
    wait_for_line_in(&east_log, &["the peer's exports changed", "peer=west"]);
    let imports = east.path().join("gateway-data/imports");
    let import = imports.join("west.yaml");
    let text = wait_for_file(&import, "the import of reviews", |t| t.contains(REVIEWS));
    assert!(!text.contains(RATINGS), "{text}");
    assert!(
        text.contains(REVIEWS_ID.rsplit('/').next().unwrap()),
        "{text}"
    );

    // East's sidecar adds the imports to its configuration; its DNS proxy answers the name
    // and the call crosses west's gateway with the caller's own identity.
    let caller = &net.east.host("caller").netns;
    capture(caller, &["install"]);
    let imports_flag = imports.to_str().unwrap();
    processes.push(sidecar(
        caller,
        &east,
        "caller",
        &["--network", "east", "--config", imports_flag],
    ));
    let get = || get_by_name(caller, REVIEWS, 9080);
    let response = get();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"));
    assert!(xfcc.ends_with(&format!("URI={CALLER_ID}")), "{xfcc}");
    let outbound = wait_for_line_in(
        &east.path().join("caller-access.log"),
        &["GET /hello", "outbound|9080||reviews"],
    );
    assert!(
        outbound.contains(&format!("{gateway_ip}:15443")),
        "{outbound}"
    );

    // West's gateway stops: the import stays, marked stale (in the file and the gateway's
    // health details), and east's DNS proxy still answers the name.
    drop(west_gateway.take());
    wait_for_line_in(&east_log, &["the peer's exports are stale", "peer=west"]);
    let text = wait_for_file(&import, "marked stale", |t| {
        t.contains("strait.io/import-stale")
    });
    assert!(text.contains(REVIEWS), "{text}");
    resolve(caller, REVIEWS);
    let details = call(
        &net.east.host("eastgw").netns,
        east_gateway_ip,
        15021,
        "0",
        "GET /healthz/details HTTP/1.1\\r\\nHost: health\\r\\nConnection: close\\r\\n\\r\\n",
    );
    assert!(
        details.contains("the import from peer west is stale"),
        "{details}"
    );

    // West's gateway is back and stops exporting reviews: the import is current and without
    // it.
    west_gateway = Some(gateway(
        west_netns,
        &west,
        "west",
        "gateway",
        "gateway",
        &west_flags,
    ));
    wait_for_line_in(
        &east_log,
        &["the peer's exports are current again", "peer=west"],
    );
    let unexported = west_services.replace(r#"labels: {strait.io/export: "true"}"#, "labels: {}");
    assert_ne!(unexported, west_services);
    west.write("config/services.yaml", &unexported);
    let text = wait_for_file(&import, "reviews no longer imported", |t| {
        !t.is_empty() && !t.contains(REVIEWS)
    });
    assert!(!text.contains("strait.io/import-stale"), "{text}");
    drop(west_gateway);
}
