//! A running east-west gateway follows its peers and their roots without a restart.
//!
//! Two clusters on two networks (`east.mesh`, `west.mesh`, a CA each), an east-west gateway in
//! each namespace. West exports `reviews`, whose workload (a TLS server standing in for its
//! sidecar) runs beside west's gateway.
//!
//! - East's gateway starts with no peer. `strait peer apply` of west (with `trunk: true`) while
//!   it runs: the trunk connects, a TLS connection handed to east's trunk ingress crosses it
//!   to west's workload, and west's exports are imported. Applying the same Peer again changes
//!   nothing (no reconnect). `strait peer remove`: the trunk closes, the ingress resets what it
//!   is handed, the export watch stops and the import is removed.
//! - West rotates its root while east's poller waits an hour: west's gateway comes back with a
//!   certificate of the new root, east's trunk handshake fails (unknown issuer), east asks its
//!   poller for west's bundle at once (logged), stores the new sequence, and the trunk connects.
//!   West's bundle endpoint is served on its own (`strait federation serve-bundle`) with a
//!   certificate of the old root, as in a staged rotation, so that east can fetch the bundle
//!   that names the new root.
//!
//! Needs root, `ip`, `ss`, python3 and openssl (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::eastwest::{REVIEWS, REVIEWS_ID, apply_peer, gateway, link};
use common::mesh::{
    CROSS_NETWORK_GATEWAY, Ca, EAST_GATEWAY_ID, WEST_GATEWAY_ID, supervise, wait_for_line_in,
};
use common::netns::{Netns, Process};
use common::{TempDir, run, strait};

const REVIEWS_SNI: &str = "outbound_.9000_._.reviews.default.svc.cluster.local";
/// What west's workload says to every TLS client.
const GREETING: &str = "hello from west";

/// `reviews` with its workload at `ip` on network `west`; `export` labels it for export.
fn reviews(ip: Ipv4Addr, export: bool) -> String {
    let labels = if export {
        "\n  labels: {strait.io/export: \"true\"}"
    } else {
        ""
    };
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default{labels}
spec:
  hosts: [{REVIEWS}]
  location: MESH_INTERNAL
  ports: [{{number: 9000, name: tls-reviews}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec:
  address: {ip}
  network: west
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
"#
    )
}

/// West's workload: a TLS server on 9000 that greets and closes.
const WORKLOAD: &str = r#"
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 9000))
server.listen(16)
print("workload listening", file=sys.stderr, flush=True)
while True:
    connection, _ = server.accept()
    try:
        tls = context.wrap_socket(connection, server_side=True)
        tls.sendall(sys.argv[3].encode() + b"\n")
        tls.close()
    except Exception as error:
        print("handshake failed:", error, file=sys.stderr, flush=True)
        connection.close()
"#;

/// One cluster: its folder, CA and namespace.
struct Cluster<'a> {
    name: &'static str,
    dir: TempDir,
    ca: Ca,
    netns: &'a Netns,
    ip: Ipv4Addr,
}

