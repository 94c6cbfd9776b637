//! A root rotation under steady traffic: the CA service (`strait run --role control`) and two
//! sidecars with identities from it (the two-workload mesh of `common::mesh`), sleep calling
//! httpbin over mesh mTLS with a new handshake per request, while the operator runs
//! `strait ca rotate prepare`, `switch` and `finish`. Not one request may fail. Needs root,
//! `ip`, iptables and python3 (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::mesh::{Identity, Mesh};
use common::{Run, run, strait};

/// sleep's traffic to httpbin until the file `STOP` exists, each request on a new upstream
/// connection (a new mTLS handshake each); after every request the counts go to the file
/// `STATUS` (JSON, replaced atomically); at the end the counts are printed.
const LOAD: &str = r#"
import json, os, socket, sys, time
ip, status, stop = sys.argv[1], sys.argv[2], sys.argv[3]
ok = failed = 0
errors = []
print("started", flush=True)
while not os.path.exists(stop):
    try:
        s = socket.create_connection((ip, 8000), timeout=10)
        s.sendall(b"GET /load HTTP/1.1\r\nHost: httpbin.default.svc.cluster.local\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            failed += 1
            errors.append(data.split(b"\r\n")[0].decode(errors="replace"))
    except Exception as error:
        failed += 1
        errors.append(type(error).__name__ + " " + str(error))
    with open(status + ".tmp", "w") as out:
        json.dump({"ok": ok, "failed": failed}, out)
    os.replace(status + ".tmp", status)
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:10]}), flush=True)
"#;

/// The lifetime of the certificates the CA service issues: renewals every few seconds, and
/// `finish` may go ahead this long after the switch.
const WORKLOAD_TTL: &str = "15s";

#[test]
fn a_root_rotation_under_steady_traffic_loses_no_request() {
    let one_request_per_connection = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: default}\nspec:\n  host: httpbin.default.svc.cluster.local\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}\n";
    let mesh = Mesh::start_full(
        "rootrot",
        Identity::Ca {
            workload_ttl: WORKLOAD_TTL,
        },
        one_request_per_connection,
        &[],
    );
    let dir = mesh.dir.path();
    let (status, stop) = (dir.join("load.json"), dir.join("load.stop"));
    let mut load = mesh.pair.a.spawn({
        let mut command = mesh.pair.a.command("python3");
        command
            .args(["-u", "-c", LOAD, &mesh.pair.b_ip.to_string()])
            .arg(&status)
            .arg(&stop);
        command
    });
    load.wait_for_line(|l| l == "started");
    let requests = || -> u64 {
        std::fs::read_to_string(&status)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["ok"].as_u64())
            .unwrap_or(0)
    };
    let more_requests = |n: u64, what: &str| {
        let from = requests();
        wait_until(what, || requests() >= from + n);
    };
    let logs = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let sidecars = ["sleep.log", "httpbin.log"];
    let last_bundle = |name: &str| {
        logs(name)
            .lines()
            .rfind(|l| l.contains("trust bundles applied"))
            .unwrap_or_default()
            .to_owned()
    };
    more_requests(20, "traffic before the rotation");

    // prepare: both roots published; each sidecar applies the two-root bundle.
    let prepared = rotate(&mesh, &["prepare"]);
    assert!(prepared.stdout.contains("2 root(s)"), "{}", prepared.stdout);
    for log in sidecars {
        wait_until(&format!("{log}: the two-root bundle"), || {
            last_bundle(log).contains("roots=2")
        });
    }
    more_requests(20, "traffic after prepare");

    // switch: the CA service issues under the new intermediate without a restart, says so on
    // the bundle stream, and both sidecars (and the CA service itself) renew onto it at once.
    let old_issuer = issuer_in(&logs("control.log"), "trust bundle snapshot published");
    rotate(&mesh, &["switch"]);
    // finish is refused while certificates under the old root may still be valid (at most the
    // workload lifetime after the switch).
    let finish = || {
        run(strait()
            .args(["ca", "rotate", "finish", "--max-workload-ttl", WORKLOAD_TTL])
            .arg("--data")
            .arg(mesh.ca.data()))
    };
    let early = finish();
    assert_ne!(early.code, Some(0), "{}", early.stdout);
    assert!(early.stderr.contains("--force"), "{}", early.stderr);
    wait_until("the CA service loading the new signing chain", || {
        logs("control.log").contains("issuing under it now")
    });
    let new_issuer = issuer_in(&logs("control.log"), "issuing under it now");
    assert_ne!(new_issuer, old_issuer);
    for log in sidecars {
        wait_until(&format!("{log}: a certificate under the new chain"), || {
            let text = logs(log);
            text.contains("signing chain changed; renewing onto it")
                && text
                    .lines()
                    .any(|l| l.contains("SVID renewed") && l.contains(&new_issuer))
        });
    }
    wait_until(
        "the CA service's own certificate under the new chain",
        || logs("control.log").contains("renewing the CA service certificate now"),
    );
    more_requests(20, "traffic after switch");

    // finish, once the old certificates may have expired: the sidecars drop the old root.
    wait_until("finish once the old certificates expired", || {
        finish().code == Some(0)
    });
    for log in sidecars {
        wait_until(&format!("{log}: the new root alone"), || {
            last_bundle(log).contains("roots=1")
        });
    }
    // Every handshake now verifies against the new root alone.
    more_requests(30, "traffic after finish");

    std::fs::write(&stop, "").unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&load.wait_for_line(|l| l.starts_with('{'))).unwrap();
    assert_eq!(
        summary["failed"],
        0,
        "{summary}\nsleep's log:\n{}\nhttpbin's log:\n{}",
        logs("sleep.log"),
        logs("httpbin.log")
    );
    assert!(summary["ok"].as_u64().unwrap() >= 90, "{summary}");
    // Nor did the sidecars answer anything but 200 without a response flag on the way.
    let access = logs("sleep-access.log");
    let odd: Vec<&str> = access
        .lines()
        .filter(|l| l.contains("/load") && !l.contains("\" 200 - "))
        .collect();
    assert!(odd.is_empty(), "{odd:#?}");
    let status = rotate(&mesh, &["status"]);
    assert!(
        status.stdout.contains("rotation finished: 1 root(s)"),
        "{}",
        status.stdout
    );
}

/// `strait ca rotate ARGS` on the mesh's CA; panics unless it succeeds.
fn rotate(mesh: &Mesh, args: &[&str]) -> Run {
    let result = run(strait()
        .args(["ca", "rotate"])
        .args(args)
        .arg("--data")
        .arg(mesh.ca.data()));
    assert_eq!(
        result.code,
        Some(0),
        "strait ca rotate {args:?}: {}",
        result.stderr
    );
    result
}

/// The `issuing_ca_sha256` of the last line of `log` that has `message`.
fn issuer_in(log: &str, message: &str) -> String {
    let line = log
        .lines()
        .rfind(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} in:\n{log}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("issuing_ca_sha256="))
        .unwrap_or_else(|| panic!("no issuing_ca_sha256 in {line}"))
        .trim_matches('"')
        .to_owned()
}

/// Polls `done` until it holds, for at most 40 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
