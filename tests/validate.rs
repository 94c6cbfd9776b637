//! `strait validate` and `strait version`, run as a user runs them: exit codes, the finding
//! format (file:line:column, object, field, reason), the summary line, JSON output, directories,
//! and the repository's example and Istio's corpus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TempDir, corpus, repo, run, strait};

const VALID_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: web
  namespace: edge
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*.example.com\"]
";

const BAD_VIRTUAL_SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  namespace: edge
spec:
  hosts: [shop.example.com]
  gateways: [web]
  http:
  - route:
    - destination: {host: shop.example.com}
      weight: -5
    timeout: 1.5s
";

#[test]
fn version_names_the_release_and_the_commit() {
    let out = run(strait().arg("version"));
    assert_eq!(out.code, Some(0), "{out:?}");
    let line = out.stdout.trim();
    let expected_version = env!("CARGO_PKG_VERSION");
    assert!(
        line.starts_with(&format!("strait {expected_version} (")),
        "{line}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(commit) => assert!(line.ends_with(&format!("({commit})")), "{line} vs {commit}"),
        None => assert!(line.ends_with("(unknown)"), "{line}"),
    }
}

#[test]
fn the_repository_example_validates_cleanly() {
    let example = repo().join("deploy/examples/bookinfo");
    let out = run(strait()
        .arg("validate")
        .arg(&example)
        .args(["--gateway-labels", "istio=ingressgateway"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "15 objects, 0 errors, 0 warnings");
}

#[test]
fn the_egress_example_validates_cleanly() {
    let example = repo().join("deploy/examples/egress");
    let out = run(strait()
        .arg("validate")
        .arg(&example)
        .args(["--gateway-labels", "istio=egressgateway"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "16 objects, 0 errors, 0 warnings");
}

#[test]
fn the_east_west_examples_validate_cleanly() {
    for (cluster, labels, objects) in [
        (
            "west",
            &["--gateway-labels", "istio=eastwestgateway"][..],
            8,
        ),
        ("east", &[][..], 4),
    ] {
        let example = repo().join("deploy/examples/eastwest").join(cluster);
        let out = run(strait().arg("validate").arg(&example).args(labels));
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(
            out.stdout.trim(),
            format!("{objects} objects, 0 errors, 0 warnings")
        );
    }
}

#[test]
fn an_egress_gateway_route_to_a_resolution_none_host_is_reported() {
    let dir = TempDir::new("validate-egress");
    let file = dir.write(
        "egress.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.cnn.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: edition.cnn.com}}]
  - match: [{gateways: [istio-egressgateway]}]
    route: [{destination: {host: edition.cnn.com, port: {number: 80}}}]
"#,
    );
    let out = run(strait()
        .arg("validate")
        .arg(&file)
        .args(["--gateway-labels", "istio=egressgateway"]));
    let findings: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("resolution NONE"))
        .collect();
    // Only the gateway's route: the mesh's half is a sidecar's, where NONE is Istio's usual.
    assert_eq!(findings.len(), 1, "{}", out.stdout);
    assert!(
        findings[0].contains(
            "warning: VirtualService default/cnn: spec.http[1].route[0].destination.host"
        ),
        "{}",
        findings[0]
    );
}

#[test]
fn an_error_names_file_line_object_field_and_reason_and_exits_1() {
    let dir = TempDir::new("validate-error");
    let file = dir.write(
        "shop.yaml",
        &format!("{VALID_GATEWAY}---\n{BAD_VIRTUAL_SERVICE}"),
    );
    let out = run(strait().arg("validate").arg(&file));
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = format!(
        "{}:24:15: error: VirtualService edge/shop: spec.http[0].route[0].weight: weight must not be negative (found -5)",
        file.display()
    );
    assert!(out.stdout.lines().any(|l| l == expected), "{}", out.stdout);
    assert!(
        out.stdout
            .trim_end()
            .ends_with("2 objects, 1 errors, 2 warnings"),
        "{}",
        out.stdout
    );
}

#[test]
fn json_output_carries_every_part_of_a_finding() {
    let dir = TempDir::new("validate-json");
    let file = dir.write("shop.yaml", BAD_VIRTUAL_SERVICE);
    let out = run(strait()
        .arg("validate")
        .arg(&file)
        .args(["--format", "json"]));
    assert_eq!(out.code, Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["objects"], 1);
    assert_eq!(report["errors"], 1);
    let error = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["level"] == "error")
        .unwrap();
    assert_eq!(error["code"], "out-of-range");
    assert_eq!(error["kind"], "VirtualService");
    assert_eq!(error["namespace"], "edge");
    assert_eq!(error["name"], "shop");
    assert_eq!(error["field"], "spec.http[0].route[0].weight");
    assert_eq!(error["line"], 12);
    assert_eq!(error["column"], 15);
    assert_eq!(error["file"], file.display().to_string());
}

#[test]
fn unsupported_kinds_are_warned_about_once_and_do_not_fail() {
    let dir = TempDir::new("validate-unsupported");
    let file = dir.write(
        "mixed.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: lua}\nspec: {}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
    );
    let out = run(strait().arg("validate").arg(&file));
    assert_eq!(out.code, Some(0), "{out:?}");
    let warnings: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("kind not supported"))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", out.stdout);
    assert!(
        warnings[0].contains("EnvoyFilter default/lua"),
        "{}",
        warnings[0]
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with("2 objects, 0 errors, 2 warnings"),
        "{}",
        out.stdout
    );
}

#[test]
fn directories_are_read_recursively_and_hidden_entries_skipped() {
    let dir = TempDir::new("validate-tree");
    dir.write("a/gateway.yaml", VALID_GATEWAY);
    dir.write("a/b/notes.txt", "not configuration");
    dir.write("a/..data/gateway.yaml", "this would be an error: [");
    dir.write(".hidden.yaml", "neither: [");
    let out = run(strait()
        .arg("validate")
        .arg(dir.path())
        .args(["--gateway-labels", "istio=ingressgateway"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "1 objects, 0 errors, 0 warnings");
}

#[test]
fn unreadable_paths_and_broken_yaml_are_errors_with_a_place() {
    let dir = TempDir::new("validate-broken");
    let broken = dir.write("broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let missing = dir.path().join("missing.yaml");
    let out = run(strait().arg("validate").arg(&broken).arg(&missing));
    assert_eq!(out.code, Some(1), "{out:?}");
    let syntax = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{}:", broken.display())))
        .unwrap();
    assert!(syntax.contains("error: not valid YAML"), "{syntax}");
    assert!(
        syntax.starts_with(&format!("{}:2:", broken.display()))
            || syntax.starts_with(&format!("{}:3:", broken.display())),
        "{syntax}"
    );
    assert!(
        out.stdout
            .contains(&format!("{}: error: cannot read", missing.display())),
        "{}",
        out.stdout
    );
}

#[test]
fn the_level_flag_filters_what_is_printed_but_not_the_summary() {
    let dir = TempDir::new("validate-level");
    let file = dir.write("gw.yaml", VALID_GATEWAY);
    let all = run(strait().arg("validate").arg(&file));
    assert!(all.stdout.contains("warning:"), "{}", all.stdout);
    let errors_only = run(strait()
        .arg("validate")
        .arg(&file)
        .args(["--level", "error"]));
    assert_eq!(errors_only.stdout.trim(), "1 objects, 0 errors, 1 warnings");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = run(strait().args(["validate", "x.yaml", "--gateway-labels", "novalue"]));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("not key=value"), "{}", out.stderr);
    let out = run(strait().arg("validate"));
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn istio_corpus_files_validate_file_by_file() {
    let Some(corpus) = corpus() else { return };
    let mut files = Vec::new();
    for dir in ["bookinfo", "multicluster"] {
        for entry in std::fs::read_dir(corpus.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    for entry in std::fs::read_dir(corpus.join("validation")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("-valid.yaml") {
            files.push(path);
        }
    }
    files.sort();
    assert!(files.len() > 30, "{files:?}");
    for file in files {
        let out = run(strait()
            .arg("validate")
            .arg(&file)
            .args(["--level", "error"]));
        assert_eq!(out.code, Some(0), "{}: {}", file.display(), out.stdout);
    }
}