impl<'a> Cluster<'a> {
    fn new(label: &str, name: &'static str, bridge: &'a Bridge) -> Cluster<'a> {
        let dir = TempDir::new(&format!("{label}-{name}"));
        let ca = Ca::init_for(&dir, "ca-data", &format!("{name}.mesh"));
        dir.write("config/mesh.yaml", &format!("trustDomain: {name}.mesh\n"));
        dir.write("config/gateway.yaml", CROSS_NETWORK_GATEWAY);
        let member = bridge.member(name);
        Cluster {
            name,
            dir,
            ca,
            netns: &member.netns,
            ip: member.ip,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// What `strait link` prints here for the gateway running as `gateway_id`, whose bundle
    /// endpoint listens on `bundle_port`; `trunk` asks the other side for a QUIC trunk.
    fn link(&self, gateway_id: &str, bundle_port: u16, trunk: bool) -> String {
        link(
            &self.dir,
            self.name,
            self.ip,
            gateway_id,
            bundle_port,
            trunk,
        )
    }

    /// `strait peer apply` of `document` into the gateway's state.
    fn apply_peer(&self, document: &str) {
        apply_peer(&self.dir, &format!("{}.mesh", self.name), document);
    }

    /// `strait peer remove NAME` from the gateway's state.
    fn remove_peer(&self, name: &str) {
        let removed = run(strait()
            .args(["peer", "remove", name, "--data"])
            .arg(self.path("gateway-data")));
        assert_eq!(removed.code, Some(0), "peer remove: {}", removed.stderr);
    }

    /// The east-west gateway with its identity in `DIR/gateway-id`, its state in
    /// `DIR/gateway-data`, logging to `DIR/LOG.log`; `extra` adds flags.
    fn gateway(&self, log: &str, extra: &[&str]) -> Process {
        let (identity, rescan) = (self.path("gateway-id"), "200ms");
        let mut flags: Vec<&OsStr> = [
            "--service-account",
            "eastwest",
            "--peer-rescan-interval",
            rescan,
            "--identity-dir",
        ]
        .map(OsStr::new)
        .to_vec();
        flags.push(identity.as_os_str());
        flags.extend(extra.iter().map(OsStr::new));
        gateway(self.netns, &self.dir, self.name, "gateway", log, &flags)
    }
}

/// Both gateways' configuration (`reviews`, exported by west) and identities.
fn configure(east: &Cluster<'_>, west: &Cluster<'_>) {
    east.dir
        .write("config/reviews.yaml", &reviews(west.ip, false));
    west.dir
        .write("config/reviews.yaml", &reviews(west.ip, true));
    east.ca.issue_id(EAST_GATEWAY_ID, &east.path("gateway-id"));
    west.ca.issue_id(WEST_GATEWAY_ID, &west.path("gateway-id"));
}

/// West's workload in west's namespace, with a certificate of west's CA.
fn west_workload(west: &Cluster<'_>) -> Process {
    let identity = west.path("reviews-id");
    west.ca.issue_id(REVIEWS_ID, &identity);
    let script = west.dir.write("workload.py", WORKLOAD);
    let (chain, key) = (identity.join("cert-chain.pem"), identity.join("key.pem"));
    let command: Vec<&OsStr> = vec![
        OsStr::new("python3"),
        script.as_os_str(),
        chain.as_os_str(),
        key.as_os_str(),
        OsStr::new(GREETING),
    ];
    supervise(
        west.netns,
        &command,
        &west.path("workload.log"),
        "workload listening",
    )
}

/// A TLS connection from east's namespace to east's trunk ingress, with the SNI of west's
/// `reviews`: what west's workload said, or why nothing came (the ingress reset it).
fn through_the_trunk_ingress(east: &Cluster<'_>) -> common::Run {
    east.netns.run(
        "timeout",
        &[
            "10",
            "openssl",
            "s_client",
            "-connect",
            "127.0.0.1:15444",
            "-servername",
            REVIEWS_SNI,
            "-ign_eof",
            "-quiet",
        ],
    )
}

/// How many lines of the file at `path` have all of `parts`.
fn count_lines(path: &Path, parts: &[&str]) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Waits until the file at `path` has `count` lines with all of `parts`.
fn wait_for_lines(path: &Path, parts: &[&str], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_lines(path, parts) < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} lines of {} with {parts:?}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `check` holds for the file at `path` (absent reads as `None`).
fn wait_for_file(path: &Path, what: &str, check: impl Fn(Option<&str>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).ok();
        if check(text.as_deref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: never {what}; it reads {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `spiffe_sequence` of a stored peer bundle.
fn stored_sequence(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
    bundle["spiffe_sequence"].as_u64().unwrap()
}

/// Waits until nothing listens on port 15443 (TCP or UDP) in `netns`: a stopped gateway is
/// gone.
fn wait_port_free(netns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = netns.ok("ss", &["-Htuln", "sport = :15443"]);
        if listening.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port 15443 is still taken:\n{listening}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_peer_applied_or_removed_while_the_gateway_runs_gets_or_loses_its_trunk_and_import() {
    let label = "fl-peers";
    // South is only ever a Peer document: nothing runs there.
    let bridge = Bridge::new(label, &["east", "west", "south"]);
    let east = Cluster::new(label, "east", &bridge);
    let west = Cluster::new(label, "west", &bridge);
    configure(&east, &west);

    // West knows east from the start (its trunk server and federation API admit east's
    // gateway); east's gateway starts knowing nobody.
    west.apply_peer(&east.link(EAST_GATEWAY_ID, 15446, false));
    let _workload = west_workload(&west);
    let _west_gateway = west.gateway("gateway", &[]);
    let _east_gateway = east.gateway("gateway", &[]);
    let east_log = east.path("gateway.log");
    let west_log = west.path("gateway.log");
    let import = east.path("gateway-data/imports/west.yaml");
    let reset = through_the_trunk_ingress(&east);
    assert!(!reset.stdout.contains(GREETING), "{reset:?}");
    let no_peer = [
        "trunk ingress: no trunk peer serves this destination",
        REVIEWS_SNI,
    ];
    wait_for_lines(&east_log, &no_peer, 1);

    // West is applied while east's gateway runs: trunk, a connection across it, the import.
    let west_peer = west.link(WEST_GATEWAY_ID, 15446, true);
    east.apply_peer(&west_peer);
    wait_for_line_in(
        &east_log,
        &[
            "keeping a trunk to the peer's east-west gateway",
            "peer=west",
        ],
    );
    wait_for_line_in(&east_log, &["trunk connection up", "peer=west"]);
    wait_for_line_in(&west_log, &["trunk peer connected", EAST_GATEWAY_ID]);
    let crossed = through_the_trunk_ingress(&east);
    assert!(crossed.stdout.contains(GREETING), "{crossed:?}");
    wait_for_line_in(&east_log, &["watching the peer's exports", "peer=west"]);
    // East declares reviews itself: the import adds west's endpoints to it.
    wait_for_file(&import, "imports reviews", |text| {
        text.is_some_and(|t| t.contains("imported-west-reviews-default-svc-cluster-local"))
    });

    // The same Peer applied again, then another peer as a marker that the folder was read
    // since: west's trunk and export watch were left alone.
    east.apply_peer(&west_peer);
    let south = Cluster::new(label, "south", &bridge);
    east.apply_peer(&south.link(
        "spiffe://south.mesh/ns/istio-system/sa/eastwest",
        15446,
        false,
    ));
    wait_for_line_in(&east_log, &["watching the peer's exports", "peer=south"]);
    assert_eq!(
        count_lines(&east_log, &["trunk connection up", "peer=west"]),
        1
    );
    assert_eq!(
        count_lines(&east_log, &["watching the peer's exports", "peer=west"]),
        1
    );
    assert_eq!(
        count_lines(&west_log, &["trunk peer connected", EAST_GATEWAY_ID]),
        1
    );

    // West is removed: its trunk closes (west sees it go), the ingress resets what it is
    // handed for west's service, the export watch stops and the import goes.
    east.remove_peer("west");
    wait_for_line_in(&east_log, &["its trunk is closed", "peer=west"]);
    wait_for_line_in(&west_log, &["trunk peer disconnected", EAST_GATEWAY_ID]);
    wait_for_line_in(
        &east_log,
        &[
            "its exports are no longer watched and its import is removed",
            "peer=west",
        ],
    );
    wait_for_file(&import, "removed", |text| text.is_none());
    assert!(!east.path("gateway-data/import-state/west.json").exists());
    let refused = through_the_trunk_ingress(&east);
    assert!(!refused.stdout.contains(GREETING), "{refused:?}");
    wait_for_lines(&east_log, &no_peer, 2);
    // South is still followed.
    assert!(east.path("gateway-data/peers/south.yaml").exists());
}

#[test]
fn an_unknown_issuer_on_the_trunk_fetches_the_peer_s_new_bundle_at_once_and_the_trunk_reconnects() {
    let label = "fl-nudge";
    let bridge = Bridge::new(label, &["east", "west"]);
    let east = Cluster::new(label, "east", &bridge);
    let west = Cluster::new(label, "west", &bridge);
    configure(&east, &west);

    // West's bundle endpoint runs on its own on 15447, with a certificate of the old root,
    // announcing an hour between polls.
    let endpoint_id = west.path("endpoint-id");
    west.ca.issue_id(WEST_GATEWAY_ID, &endpoint_id);
    let binary = OsString::from(env!("CARGO_BIN_EXE_strait"));
    let listen = format!("{}:15447", west.ip);
    let mut command: Vec<OsString> = vec![binary];
    command.extend(
        [
            "federation",
            "serve-bundle",
            "--listen",
            &listen,
            "--refresh-hint",
            "1h",
            "--watch-interval",
            "200ms",
        ]
        .map(OsString::from),
    );
    command.extend([
        "--data".into(),
        west.path("ca-data").into(),
        "--identity-dir".into(),
        endpoint_id.clone().into(),
    ]);
    let command: Vec<&OsStr> = command.iter().map(OsString::as_os_str).collect();
    let endpoint_log = west.path("bundle-endpoint.log");
    let _endpoint = supervise(
        west.netns,
        &command,
        &endpoint_log,
        "bundle endpoint serving",
    );

    // West keeps a trunk to east; east follows west's bundle at most hourly.
    west.apply_peer(&east.link(EAST_GATEWAY_ID, 15446, true));
    east.apply_peer(&west.link(WEST_GATEWAY_ID, 15447, false));
    let west_gateway = west.gateway("gateway", &["--bundle-endpoint", "off"]);
    let _east_gateway = east.gateway(
        "gateway",
        &[
            "--peer-min-refresh",
            "1h",
            "--log-level",
            "info,strait_federation::bundle_poller=debug,strait::eastwest=debug",
        ],
    );
    let east_log = east.path("gateway.log");
    let stored = east.path("gateway-data/peers/west.bundle.json");
    wait_for_line_in(&east_log, &["trunk peer connected", WEST_GATEWAY_ID]);
    // East's poller has fetched west's bundle once and waits.
    wait_for_line_in(
        &east_log,
        &["peer bundle unchanged", "peer=west", "sequence=1"],
    );
    assert_eq!(stored_sequence(&stored), 1);

    // West rotates: its bundle names the new root too (sequence 2), and its gateway comes back
    // with a certificate of the new root.
    let next = Ca::init_for(&west.dir, "next-ca-data", "west.mesh");
    let roots = west.path("ca-data/ca/root-cert.pem");
    let both = std::fs::read_to_string(&roots).unwrap()
        + &std::fs::read_to_string(next.data().join("ca/root-cert.pem")).unwrap();
    std::fs::write(&roots, both).unwrap();
    wait_for_line_in(&endpoint_log, &["serving a new bundle", "sequence=2"]);
    drop(west_gateway);
    wait_port_free(west.netns);
    next.issue_id(WEST_GATEWAY_ID, &west.path("gateway-id"));
    let _west_gateway = west.gateway("gateway-rotated", &["--bundle-endpoint", "off"]);

    // East's trunk server meets the new root: it asks for west's bundle at once, stores
    // sequence 2, trusts it, and west's trunk is admitted again.
    let nudged = wait_for_line_in(
        &east_log,
        &[
            "chains to no root held for its trust domain (unknown issuer)",
            "peer=west",
            "via=\"trunk\"",
        ],
    );
    assert!(nudged.contains("trust_domain=west.mesh"), "{nudged}");
    wait_for_line_in(
        &east_log,
        &["early refresh of its bundle asked for", "peer=west"],
    );
    wait_for_line_in(
        &east_log,
        &["early refresh of the peer bundle", "peer=west"],
    );
    wait_for_line_in(&east_log, &["peer bundle updated", "from=1", "to=2"]);
    assert_eq!(stored_sequence(&stored), 2);
    wait_for_line_in(
        &east_log,
        &[
            "the gateway trusts the peer's bundle",
            "peer=west",
            "sequence=2",
        ],
    );
    wait_for_lines(&east_log, &["trunk peer connected", WEST_GATEWAY_ID], 2);
}

#[test]
fn a_gateway_that_stops_closes_its_trunk_with_a_reason_its_peer_hears_at_once() {
    let label = "fl-stop";
    let bridge = Bridge::new(label, &["east", "west"]);
    let east = Cluster::new(label, "east", &bridge);
    let west = Cluster::new(label, "west", &bridge);
    configure(&east, &west);
    west.apply_peer(&east.link(EAST_GATEWAY_ID, 15446, false));
    east.apply_peer(&west.link(WEST_GATEWAY_ID, 15446, true));
    let mut west_gateway = west.gateway("gateway", &[]);
    let _east_gateway = east.gateway("gateway", &[]);
    let east_log = east.path("gateway.log");
    wait_for_line_in(&east_log, &["trunk connection up", "peer=west"]);

    // West stops the way an operator stops it (SIGINT, as SIGTERM): it drains and then closes
    // its trunk with a reason, which east's gateway hears at once instead of finding out at
    // its idle timeout (when the reason would be a timeout).
    let (code, _) = west_gateway.interrupt();
    assert_eq!(code, Some(0), "west's gateway exits cleanly");
    let lost = wait_for_line_in(&east_log, &["trunk connection lost", "peer=west"]);
    assert!(lost.contains("shutting down"), "{lost}");
}
