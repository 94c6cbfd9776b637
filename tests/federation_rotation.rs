//! A root rotation in one cluster under steady traffic from another: west rotates its root
//! (`strait ca rotate prepare`, `switch`, `finish`) while east's workload calls west's across
//! west's east-west gateway, a new mesh mTLS handshake per request, and not one request fails.
//!
//! Two clusters on two networks (tests/common/router.rs), each with its own CA and trust
//! domain. In west the CA service (`strait run --role control`, short workload lifetime)
//! issues to west's workload sidecar and to west's east-west gateway (`--ca-address`): on
//! `switch` both renew onto the new chain at once, and the gateway's bundle endpoint serves
//! west's bundle as the CA's stream gives it (with its sequence). West's sidecar trusts east
//! through the CA's `federated/` folder. In east, the caller's sidecar takes its identity from
//! files; its identity folder's `federated/` is a symlink to east's east-west gateway's
//! `DATA/ca/federated` (as `strait demo` links them), where the gateway's poller keeps its copy
//! of west's bundle current (refresh hint and shortest poll 1 s), and the sidecar reads it
//! again when it changes, without a restart.
//!
//! Each step is waited for by what the system shows: the sequence and roots of east's copy of
//! west's bundle, and the logs of the sidecars, the gateway and the CA service. Needs root,
//! `ip`, iptables, python3 and dig (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::control::{ca, issuer_in};
use common::eastwest::{
    BUNDLE_PORT, CALLER_ID, REVIEWS, REVIEWS_ID, apply_peer, east_config, gateway,
    gateway_identity, link, reviews_app, spiffe_bundle, west_config,
};
use common::load::{SteadyLoad, wait_until};
use common::mesh::{
    CA_PORT, Ca, EAST_GATEWAY_ID, WEST_GATEWAY_ID, capture, control, resolve, sidecar,
    wait_for_line_in,
};
use common::router::Router;
use common::{Run, TempDir};

/// The lifetime of the certificates west's CA service issues: renewals every few seconds, and
/// `finish` may go ahead this long after the switch.
const WORKLOAD_TTL: &str = "15s";

/// East's rule for its calls to `reviews`: one request per upstream connection, so that every
/// request makes a new mTLS handshake with west's workload.
const ONE_REQUEST_PER_CONNECTION: &str = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews.default.svc.cluster.local\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}\n";

/// `strait ca rotate ARGS` on the CA in `data`.
fn rotate(data: &Path, args: &[&str]) -> Run {
    let mut full = vec!["rotate"];
    full.extend_from_slice(args);
    ca(data, &full)
}

/// The sequence and the number of roots of a SPIFFE bundle file (absent or unreadable: none).
fn sequence_and_roots(path: &Path) -> Option<(u64, usize)> {
    let text = std::fs::read_to_string(path).ok()?;
    let bundle: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        bundle["spiffe_sequence"].as_u64()?,
        bundle["keys"].as_array()?.len(),
    ))
}

