//! `strait demo` as a user runs it: the demo starts its two clusters, prints its guide, and
//! the curl commands in the guide are run exactly as printed (with `sh`), in order: a call from
//! east's ingress gateway through frontend to reviews in west with the callers' SPIFFE IDs,
//! failover to east's standby when west's reviews is stopped and back when it returns, and
//! egress allowed and refused. The demo runs in a network namespace of its own, so that its
//! loopback addresses and well-known ports (8080, 15000, 15443, ...) are its own whatever else
//! runs on the machine. Needs root, `ip` and curl (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::netns::{Netns, Process};
use common::{TempDir, repo, run, strait};
use serde_json::Value;

const INGRESS_ID: &str = "spiffe://east.mesh/ns/istio-system/sa/istio-ingressgateway";
const FRONTEND_ID: &str = "spiffe://east.mesh/ns/default/sa/frontend";

/// The demo, started in `netns` with its state in `dir`, and the guide it printed.
fn start(netns: &Netns, dir: &std::path::Path) -> (Process, Vec<String>) {
    let mut command = netns.command(env!("CARGO_BIN_EXE_strait"));
    command.arg("demo").arg("--dir").arg(dir);
    let mut demo = netns.spawn(command);
    let guide = demo.read_until(|line| line.starts_with("Ctrl-C stops the demo"));
    (demo, guide)
}

/// The curl commands of the guide, in order.
fn commands(guide: &[String]) -> Vec<String> {
    guide
        .iter()
        .map(|line| line.trim())
        .filter(|line| line.starts_with("curl "))
        .map(str::to_owned)
        .collect()
}

/// Runs a printed command in the demo's namespace; its output as JSON when it is JSON.
fn sh(netns: &Netns, command: &str) -> (String, Option<Value>) {
    let out = netns.ok("sh", &["-c", command]);
    let json = serde_json::from_str(&out).ok();
    (out, json)
}

/// The cluster of the workload frontend's call reached.
fn called_cluster(answer: &Value) -> &str {
    answer["call"]["answer"]["cluster"].as_str().unwrap_or("")
}

#[test]
fn the_commands_the_demo_prints_show_a_cross_cluster_call_failover_and_egress() {
    let netns = Netns::new("demo");
    let scratch = TempDir::new("demo");
    let state = scratch.path().join("state");
    let (mut demo, guide) = start(&netns, &state);
    let guide_text = guide.join("\n");
    assert!(
        guide[0].starts_with("Strait demo: two clusters, one mesh, ready"),
        "{guide_text}"
    );
    let commands = commands(&guide);
    assert_eq!(commands.len(), 7, "{guide_text}");
    let reviews = &commands[0];
    assert_eq!(&commands[2], reviews, "{guide_text}");

    // 1. ingress -> frontend (east) -> reviews (west): each hop sees its caller's own identity.
    let (out, answer) = sh(&netns, reviews);
    let answer = answer.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(answer["workload"], "frontend", "{out}");
    assert_eq!(answer["caller"], INGRESS_ID, "{out}");
    assert_eq!(answer["call"]["status"], 200, "{out}");
    let reviews_answer = &answer["call"]["answer"];
    assert_eq!(reviews_answer["workload"], "reviews", "{out}");
    assert_eq!(reviews_answer["cluster"], "west", "{out}");
    assert_eq!(reviews_answer["address"], "127.10.2.10:8080", "{out}");
    assert_eq!(reviews_answer["caller"], FRONTEND_ID, "{out}");

    // 2. West's reviews stops: the call fails over to east's standby, with no failed answer
    // (Istio's default retries and outlier detection) ...
    let (out, _) = sh(&netns, &commands[1]);
    assert_eq!(out.trim(), "west/reviews stopped");
    for _ in 0..5 {
        let (out, answer) = sh(&netns, reviews);
        let answer = answer.unwrap_or_else(|| panic!("{out}"));
        assert_eq!(answer["call"]["status"], 200, "{out}");
        assert_eq!(called_cluster(&answer), "east", "{out}");
        assert_eq!(answer["call"]["answer"]["caller"], FRONTEND_ID, "{out}");
    }
    // ... and comes back to west once it runs again and its ejection has ended.
    let (out, _) = sh(&netns, &commands[3]);
    assert!(out.starts_with("west/reviews running"), "{out}");
    let mut back = false;
    for _ in 0..60 {
        let (out, answer) = sh(&netns, reviews);
        let answer = answer.unwrap_or_else(|| panic!("{out}"));
        assert_eq!(answer["call"]["status"], 200, "{out}");
        if called_cluster(&answer) == "west" {
            back = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(back, "the calls never came back to west");

    // 3. Egress: the partner API through the egress gateway; anything else refused.
    let (out, answer) = sh(&netns, &commands[4]);
    let answer = answer.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(answer["call"]["status"], 200, "{out}");
    assert_eq!(
        answer["call"]["answer"]["workload"], "api.partner.example",
        "{out}"
    );
    let (out, answer) = sh(&netns, &commands[5]);
    let answer = answer.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(answer["call"]["status"], 404, "{out}");
    let refusal = answer["call"]["answer"].as_str().unwrap_or_default();
    assert!(refusal.contains("REGISTRY_ONLY"), "{out}");
    let egress_log =
        std::fs::read_to_string(state.join("logs/east-egress-access.log")).unwrap_or_default();
    assert!(
        egress_log.contains("\"GET / HTTP/1.1\" 200") && egress_log.contains(FRONTEND_ID),
        "the egress gateway's access log: {egress_log}"
    );

    // The console lists the workloads.
    let (out, _) = sh(&netns, &commands[6]);
    assert!(
        out.contains("west/reviews") && out.contains("running"),
        "{out}"
    );

    // The trunk carried connections: east's gateway keeps one to west's.
    let log = std::fs::read_to_string(state.join("logs/strait.log")).unwrap_or_default();
    assert!(log.contains("trunk connection up peer=west"), "{log}");

    // Ctrl-C stops every proxy; the state given with --dir stays.
    let (code, rest) = demo.interrupt();
    assert_eq!(code, Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l == "The demo stopped."), "{rest:?}");
    assert!(state.join("east/config/services.yaml").is_file());
}

#[test]
fn the_demo_starts_from_an_empty_folder_and_its_configuration_validates() {
    let scratch = TempDir::new("demo-dir");
    scratch.write("state/left-over", "x");
    let refused = run(strait()
        .args(["demo", "--dir"])
        .arg(scratch.path().join("state")));
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);

    for (cluster, labels) in [
        ("east", "istio=ingressgateway"),
        ("west", "istio=eastwestgateway"),
    ] {
        let validated = run(strait()
            .arg("validate")
            .arg(repo().join("deploy/examples/demo").join(cluster))
            .args(["--gateway-labels", labels]));
        assert_eq!(validated.code, Some(0), "{cluster}: {validated:?}");
        assert!(
            validated.stdout.contains(" 0 errors"),
            "{cluster}: {}",
            validated.stdout
        );
    }
}
