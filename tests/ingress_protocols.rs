//! The ingress gateway's protocols end to end, each against real backends and real clients:
//! HTTP/1.1 keep-alive, chunked bodies, `Expect: 100-continue`, WebSocket upgrades (and h2c
//! upgrades, which are not forwarded); HTTP/2 by ALPN and h2c, and protocol changes between
//! client and upstream; gRPC calls of every shape with their trailers, and the proxy's own errors
//! as gRPC statuses; TCP routes with half-close, weights and connect failures; TLS passthrough by
//! SNI (also sharing a port with termination, and with a ClientHello in many segments); TLS
//! termination (credential layouts, certificates by SNI, client certificates, versions, cipher
//! suites, revocation, rotation, Kubernetes Secret mounts); `httpsRedirect`; and TLS origination
//! towards endpoints (SIMPLE and MUTUAL, from files or credentials).

// Helpers of a test may panic as the tests themselves do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::TempDir;
use common::backend::Backend;
use common::client::{self, Connection};
use common::gateway::Gateway;
use common::grpc::{self, Echo, EchoClient, GrpcBackend};
use common::pki::{self, Ca, Issued};
use common::tcp::{self, ClientOptions, RevokingCa, TlsHttp1};

// ---------------------------------------------------------------------------------------------
// Configuration helpers

/// A ServiceEntry for `host` with one port (`name: p`) and STATIC endpoints on loopback.
fn service_entry(name: &str, host: &str, port: u32, protocol: &str, endpoints: &[u16]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, ports: {{p: {p}}}}}"))
        .collect();
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  ports: [{{number: {port}, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{endpoints}]
"#,
        endpoints = endpoints.join(", ")
    )
}

/// A VirtualService for `hosts` on Gateway `istio-system/GATEWAY` sending every request to
/// `destination:port`.
fn http_route(name: &str, hosts: &[&str], gateway: &str, destination: &str, port: u32) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{hosts}]
  gateways: [istio-system/{gateway}]
  http:
  - route:
    - destination: {{host: {destination}, port: {{number: {port}}}}}
"#,
        hosts = hosts.join(", ")
    )
}

/// A Gateway `istio-system/NAME` with the servers given as YAML list items.
fn gateway(name: &str, servers: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}
"#
    )
}

/// The plain HTTP server on port 80 for every host.
const HTTP_SERVER: &str = r#"
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

/// A gateway on port 80 in front of `backend` for `web.example.com`.
fn web_gateway(backend: SocketAddr) -> Gateway {
    let config = gateway("web", HTTP_SERVER)
        + &http_route(
            "web",
            &["web.example.com"],
            "web",
            "web.default.svc.cluster.local",
            8080,
        )
        + &service_entry(
            "web",
            "web.default.svc.cluster.local",
            8080,
            "HTTP",
            &[backend.port()],
        );
    Gateway::builder()
        .config("web.yaml", &config)
        .server_port(80)
        .start()
}

/// Fields of a text access log line counted back from `reason=`: 0 is the route, 1 the SNI,
/// 2 the downstream remote address, 3 the local address, 4 the upstream cluster.
fn field_from_end(line: &str, back: usize) -> &str {
    let head = line.split(" reason=").next().unwrap_or(line);
    let fields: Vec<&str> = head.split_whitespace().collect();
    fields[fields.len() - 1 - back]
}

/// Polls `check` until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_carries_many_requests_on_one_connection() {
    let backend = Backend::start("web-1").await;
    let gateway = web_gateway(backend.addr);
    let mut connection = Connection::http1(gateway.addr(80)).await;
    for i in 0..50 {
        let response = connection
            .get("web.example.com", &format!("/keep/{i}"))
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["path"], format!("/keep/{i}"));
        assert_eq!(response.version, Version::HTTP_11);
        assert_ne!(response.header("connection"), Some("close"));
    }
    assert_eq!(backend.requests(), 50);
    // Every request was served on the one downstream connection.
    gateway.access_log_line(|l| l.contains("/keep/49"));
    let log = gateway.access_log();
    let peers: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("/keep/"))
        .map(|l| field_from_end(l, 2))
        .collect();
    assert_eq!(
        log.lines().filter(|l| l.contains("/keep/")).count(),
        50,
        "{log}"
    );
    assert_eq!(peers.len(), 1, "{log}");
    // Upstream connections are pooled too.
    let upstream = backend
        .state
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        upstream <= 25,
        "{upstream} upstream connections for 50 sequential requests"
    );
}

type StreamingBody = BoxBody<Bytes, Infallible>;

/// A request body of `size` bytes of the test pattern, sent in 64 KiB chunks with no length.
fn chunked_body(size: usize) -> StreamingBody {
    const CHUNK: usize = 64 * 1024;
    let chunks = futures_util::stream::iter((0..size).step_by(CHUNK).map(move |start| {
        let end = (start + CHUNK).min(size);
        let bytes: Vec<u8> = (start..end).map(tcp::pattern_byte).collect();
        Ok::<_, Infallible>(Frame::data(Bytes::from(bytes)))
    }));
    BodyExt::boxed(StreamBody::new(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_chunked_request_and_response_bodies_stream_through() {
    let echo = Backend::start("echo").await;
    let streamer = tcp::chunked_backend("streamer").await;
    let config = gateway("web", HTTP_SERVER)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/web]
  http:
  - match: [{uri: {prefix: /stream}}]
    route: [{destination: {host: streamer.default.svc.cluster.local, port: {number: 8080}}}]
  - route: [{destination: {host: echo.default.svc.cluster.local, port: {number: 8080}}}]
"# + &service_entry(
        "echo",
        "echo.default.svc.cluster.local",
        8080,
        "HTTP",
        &[echo.addr.port()],
    ) + &service_entry(
        "streamer",
        "streamer.default.svc.cluster.local",
        8080,
        "HTTP",
        &[streamer.addr.port()],
    );
    let gateway = Gateway::builder()
        .config("web.yaml", &config)
        .server_port(80)
        .start();

    let stream = TcpStream::connect(gateway.addr(80)).await.unwrap();
    let (mut sender, driver) =
        hyper::client::conn::http1::handshake::<_, StreamingBody>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(driver);

    // A 5 MB chunked request body reaches the backend whole, still chunked (not buffered).
    let size = 5 * 1024 * 1024 + 17;
    let request = Request::post("/upload")
        .header("host", "web.example.com")
        .body(chunked_body(size))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["body_bytes"], size, "{echoed}");
    assert_eq!(
        echoed["headers"]["transfer-encoding"], "chunked",
        "{echoed}"
    );
    assert!(
        echoed["headers"].get("content-length").is_none(),
        "{echoed}"
    );

    // A 5 MB chunked response arrives chunked and intact, on the same connection, after a
    // chunked request body to the same backend.
    sender.ready().await.unwrap();
    let request = Request::post("/stream")
        .header("host", "web.example.com")
        .header("x-test-stream-bytes", size.to_string())
        .body(chunked_body(300_000))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend"], "streamer");
    assert_eq!(response.headers()["x-request-bytes"], "300000");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers().get("content-length").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), size);
    let wrong = body
        .iter()
        .enumerate()
        .find(|(i, b)| **b != tcp::pattern_byte(*i));
    assert!(wrong.is_none(), "the body differs at byte {:?}", wrong);

    let line = gateway.access_log_line(|l| l.contains("\"POST /stream HTTP/1.1\""));
    assert!(line.contains(" 200 - 300000 "), "{line}");
}

