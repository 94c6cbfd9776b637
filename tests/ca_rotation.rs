//! A root rotation under steady traffic: the CA service (`strait run --role control`) and two
//! sidecars with identities from it (the two-workload mesh of `common::mesh`), sleep calling
//! httpbin over mesh mTLS with a new handshake per request, while the operator runs
//! `strait ca rotate prepare`, `switch` and `finish`. Not one request may fail. Needs root,
//! `ip`, iptables and python3 (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::control::issuer_in;
use common::load::{SteadyLoad, wait_until};
use common::mesh::{HTTPBIN, Identity, Mesh};
use common::{Run, run, strait};

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
    let load = SteadyLoad::start(&mesh.pair.a, mesh.pair.b_ip, 8000, HTTPBIN, dir);
    let logs = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let sidecars = ["sleep.log", "httpbin.log"];
    let last_bundle = |name: &str| {
        logs(name)
            .lines()
            .rfind(|l| l.contains("trust bundles applied"))
            .unwrap_or_default()
            .to_owned()
    };
    load.more(20, "traffic before the rotation");

    // prepare: both roots published; each sidecar applies the two-root bundle.
    let prepared = rotate(&mesh, &["prepare"]);
    assert!(prepared.stdout.contains("2 root(s)"), "{}", prepared.stdout);
    for log in sidecars {
        wait_until(&format!("{log}: the two-root bundle"), || {
            last_bundle(log).contains("roots=2")
        });
    }
    load.more(20, "traffic after prepare");

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
    load.more(20, "traffic after switch");

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
    load.more(30, "traffic after finish");

    let summary = load.stop();
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