#[test]
fn a_root_rotation_in_west_under_steady_traffic_from_east_loses_no_request() {
    let label = "xrot";
    let net = Router::new(label, &["caller", "eastgw"], &["ca", "gateway", "reviews"]);
    let reviews_ip = net.west.host("reviews").workload_ip;
    let (ca_ip, gateway_ip) = (net.west.host("ca").ip, net.west.host("gateway").ip);
    let east = TempDir::new(&format!("{label}-east"));
    let west = TempDir::new(&format!("{label}-west"));
    let east_ca = Ca::init_for(&east, "ca-data", "east.mesh");
    let west_ca = Ca::init_for(&west, "ca-data", "west.mesh");

    // West's CA service streams east's bundle to west's proxies beside west's own.
    west.write(
        "ca-data/ca/federated/east.mesh.json",
        &spiffe_bundle(east_ca.data()).to_string(),
    );
    east.write("config/mesh.yaml", "trustDomain: east.mesh\n");
    east.write(
        "config/services.yaml",
        &(east_config(reviews_ip, gateway_ip) + ONE_REQUEST_PER_CONNECTION),
    );
    west.write("config/mesh.yaml", "trustDomain: west.mesh\n");
    west.write("config/services.yaml", &west_config(reviews_ip));

    // West: the CA service, the workload with its sidecar, the east-west gateway; both proxies
    // get their certificates from the CA service and follow its bundle stream.
    let mut processes = vec![control(
        &net.west.host("ca").netns,
        ca_ip,
        &west,
        &west_ca,
        WORKLOAD_TTL,
    )];
    let ca_address = format!("{ca_ip}:{CA_PORT}");
    let bundle = west.path().join("bundle.pem").display().to_string();
    let from_ca = |id: &str, name: &str| {
        let token = west_ca.token_id(id, name, &west);
        [
            "--ca-address",
            &ca_address,
            "--trust-bundle",
            &bundle,
            "--bootstrap-token-file",
            &token,
            "--trust-domain",
            "west.mesh",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let reviews = &net.west.host("reviews").netns;
    processes.push(reviews_app(reviews, &west));
    let mut flags = from_ca(REVIEWS_ID, "reviews");
    flags.extend(["--network", "west"].map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    processes.push(sidecar(reviews, &west, "reviews", &flags));
    let mut flags = from_ca(WEST_GATEWAY_ID, "gateway");
    flags.extend(
        [
            "--service-account",
            "eastwest",
            "--bundle-refresh-hint",
            "1s",
        ]
        .map(str::to_owned),
    );
    processes.push(gateway(
        &net.west.host("gateway").netns,
        &west,
        "west",
        "gateway",
        "gateway",
        &flags,
    ));

    // East: the gateway follows west's bundle endpoint (the Peer `strait link` prints in west),
    // and the caller's sidecar trusts west through the gateway's copy of west's bundle.
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
    let east_copy = east.path().join("gateway-data/ca/federated/west.mesh.json");
    let flags = gateway_identity(&east, &east_ca, EAST_GATEWAY_ID);
    processes.push(gateway(
        &net.east.host("eastgw").netns,
        &east,
        "east",
        "gateway",
        "gateway",
        &flags,
    ));
    let caller_dir = east.path().join("caller");
    east_ca.issue_id(CALLER_ID, &caller_dir);
    std::os::unix::fs::symlink(east_copy.parent().unwrap(), caller_dir.join("federated")).unwrap();
    let caller = &net.east.host("caller").netns;
    capture(caller, &["install"]);
    processes.push(sidecar(caller, &east, "caller", &["--network", "east"]));

    let logs = |dir: &TempDir, name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_default()
    };
    // The last bundle of west the caller's sidecar applied from its identity files: "roots=N".
    let caller_applied = |roots: usize, sequence: u64| {
        logs(&east, "caller.log").lines().any(|l| {
            l.contains("trust bundle applied from the identity files")
                && l.contains("trust_domain=west.mesh")
                && l.contains(&format!("sequence={sequence} "))
                && l.contains(&format!("roots={roots}"))
        })
    };
    let west_sequence = || {
        spiffe_bundle(west_ca.data())["spiffe_sequence"]
            .as_u64()
            .unwrap()
    };
    let (first, roots) = sequence_and_roots(&east_copy).unwrap();
    assert_eq!((first, roots), (west_sequence(), 1));
    // West's gateway serves west's bundle as the CA's stream gave it, with the CA's sequence.
    let serving = wait_for_line_in(
        &west.path().join("gateway.log"),
        &["bundle endpoint serving"],
    );
    assert!(
        serving.contains(&format!(
            "west.mesh as {WEST_GATEWAY_ID} (bundle sequence {first})"
        )),
        "{serving}"
    );

    let vip = resolve(caller, REVIEWS);
    let load = SteadyLoad::start(caller, vip, 9080, REVIEWS, east.path());
    load.more(20, "traffic before the rotation");

    // prepare: west's bundle holds both roots under a higher sequence. West's proxies apply it
    // from the CA's stream; west's gateway serves it; east's gateway fetches it into its copy,
    // and the caller's sidecar reads it from there.
    let prepared = rotate(west_ca.data(), &["prepare"]);
    assert_eq!(prepared.code, Some(0), "{}", prepared.stderr);
    assert!(prepared.stdout.contains("2 root(s)"), "{}", prepared.stdout);
    let prepared_sequence = west_sequence();
    assert!(prepared_sequence > first);
    for log in ["reviews.log", "gateway.log"] {
        wait_until(&format!("west's {log}: the two-root bundle"), || {
            logs(&west, log)
                .lines()
                .any(|l| l.contains("trust bundles applied") && l.contains("roots=2"))
        });
    }
    wait_until("east's copy of west's two-root bundle", || {
        sequence_and_roots(&east_copy) == Some((prepared_sequence, 2))
    });
    wait_until("east's caller: west's two-root bundle", || {
        caller_applied(2, prepared_sequence)
    });
    load.more(20, "traffic after prepare");

    // switch: west's CA service issues under the new root, and west's sidecar and gateway
    // renew onto it at once; the caller verifies west's workload by the new root.
    let old_issuer = issuer_in(
        &logs(&west, "control.log"),
        "trust bundle snapshot published",
    );
    let switched = rotate(west_ca.data(), &["switch"]);
    assert_eq!(switched.code, Some(0), "{}", switched.stderr);
    wait_until("west's CA service loading the new signing chain", || {
        logs(&west, "control.log").contains("issuing under it now")
    });
    let new_issuer = issuer_in(&logs(&west, "control.log"), "issuing under it now");
    assert_ne!(new_issuer, old_issuer);
    for log in ["reviews.log", "gateway.log"] {
        wait_until(
            &format!("west's {log}: a certificate under the new chain"),
            || {
                let text = logs(&west, log);
                text.contains("signing chain changed; renewing onto it")
                    && text
                        .lines()
                        .any(|l| l.contains("SVID renewed") && l.contains(&new_issuer))
            },
        );
    }
    load.more(20, "traffic after switch");

    // finish, once the old certificates may have expired: west's bundle holds the new root
    // alone, east's copy follows, and the caller drops the old root.
    wait_until("finish once the old certificates expired", || {
        let finished = rotate(
            west_ca.data(),
            &["finish", "--max-workload-ttl", WORKLOAD_TTL],
        );
        finished.code == Some(0)
    });
    let finished_sequence = west_sequence();
    assert!(finished_sequence > prepared_sequence);
    wait_until("east's copy of west's one-root bundle", || {
        sequence_and_roots(&east_copy) == Some((finished_sequence, 1))
    });
    wait_until("east's caller: west's new root alone", || {
        caller_applied(1, finished_sequence)
    });
    // Every handshake now verifies west's workload by the new root alone.
    load.more(30, "traffic after finish");

    let summary = load.stop();
    eprintln!("the load during the rotation: {summary}");
    assert_eq!(
        summary["failed"],
        0,
        "{summary}\neast's caller:\n{}\nwest's reviews:\n{}",
        logs(&east, "caller.log"),
        logs(&west, "reviews.log")
    );
    assert!(summary["ok"].as_u64().unwrap() >= 90, "{summary}");
    // Nor did the caller's sidecar answer anything but 200 without a response flag.
    let odd: Vec<String> = logs(&east, "caller-access.log")
        .lines()
        .filter(|l| l.contains("/load") && !l.contains("\" 200 - "))
        .map(str::to_owned)
        .collect();
    assert!(odd.is_empty(), "{odd:#?}");
    // East's gateway took every bundle west's served: none broke the sequence rules.
    let east_log = logs(&east, "gateway.log");
    assert!(!east_log.contains("peer bundle refused"), "{east_log}");
    drop(processes);
}