/// Reads from `stream` until the end of an HTTP head (`\r\n\r\n`), within 5 s.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert!(
                n > 0,
                "the connection closed after {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no complete response head in 5 s; read so far: {:?}",
            String::from_utf8_lossy(&head)
        )
    });
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_expect_100_continue_gets_100_before_the_body_is_sent() {
    let backend = Backend::start("web-1").await;
    let gateway = web_gateway(backend.addr);
    let mut stream = TcpStream::connect(gateway.addr(80)).await.unwrap();
    let size = 200_000;
    stream
        .write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: {size}\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The client waits for the interim response before it sends a byte of the body.
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    assert_eq!(backend.requests(), 0);
    stream.write_all(&vec![b'b'; size]).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["body_bytes"], size, "{echoed}");
    assert_eq!(echoed["method"], "POST");

    // When the gateway answers by itself (no virtual host), it does not ask for the body.
    let mut stream = TcpStream::connect(gateway.addr(80)).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: unknown.example.com\r\nContent-Length: 1000\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(backend.requests(), 1);
}

/// The next WebSocket message, within 5 s.
async fn next_message(socket: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Message {
    tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a message within 5 s")
        .expect("the socket is open")
        .expect("a valid message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_carries_messages_both_ways() {
    let server = tcp::websocket_echo("ws-1").await;
    let config = gateway("web", HTTP_SERVER)
        + &http_route(
            "ws",
            &["ws.example.com"],
            "web",
            "ws.default.svc.cluster.local",
            8080,
        )
        + &service_entry(
            "ws",
            "ws.default.svc.cluster.local",
            8080,
            "HTTP",
            &[server.addr.port()],
        );
    let gateway = Gateway::builder()
        .config("ws.yaml", &config)
        .server_port(80)
        .start();
    let stream = TcpStream::connect(gateway.addr(80)).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://ws.example.com/chat", stream)
            .await
            .expect("the WebSocket handshake through the gateway");
    assert_eq!(response.status(), 101);

    // The server speaks first; then each message is answered.
    assert_eq!(
        next_message(&mut socket).await,
        Message::text("hello from ws-1"),
        "the server's greeting"
    );
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(next_message(&mut socket).await, Message::text("ws-1: ping"));
    let blob: Vec<u8> = (0..300_000).map(tcp::pattern_byte).collect();
    socket.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next_message(&mut socket).await, Message::binary(blob));
    for i in 0..20 {
        socket.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            next_message(&mut socket).await,
            Message::text(format!("ws-1: m{i}"))
        );
    }
    socket.close(None).await.unwrap();
    let line = gateway.access_log_line(|l| l.contains("\"GET /chat HTTP/1.1\""));
    assert!(line.contains(" 101 "), "{line}");
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `stream`: head and body.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("the body within 5 s")
        .unwrap();
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_request_is_served_as_http1_and_the_upgrade_is_not_forwarded() {
    // An upstream that accepted `Upgrade: h2c` would take every later request on the
    // connection past the gateway's routing, so the gateway strips it, as Envoy does.
    let backend = Backend::start("web-1").await;
    let gateway = web_gateway(backend.addr);
    let mut stream = TcpStream::connect(gateway.addr(80)).await.unwrap();
    stream
        .write_all(
            b"GET /h2c HTTP/1.1\r\nHost: web.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let headers = &echoed["headers"];
    assert!(headers.get("upgrade").is_none(), "{echoed}");
    assert!(headers.get("http2-settings").is_none(), "{echoed}");
    assert_ne!(headers["connection"], "upgrade", "{echoed}");
    // The connection still speaks HTTP/1.1.
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["path"], "/after");
}

// ---------------------------------------------------------------------------------------------
// HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_over_tls_and_h2c_with_prior_knowledge() {
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("test-ca");
    let cert = ca.server(&["web.example.com"]);
    let servers = r#"
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: web-cert}
"#;
    let config = gateway("web", servers)
        + &http_route(
            "web",
            &["web.example.com"],
            "web",
            "web.default.svc.cluster.local",
            8080,
        )
        + &service_entry(
            "web",
            "web.default.svc.cluster.local",
            8080,
            "HTTP",
            &[backend.addr.port()],
        );
    let gateway = Gateway::builder()
        .config("web.yaml", &config)
        .credential(
            "web-cert",
            &[("tls.crt", &cert.cert), ("tls.key", &cert.key)],
        )
        .server_port(80)
        .server_port(443)
        .start();

    // h2 chosen by ALPN over TLS.
    let config = pki::client_config(&ca.pem, &["h2", "http/1.1"], None);
    let mut h2 = Connection::tls(gateway.addr(443), "web.example.com", config).await;
    assert!(h2.is_http2(), "the gateway did not select h2");
    for i in 0..5 {
        let response = h2.get("web.example.com", &format!("/h2/{i}")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.version, Version::HTTP_2);
        assert_eq!(response.json()["path"], format!("/h2/{i}"));
        // The upstream is HTTP/1.1 (the port's protocol is HTTP).
        assert_eq!(response.json()["version"], "HTTP/1.1");
    }
    // http/1.1 chosen by ALPN when the client offers only that.
    let config = pki::client_config(&ca.pem, &["http/1.1"], None);
    let mut h1 = Connection::tls(gateway.addr(443), "web.example.com", config).await;
    assert!(!h1.is_http2());
    let response = h1.get("web.example.com", "/h1").await;
    assert_eq!((response.status, response.version), (200, Version::HTTP_11));

    // h2c with prior knowledge on the plain HTTP port.
    let mut h2c = Connection::h2c(gateway.addr(80)).await;
    let response = h2c.get("web.example.com", "/h2c").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.version, Version::HTTP_2);
    assert_eq!(response.json()["authority"], "web.example.com");

    let line = gateway.access_log_line(|l| l.contains("\"GET /h2/4 HTTP/2\""));
    assert!(line.contains(" 200 "), "{line}");
    assert_eq!(field_from_end(&line, 1), "web.example.com", "{line}");
    let line = gateway.access_log_line(|l| l.contains("\"GET /h2c HTTP/2\""));
    assert!(line.contains(" 200 "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_protocol_follows_the_port_and_destination_rule_not_the_client() {
    let backend = Backend::start("web-1").await;
    let port = backend.addr.port();
    let config = gateway("web", HTTP_SERVER)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/web]
  http:
  - match: [{uri: {prefix: /http2}}]
    route: [{destination: {host: h2.default.svc.cluster.local, port: {number: 8080}}}]
  - match: [{uri: {prefix: /grpc-port}}]
    route: [{destination: {host: grpc.default.svc.cluster.local, port: {number: 8080}}}]
  - match: [{uri: {prefix: /upgraded}}]
    route: [{destination: {host: upgraded.default.svc.cluster.local, port: {number: 8080}}}]
  - route: [{destination: {host: h1.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upgraded, namespace: default}
spec:
  host: upgraded.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
"# + &service_entry("h2", "h2.default.svc.cluster.local", 8080, "HTTP2", &[port])
        + &service_entry(
            "grpc",
            "grpc.default.svc.cluster.local",
            8080,
            "GRPC",
            &[port],
        )
        + &service_entry(
            "upgraded",
            "upgraded.default.svc.cluster.local",
            8080,
            "HTTP",
            &[port],
        )
        + &service_entry("h1", "h1.default.svc.cluster.local", 8080, "HTTP", &[port]);
    let gateway = Gateway::builder()
        .config("web.yaml", &config)
        .server_port(80)
        .start();

    let cases = [
        ("/http2", "HTTP/2.0"),
        ("/grpc-port", "HTTP/2.0"),
        ("/upgraded", "HTTP/2.0"),
        ("/plain", "HTTP/1.1"),
    ];
    // An HTTP/1.1 client.
    let mut h1 = Connection::http1(gateway.addr(80)).await;
    for (path, upstream) in cases {
        let response = h1.get("web.example.com", path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.version, Version::HTTP_11, "{path}");
        assert_eq!(response.json()["version"], upstream, "{path}");
        assert_eq!(response.json()["path"], path);
    }
    // An HTTP/2 (h2c) client.
    let mut h2 = Connection::h2c(gateway.addr(80)).await;
    for (path, upstream) in cases {
        let response = h2.get("web.example.com", path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.version, Version::HTTP_2, "{path}");
        assert_eq!(response.json()["version"], upstream, "{path}");
        assert_eq!(response.json()["authority"], "web.example.com", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_an_http2_upstream_share_one_connection() {
    let backend = Backend::start("web-1").await;
    backend.set_delay(Duration::from_millis(200));
    let config = http_route(
        "web",
        &["web.example.com"],
        "web",
        "h2.default.svc.cluster.local",
        8080,
    ) + &gateway("web", HTTP_SERVER)
        + &service_entry(
            "h2",
            "h2.default.svc.cluster.local",
            8080,
            "HTTP2",
            &[backend.addr.port()],
        );
    let gateway = Gateway::builder()
        .config("web.yaml", &config)
        .server_port(80)
        .start();
    // 40 requests at once from 40 clients: upstream they are streams of one connection, not a
    // connection each.
    let address = gateway.addr(80);
    let calls: Vec<_> = (0..40)
        .map(|n| {
            tokio::spawn(async move {
                Connection::h2c(address)
                    .await
                    .get("web.example.com", &format!("/{n}"))
                    .await
            })
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["version"], "HTTP/2.0");
    }
    assert_eq!(
        backend
            .state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one multiplexed upstream connection"
    );
}

// ---------------------------------------------------------------------------------------------
// gRPC

fn grpc_config(backend: SocketAddr) -> String {
    let servers = r#"
  - port: {number: 80, name: grpc, protocol: GRPC}
    hosts: ["*"]
"#;
    gateway("grpc", servers)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc.example.com]
  gateways: [istio-system/grpc]
  http:
  - match: [{uri: {prefix: /strait.test.Echo/}}]
    route: [{destination: {host: grpc.default.svc.cluster.local, port: {number: 9000}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: empty, namespace: default}
spec:
  hosts: [empty.example.com]
  gateways: [istio-system/grpc]
  http:
  - route: [{destination: {host: empty.default.svc.cluster.local, port: {number: 9000}}}]
"# + &service_entry(
        "grpc",
        "grpc.default.svc.cluster.local",
        9000,
        "GRPC",
        &[backend.port()],
    ) + &service_entry(
        "empty",
        "empty.default.svc.cluster.local",
        9000,
        "GRPC",
        &[],
    )
}

fn metadata<'a>(map: &'a tonic::metadata::MetadataMap, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.to_str().ok())
}

/// One unary gRPC call over a raw h2c connection: the HTTP status, the headers, the messages'
/// bytes and the trailers, as they crossed the wire.
async fn raw_grpc_call(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    echo: &Echo,
) -> (u16, http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, driver) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(driver);
    let message = prost::Message::encode_to_vec(echo);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let request = Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (
        parts.status.as_u16(),
        parts.headers,
        Bytes::from(data),
        trailers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_shape_cross_the_gateway_with_their_trailers() {
    let backend = GrpcBackend::start("grpc-1").await;
    let gateway = Gateway::builder()
        .config("grpc.yaml", &grpc_config(backend.addr))
        .server_port(80)
        .start();
    let mut client = EchoClient::connect(gateway.addr(80), "grpc.example.com").await;

    // Unary: the header metadata and the trailer metadata both arrive.
    let response = client.unary(Echo::new("hello", 7)).await.unwrap();
    assert_eq!(response.get_ref(), &Echo::new("grpc-1: hello", 7));
    assert_eq!(
        metadata(response.metadata(), "x-echo-backend"),
        Some("grpc-1")
    );
    assert_eq!(
        metadata(response.metadata(), "x-echo-trailer"),
        Some("grpc-1")
    );

    // Server streaming: every message, then the trailers.
    let response = client.server_stream(Echo::new("tick", 25)).await.unwrap();
    assert_eq!(
        metadata(response.metadata(), "x-echo-backend"),
        Some("grpc-1")
    );
    let mut stream = response.into_inner();
    let mut received = Vec::new();
    while let Some(echo) = stream.message().await.unwrap() {
        received.push(echo.text);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("tick-{i}")).collect();
    assert_eq!(received, expected);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(metadata(&trailers, "x-echo-trailer"), Some("grpc-1"));

    // Large messages: 48 of 96 KiB each, more than any HTTP/2 flow-control window holds, so
    // the gateway must pass window updates along as the client reads.
    let big = "x".repeat(96 * 1024);
    let response = client.server_stream(Echo::new(&big, 48)).await.unwrap();
    let mut stream = response.into_inner();
    let mut count = 0;
    while let Some(echo) = stream.message().await.unwrap() {
        assert_eq!(echo.text, format!("{big}-{count}"));
        count += 1;
    }
    assert_eq!(count, 48);

    // Client streaming.
    let messages = futures_util::stream::iter(["a", "b", "c", "d"].map(|t| Echo::new(t, 0)));
    let response = client.client_stream(messages).await.unwrap();
    assert_eq!(response.get_ref(), &Echo::new("a+b+c+d", 4));
    assert_eq!(
        metadata(response.metadata(), "x-echo-trailer"),
        Some("grpc-1")
    );

    // Bidirectional streaming, in lock step: each reply comes before the next message is
    // sent, so nothing on the way may wait for the end of either stream.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(Echo::new("one", 1)).await.unwrap();
    let response = client.bidi(grpc::channel_stream(receiver)).await.unwrap();
    let mut replies = response.into_inner();
    for (i, text) in ["one", "two", "three", "four"].iter().enumerate() {
        if i > 0 {
            sender.send(Echo::new(text, i as u32 + 1)).await.unwrap();
        }
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("a reply before the next message is sent")
            .unwrap()
            .expect("a reply");
        assert_eq!(reply, Echo::new(&format!("grpc-1: {text}"), i as u32 + 1));
    }
    drop(sender);
    assert!(replies.message().await.unwrap().is_none());
    let trailers = replies.trailers().await.unwrap().expect("trailers");
    assert_eq!(metadata(&trailers, "x-echo-trailer"), Some("grpc-1"));

    // An error the backend made: its code, message and trailer metadata come through.
    let status = client
        .unary_at(grpc::FAIL, Echo::new("x", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such echo");
    assert_eq!(
        metadata(status.metadata(), "x-echo-detail"),
        Some("missing")
    );

    // On the wire: HTTP 200, the message, and trailers with grpc-status 0.
    let (status, headers, data, trailers) = raw_grpc_call(
        gateway.addr(80),
        "grpc.example.com",
        grpc::UNARY,
        &Echo::new("raw", 1),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/grpc");
    let reply: Echo = prost::Message::decode(&data[5..]).unwrap();
    assert_eq!(reply, Echo::new("grpc-1: raw", 1));
    let trailers = trailers.expect("HTTP/2 trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-trailer"], "grpc-1");

    let line = gateway.access_log_line(|l| l.contains("\"POST /strait.test.Echo/Bidi HTTP/2\""));
    assert!(line.contains(" 200 - "), "{line}");
    assert!(
        field_from_end(&line, 4).contains("outbound|9000||grpc.default.svc.cluster.local"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_proxy_makes_reach_grpc_clients_as_grpc_statuses() {
    let backend = GrpcBackend::start("grpc-1").await;
    let gateway = Gateway::builder()
        .config("grpc.yaml", &grpc_config(backend.addr))
        .server_port(80)
        .start();

    // No route for the method: UNIMPLEMENTED.
    let mut client = EchoClient::connect(gateway.addr(80), "grpc.example.com").await;
    let status = client
        .unary_at("/strait.test.Other/Call", Echo::new("x", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // No virtual host for the authority: UNIMPLEMENTED as well.
    let mut unknown = EchoClient::connect(gateway.addr(80), "nowhere.example.com").await;
    let status = unknown.unary(Echo::new("x", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // A cluster without endpoints: UNAVAILABLE.
    let mut empty = EchoClient::connect(gateway.addr(80), "empty.example.com").await;
    let status = empty.unary(Echo::new("x", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no healthy upstream"),
        "{status:?}"
    );

    // On the wire these are HTTP 200 with the status in grpc-status, as gRPC requires.
    for (authority, path, code) in [
        ("grpc.example.com", "/strait.test.Other/Call", "12"),
        ("empty.example.com", grpc::UNARY, "14"),
    ] {
        let (status, headers, data, trailers) =
            raw_grpc_call(gateway.addr(80), authority, path, &Echo::new("x", 0)).await;
        assert_eq!(status, 200, "{authority}{path}");
        assert!(data.is_empty());
        let grpc_status = headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .unwrap_or_else(|| panic!("no grpc-status: {headers:?} {trailers:?}"));
        assert_eq!(grpc_status, code, "{authority}{path}");
    }
    let line = gateway.access_log_line(|l| l.contains("/strait.test.Other/Call"));
    assert!(line.contains(" NR "), "{line}");
    let line = gateway.access_log_line(|l| l.contains("\"empty.example.com\""));
    assert!(line.contains(" UH "), "{line}");
}

// ---------------------------------------------------------------------------------------------
// TCP

fn tcp_config(routes: &str, entries: &str) -> String {
    let servers = r#"
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"#;
    gateway("tcp", servers)
        + &format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp]
  tcp:
  - match: [{{port: 31400}}]
    route:
{routes}
"#
        )
        + entries
}

/// Reads one `\n`-terminated line.
async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !line.ends_with(b"\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            line.push(byte[0]);
        }
    })
    .await
    .expect("a line within 5 s");
    String::from_utf8(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_carry_bytes_both_ways_and_half_close() {
    let echo = tcp::echo("tcp-1").await;
    let config = tcp_config(
        "    - destination: {host: echo.default.svc.cluster.local, port: {number: 9000}}",
        &service_entry(
            "echo",
            "echo.default.svc.cluster.local",
            9000,
            "TCP",
            &[echo.addr.port()],
        ),
    );
    let gateway = Gateway::builder()
        .config("tcp.yaml", &config)
        .server_port(31400)
        .start();

    let mut stream = TcpStream::connect(gateway.addr(31400)).await.unwrap();
    // The backend speaks first.
    assert_eq!(read_line(&mut stream).await, "tcp-1\n");
    stream.write_all(b"hello").await.unwrap();
    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");

    // A megabyte each way at once.
    let blob: Vec<u8> = (0..1_000_000).map(tcp::pattern_byte).collect();
    let (mut reader, mut writer) = stream.into_split();
    let sent = blob.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        // Half-close: no more bytes from the client, but the answer must still arrive.
        writer.shutdown().await.unwrap();
        writer
    });
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received))
        .await
        .expect("the backend closes after the client's half-close")
        .unwrap();
    let _writer = writing.await.unwrap();
    assert!(received.len() > blob.len(), "{} bytes", received.len());
    assert!(received[..blob.len()] == blob[..], "the echo differs");
    let tail = String::from_utf8_lossy(&received[blob.len()..]).into_owned();
    assert_eq!(tail, format!("bye tcp-1 after {} bytes\n", blob.len() + 5));

    let line = gateway.access_log_line(|l| l.contains("outbound|9000||echo.default"));
    assert!(line.contains("\"- - TCP\""), "{line}");
    assert!(
        line.contains(&format!(" {} ", blob.len() + 5)),
        "bytes received: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_whose_endpoint_refuses_is_closed_and_logged_uf() {
    let closed = common::gateway::free_port();
    let config = tcp_config(
        "    - destination: {host: gone.default.svc.cluster.local, port: {number: 9000}}",
        &service_entry(
            "gone",
            "gone.default.svc.cluster.local",
            9000,
            "TCP",
            &[closed],
        ),
    );
    let gateway = Gateway::builder()
        .config("tcp.yaml", &config)
        .server_port(31400)
        .start();
    let mut stream = TcpStream::connect(gateway.addr(31400)).await.unwrap();
    let _ = stream.write_all(b"anyone?").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection");
    assert!(
        read.is_err() || rest.is_empty(),
        "{read:?} {:?}",
        String::from_utf8_lossy(&rest)
    );
    let line = gateway.access_log_line(|l| l.contains("outbound|9000||gone.default"));
    assert!(line.contains(" UF "), "{line}");
    assert!(line.contains("upstream connect error"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_tcp_routes_split_connections() {
    let a = tcp::echo("tcp-a").await;
    let b = tcp::echo("tcp-b").await;
    let routes = "    - destination: {host: a.default.svc.cluster.local, port: {number: 9000}}
      weight: 80
    - destination: {host: b.default.svc.cluster.local, port: {number: 9000}}
      weight: 20";
    let entries = service_entry(
        "a",
        "a.default.svc.cluster.local",
        9000,
        "TCP",
        &[a.addr.port()],
    ) + &service_entry(
        "b",
        "b.default.svc.cluster.local",
        9000,
        "TCP",
        &[b.addr.port()],
    );
    let gateway = Gateway::builder()
        .config("tcp.yaml", &tcp_config(routes, &entries))
        .server_port(31400)
        .start();
    let addr = gateway.addr(31400);
    let total = 1000;
    let mut to_a = 0;
    for _ in 0..total / 50 {
        let batch = (0..50).map(|_| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            read_line(&mut stream).await
        });
        for name in futures_util::future::join_all(batch).await {
            match name.as_str() {
                "tcp-a\n" => to_a += 1,
                "tcp-b\n" => {}
                other => panic!("unexpected greeting {other:?}"),
            }
        }
    }
    // 80% of 1000: mean 800, standard deviation about 12.6; allow six of them.
    assert!((724..=876).contains(&to_a), "{to_a} of {total} went to a");
    let accepted = a.connections.load(std::sync::atomic::Ordering::Relaxed)
        + b.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(accepted, total);
}

// ---------------------------------------------------------------------------------------------
// TLS passthrough

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_routes_by_sni_to_backends_that_terminate_themselves() {
    let ca = Ca::new("backend-ca");
    let cert_a = ca.server(&["a.example.com"]);
    let cert_b = ca.server(&["b.example.com"]);
    let a = Backend::start_tls("tls-a", pki::server_config(&cert_a)).await;
    let b = Backend::start_tls("tls-b", pki::server_config(&cert_b)).await;
    let servers = r#"
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"#;
    let config = gateway("passthrough", servers)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/passthrough]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: a.default.svc.cluster.local, port: {number: 8443}}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: b.default.svc.cluster.local, port: {number: 8443}}}]
"# + &service_entry(
        "a",
        "a.default.svc.cluster.local",
        8443,
        "TLS",
        &[a.addr.port()],
    ) + &service_entry(
        "b",
        "b.default.svc.cluster.local",
        8443,
        "TLS",
        &[b.addr.port()],
    );
    let gateway = Gateway::builder()
        .config("passthrough.yaml", &config)
        .server_port(443)
        .start();
    let addr = gateway.addr(443);

    // The client trusts only the backends' CA, and the gateway holds no certificate at all:
    // a handshake that verifies proves the backend terminated it.
    for (sni, cert, name) in [
        ("a.example.com", &cert_a, "tls-a"),
        ("b.example.com", &cert_b, "tls-b"),
    ] {
        let config = pki::client_config(&ca.pem, &["http/1.1"], None);
        let (response, presented) = tcp::tls_get(addr, sni, config, "/pass").await.unwrap();
        assert_eq!(response.status, 200, "{sni}");
        assert_eq!(response.backend(), Some(name), "{sni}");
        assert_eq!(presented, tcp::first_der(&cert.cert), "{sni}");
    }
    // ALPN is the backend's business too: h2 is negotiated end to end.
    let config = pki::client_config(&ca.pem, &["h2"], None);
    let mut h2 = Connection::tls(addr, "b.example.com", config).await;
    assert!(h2.is_http2());
    let response = h2.get("b.example.com", "/h2").await;
    assert_eq!(response.backend(), Some("tls-b"));
    assert_eq!(response.json()["version"], "HTTP/2.0");

    // An SNI no route matches is closed.
    let config = pki::client_config(&ca.pem, &["http/1.1"], None);
    let refused = tcp::tls_get(addr, "c.example.com", config, "/").await;
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.0));
    let line = gateway.access_log_line(|l| l.contains("c.example.com"));
    assert!(line.contains(" NR "), "{line}");
    let line = gateway.access_log_line(|l| l.contains("outbound|8443||a.default"));
    assert_eq!(field_from_end(&line, 1), "a.example.com", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_and_terminated_servers_share_a_port_even_with_a_client_hello_in_pieces() {
    let ca = Ca::new("test-ca");
    let pass_cert = ca.server(&["pass.example.com"]);
    let term_cert = ca.server(&["term.example.com"]);
    let passed = Backend::start_tls("pass-1", pki::server_config(&pass_cert)).await;
    let plain = Backend::start("term-1").await;
    let servers = r#"
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [pass.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 443, name: https-term, protocol: HTTPS}
    hosts: [term.example.com]
    tls: {mode: SIMPLE, credentialName: term-cert}
"#;
    let config = gateway("edge", servers)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [pass.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: pass.default.svc.cluster.local, port: {number: 8443}}}]
"# + &http_route(
        "term",
        &["term.example.com"],
        "edge",
        "term.default.svc.cluster.local",
        8080,
    ) + &service_entry(
        "pass",
        "pass.default.svc.cluster.local",
        8443,
        "TLS",
        &[passed.addr.port()],
    ) + &service_entry(
        "term",
        "term.default.svc.cluster.local",
        8080,
        "HTTP",
        &[plain.addr.port()],
    );
    let gateway = Gateway::builder()
        .config("edge.yaml", &config)
        .credential(
            "term-cert",
            &[("tls.crt", &term_cert.cert), ("tls.key", &term_cert.key)],
        )
        .server_port(443)
        .start();
    // Directly, and through a relay that splits the ClientHello into 7-byte segments.
    let relay = tcp::slow_relay(gateway.addr(443), 7, 4096).await;
    for addr in [gateway.addr(443), relay.addr] {
        for (sni, cert, name) in [
            ("pass.example.com", &pass_cert, "pass-1"),
            ("term.example.com", &term_cert, "term-1"),
        ] {
            let (response, presented) = tcp::tls_get(addr, sni, trusting(&ca.pem), "/shared")
                .await
                .unwrap_or_else(|e| panic!("{sni} via {addr}: {e}\n{}", gateway.log()));
            assert_eq!(response.backend(), Some(name), "{sni} via {addr}");
            assert_eq!(presented, tcp::first_der(&cert.cert), "{sni} via {addr}");
        }
    }
    assert_eq!((passed.requests(), plain.requests()), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminated_tcp_servers_forward_the_plain_bytes() {
    let echo = tcp::echo("tcp-tls").await;
    let ca = Ca::new("test-ca");
    let cert = ca.server(&["echo.example.com"]);
    let servers = r#"
  - port: {number: 9443, name: tls-echo, protocol: TLS}
    hosts: [echo.example.com]
    tls: {mode: SIMPLE, credentialName: echo-cert}
"#;
    let config = gateway("echo", servers)
        + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.example.com]
  gateways: [istio-system/echo]
  tcp:
  - route: [{destination: {host: echo.default.svc.cluster.local, port: {number: 9000}}}]
"# + &service_entry(
        "echo",
        "echo.default.svc.cluster.local",
        9000,
        "TCP",
        &[echo.addr.port()],
    );
    let gateway = Gateway::builder()
        .config("echo.yaml", &config)
        .credential(
            "echo-cert",
            &[("tls.crt", &cert.cert), ("tls.key", &cert.key)],
        )
        .server_port(9443)
        .start();
    let config = pki::client_config(&ca.pem, &[], None);
    let mut tls = tcp::tls_connect(gateway.addr(9443), "echo.example.com", config)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        tcp::first_der(&cert.cert)
    );
    let mut greeting = [0u8; 8];
    tls.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"tcp-tls\n");
    tls.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    // close_notify half-closes; the backend's last words still arrive.
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest))
        .await
        .expect("the connection ends after the half-close")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "bye tcp-tls after 4 bytes\n"
    );
    let line = gateway.access_log_line(|l| l.contains("outbound|9000||echo.default"));
    assert_eq!(field_from_end(&line, 1), "echo.example.com", "{line}");
}

