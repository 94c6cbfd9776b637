//! A workload without capture reaches the mesh through its sidecar's explicit HTTP proxy, as
//! applications that set `HTTP_PROXY` do: `sleep` (network namespace `a`, no iptables) has a
//! Sidecar egress listener of protocol `HTTP_PROXY` on 127.0.0.1:15080 (and `--http-proxy-port
//! 15081`), under REGISTRY_ONLY; `httpbin` (namespace `b`) is captured as in tests/sidecar.rs.
//! curl sends absolute-form requests and CONNECT tunnels; httpbin's sidecar sees sleep's
//! identity. Needs root, `ip`, iptables, python3 and curl (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use common::mesh::{HTTPBIN, Mesh, json_body};

/// sleep's Sidecar: the explicit proxy for the services of `default`; the catch-all scopes what
/// the outbound side (and so `--http-proxy-port`'s listener) sees.
const SIDECAR: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep, namespace: default}
spec:
  workloadSelector: {labels: {app: sleep}}
  egress:
  - port: {number: 15080, protocol: HTTP_PROXY, name: http-proxy}
    captureMode: NONE
    hosts: ["default/*"]
  - hosts: ["./*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;

/// curl in `netns` through the proxy on `port`, with `args`; what it printed (stdout, then
/// stderr).
fn curl(mesh: &Mesh, port: u16, args: &[&str]) -> String {
    let proxy = format!("http://127.0.0.1:{port}");
    let mut all = vec!["-sS", "--max-time", "10", "--proxy", &proxy];
    all.extend_from_slice(args);
    let run = mesh.pair.a.run("curl", &all);
    format!("{}{}", run.stdout, run.stderr)
}

#[test]
fn an_application_without_capture_reaches_the_mesh_through_the_explicit_http_proxy() {
    let mesh =
        Mesh::start_uncaptured_caller("http-proxy", SIDECAR, &["--http-proxy-port", "15081"]);
    let url = format!("http://{HTTPBIN}:8000/hello");

    // An absolute-form request, routed by its target's port and host, arrives at httpbin's
    // captured sidecar over mesh mTLS: the application sees XFCC naming sleep.
    for port in [15080, 15081] {
        let out = curl(&mesh, port, &["-i", &url]);
        assert!(out.starts_with("HTTP/1.1 200"), "through {port}: {out}");
        let seen = json_body(&out);
        assert_eq!(seen["path"], "/hello", "origin form upstream: {seen}");
        assert_eq!(seen["headers"]["host"], format!("{HTTPBIN}:8000"));
        let xfcc = seen["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap_or_else(|| panic!("no XFCC: {seen}"));
        assert!(
            xfcc.starts_with("By=spiffe://cluster.local/ns/default/sa/httpbin;Hash="),
            "{xfcc}"
        );
        assert!(
            xfcc.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/sleep"),
            "{xfcc}"
        );
    }
    mesh.wait_for_log(
        "sleep",
        &[
            "GET /hello",
            "outbound|8000||httpbin.default.svc.cluster.local",
        ],
    );
    mesh.wait_for_log(
        "httpbin",
        &["GET /hello", "spiffe://cluster.local/ns/default/sa/sleep"],
    );

    // CONNECT to the TCP port: 200, then the echo answers through the tunnel, whose mesh mTLS
    // httpbin's sidecar terminates (the echo sees it come from 127.0.0.6).
    let echo = mesh.pair.a.run(
        "sh",
        &[
            "-c",
            &format!(
                "printf 'through the tunnel\\n' | curl -sS --max-time 10 -p --proxy http://127.0.0.1:15080 telnet://{HTTPBIN}:9000"
            ),
        ],
    );
    assert!(
        echo.stdout
            .contains("peer=127.0.0.6 echo=through the tunnel"),
        "{echo:?}"
    );
    mesh.wait_for_log(
        "sleep",
        &["TCP", "outbound|9000||httpbin.default.svc.cluster.local"],
    );
    mesh.wait_for_log(
        "httpbin",
        &[
            "TCP",
            "inbound|9000||",
            "spiffe://cluster.local/ns/default/sa/sleep",
        ],
    );

    // REGISTRY_ONLY: a host no service declares is 404 NR, with the reason in the access log;
    // a CONNECT to one is refused the same way.
    let status = curl(
        &mesh,
        15080,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://unknown.example.com/",
        ],
    );
    assert_eq!(status, "404");
    let line = mesh.wait_for_log("sleep", &["unknown.example.com:80", "NR"]);
    assert!(line.contains("REGISTRY_ONLY"), "{line}");
    let refused = curl(&mesh, 15080, &["-p", "telnet://unknown.example.com:9000"]);
    assert!(refused.contains("404"), "{refused}");
    mesh.wait_for_log("sleep", &["CONNECT", "unknown.example.com:9000", "NR"]);

    // A request in origin form is not for a proxy: 400 with the reason logged.
    let relative = mesh.call(
        &mesh.pair.a,
        Ipv4Addr::LOCALHOST,
        15080,
        "0",
        &format!(
            "GET /hello HTTP/1.1\\r\\nHost: {HTTPBIN}:8000\\r\\nConnection: close\\r\\n\\r\\n"
        ),
    );
    assert!(relative.starts_with("HTTP/1.1 400"), "{relative}");
    let line = mesh.wait_for_log("sleep", &["GET /hello", "DPE"]);
    assert!(line.contains("absolute form"), "{line}");
}
