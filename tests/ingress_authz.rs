//! AuthorizationPolicy at the ingress gateway, end to end: DENY by path (with the usual
//! normalization bypass attempts), ALLOW by the original client's address behind a trusted
//! proxy, an allow-nothing policy, L4 denial on a TCP server (new connections refused, open
//! ones closed when a change denies them), and a policy applied live taking effect on the next
//! request of an open keep-alive connection.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::backend::Backend;
use common::client::{self, Connection};
use common::gateway::Gateway;
use common::tcp;

/// A Gateway in istio-system selecting the ingress: HTTP on 80 routed to the `web` backend,
/// and with an `echo` backend TCP on 31400 routed to it.
fn config(web: SocketAddr, echo: Option<SocketAddr>) -> String {
    let mut yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
{tcp_server}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: web.default.svc.cluster.local, port: {{number: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {web_port}}}}}]
"#,
        web_port = web.port(),
        tcp_server = if echo.is_some() {
            "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n"
        } else {
            ""
        }
    );
    if let Some(echo) = echo {
        yaml += &format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: echo.default.svc.cluster.local, port: {{number: 9000}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo_port}}}}}]
"#,
            echo_port = echo.port()
        );
    }
    yaml
}

/// An AuthorizationPolicy selecting the ingress gateway; an empty `spec` (beyond the selector)
/// is ALLOW with no rules: allow nothing.
fn policy(name: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
{spec}"#
    )
}