// ---------------------------------------------------------------------------------------------
// TLS termination

/// The Gateway `web` with `servers`, VirtualService `web` for `hosts`, and a plain backend.
fn terminating_config(servers: &str, hosts: &[&str], backend: SocketAddr) -> String {
    gateway("web", servers)
        + &http_route("web", hosts, "web", "web.default.svc.cluster.local", 8080)
        + &service_entry(
            "web",
            "web.default.svc.cluster.local",
            8080,
            "HTTP",
            &[backend.port()],
        )
}

fn trusting(ca: &str) -> std::sync::Arc<rustls::ClientConfig> {
    pki::client_config(ca, &["http/1.1"], None)
}

fn with_identity(ca: &str, identity: &Issued) -> std::sync::Arc<rustls::ClientConfig> {
    pki::client_config(ca, &["http/1.1"], Some(identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_serves_each_host_its_certificate_from_every_credential_layout() {
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("server-ca");
    let cert_a = ca.server(&["a.example.com"]);
    let cert_b = ca.server(&["b.example.com"]);
    let cert_c = ca.server(&["c.example.com"]);
    let cert_wild = ca.server(&["*.example.com"]);
    let files = TempDir::new("protocols-files");
    let c_cert = files.write("c/cert.pem", &cert_c.cert);
    let c_key = files.write("c/key.pem", &cert_c.key);
    let servers = format!(
        r#"
  - port: {{number: 443, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: a-cred}}
  - port: {{number: 443, name: https-b, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: SIMPLE, credentialName: b-cred}}
  - port: {{number: 443, name: https-c, protocol: HTTPS}}
    hosts: [c.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}
  - port: {{number: 443, name: https-wild, protocol: HTTPS}}
    hosts: ["*.example.com"]
    tls: {{mode: SIMPLE, credentialName: wild-cred}}
"#,
        c_cert.display(),
        c_key.display()
    );
    // One VirtualService for every name (Istio rejects overlapping hosts in one).
    let hosts = ["\"*.example.com\""];
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(&servers, &hosts, backend.addr),
        )
        // The kubernetes.io/tls layout.
        .credential(
            "a-cred",
            &[("tls.crt", &cert_a.cert), ("tls.key", &cert_a.key)],
        )
        // Istio's generic layout.
        .credential("b-cred", &[("cert", &cert_b.cert), ("key", &cert_b.key)])
        .credential(
            "wild-cred",
            &[("tls.crt", &cert_wild.cert), ("tls.key", &cert_wild.key)],
        )
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    for (host, cert) in [
        ("a.example.com", &cert_a),
        ("b.example.com", &cert_b),
        ("c.example.com", &cert_c),
        // No exact server: the wildcard server's certificate (exact names win above).
        ("d.example.com", &cert_wild),
    ] {
        let (response, presented) = tcp::tls_get(addr, host, trusting(&ca.pem), "/tls")
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}\n{}", gateway.log()));
        assert_eq!(response.status, 200, "{host}: {}", response.text());
        assert_eq!(response.backend(), Some("web-1"));
        assert_eq!(
            presented,
            tcp::first_der(&cert.cert),
            "{host} got another certificate"
        );
        let echoed = response.json();
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https", "{echoed}");
    }
    // A name no server has: no certificate to present, the handshake fails.
    let refused = tcp::tls_get(addr, "www.example.org", trusting(&ca.pem), "/").await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_credential_ca() {
    let backend = Backend::start("web-1").await;
    let server_ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    let other_clients = Ca::new("client-ca-2");
    let stranger = Ca::new("stranger-ca");
    let cert_m = server_ca.server(&["m.example.com"]);
    let cert_s = server_ca.server(&["s.example.com"]);
    let servers = r#"
  - port: {number: 443, name: https-m, protocol: HTTPS}
    hosts: [m.example.com]
    tls: {mode: MUTUAL, credentialName: m-cred}
  - port: {number: 443, name: https-s, protocol: HTTPS}
    hosts: [s.example.com]
    tls: {mode: MUTUAL, credentialName: s-cred}
"#;
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["m.example.com", "s.example.com"], backend.addr),
        )
        // The CA in the same folder.
        .credential(
            "m-cred",
            &[
                ("tls.crt", &cert_m.cert),
                ("tls.key", &cert_m.key),
                ("ca.crt", &clients.pem),
            ],
        )
        // The CA in a separate <name>-cacert folder.
        .credential(
            "s-cred",
            &[("tls.crt", &cert_s.cert), ("tls.key", &cert_s.key)],
        )
        .credential("s-cred-cacert", &[("ca.crt", &other_clients.pem)])
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    for (host, trusted) in [
        ("m.example.com", &clients),
        ("s.example.com", &other_clients),
    ] {
        let without = tcp::tls_get(addr, host, trusting(&server_ca.pem), "/").await;
        assert!(
            without.is_err(),
            "{host} served a client without a certificate"
        );
        let untrusted = stranger.client("mallory");
        let refused =
            tcp::tls_get(addr, host, with_identity(&server_ca.pem, &untrusted), "/").await;
        assert!(refused.is_err(), "{host} accepted an unknown CA's client");
        let alice = trusted.client("alice");
        let mut connection = TlsHttp1::connect(addr, host, with_identity(&server_ca.pem, &alice))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        // A certificate identity claimed in a header never reaches the upstream.
        let forged = "By=spiffe://cluster.local/ns/x/sa/y;URI=spiffe://cluster.local/ns/a/sa/admin";
        let response = connection
            .get_with(host, "/m", &[("x-forwarded-client-cert", forged)])
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(response.status, 200, "{host}");
        assert_eq!(response.backend(), Some("web-1"));
        // The gateway sets what it verified instead (Envoy's SANITIZE_SET): the certificate's
        // hash and subject.
        let echoed = response.json();
        let xfcc = echoed["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap_or_else(|| panic!("no XFCC: {echoed}"));
        assert!(xfcc.starts_with("Hash="), "{xfcc}");
        assert!(xfcc.contains("alice"), "{xfcc}");
        assert!(!xfcc.contains("admin"), "{xfcc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mutual_tls_accepts_clients_with_and_without_certificates() {
    let backend = Backend::start("web-1").await;
    let server_ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    let stranger = Ca::new("stranger-ca");
    let cert = server_ca.server(&["o.example.com"]);
    let servers = r#"
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [o.example.com]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: o-cred}
"#;
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["o.example.com"], backend.addr),
        )
        .credential(
            "o-cred",
            &[
                ("tls.crt", &cert.cert),
                ("tls.key", &cert.key),
                ("ca.crt", &clients.pem),
            ],
        )
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    let host = "o.example.com";
    let (response, _) = tcp::tls_get(addr, host, trusting(&server_ca.pem), "/anonymous")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let alice = clients.client("alice");
    let (response, _) = tcp::tls_get(addr, host, with_identity(&server_ca.pem, &alice), "/alice")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    // A certificate that is presented is still verified.
    let mallory = stranger.client("mallory");
    let refused = tcp::tls_get(addr, host, with_identity(&server_ca.pem, &mallory), "/").await;
    assert!(
        refused.is_err(),
        "an unverifiable client certificate was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_and_cipher_suites_are_enforced() {
    use rustls::{CipherSuite, ProtocolVersion};
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("server-ca");
    let names = ["v13.example.com", "v12.example.com", "suites.example.com"];
    let certs: Vec<Issued> = names.iter().map(|n| ca.server(&[n])).collect();
    let servers = r#"
  - port: {number: 443, name: https-13, protocol: HTTPS}
    hosts: [v13.example.com]
    tls: {mode: SIMPLE, credentialName: v13, minProtocolVersion: TLSV1_3}
  - port: {number: 443, name: https-12, protocol: HTTPS}
    hosts: [v12.example.com]
    tls: {mode: SIMPLE, credentialName: v12, maxProtocolVersion: TLSV1_2}
  - port: {number: 443, name: https-suites, protocol: HTTPS}
    hosts: [suites.example.com]
    tls:
      mode: SIMPLE
      credentialName: suites
      maxProtocolVersion: TLSV1_2
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
"#;
    let mut builder = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &names, backend.addr),
        )
        .server_port(443);
    for (name, cert) in ["v13", "v12", "suites"].iter().zip(&certs) {
        builder = builder.credential(name, &[("tls.crt", &cert.cert), ("tls.key", &cert.key)]);
    }
    let gateway = builder.start();
    let addr = gateway.addr(443);
    let any = ClientOptions {
        alpn: vec!["http/1.1"],
        ..ClientOptions::default()
    };
    let tls12 = ClientOptions {
        tls12_only: true,
        ..any.clone()
    };
    let connect = |sni: &'static str, options: &ClientOptions<'_>| {
        let config = tcp::client_config_with(&ca.pem, options);
        async move {
            let mut connection = TlsHttp1::connect(addr, sni, config)
                .await
                .map_err(|e| e.to_string())?;
            let response = connection.get(sni, "/").await.map_err(|e| e.to_string())?;
            assert_eq!(response.status, 200, "{sni}");
            Ok::<_, String>((connection.version, connection.suite))
        }
    };

    // minProtocolVersion TLSV1_3 refuses a TLS 1.2-only client, serves TLS 1.3.
    assert!(connect("v13.example.com", &tls12).await.is_err());
    let (version, _) = connect("v13.example.com", &any).await.unwrap();
    assert_eq!(version, Some(ProtocolVersion::TLSv1_3));
    // maxProtocolVersion TLSV1_2 settles on TLS 1.2 with a client that could do 1.3.
    let (version, _) = connect("v12.example.com", &any).await.unwrap();
    assert_eq!(version, Some(ProtocolVersion::TLSv1_2));
    // cipherSuites: only the named suite is negotiated; a client without it is refused.
    let (version, suite) = connect("suites.example.com", &any).await.unwrap();
    assert_eq!(version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        suite,
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    let aes128 = ClientOptions {
        tls12_suites: vec![CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
        ..tls12.clone()
    };
    assert!(connect("suites.example.com", &aes128).await.is_err());
    // The same client is fine where suites are not restricted.
    let (_, suite) = connect("v12.example.com", &aes128).await.unwrap();
    assert_eq!(
        suite,
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_revoked_by_the_credential_crl_is_refused() {
    let backend = Backend::start("web-1").await;
    let ca = RevokingCa::new("crl-ca");
    let server = ca.server(&["r.example.com"]);
    let (good, _) = ca.client("good");
    let (revoked, serial) = ca.client("revoked");
    let crl = ca.crl(&[serial]);
    let servers = r#"
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [r.example.com]
    tls: {mode: MUTUAL, credentialName: r-cred}
"#;
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["r.example.com"], backend.addr),
        )
        .credential(
            "r-cred",
            &[
                ("tls.crt", &server.cert),
                ("tls.key", &server.key),
                ("ca.crt", &ca.pem),
                ("ca.crl", &crl),
            ],
        )
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    let (response, _) = tcp::tls_get(addr, "r.example.com", with_identity(&ca.pem, &good), "/")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log()));
    assert_eq!(response.status, 200);
    let refused = tcp::tls_get(addr, "r.example.com", with_identity(&ca.pem, &revoked), "/").await;
    assert!(
        refused.is_err(),
        "a revoked client certificate was accepted"
    );
    assert_eq!(backend.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_reach_new_handshakes_while_open_connections_keep_working() {
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("server-ca");
    let old = ca.server(&["web.example.com"]);
    let new = ca.server(&["web.example.com"]);
    let servers = r#"
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: web-cert}
"#;
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["web.example.com"], backend.addr),
        )
        .credential("web-cert", &[("tls.crt", &old.cert), ("tls.key", &old.key)])
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    let mut open = TlsHttp1::connect(addr, "web.example.com", trusting(&ca.pem))
        .await
        .unwrap();
    assert_eq!(open.presented, tcp::first_der(&old.cert));
    assert_eq!(
        open.get("web.example.com", "/before").await.unwrap().status,
        200
    );

    // Caught half-written (the new certificate beside the old key), the credential keeps
    // serving its last good certificate: no handshake fails while the rotation is under way.
    gateway.write_credential("web-cert", &[("tls.crt", &new.cert)]);
    let noticed = eventually(Duration::from_secs(10), || async {
        gateway.log().contains("stays in force")
    })
    .await;
    assert!(
        noticed,
        "the half-written credential was not read\n{}",
        gateway.log()
    );
    let (response, presented) = tcp::tls_get(addr, "web.example.com", trusting(&ca.pem), "/mid")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log()));
    assert_eq!(response.status, 200);
    assert_eq!(presented, tcp::first_der(&old.cert));

    gateway.write_credential("web-cert", &[("tls.key", &new.key)]);
    let new_der = tcp::first_der(&new.cert);
    let rotated = eventually(Duration::from_secs(10), || {
        let config = trusting(&ca.pem);
        let new_der = new_der.clone();
        async move {
            match tcp::tls_get(addr, "web.example.com", config, "/probe").await {
                Ok((response, presented)) => response.status == 200 && presented == new_der,
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(
        rotated,
        "new handshakes never got the new certificate\n{}",
        gateway.log()
    );
    // The connection opened before the rotation still serves requests.
    for i in 0..3 {
        let response = open
            .get("web.example.com", &format!("/after/{i}"))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], format!("/after/{i}"));
    }
}

/// Writes `tls.crt` and `tls.key` into `folder` the way Kubernetes mounts a Secret: the files
/// live in a timestamped directory, `..data` links to it, and `tls.crt`/`tls.key` link through
/// `..data`; an update swaps `..data` in one rename.
fn mount_secret(folder: &std::path::Path, generation: &str, issued: &Issued) {
    let data = folder.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &issued.cert).unwrap();
    std::fs::write(data.join("tls.key"), &issued.key).unwrap();
    let staged = folder.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(format!("..{generation}"), &staged).unwrap();
    std::fs::rename(&staged, folder.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = folder.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_secret_mount_is_served_when_it_appears_and_when_its_data_link_swaps() {
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("server-ca");
    let first = ca.server(&["web.example.com"]);
    let second = ca.server(&["web.example.com"]);
    let servers = r#"
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: web-secret}
"#;
    // The Secret is not mounted yet: the server is not served.
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["web.example.com"], backend.addr),
        )
        .server_port(443)
        .start();
    let addr = gateway.addr(443);
    assert!(
        tcp::tls_get(addr, "web.example.com", trusting(&ca.pem), "/")
            .await
            .is_err()
    );
    let folder = gateway.credentials_dir().join("web-secret");
    std::fs::create_dir_all(&folder).unwrap();
    for (generation, issued) in [("2026_01_01_first", &first), ("2026_01_02_second", &second)] {
        mount_secret(&folder, generation, issued);
        let wanted = tcp::first_der(&issued.cert);
        let served = eventually(Duration::from_secs(10), || {
            let wanted = wanted.clone();
            let config = trusting(&ca.pem);
            async move {
                tcp::tls_get(addr, "web.example.com", config, "/k8s")
                    .await
                    .is_ok_and(|(response, presented)| {
                        response.status == 200 && presented == wanted
                    })
            }
        })
        .await;
        assert!(served, "{generation} was never served\n{}", gateway.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_answers_301_to_the_same_host_and_path_over_https() {
    let backend = Backend::start("web-1").await;
    let ca = Ca::new("server-ca");
    let cert = ca.server(&["web.example.com"]);
    let servers = r#"
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [web.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: web-cert}
"#;
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &terminating_config(servers, &["web.example.com"], backend.addr),
        )
        .credential(
            "web-cert",
            &[("tls.crt", &cert.cert), ("tls.key", &cert.key)],
        )
        .server_port(80)
        .server_port(443)
        .start();
    for path in ["/", "/a/b?c=d&e=f"] {
        let response = client::get(gateway.addr(80), "web.example.com", path).await;
        assert_eq!(response.status, 301, "{path}");
        assert_eq!(
            response.header("location"),
            Some(format!("https://web.example.com{path}").as_str())
        );
    }
    // h2c is redirected the same way.
    let mut h2c = Connection::h2c(gateway.addr(80)).await;
    let response = h2c.get("web.example.com", "/x?y=1").await;
    assert_eq!(response.status, 301);
    assert_eq!(
        response.header("location"),
        Some("https://web.example.com/x?y=1")
    );
    assert_eq!(
        backend.requests(),
        0,
        "a redirected request reached the backend"
    );
    // Over HTTPS the same host is served.
    let (response, _) = tcp::tls_get(
        gateway.addr(443),
        "web.example.com",
        trusting(&ca.pem),
        "/a",
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.backend(), Some("web-1"));
    let line = gateway.access_log_line(|l| l.contains("\"GET /a/b?c=d&e=f HTTP/1.1\""));
    assert!(line.contains(" 301 "), "{line}");
}

// ---------------------------------------------------------------------------------------------
// TLS origination

/// A gateway on port 80 for `secure.example.com`, routed to `secure.backend.internal:443` with
/// the DestinationRule's `tls` settings given as YAML.
fn originating_config(backend: SocketAddr, tls: &str) -> String {
    originating_config_for("HTTPS", backend, tls)
}

/// As `originating_config`, with the ServiceEntry port's `protocol`.
fn originating_config_for(protocol: &str, backend: SocketAddr, tls: &str) -> String {
    gateway("web", HTTP_SERVER)
        + &http_route(
            "secure",
            &["secure.example.com"],
            "web",
            "secure.backend.internal",
            443,
        )
        + &service_entry(
            "secure",
            "secure.backend.internal",
            443,
            protocol,
            &[backend.port()],
        )
        + &format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: default}}
