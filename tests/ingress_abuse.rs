//! Hostile input at the ingress gateway: malformed and oversized HTTP/1.1 requests, request
//! smuggling (HTTP/1.1, and HTTP/2 turned into HTTP/1.1 upstream), broken TLS, slow and idle
//! clients, and HTTP/2 frame floods. Every case must end in a clean refusal (400, 431, a reset
//! stream, GOAWAY or a closed connection), never reach the backend, leave no connection open, no
//! panic and no runaway memory, and the gateway must go on serving normal requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::backend::Backend;
use common::client::{self, Connection};
use common::gateway::Gateway;
use common::pki::{self, Ca};
use common::raw::{self, End, H2};
use common::recorder::Recorder;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

const HOST: &str = "web.example.com";

/// How long a refusal may take: far beyond any timeout these tests configure.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// HTTP/2 keepalive settings that let a client that answers no PING go within seconds (the
/// PING goes out 3 s after the last request; tests look at the connection well before that).
const KEEPALIVE: &[&str] = &[
    "--http2-keepalive-interval",
    "3s",
    "--http2-keepalive-timeout",
    "2s",
];

/// The most the gateway's resident memory may grow under one attack.
const RSS_GROWTH_LIMIT_KIB: u64 = 200 * 1024;

/// A Gateway with a plain HTTP server on 80 and a TLS (SIMPLE) server on 443, both routing
/// `web.example.com` to the backend at `backend`.
fn config(backend: SocketAddr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: SIMPLE, credentialName: web-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [istio-system/web]
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
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"#,
        port = backend.port()
    )
}

/// A gateway in front of `backend` with extra `strait run` arguments, and the CA its TLS
/// server certificate chains to.
fn start(backend: SocketAddr, args: &[&str]) -> (Gateway, Ca) {
    let ca = Ca::new("abuse-ca");
    let server = ca.server(&[HOST]);
    let mut builder = Gateway::builder()
        .config("web.yaml", &config(backend))
        .credential(
            "web-cert",
            &[("tls.crt", &server.cert), ("tls.key", &server.key)],
        )
        .server_port(80)
        .server_port(443);
    for arg in args {
        builder = builder.arg(*arg);
    }
    (builder.start(), ca)
}

/// The gateway's resident memory in KiB.
fn rss_kib(gateway: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn assert_rss_bounded(gateway: &Gateway, before: u64, what: &str) {
    let after = rss_kib(gateway);
    assert!(
        after < before + RSS_GROWTH_LIMIT_KIB,
        "{what}: resident memory grew from {before} KiB to {after} KiB"
    );
}

fn open_connections(gateway: &Gateway) -> u64 {
    gateway.config_dump()["open_connections"]
        .as_u64()
        .expect("config_dump reports open_connections")
}

/// Waits until the gateway has no downstream connection open; fails with the count otherwise.
async fn assert_connections_released(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let open = open_connections(gateway);
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} downstream connections are still open after the abuse ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No panic in the gateway's log, and it still reports ready.
fn assert_healthy(gateway: &Gateway) {
    let log = gateway.log();
    assert!(!log.contains("panicked"), "strait panicked:\n{log}");
    assert!(gateway.ready(), "strait is no longer ready:\n{log}");
}

/// A well-formed request on a new HTTP/1.1 connection is served by `backend`.
async fn assert_served_http1(gateway: &Gateway, backend: &str) {
    let response = client::get(gateway.addr(80), HOST, "/after").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some(backend));
}

/// A well-formed request on a new h2c connection is served by `backend`.
async fn assert_served_h2c(gateway: &Gateway, backend: &str) {
    let response = Connection::h2c(gateway.addr(80))
        .await
        .get(HOST, "/after-h2")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some(backend));
}

/// A refused HTTP/1.1 request: one `expected` response, or the connection closed with no
/// response. Never a success, and never more than one response.
fn assert_refused(reply: &raw::Reply, expected: u16, case: &str) {
    let statuses = reply.statuses();
    assert!(
        statuses == [expected] || (statuses.is_empty() && reply.closed),
        "{case}: expected {expected} or a bare close, got {statuses:?} (closed: {}): {:?}",
        reply.closed,
        reply.text()
    );
}

fn bytes(head: &str) -> Vec<u8> {
    head.as_bytes().to_vec()
}

/// An HTTP/1.1 GET for `path` with `headers` (name, value).
fn get_with_headers(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn one_header(size: usize) -> Vec<(String, String)> {
    vec![("x-big".to_owned(), "a".repeat(size))]
}

fn many_headers(count: usize, value_size: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("x-h{i}"), "v".repeat(value_size)))
        .collect()
}