const DENY_ADMIN: &str = r#"  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin", "/admin/*"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_a_path_prefix_answers_403_rbac_and_normalization_closes_bypasses() {
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, None))
        .config("deny.yaml", &policy("deny-admin", DENY_ADMIN))
        .server_port(80)
        .start();
    let addr = gateway.addr(80);

    let allowed = client::get(addr, "web.example.com", "/public").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.backend(), Some("web-1"));

    let served_before = backend.requests();
    for path in [
        "/admin",
        "/admin/users",
        "/admin?debug=1",
        "/./admin",
        "/a/../admin",
        "/%2e/admin",
        "/%2E%2E/admin",
        "/public/%2e%2e/admin/x",
        "/%61dmin",
    ] {
        let denied = client::get(addr, "web.example.com", path).await;
        assert_eq!(denied.status, 403, "{path}: {}", denied.text());
        assert_eq!(denied.text(), "RBAC: access denied", "{path}");
    }
    assert_eq!(
        backend.requests(),
        served_before,
        "no denied request reached the backend"
    );
    let line = gateway.access_log_line(|l| l.contains("/a/../admin"));
    assert!(line.contains(" 403 RBAC "), "{line}");
    assert!(
        line.contains("reason=\"denied by DENY policy istio-system/deny-admin\""),
        "{line}"
    );

    // Authorization comes before routing: a host no VirtualService serves is still denied.
    let unrouted = client::get(addr, "other.example.com", "/admin").await;
    assert_eq!(unrouted.status, 403);
    let fine = client::get(addr, "web.example.com", "/administrator").await;
    assert_eq!(fine.status, 200, "/admin/* does not cover /administrator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_by_remote_ip_blocks_reads_x_forwarded_for_past_trusted_proxies() {
    let backend = Backend::start("web-1").await;
    let allow = policy(
        "from-partners",
        r#"  action: ALLOW
  rules:
  - from:
    - source: {remoteIpBlocks: ["203.0.113.0/24"]}
"#,
    );
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, None))
        .config("allow.yaml", &allow)
        .server_port(80)
        .arg("--trusted-hops")
        .arg("1")
        .start();
    let addr = gateway.addr(80);
    let get = |xff: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        client::get_with(addr, "web.example.com", "/", &headers).await
    };

    // The peer (127.0.0.1) is the one trusted proxy; the client is the entry it appended.
    let partner = get(Some("203.0.113.7")).await;
    assert_eq!(partner.status, 200, "{}", partner.text());
    assert_eq!(partner.backend(), Some("web-1"));
    let stranger = get(Some("198.51.100.1")).await;
    assert_eq!(stranger.status, 403);
    // A client cannot prepend a partner address: only the entry the trusted proxy wrote counts.
    let spoofed = get(Some("203.0.113.7, 198.51.100.1")).await;
    assert_eq!(spoofed.status, 403);
    // Without the header the client is the peer itself.
    let direct = get(None).await;
    assert_eq!(direct.status, 403);
    let line = gateway.access_log_line(|l| l.contains(" 403 RBAC "));
    assert!(
        line.contains("reason=\"no ALLOW policy matched (ALLOW policies: "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_blocks_see_the_peer_not_x_forwarded_for() {
    let backend = Backend::start("web-1").await;
    let allow = policy(
        "by-peer",
        r#"  action: ALLOW
  rules:
  - from:
    - source: {ipBlocks: ["203.0.113.0/24"]}
"#,
    );
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, None))
        .config("allow.yaml", &allow)
        .server_port(80)
        .arg("--trusted-hops")
        .arg("1")
        .start();
    let forged = client::get_with(
        gateway.addr(80),
        "web.example.com",
        "/",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(
        forged.status, 403,
        "the peer is 127.0.0.1 whatever XFF says"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_nothing_policy_denies_every_request() {
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, None))
        .config("nothing.yaml", &policy("allow-nothing", ""))
        .server_port(80)
        .start();
    for path in ["/", "/public", "/anything?x=1"] {
        let response = client::get(gateway.addr(80), "web.example.com", path).await;
        assert_eq!(response.status, 403, "{path}");
        assert_eq!(response.text(), "RBAC: access denied");
    }
    assert_eq!(backend.requests(), 0);
    let line = gateway.access_log_line(|l| l.contains("\"GET /public"));
    assert!(line.contains(" 403 RBAC "), "{line}");
    assert!(
        line.contains("reason=\"no ALLOW policy matched (ALLOW policies: "),
        "{line}"
    );
}

/// Reads what the server sends until it closes; fails after 5 s.
async fn read_until_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_closed_by_a_deny_on_ip_blocks_and_by_http_only_deny_rules() {
    let backend = Backend::start("web-1").await;
    let echo = tcp::echo("echo-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, Some(echo.addr)))
        .server_port(80)
        .server_port(31400)
        .start();
    let addr = gateway.addr(31400);

    let mut allowed = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 7];
    allowed.read_exact(&mut greeting).await.unwrap();
    assert_eq!(
        &greeting, b"echo-1\n",
        "no policy: the connection reaches the backend"
    );

    // A policy change that does not deny the open connection leaves it alone.
    gateway.apply(
        "deny.yaml",
        &policy(
            "deny-elsewhere",
            r#"  action: DENY
  rules:
  - from:
    - source: {ipBlocks: ["192.0.2.0/24"]}
"#,
        ),
    );
    allowed.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    allowed.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    gateway.apply(
        "deny.yaml",
        &policy(
            "deny-local",
            r#"  action: DENY
  rules:
  - from:
    - source: {ipBlocks: ["127.0.0.0/8"]}
"#,
        ),
    );
    // The open connection is now denied: it is closed.
    read_until_close(&mut allowed).await;
    let revoked = gateway.access_log_line(|l| l.contains("closed by a policy change"));
    assert!(revoked.contains(" RBAC "), "{revoked}");
    assert!(revoked.contains("istio-system/deny-local"), "{revoked}");

    let mut denied = TcpStream::connect(addr).await.unwrap();
    let _ = denied.write_all(b"hello").await;
    assert!(
        read_until_close(&mut denied).await.is_empty(),
        "a denied connection gets nothing from the backend"
    );
    let line = gateway.access_log_line(|l| {
        l.contains("reason=\"denied by DENY policy istio-system/deny-local\"")
    });
    assert!(line.contains(" RBAC "), "{line}");

    // A DENY rule with HTTP-only fields drops them on TCP: it denies every connection.
    gateway.apply(
        "deny.yaml",
        &policy(
            "deny-posts",
            r#"  action: DENY
  rules:
  - to:
    - operation: {methods: [POST]}
"#,
        ),
    );
    let mut denied = TcpStream::connect(addr).await.unwrap();
    assert!(read_until_close(&mut denied).await.is_empty());
    gateway.access_log_line(|l| l.contains("istio-system/deny-posts") && l.contains(" RBAC "));
    // ... while on HTTP it denies only POSTs.
    let get = client::get(gateway.addr(80), "web.example.com", "/").await;
    assert_eq!(get.status, 200);

    // An ALLOW rule with paths never matches TCP: the connection is denied.
    gateway.apply(
        "deny.yaml",
        &policy(
            "allow-paths",
            r#"  rules:
  - to:
    - operation: {paths: ["/*"]}
"#,
        ),
    );
    let mut denied = TcpStream::connect(addr).await.unwrap();
    assert!(read_until_close(&mut denied).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_live_decides_the_next_request_on_the_same_connection() {
    let backend = Backend::start("web-1").await;
    let gateway = Gateway::builder()
        .config("web.yaml", &config(backend.addr, None))
        .server_port(80)
        .start();
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let first = connection.get("web.example.com", "/admin").await;
    assert_eq!(first.status, 200);

    gateway.apply("deny.yaml", &policy("deny-admin", DENY_ADMIN));
    let second = connection.get("web.example.com", "/admin").await;
    assert_eq!(
        second.status, 403,
        "the same keep-alive connection sees the policy"
    );
    assert_eq!(second.text(), "RBAC: access denied");
    let other = connection.get("web.example.com", "/public").await;
    assert_eq!(other.status, 200);

    gateway.apply(
        "deny.yaml",
        &policy(
            "deny-admin",
            r#"  action: DENY
  rules:
  - to:
    - operation: {paths: ["/nothing-here"]}
"#,
        ),
    );
    let third = connection.get("web.example.com", "/admin").await;
    assert_eq!(third.status, 200, "and the relaxed policy too");
    assert_eq!(third.backend(), Some("web-1"));
}