spec:
  host: secure.backend.internal
  trafficPolicy:
    tls:
{tls}
"#
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_origination_verifies_the_upstream_with_the_given_ca() {
    let ca = Ca::new("upstream-ca");
    let wrong = Ca::new("wrong-ca");
    let cert = ca.server(&["secure.backend.internal"]);
    let backend = Backend::start_tls("secure-1", pki::server_config(&cert)).await;
    let files = TempDir::new("protocols-origination");
    let ca_file = files.write("ca.pem", &ca.pem);
    let wrong_file = files.write("wrong-ca.pem", &wrong.pem);
    let tls = |ca: &std::path::Path| {
        format!(
            "      mode: SIMPLE\n      caCertificates: {}\n      sni: secure.backend.internal",
            ca.display()
        )
    };
    let gateway = Gateway::builder()
        .config(
            "web.yaml",
            &originating_config(backend.addr, &tls(&ca_file)),
        )
        .server_port(80)
        .start();
    let response = client::get(gateway.addr(80), "secure.example.com", "/tls").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some("secure-1"));
    assert_eq!(response.json()["version"], "HTTP/1.1");
    assert_eq!(response.json()["authority"], "secure.example.com");

    // An HTTP2 port: h2 is negotiated by ALPN over the originated TLS.
    gateway.apply(
        "web.yaml",
        &originating_config_for("HTTP2", backend.addr, &tls(&ca_file)),
    );
    let response = client::get(gateway.addr(80), "secure.example.com", "/tls-h2").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["version"], "HTTP/2.0");

    // A CA that did not sign the backend's certificate: the connection fails, 503 UF (with
    // URX: Istio's default retry policy retries connect failures).
    gateway.apply(
        "web.yaml",
        &originating_config(backend.addr, &tls(&wrong_file)),
    );
    let response = client::get(gateway.addr(80), "secure.example.com", "/wrong-ca").await;
    assert_eq!(response.status, 503, "{}", response.text());
    let line = gateway.access_log_line(|l| l.contains("/wrong-ca"));
    assert!(line.contains(" 503 UF"), "{line}");
    assert!(
        line.contains("TLS"),
        "the reason names the handshake: {line}"
    );
    assert_eq!(backend.requests(), 2);

    // Settings TLS cannot be originated with (SIMPLE without CA certificates) leave that
    // destination out, answered 503 NC with the reason; the rest of the configuration is
    // installed (the other host routes to a plain backend).
    let plain = Backend::start("plain-1").await;
    let without_ca = originating_config(
        backend.addr,
        "      mode: SIMPLE\n      sni: secure.backend.internal",
    ) + &http_route(
        "plain",
        &["plain.example.com"],
        "web",
        "plain.default.svc.cluster.local",
        8080,
    ) + &service_entry(
        "plain",
        "plain.default.svc.cluster.local",
        8080,
        "HTTP",
        &[plain.addr.port()],
    );
    gateway.apply("web.yaml", &without_ca);
    let response = client::get(gateway.addr(80), "plain.example.com", "/plain").await;
    assert_eq!(response.backend(), Some("plain-1"));
    let response = client::get(gateway.addr(80), "secure.example.com", "/no-ca").await;
    assert_eq!(response.status, 503, "{}", response.text());
    let line = gateway.access_log_line(|l| l.contains("/no-ca"));
    assert!(line.contains(" 503 NC "), "{line}");
    assert!(line.contains("TLS origination"), "{line}");
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_origination_presents_the_client_certificate_from_files_or_a_credential() {
    let server_ca = Ca::new("upstream-ca");
    let client_ca = Ca::new("upstream-client-ca");
    let cert = server_ca.server(&["secure.backend.internal"]);
    let backend = Backend::start_tls(
        "secure-mtls",
        tcp::mutual_server_config(&cert, &client_ca.pem),
    )
    .await;
    let identity = client_ca.client("gateway");
    let stored = client_ca.client("gateway-from-the-store");
    let files = TempDir::new("protocols-mutual");
    let ca_file = files.write("ca.pem", &server_ca.pem);
    let cert_file = files.write("client.pem", &identity.cert);
    let key_file = files.write("client-key.pem", &identity.key);

    // Without a client certificate the backend refuses the gateway.
    let simple = format!(
        "      mode: SIMPLE\n      caCertificates: {}\n      sni: secure.backend.internal",
        ca_file.display()
    );
    let gateway = Gateway::builder()
        .config("web.yaml", &originating_config(backend.addr, &simple))
        .credential(
            "upstream-client",
            &[
                ("tls.crt", &stored.cert),
                ("tls.key", &stored.key),
                ("ca.crt", &server_ca.pem),
            ],
        )
        .server_port(80)
        .start();
    let response = client::get(gateway.addr(80), "secure.example.com", "/no-cert").await;
    assert_eq!(response.status, 503, "{}", response.text());

    // MUTUAL with clientCertificate and privateKey files.
    let files_tls = format!(
        "      mode: MUTUAL\n      caCertificates: {}\n      clientCertificate: {}\n      privateKey: {}\n      sni: secure.backend.internal",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    gateway.apply("web.yaml", &originating_config(backend.addr, &files_tls));
    let response = client::get(gateway.addr(80), "secure.example.com", "/files").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some("secure-mtls"));

    // MUTUAL with credentialName (tls.crt, tls.key and ca.crt from the credential store).
    let credential_tls = "      mode: MUTUAL\n      credentialName: upstream-client\n      sni: secure.backend.internal";
    gateway.apply(
        "web.yaml",
        &originating_config(backend.addr, credential_tls),
    );
    let response = client::get(gateway.addr(80), "secure.example.com", "/credential").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some("secure-mtls"));

    // MUTUAL with credentialName whose CA lives in the separate `<name>-cacert` credential.
    let split = client_ca.client("gateway-split-credential");
    gateway.write_credential(
        "upstream-split",
        &[("tls.crt", &split.cert), ("tls.key", &split.key)],
    );
    gateway.write_credential("upstream-split-cacert", &[("ca.crt", &server_ca.pem)]);
    let split_tls = "      mode: MUTUAL\n      credentialName: upstream-split\n      sni: secure.backend.internal";
    gateway.apply("web.yaml", &originating_config(backend.addr, split_tls));
    let response = client::get(gateway.addr(80), "secure.example.com", "/split").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.backend(), Some("secure-mtls"));
    assert_eq!(backend.requests(), 3);
}