// ---- Malformed HTTP/1.1 ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http1_requests_get_400_and_never_reach_the_backend() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &[]);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);
    let host = format!("Host: {HOST}\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", bytes("GARBAGE\r\n\r\n")),
        ("request line without a target", bytes("GET\r\n\r\n")),
        (
            "unknown protocol version",
            bytes(&format!("GET / HTTX/1.1\r\n{host}\r\n")),
        ),
        (
            "control byte in the method",
            b"G\x01T / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "space in the target",
            bytes(&format!("GET /a b HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "non-ASCII byte in the target",
            [b"GET /a\xff HTTP/1.1\r\n", host.as_bytes(), b"\r\n"].concat(),
        ),
        (
            "space in a header name",
            bytes(&format!("GET / HTTP/1.1\r\n{host}Bad Name: x\r\n\r\n")),
        ),
        (
            "space before the colon",
            bytes(&format!("GET / HTTP/1.1\r\n{host}X-A : x\r\n\r\n")),
        ),
        (
            "empty header name",
            bytes(&format!("GET / HTTP/1.1\r\n{host}: x\r\n\r\n")),
        ),
        (
            "separator in a header name",
            bytes(&format!("GET / HTTP/1.1\r\n{host}X(A): x\r\n\r\n")),
        ),
        (
            "control byte in a header name",
            [
                format!("GET / HTTP/1.1\r\n{host}").as_bytes(),
                b"X\x01A: x\r\n\r\n",
            ]
            .concat(),
        ),
        (
            "NUL in a header value",
            [
                format!("GET / HTTP/1.1\r\n{host}").as_bytes(),
                b"X-A: a\x00b\r\n\r\n",
            ]
            .concat(),
        ),
        (
            "vertical tab in a header value",
            [
                format!("GET / HTTP/1.1\r\n{host}").as_bytes(),
                b"X-A: a\x0bb\r\n\r\n",
            ]
            .concat(),
        ),
        (
            "bare CR in a header value",
            bytes(&format!("GET / HTTP/1.1\r\n{host}X-A: a\rX-B: b\r\n\r\n")),
        ),
        (
            "obs-fold continuation line",
            bytes(&format!("GET / HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n")),
        ),
        (
            "obs-fold smuggling a second Host",
            bytes(&format!(
                "GET / HTTP/1.1\r\n{host} Host: other.example.com\r\n\r\n"
            )),
        ),
        (
            "header line without a colon",
            bytes(&format!("GET / HTTP/1.1\r\n{host}NoColonHere\r\n\r\n")),
        ),
        ("HTTP/1.1 without Host", bytes("GET / HTTP/1.1\r\n\r\n")),
        (
            "two Host headers",
            bytes(&format!(
                "GET / HTTP/1.1\r\n{host}Host: other.example.com\r\n\r\n"
            )),
        ),
        (
            "Host with a port that is not a number",
            bytes("GET / HTTP/1.1\r\nHost: web.example.com:http\r\n\r\n"),
        ),
        (
            "authority-form target in a GET",
            bytes(&format!("GET web.example.com:80 HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "asterisk-form target in a GET",
            bytes(&format!("GET * HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "absolute-form with no host",
            bytes(&format!("GET http:// HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "absolute-form without a scheme",
            bytes(&format!("GET ://web.example.com/ HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "absolute-form with another scheme",
            bytes(&format!(
                "GET ftp://web.example.com/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
        (
            "absolute-form with a broken IPv6 host",
            bytes(&format!("GET http://[::1/ HTTP/1.1\r\n{host}\r\n")),
        ),
        (
            "absolute-form with two ports",
            bytes(&format!(
                "GET http://web.example.com:80:80/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
        (
            "absolute-form with a port out of range",
            bytes(&format!(
                "GET http://web.example.com:99999/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
        (
            "absolute-form with a letter in the port",
            bytes(&format!(
                "GET http://web.example.com:8o/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
        (
            "absolute-form with userinfo",
            bytes(&format!(
                "GET http://admin@web.example.com/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
        (
            "absolute-form with a space in the host",
            bytes(&format!(
                "GET http://web example.com/ HTTP/1.1\r\n{host}\r\n"
            )),
        ),
    ];
    for (case, request) in &cases {
        let reply = raw::exchange(addr, request, CLOSE_WITHIN).await;
        assert_refused(&reply, 400, case);
    }
    for value in [
        "abc",
        "-1",
        "+5",
        "1.5",
        "0x10",
        "5 5",
        "99999999999999999999999",
        "",
    ] {
        let request = bytes(&format!(
            "POST / HTTP/1.1\r\n{host}Content-Length: {value}\r\n\r\nhello"
        ));
        let reply = raw::exchange(addr, &request, CLOSE_WITHIN).await;
        assert_refused(&reply, 400, &format!("Content-Length: {value:?}"));
    }
    assert_eq!(
        backend.requests(),
        0,
        "a malformed request reached the backend"
    );

    // A bare LF may end a line (RFC 9112 section 2.2), but must never travel inside a value.
    let bare_lf = format!("GET /lf HTTP/1.1\r\n{host}X-A: a\nX-B: b\r\n\r\n");
    let reply = raw::exchange(addr, bare_lf.as_bytes(), CLOSE_WITHIN).await;
    if reply.statuses() == [200] {
        let text = reply.text();
        let echo: serde_json::Value =
            serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
        assert_eq!(echo["headers"]["x-a"], "a", "{text}");
        assert_eq!(echo["headers"]["x-b"], "b", "{text}");
    } else {
        assert_refused(&reply, 400, "bare LF");
    }
    let before = backend.requests();

    assert_served_http1(&gateway, "web-1").await;
    assert_eq!(backend.requests(), before + 1);
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "malformed requests");
    assert_healthy(&gateway);
}

// ---- Oversized headers ----

/// Sends `block` as one request on a new raw h2c connection and says whether the gateway
/// refused it (431, a reset stream, GOAWAY or a close).
async fn h2_refuses(addr: SocketAddr, block: &[u8], case: &str) {
    let mut h2 = H2::connect(addr, &[]).await;
    h2.send(&raw::headers_frames(1, block, true)).await;
    let summary = h2.outcome(&[1], CLOSE_WITHIN).await;
    let status = summary.statuses.get(&1).copied().flatten();
    assert!(
        summary.refused(1) && status.is_none_or(|s| s == 431),
        "{case}: HTTP/2 request not refused: {summary:?}"
    );
}

/// A header block for `headers` on a GET of `/`.
fn h2_block(headers: &[(String, String)]) -> Vec<u8> {
    let fields: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    raw::request_block("GET", HOST, "/", &fields)
}

async fn assert_header_limits(gateway: &Gateway, backend: &Backend, limit: usize) {
    let addr = gateway.addr(80);
    let rss = rss_kib(gateway);
    let under = limit - 2048;

    // HTTP/1.1: just under the limit passes; over it, 431.
    let reply = raw::exchange(
        addr,
        &get_with_headers("/", &one_header(under)),
        CLOSE_WITHIN,
    )
    .await;
    assert_eq!(
        reply.statuses(),
        [200],
        "{under}-byte header under a {limit}-byte limit"
    );
    let served = backend.requests();
    assert_eq!(served, 1);
    let over: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "one header a quarter over the limit",
            one_header(limit + limit / 4),
        ),
        ("one header four times the limit", one_header(limit * 4)),
        (
            "many headers over the limit in bytes",
            many_headers(90, limit / 64),
        ),
        ("more headers than allowed", many_headers(200, 8)),
    ];
    for (case, headers) in &over {
        let reply = raw::exchange(addr, &get_with_headers("/", headers), CLOSE_WITHIN).await;
        assert_refused(&reply, 431, case);
    }
    assert_eq!(
        backend.requests(),
        served,
        "an oversized HTTP/1.1 request was forwarded"
    );

    // HTTP/2: the same; the header list is counted as RFC 9113 does (32 octets a field).
    let mut h2 = Connection::h2c(addr).await;
    let big = "a".repeat(under);
    let response = h2.get_with(HOST, "/under", &[("x-big", &big)]).await;
    assert_eq!(response.status, 200, "{under}-byte header over HTTP/2");
    drop(h2);
    let served = backend.requests();
    for (case, headers) in &over[..3] {
        h2_refuses(addr, &h2_block(headers), case).await;
    }
    h2_refuses(
        addr,
        &h2_block(&many_headers(limit / 40, 8)),
        "many small headers over the limit",
    )
    .await;
    assert_eq!(
        backend.requests(),
        served,
        "an oversized HTTP/2 request was forwarded"
    );

    assert_served_http1(gateway, "web-1").await;
    assert_served_h2c(gateway, "web-1").await;
    assert_connections_released(gateway).await;
    assert_rss_bounded(gateway, rss, "oversized headers");
    assert_healthy(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_under_a_configured_limit() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &["--max-request-header-bytes", "16384"]);
    assert_header_limits(&gateway, &backend, 16384).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_under_the_default_limit() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &[]);
    assert_header_limits(&gateway, &backend, 64 * 1024).await;
}

#[test]
fn a_header_limit_below_what_http1_can_enforce_is_refused_at_start() {
    let dir = common::TempDir::new("abuse-limit");
    let run = common::run(common::strait().args(["run", "--role", "ingress"]).args([
        "--config".as_ref(),
        dir.path().as_os_str(),
        "--max-request-header-bytes".as_ref(),
        "4096".as_ref(),
        "--data".as_ref(),
        dir.path().join("data").as_os_str(),
    ]));
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("8192"), "{}", run.stderr);
}

// ---- Request smuggling ----

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web.example.com\r\n\r\n";

fn smuggled_paths(recorder: &Recorder) -> Vec<String> {
    recorder
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("smuggled"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_smuggling_is_refused_and_the_hidden_request_never_reaches_the_backend() {
    let recorder = Recorder::start(200).await;
    let (gateway, _ca) = start(recorder.addr, &[]);
    let addr = gateway.addr(80);
    let host = format!("Host: {HOST}\r\n");
    let rss = rss_kib(&gateway);

    // Framing the gateway must refuse outright.
    let refused: Vec<(&str, String)> = vec![
        (
            "two different Content-Length headers",
            format!(
                "POST /cl-cl HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "a Content-Length list that disagrees",
            format!(
                "POST /cl-list HTTP/1.1\r\n{host}Content-Length: 0, {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "POST /xchunked HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "POST /chunked-identity HTTP/1.1\r\n{host}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "chunked, then identity in a second header",
            format!(
                "POST /te-te HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!(
                "POST /te-space HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /te-10 HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "a chunk size that overflows",
            format!(
                "POST /overflow HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "a chunk size that is not hexadecimal",
            format!(
                "POST /not-hex HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ];
    for (case, request) in &refused {
        let reply = raw::exchange(addr, request.as_bytes(), CLOSE_WITHIN).await;
        assert_refused(&reply, 400, case);
    }

    // Content-Length with Transfer-Encoding: chunked wins (RFC 9112 section 6.3), and the
    // connection must close after the response, so that the bytes after the chunked body are
    // never read as a request.
    let ambiguous = [
        format!(
            "POST /cl-te HTTP/1.1\r\n{host}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
            SMUGGLED.len() + 5
        ),
        format!(
            "POST /te-cl HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
    ];
    for request in &ambiguous {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let reply = raw::read_to_close(&mut stream, CLOSE_WITHIN).await;
        assert!(
            reply.closed,
            "the connection stayed open: {:?}",
            reply.text()
        );
        let statuses = reply.statuses();
        assert!(
            statuses == [400] || statuses == [200] || statuses.is_empty(),
            "one response at most: {:?}",
            reply.text()
        );
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(smuggled_paths(&recorder), Vec::<String>::new());
    let seen: Vec<String> = recorder.requests().into_iter().map(|r| r.path).collect();
    assert!(
        seen.iter()
            .all(|p| ["/cl-te", "/te-cl", "/overflow", "/not-hex"].contains(&p.as_str())),
        "refused framing reached the backend: {seen:?}"
    );
    let response = client::get(addr, HOST, "/after").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        recorder.requests().last().map(|r| r.path.clone()),
        Some("/after".to_owned())
    );
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "HTTP/1.1 smuggling");
    assert_healthy(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_body_is_the_clients_fault_not_the_endpoints() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &[]);
    let outlier = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
"#;
    gateway.apply("outlier.yaml", outlier);
    let addr = gateway.addr(80);
    let host = format!("Host: {HOST}\r\n");
    let broken = [
        "ZZ\r\nx\r\n0\r\n\r\n",
        "FFFFFFFFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n",
        "5\r\nhello\r\n-1\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ];
    for _ in 0..2 {
        for body in broken {
            let request =
                format!("POST /upload HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n{body}");
            let reply = raw::exchange(addr, request.as_bytes(), CLOSE_WITHIN).await;
            assert_refused(&reply, 400, &format!("chunked body {body:?}"));
        }
    }
    let dump = gateway.config_dump();
    let endpoints = &dump["endpoints"]["outbound|8080||web.default.svc.cluster.local"];
    assert_eq!(endpoints[0]["health"], "HEALTHY", "{endpoints}");
    assert_served_http1(&gateway, "web-1").await;
    assert_connections_released(&gateway).await;
    assert_healthy(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_that_would_smuggle_over_http1_are_reset() {
    let recorder = Recorder::start(200).await;
    let (gateway, _ca) = start(recorder.addr, &[]);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);
    let smuggled = SMUGGLED.as_bytes();
    let injected = format!("a\r\n\r\n{SMUGGLED}");
    let chunked = [b"0\r\n\r\n".as_slice(), smuggled].concat();
    let in_path = format!("/path HTTP/1.1\r\nHost: {HOST}\r\n\r\n{SMUGGLED}");
    type Fields = Vec<(&'static [u8], Vec<u8>)>;
    // (case, path, extra headers, DATA payload)
    let cases: Vec<(&str, &str, Fields, Option<&[u8]>)> = vec![
        (
            "transfer-encoding: chunked",
            "/te",
            vec![(b"transfer-encoding", b"chunked".to_vec())],
            Some(chunked.as_slice()),
        ),
        (
            "content-length 0 with a body",
            "/cl-short",
            vec![(b"content-length", b"0".to_vec())],
            Some(smuggled),
        ),
        (
            "content-length longer than the body",
            "/cl-long",
            vec![(b"content-length", b"1000".to_vec())],
            Some(smuggled),
        ),
        (
            "CR LF in a header value",
            "/crlf-value",
            vec![(b"x-evil", injected.clone().into_bytes())],
            None,
        ),
        (
            "bare LF in a header value",
            "/lf-value",
            vec![(b"x-evil", b"a\nhost: other.example.com".to_vec())],
            None,
        ),
        (
            "NUL in a header value",
            "/nul-value",
            vec![(b"x-evil", b"a\0b".to_vec())],
            None,
        ),
        (
            "CR LF in a header name",
            "/crlf-name",
            vec![(b"x-evil\r\nhost", b"other.example.com".to_vec())],
            None,
        ),
        (
            "an uppercase header name",
            "/upper",
            vec![(b"X-Upper", b"1".to_vec())],
            None,
        ),
        (
            "connection",
            "/connection",
            vec![(b"connection", b"keep-alive".to_vec())],
            None,
        ),
        (
            "keep-alive",
            "/keep-alive",
            vec![(b"keep-alive", b"timeout=5".to_vec())],
            None,
        ),
        (
            "proxy-connection",
            "/proxy-connection",
            vec![(b"proxy-connection", b"keep-alive".to_vec())],
            None,
        ),
        (
            "upgrade",
            "/upgrade",
            vec![(b"upgrade", b"websocket".to_vec())],
            None,
        ),
        (
            "te other than trailers",
            "/te-gzip",
            vec![(b"te", b"gzip".to_vec())],
            None,
        ),
        ("CR LF in :path", in_path.as_str(), vec![], None),
    ];
    for (case, path, extra, data) in &cases {
        let fields: Vec<(&[u8], &[u8])> = extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let method = if data.is_some() { "POST" } else { "GET" };
        let block = raw::request_block(method, HOST, path, &fields);
        let mut h2 = H2::connect(addr, &[]).await;
        let mut out = raw::headers_frames(1, &block, data.is_none());
        if let Some(data) = data {
            out.extend_from_slice(&raw::frame(raw::DATA, raw::END_STREAM, 1, data));
        }
        h2.send(&out).await;
        let summary = h2.outcome(&[1], CLOSE_WITHIN).await;
        assert!(summary.refused(1), "{case}: not refused: {summary:?}");
        let status = summary.statuses.get(&1).copied().flatten();
        assert!(
            !status.is_some_and(|s| (200..300).contains(&s)) || summary.resets.contains_key(&1),
            "{case}: answered {status:?}: {summary:?}"
        );
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(smuggled_paths(&recorder), Vec::<String>::new());
    let seen: Vec<String> = recorder.requests().into_iter().map(|r| r.path).collect();
    // A request whose body turns out to disagree with its content-length may have been
    // forwarded before the body arrived; nothing else may reach the backend, and nothing twice.
    assert!(
        seen.iter().all(|p| p == "/cl-short" || p == "/cl-long"),
        "a malformed HTTP/2 request reached the backend: {seen:?}"
    );
    assert!(seen.len() <= 2, "{seen:?}");

    let response = Connection::h2c(addr).await.get(HOST, "/after-h2").await;
    assert_eq!(response.status, 200);
    let last = recorder.requests().last().map(|r| r.path.clone());
    assert_eq!(last.as_deref(), Some("/after-h2"));
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "HTTP/2 smuggling");
    assert_healthy(&gateway);
}

// ---- Invalid TLS ----

/// The first flight of a real TLS client: its ClientHello records.
fn client_hello(ca: &Ca) -> Vec<u8> {
    let config = pki::client_config(&ca.pem, &["h2", "http/1.1"], None);
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut out).unwrap();
    }
    out
}

/// `len` deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Writes `bytes` to the TLS port (then half-closes when `half_close`) and expects the
/// connection closed with no HTTP response, well within `CLOSE_WITHIN`.
async fn assert_tls_closed(addr: SocketAddr, bytes: &[u8], half_close: bool, case: &str) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let reply = raw::read_to_close(&mut stream, CLOSE_WITHIN).await;
    assert!(reply.closed, "{case}: the connection stayed open");
    assert!(
        !reply.text().contains("HTTP/1.1 2"),
        "{case}: served: {:?}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tls_is_closed_and_tls_clients_are_still_served() {
    let backend = Backend::start("web-1").await;
    let (gateway, ca) = start(backend.addr, &["--client-hello-timeout", "2s"]);
    let addr = gateway.addr(443);
    let rss = rss_kib(&gateway);
    let hello = client_hello(&ca);
    assert_eq!(hello[0], 22, "a TLS handshake record");

    let plaintext = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut handshake_noise = vec![22, 3, 1, 0x02, 0x00];
    handshake_noise.extend(noise(2, 512));
    let mut overlong = vec![22, 3, 1, 0x40, 0x01];
    overlong.extend(noise(3, 1024));
    let mut endless = Vec::new();
    for _ in 0..3 {
        endless.extend_from_slice(&[22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff]);
        endless.extend(vec![0u8; 16384 - 4]);
    }
    let half = hello[..hello.len() / 2].to_vec();
    // (case, bytes, half-close after them); those that go silent wait for the 2 s timeout, so
    // they all run at once.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plaintext HTTP", plaintext.into_bytes(), false),
        ("random bytes", noise(1, 4096), false),
        ("a handshake record of noise", handshake_noise, false),
        ("a record over 16 KiB", overlong, false),
        ("a ClientHello that never ends", endless, false),
        ("a truncated ClientHello, then EOF", half.clone(), true),
        ("a truncated ClientHello, then silence", half, false),
        ("three bytes, then silence", hello[..3].to_vec(), false),
        ("a ClientHello, then silence", hello.clone(), false),
        ("a connection that sends nothing", Vec::new(), false),
    ];
    let attempts = cases.into_iter().map(|(case, bytes, half_close)| {
        tokio::spawn(async move { assert_tls_closed(addr, &bytes, half_close, case).await })
    });
    for attempt in attempts.collect::<Vec<_>>() {
        attempt.await.unwrap();
    }
    assert_eq!(backend.requests(), 0);

    for alpn in [&["h2"][..], &["http/1.1"][..]] {
        let config = pki::client_config(&ca.pem, alpn, None);
        let mut tls = Connection::tls(addr, HOST, config).await;
        let response = tls.get(HOST, "/after-tls").await;
        assert_eq!(response.status, 200, "{alpn:?}");
        assert_eq!(response.backend(), Some("web-1"));
    }
    assert_eq!(backend.requests(), 2);
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "invalid TLS");
    assert_healthy(&gateway);
}

// ---- Slow and idle clients ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_by_the_header_read_timeout() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &["--header-read-timeout", "2s"]);
    let addr = gateway.addr(80);

    // Headers one byte every 250 ms would take 12 s; the gateway stops listening after 2 s.
    let trickled = tokio::spawn(async move {
        let slow = format!("GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: 1\r\n\r\n");
        let pause = Duration::from_millis(250);
        let (reply, written) = raw::trickle(addr, slow.as_bytes(), pause, CLOSE_WITHIN).await;
        assert!(
            reply.closed,
            "the slow client was not cut off: {:?}",
            reply.text()
        );
        assert!(
            written < slow.len(),
            "every byte was taken: {:?}",
            reply.text()
        );
        let statuses = reply.statuses();
        assert!(
            statuses.is_empty() || statuses == [408],
            "{:?}",
            reply.text()
        );
    });

    // A connection that sends nothing at all, one that stops inside the HTTP/2 preface, one
    // that stops after a byte, and one that opens HTTP/2 but never asks for anything.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", Vec::new()),
        ("part of the HTTP/2 preface", raw::PREFACE[..10].to_vec()),
        ("one byte of a request line", b"G".to_vec()),
        (
            "an HTTP/2 preface and SETTINGS",
            [raw::PREFACE, &raw::settings(&[])].concat(),
        ),
    ];
    let idle = cases.into_iter().map(|(case, request)| {
        tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(&request).await.unwrap();
            let reply = raw::read_to_close(&mut stream, CLOSE_WITHIN).await;
            assert!(reply.closed, "{case}: the idle connection stayed open");
            assert!(
                !reply.text().contains("HTTP/1.1 2"),
                "{case}: {:?}",
                reply.text()
            );
        })
    });
    let idle: Vec<_> = idle.collect();

    // A keep-alive connection idle after its first response is closed too.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /first HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let first = raw::read_reply(&mut stream, CLOSE_WITHIN, true).await;
    assert_eq!(first.statuses(), [200]);
    let rest = raw::read_to_close(&mut stream, CLOSE_WITHIN).await;
    assert!(rest.closed, "the idle keep-alive connection stayed open");

    trickled.await.unwrap();
    for case in idle {
        case.await.unwrap();
    }
    assert_eq!(
        backend.requests(),
        1,
        "only the complete request was forwarded"
    );
    assert_served_http1(&gateway, "web-1").await;
    assert_served_h2c(&gateway, "web-1").await;
    assert_connections_released(&gateway).await;
    assert_healthy(&gateway);
}

// ---- HTTP/2 floods ----

/// Requests `/` on a normal h2c connection while an attack goes on.
async fn assert_served_during(gateway: &Gateway, backend: &str) {
    let mut h2 = Connection::h2c(gateway.addr(80)).await;
    for _ in 0..5 {
        let response = h2.get(HOST, "/during").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.backend(), Some(backend));
    }
}

/// Runs `frames` at the gateway as fast as it takes them, while reading what it answers, until
/// it goes away or closes the connection, or `limit` passes. The flood does not wait for the
/// reader: the gateway must cope with a peer that reads nothing.
async fn flood(
    addr: SocketAddr,
    settings: &[(u16, u32)],
    prologue: Vec<u8>,
    mut batch: impl FnMut(usize) -> Option<Vec<u8>> + Send + 'static,
    read: bool,
    limit: Duration,
) -> (raw::Summary, usize) {
    let H2 {
        mut reader,
        mut writer,
    } = H2::connect(addr, settings).await;
    let writing = tokio::spawn(async move {
        let mut sent = 0usize;
        if writer.write_all(&prologue).await.is_err() {
            return (sent, writer);
        }
        let mut i = 0;
        while let Some(bytes) = batch(i) {
            i += 1;
            match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&bytes)).await {
                Ok(Ok(())) => sent += 1,
                // Refused (closed) or stalled (the gateway stopped reading): the flood is over.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        (sent, writer)
    });
    let summary = if read {
        reader.summarize(limit, &[], None).await
    } else {
        // Not reading is part of the attack; wait for the writer, then read what is left.
        let _ = tokio::time::timeout(limit, async {
            while !writing.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        reader.summarize(limit, &[], None).await
    };
    writing.abort();
    let sent = writing.await.map(|(sent, _)| sent).unwrap_or(0);
    (summary, sent)
}

fn assert_went_away(summary: &raw::Summary, case: &str) {
    assert!(
        matches!(summary.end, End::GoAway { .. } | End::Closed),
        "{case}: the connection was neither sent GOAWAY nor closed: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_ends_in_goaway_and_normal_clients_are_served() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &[]);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);
    let block = raw::request_block("GET", HOST, "/reset", &[]);
    let attack = tokio::spawn(flood(
        addr,
        &[],
        Vec::new(),
        move |i| {
            // 100 requests a write, each reset at once; 50,000 in all.
            (i < 500).then(|| {
                let mut out = Vec::new();
                for k in 0..100u32 {
                    let stream = 1 + 2 * (i as u32 * 100 + k);
                    out.extend(raw::headers_frames(stream, &block, true));
                    out.extend(raw::rst_stream(stream, raw::CANCEL));
                }
                out
            })
        },
        true,
        Duration::from_secs(15),
    ));
    assert_served_during(&gateway, "web-1").await;
    let (summary, sent) = attack.await.unwrap();
    assert_went_away(&summary, "rapid reset");
    assert!(
        sent < 500,
        "all 50,000 reset requests were taken: {summary:?}"
    );
    assert_served_h2c(&gateway, "web-1").await;
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "rapid reset");
    assert_healthy(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_continuation_floods_end_in_goaway() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, &[]);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);
    let block = raw::request_block("GET", HOST, "/continuation", &[]);
    // Many tiny CONTINUATION frames, and CONTINUATION frames full of header bytes.
    let field = raw::header_block(&[(b"x-filler", "f".repeat(16000).as_bytes())]);
    for (case, fragment) in [("tiny", vec![0u8; 0]), ("full", field)] {
        let first = raw::frame(raw::HEADERS, 0, 1, &block);
        let during = tokio::spawn({
            let fragment = fragment.clone();
            flood(
                addr,
                &[],
                first,
                move |i| {
                    (i < 20_000).then(|| {
                        let one = raw::frame(raw::CONTINUATION, 0, 1, &fragment);
                        one.repeat(if fragment.is_empty() { 100 } else { 1 })
                    })
                },
                true,
                Duration::from_secs(15),
            )
        });
        assert_served_during(&gateway, "web-1").await;
        let (summary, _) = during.await.unwrap();
        assert_went_away(&summary, case);
        assert!(
            matches!(summary.end, End::GoAway { code } if code != 0) || summary.end == End::Closed,
            "{case}: {summary:?}"
        );
    }
    assert_eq!(
        backend.requests(),
        10,
        "only the normal requests were forwarded"
    );
    assert_served_h2c(&gateway, "web-1").await;
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "CONTINUATION flood");
    assert_healthy(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_and_ping_floods_from_a_peer_that_reads_nothing_are_cut_off() {
    let backend = Backend::start("web-1").await;
    let (gateway, _ca) = start(backend.addr, KEEPALIVE);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);
    let settings = raw::settings(&[(raw::SETTINGS_INITIAL_WINDOW_SIZE, 65535)]);
    let ping = raw::ping(*b"flooding");
    for (case, frame) in [("SETTINGS", settings), ("PING", ping)] {
        let during = tokio::spawn(flood(
            addr,
            &[],
            Vec::new(),
            // 1000 frames a write, up to 10,000,000 frames, and never a byte read.
            move |i| (i < 10_000).then(|| frame.repeat(1000)),
            false,
            Duration::from_secs(15),
        ));
        assert_served_during(&gateway, "web-1").await;
        let (summary, sent) = during.await.unwrap();
        assert_went_away(&summary, case);
        assert!(sent < 10_000, "{case}: the whole flood was taken in");
        assert_rss_bounded(&gateway, rss, case);
    }
    assert_served_h2c(&gateway, "web-1").await;
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "SETTINGS and PING floods");
    assert_healthy(&gateway);
}

/// A backend whose answer to `/endless` is a body with no end, produced only as fast as it is
/// read; any other path gets a short answer. Counts the endless bodies alive.
async fn endless_backend() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    static CHUNK: [u8; 65536] = [b'x'; 65536];
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alive = Arc::new(AtomicUsize::new(0));
    let counted = alive.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let alive = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let alive = alive.clone();
                    async move {
                        let body = if request.uri().path() == "/endless" {
                            alive.fetch_add(1, Ordering::Relaxed);
                            let guard = Alive(alive);
                            let chunks = futures_util::stream::unfold(guard, |guard| async move {
                                let frame = Frame::data(Bytes::from_static(&CHUNK));
                                Some((Ok::<_, Infallible>(frame), guard))
                            });
                            Either::Left(StreamBody::new(chunks))
                        } else {
                            Either::Right(Full::new(Bytes::from_static(b"ok")))
                        };
                        let mut response = http::Response::new(body);
                        response
                            .headers_mut()
                            .insert("x-backend", http::HeaderValue::from_static("endless"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, alive, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_zero_window_stall_holds_no_memory_and_lets_go_of_the_upstream() {
    let (backend, alive, _task) = endless_backend().await;
    let (gateway, _ca) = start(backend, KEEPALIVE);
    let addr = gateway.addr(80);
    let rss = rss_kib(&gateway);

    // A client that opens no window at all and asks for 100 endless responses.
    let mut h2 = H2::connect(addr, &[(raw::SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let block = raw::request_block("GET", HOST, "/endless", &[]);
    let mut out = Vec::new();
    for k in 0..100u32 {
        out.extend(raw::headers_frames(1 + 2 * k, &block, true));
    }
    assert!(h2.send(&out).await);
    let summary = h2.outcome(&[], Duration::from_millis(1500)).await;
    assert_eq!(summary.count(raw::DATA), 0, "DATA sent into a zero window");
    assert!(
        alive.load(Ordering::Relaxed) > 0,
        "no endless response was started: {summary:?}"
    );
    assert_rss_bounded(&gateway, rss, "zero-window stall");

    // Others are served meanwhile.
    let mut normal = Connection::h2c(addr).await;
    for _ in 0..5 {
        let response = normal.get(HOST, "/short").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok");
    }
    drop(normal);

    // The stalled client answers no PING: the gateway lets it go, and the upstream with it.
    let end = h2.outcome(&[], CLOSE_WITHIN).await;
    assert_went_away(&end, "zero-window stall");
    drop(h2);
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    while alive.load(Ordering::Relaxed) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} upstream responses are still being held",
            alive.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_connections_released(&gateway).await;
    assert_rss_bounded(&gateway, rss, "zero-window stall");
    assert_healthy(&gateway);
}
