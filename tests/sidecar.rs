//! Two workloads in the mesh, each in its own network namespace with Istio's capture rules and
//! its Strait sidecar, identities from a Strait CA: `sleep` (namespace `a`) calls `httpbin`
//! (namespace `b`). The applications are small Python servers and clients; the sidecars are the
//! real binary. Needs root, `ip`, iptables and python3 (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mesh::{MARK, Mesh, capture, counter, json_body};

#[test]
fn http_and_tcp_between_sidecars_go_over_mtls_and_carry_the_caller_s_identity() {
    let mesh = Mesh::start("mesh-call");
    let (a, b) = (&mesh.pair.a, &mesh.pair.b);
    let before_out = counter(&capture(a, &["show"]).stdout, "ISTIO_REDIRECT");
    let before_in = counter(&capture(b, &["show"]).stdout, "ISTIO_IN_REDIRECT");

    // sleep calls httpbin's service port; nothing listens on 8000 in b: only the sidecars make
    // this work (captured in a, routed by Host, mTLS to b's 8080, captured again in b).
    let response = mesh.http_get(a, mesh.pair.b_ip, 8000, "0", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
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
    assert_eq!(
        seen["peer"], "127.0.0.6",
        "the sidecar reaches the app from 127.0.0.6"
    );
    let inbound = mesh.wait_for_log("httpbin", &["GET /hello", "inbound|8080||"]);
    assert!(
        inbound.contains("peer=\"spiffe://cluster.local/ns/default/sa/sleep\""),
        "{inbound}"
    );
    mesh.wait_for_log(
        "sleep",
        &[
            "GET /hello",
            "outbound|8000||httpbin.default.svc.cluster.local",
        ],
    );

    // TCP to the echo port: the same path, and httpbin's sidecar names the caller.
    let echoed = mesh.call(a, mesh.pair.b_ip, 9000, "0", "ping\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=ping");
    let tcp = mesh.wait_for_log("httpbin", &["TCP", "inbound|9000||"]);
    assert!(
        tcp.contains("peer=\"spiffe://cluster.local/ns/default/sa/sleep\""),
        "{tcp}"
    );

    // The iptables counters prove the capture: outbound in a, inbound in b.
    assert!(counter(&capture(a, &["show"]).stdout, "ISTIO_REDIRECT") > before_out);
    assert!(counter(&capture(b, &["show"]).stdout, "ISTIO_IN_REDIRECT") > before_in);
}

#[test]
fn strict_refuses_plaintext_and_permissive_strips_a_forged_client_certificate_header() {
    let mesh = Mesh::start("mesh-strict");
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    // A plaintext caller outside the mesh: the sidecar's mark keeps a's capture out of the way,
    // so it reaches b's inbound capture without mTLS. PERMISSIVE (the default) serves it, and
    // the identity it claims in XFCC is removed.
    let forged =
        "X-Forwarded-Client-Cert: By=x;URI=spiffe://cluster.local/ns/default/sa/admin\\r\\n";
    let response = mesh.http_get(a, b_ip, 8080, MARK, forged);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    assert!(
        seen["headers"].get("x-forwarded-client-cert").is_none(),
        "{seen}"
    );
    let echoed = mesh.call(a, b_ip, 9000, MARK, "plain\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=plain");

    mesh.apply(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    );
    // STRICT: plaintext is refused for HTTP and TCP alike; mesh callers still get through.
    let refused = mesh.http_get(a, b_ip, 8080, MARK, "");
    assert!(!refused.contains("HTTP/1.1 200"), "{refused}");
    let refused = mesh.call(a, b_ip, 9000, MARK, "plain\\n");
    assert!(!refused.contains("echo=plain"), "{refused}");
    let response = mesh.http_get(a, b_ip, 8000, "0", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let echoed = mesh.call(a, b_ip, 9000, "0", "meshed\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=meshed");
}
