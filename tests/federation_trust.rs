//! Federated trust with the `strait` binary: `strait link` in west prints the Peer that
//! `strait peer apply` stores in east; west serves its bundle (`strait federation serve-bundle`,
//! real HTTPS with an SVID from `strait ca issue`), east follows it (`strait federation poll`)
//! through a root rotation, across a restart, and refuses a lower sequence until the operator's
//! reset; endpoints presenting the wrong SPIFFE ID or trust domain, and Peer documents for the
//! local trust domain or with another trust domain's bundle, are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::gateway::free_port;
use common::mesh::wait_for_line_in;
use common::{Run, TempDir, run, strait};

const ENDPOINT_ID: &str = "spiffe://west.mesh/ns/strait-system/sa/eastwest";

/// A `strait` process killed when dropped, its standard error in a log file.
struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Background {
        let log = dir.join(format!("{name}.log"));
        let child = strait()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("strait starts");
        Background { child, log }
    }

    fn wait_for(&self, parts: &[&str]) -> String {
        wait_for_line_in(&self.log, parts)
    }

    fn signal(&self, name: &str) {
        let sent = run(std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string()));
        assert_eq!(sent.code, Some(0), "kill -{name}: {}", sent.stderr);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(what: &str, result: Run) -> Run {
    assert_eq!(
        result.code,
        Some(0),
        "{what}: {}\n{}",
        result.stdout,
        result.stderr
    );
    result
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A data directory with a CA for `trust_domain`.
fn cluster(dir: &TempDir, name: &str, trust_domain: &str) -> PathBuf {
    let data = dir.path().join(name);
    ok(
        "ca init",
        run(strait().args([
            "ca",
            "init",
            "--trust-domain",
            trust_domain,
            "--data",
            s(&data),
        ])),
    );
    data
}

/// `strait ca issue` of `id` from the CA in `data`, into `data/NAME`.
fn issue(data: &Path, name: &str, id: &str) -> PathBuf {
    let out = data.join(name);
    ok(
        "ca issue",
        run(strait().args([
            "ca",
            "issue",
            "--data",
            s(data),
            "--spiffe-id",
            id,
            "--out",
            s(&out),
            "--ttl",
            "1h",
        ])),
    );
    out
}

/// What `strait link` prints in west for an endpoint on `port`.
fn link(west: &Path, port: u16) -> String {
    ok(
        "link",
        run(strait().args([
            "link",
            "--data",
            s(west),
            "--name",
            "west",
            "--trust-domain",
            "west.mesh",
            "--network",
            "net-west",
            "--eastwest",
            "127.0.0.1:15443",
            "--bundle-endpoint",
            &format!("https://127.0.0.1:{port}"),
            "--bundle-endpoint-id",
            ENDPOINT_ID,
        ])),
    )
    .stdout
}

fn peer(data: &Path, args: &[&str]) -> Run {
    run(strait().arg("peer").args(args).args(["--data", s(data)]))
}

fn serve_bundle(dir: &TempDir, name: &str, data: &Path, identity: &Path, port: u16) -> Background {
    let server = Background::start(
        dir.path(),
        name,
        &[
            "federation",
            "serve-bundle",
            "--data",
            s(data),
            "--identity-dir",
            s(identity),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--refresh-hint",
            "1s",
            "--watch-interval",
            "200ms",
        ],
    );
    server.wait_for(&["bundle endpoint serving"]);
    server
}

fn poll_once(data: &Path) -> Run {
    run(strait().args(["federation", "poll", "--once", "--data", s(data)]))
}

/// `(spiffe_sequence, number of keys)` of a stored bundle.
fn stored(path: &Path) -> (u64, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return (0, 0);
    };
    (
        doc["spiffe_sequence"].as_u64().unwrap_or(0),
        doc["keys"].as_array().map_or(0, Vec::len),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn east_follows_west_from_link_through_rotation_restart_and_a_sequence_reset() {
    let dir = TempDir::new("federation-trust");
    let west = cluster(&dir, "west", "west.mesh");
    let east = cluster(&dir, "east", "east.mesh");
    let identity = issue(&west, "eastwest", ENDPOINT_ID);
    let port = free_port();

    // West prints the Peer; east applies it.
    let document = link(&west, port);
    assert!(document.contains("kind: Peer"), "{document}");
    assert!(document.contains("\"spiffe_sequence\": 1"), "{document}");
    let file = dir.write("west-peer.yaml", &document);
    let applied = ok("peer apply", peer(&east, &["apply", "-f", s(&file)]));
    assert!(
        applied
            .stdout
            .contains("peer west (trust domain west.mesh) created"),
        "{}",
        applied.stdout
    );
    let bundle_file = east.join("peers/west.bundle.json");
    let federated = east.join("ca/federated/west.mesh.json");
    for path in [&east.join("peers/west.yaml"), &bundle_file, &federated] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&east.join("peers")), 0o700);

    // West serves; east polls and finds what it was given.
    let server = serve_bundle(&dir, "west-endpoint", &west, &identity, port);
    let first = ok("poll --once", poll_once(&east));
    assert!(
        first
            .stdout
            .contains("west: bundle unchanged at sequence 1"),
        "{}",
        first.stdout
    );

    // East follows; west adds a second root (another CA's) and east has it within seconds.
    let poller = Background::start(
        dir.path(),
        "east-poller",
        &[
            "federation",
            "poll",
            "--data",
            s(&east),
            "--min-refresh",
            "1s",
            "--retry",
            "200ms",
            "--rescan-interval",
            "200ms",
        ],
    );
    poller.wait_for(&["polling the peer's bundle endpoint", "west"]);
    let next = cluster(&dir, "west-next", "west.mesh");
    let roots = west.join("ca/root-cert.pem");
    let both = std::fs::read_to_string(&roots).unwrap()
        + &std::fs::read_to_string(next.join("ca/root-cert.pem")).unwrap();
    std::fs::write(&roots, both).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored(&bundle_file) != (2, 2) {
        assert!(
            Instant::now() < deadline,
            "east never stored sequence 2 with 2 roots; poller log:\n{}",
            std::fs::read_to_string(&poller.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Logged once both copies are written.
    poller.wait_for(&["peer bundle updated", "from=1", "to=2"]);
    assert_eq!(stored(&federated), (2, 2));
    drop(poller);

    // A restart of east's poller starts from the stored bundle.
    let again = ok("poll --once after a restart", poll_once(&east));
    assert!(
        again
            .stdout
            .contains("west: bundle unchanged at sequence 2"),
        "{}",
        again.stdout
    );
    let listed = ok("peer list", peer(&east, &["list"]));
    assert!(
        listed
            .stdout
            .contains("west\twest.mesh\tnet-west\t127.0.0.1:15443"),
        "{}",
        listed.stdout
    );

    // West's sequence goes back (its CA metadata restored from an old copy): refused, kept.
    let meta_path = west.join("ca/authority.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["bundle_sequence"] = serde_json::json!(1);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    server.wait_for(&["serving a new bundle", "sequence=1 "]);
    let lower = poll_once(&east);
    assert_eq!(lower.code, Some(1), "{}\n{}", lower.stdout, lower.stderr);
    assert!(
        lower
            .stdout
            .contains("west: bundle refused: sequence 1 is lower than the latest held, 2"),
        "{}",
        lower.stdout
    );
    assert_eq!(stored(&bundle_file), (2, 2));

    // The operator resets the sequence: the next bundle is taken, once.
    ok(
        "peer reset-sequence",
        peer(&east, &["reset-sequence", "west"]),
    );
    let reset = ok("poll --once after the reset", poll_once(&east));
    assert!(
        reset.stdout.contains(
            "west: bundle updated from sequence 2 to 1 (2 root(s)), under a sequence reset"
        ),
        "{}",
        reset.stdout
    );
    assert_eq!(stored(&bundle_file), (1, 2));
    assert!(!east.join("peers/west.reset-sequence").exists());

    // A poller that would wait an hour refreshes early when asked (SIGHUP, as an unknown
    // issuer on the data path will): west adds a third root, east has it at once.
    let patient = Background::start(
        dir.path(),
        "east-patient-poller",
        &[
            "federation",
            "poll",
            "--data",
            s(&east),
            "--min-refresh",
            "1h",
            "--log-level",
            "debug",
        ],
    );
    patient.wait_for(&["peer bundle unchanged", "sequence=1"]);
    let third = cluster(&dir, "west-third", "west.mesh");
    let all = std::fs::read_to_string(&roots).unwrap()
        + &std::fs::read_to_string(third.join("ca/root-cert.pem")).unwrap();
    std::fs::write(&roots, all).unwrap();
    server.wait_for(&["serving a new bundle", "sequence=2 ", "roots=3"]);
    patient.signal("HUP");
    patient.wait_for(&["peer bundle updated", "from=1", "to=2", "roots=3"]);
    assert_eq!(stored(&bundle_file), (2, 3));
    drop(patient);

    // Removing the peer removes its trust from the CA's folder too.
    ok("peer remove", peer(&east, &["remove", "west"]));
    assert!(!federated.exists() && !bundle_file.exists());
}

#[test]
fn endpoints_presenting_the_wrong_spiffe_id_or_trust_domain_are_refused() {
    let dir = TempDir::new("federation-refuse");
    let west = cluster(&dir, "west", "west.mesh");
    let east = cluster(&dir, "east", "east.mesh");
    let port = free_port();
    let file = dir.write("west-peer.yaml", &link(&west, port));
    ok("peer apply", peer(&east, &["apply", "-f", s(&file)]));

    // West's endpoint with another workload's SVID.
    let web = issue(&west, "web", "spiffe://west.mesh/ns/default/sa/web");
    let server = serve_bundle(&dir, "wrong-id", &west, &web, port);
    let refused = poll_once(&east);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stdout.contains(
            "the bundle endpoint's certificate was refused: peer spiffe://west.mesh/ns/default/sa/web is not authorized"
        ),
        "{}",
        refused.stdout
    );
    drop(server);

    // East's own endpoint answering at west's address: an SVID of another trust domain.
    let east_endpoint = issue(
        &east,
        "eastwest",
        "spiffe://east.mesh/ns/strait-system/sa/eastwest",
    );
    let _server = serve_bundle(&dir, "wrong-td", &east, &east_endpoint, port);
    let refused = poll_once(&east);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stdout
            .contains("no trust bundle for trust domain east.mesh"),
        "{}",
        refused.stdout
    );
    // Nothing refused was stored.
    assert_eq!(stored(&east.join("peers/west.bundle.json")), (1, 1));
}

#[test]
fn peers_of_the_local_trust_domain_or_with_another_domains_bundle_are_not_applied() {
    let dir = TempDir::new("federation-apply");
    let west = cluster(&dir, "west", "west.mesh");
    let east = cluster(&dir, "east", "east.mesh");
    let document = link(&west, 15446);
    let file = dir.write("west-peer.yaml", &document);

    // `strait link` speaks only for the CA's own trust domain.
    let wrong = run(strait().args([
        "link",
        "--data",
        s(&west),
        "--name",
        "west",
        "--trust-domain",
        "east.mesh",
        "--network",
        "net-west",
        "--eastwest",
        "127.0.0.1:15443",
        "--bundle-endpoint",
        "https://127.0.0.1:15446",
        "--bundle-endpoint-id",
        ENDPOINT_ID,
    ]));
    assert_eq!(wrong.code, Some(2));
    assert!(
        wrong.stderr.contains("is for trust domain west.mesh"),
        "{}",
        wrong.stderr
    );

    // West applying its own Peer: a cluster does not peer with itself.
    let own = peer(&west, &["apply", "-f", s(&file)]);
    assert_eq!(own.code, Some(2));
    assert!(
        own.stderr
            .contains("has trust domain west.mesh, the local trust domain"),
        "{}",
        own.stderr
    );

    // West's Peer carrying east's bundle: its roots speak for east.mesh.
    let east_bundle = ok(
        "ca bundle",
        run(strait().args(["ca", "bundle", "--format", "spiffe", "--data", s(&east)])),
    )
    .stdout;
    let head = &document[..document.find("  trustBundle: |").unwrap()];
    let forged: String = east_bundle.lines().map(|l| format!("    {l}\n")).collect();
    let forged = dir.write("forged.yaml", &format!("{head}  trustBundle: |\n{forged}"));
    let refused = peer(&east, &["apply", "-f", s(&forged)]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("forged.yaml:")
            && refused
                .stderr
                .contains("spec.trustBundle: root 0 names trust domain east.mesh"),
        "{}",
        refused.stderr
    );
    assert!(!east.join("peers/west.yaml").exists());
}
