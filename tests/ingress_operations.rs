//! Operating the ingress gateway: configuration changes applied live (watched directory and
//! SIGHUP) without restarting unchanged listeners or failing requests, invalid changes rejected
//! with the last good version kept, SIGTERM draining, and what operators read: `/config_dump`,
//! metrics with Istio's names and labels, `strait proxy-config`, the access log as JSON.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::client::{self, Connection};
use common::gateway::{Gateway, http_get};
use common::pki::{Ca, client_config};

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

/// A Gateway with the HTTP server on 80, an HTTPS server on 443 (credential `web`) and, when
/// `extra` is set, an HTTP server on 81 too.
fn gateway_with(https: bool, extra: bool) -> String {
    let mut yaml = GATEWAY.to_owned();
    if https {
        yaml.push_str(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: web}\n",
        );
    }
    if extra {
        yaml.push_str(
            "  - port: {number: 81, name: http-extra, protocol: HTTP}\n    hosts: [\"*\"]\n",
        );
    }
    yaml
}

/// Service `web` with one endpoint per `(address, version)`, and subsets v1 and v2.
fn service(endpoints: &[(SocketAddr, &str)]) -> String {
    let mut yaml = String::from(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
"#,
    );
    for (address, version) in endpoints {
        yaml.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: {version}}}}}\n",
            address.port()
        ));
    }
    yaml.push_str(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#,
    );
    yaml
}

/// A VirtualService for `web.example.com` splitting between subsets v1 and v2.
fn routes(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/web]
  http:
  - route:
    - destination: {{host: web.default.svc.cluster.local, subset: v1, port: {{number: 8080}}}}
      weight: {v1}
    - destination: {{host: web.default.svc.cluster.local, subset: v2, port: {{number: 8080}}}}
      weight: {v2}
"#
    )
}

async fn two_backends() -> (Backend, Backend) {
    (Backend::start("v1").await, Backend::start("v2").await)
}

fn start(v1: &Backend, v2: &Backend, extra_args: &[&str]) -> Gateway {
    let mut builder = Gateway::builder()
        .config("gateway.yaml", &gateway_with(false, false))
        .config(
            "service.yaml",
            &service(&[(v1.addr, "v1"), (v2.addr, "v2")]),
        )
        .config("routes.yaml", &routes(100, 0))
        .server_port(80)
        .server_port(81);
    for arg in extra_args {
        builder = builder.arg(*arg);
    }
    builder.start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_live_and_open_connections_follow_them() {
    let (v1, v2) = two_backends().await;
    let gateway = start(&v1, &v2, &[]);
    let mut keep_alive = Connection::http1(gateway.addr(80)).await;
    assert_eq!(
        keep_alive.get("web.example.com", "/").await.backend(),
        Some("v1")
    );

    gateway.apply("routes.yaml", &routes(0, 100));
    // The same connection, not restarted, now routes by the new configuration.
    assert_eq!(
        keep_alive.get("web.example.com", "/").await.backend(),
        Some("v2")
    );

    // A listener is added, then removed, while the connection on 80 carries on.
    assert!(std::net::TcpStream::connect(gateway.addr(81)).is_err());
    gateway.apply("gateway.yaml", &gateway_with(false, true));
    let extra = client::get(gateway.addr(81), "web.example.com", "/").await;
    assert_eq!(extra.backend(), Some("v2"));
    assert_eq!(
        keep_alive.get("web.example.com", "/").await.backend(),
        Some("v2")
    );
    gateway.apply("gateway.yaml", &gateway_with(false, false));
    assert!(std::net::TcpStream::connect(gateway.addr(81)).is_err());
    assert_eq!(keep_alive.get("web.example.com", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_change_is_rejected_and_the_last_good_version_stays() {
    let (v1, v2) = two_backends().await;
    let gateway = start(&v1, &v2, &[]);
    let version = gateway.version();

    // A weight Istio rejects: the object is rejected, its previous version stays in force.
    let invalid = routes(0, 100).replace("weight: 100", "weight: -5");
    gateway.write_config("routes.yaml", &invalid);
    wait_for(|| {
        gateway
            .log()
            .contains("rejected; its last good version stays in force")
    });
    assert!(
        gateway.log().contains("routes.yaml"),
        "the finding names the file:\n{}",
        gateway.log()
    );
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/")
            .await
            .backend(),
        Some("v1")
    );

    // A file that does not even parse keeps what it held.
    gateway.write_config("routes.yaml", "kind: [unclosed\n");
    wait_for(|| gateway.log().matches("routes.yaml").count() >= 2);
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/")
            .await
            .backend(),
        Some("v1")
    );
    assert_eq!(gateway.version(), version, "nothing new was installed");

    // A valid change still applies afterwards.
    gateway.apply("routes.yaml", &routes(0, 100));
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/")
            .await
            .backend(),
        Some("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_configuration_again() {
    let (v1, v2) = two_backends().await;
    // Watching is off: only the signal can bring the change in.
    let gateway = start(&v1, &v2, &["--no-watch"]);
    let version = gateway.version();
    gateway.write_config("routes.yaml", &routes(0, 100));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gateway.version(), version, "not read without the signal");
    gateway.signal("HUP");
    gateway.wait_version_after(version);
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/")
            .await
            .backend(),
        Some("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_notifications_bring_a_change_in_without_waiting_for_the_poll() {
    let (v1, v2) = two_backends().await;
    // The poll is effectively off: only the kernel's notification can bring the change in.
    let gateway = start(&v1, &v2, &["--watch-interval", "1h"]);
    gateway.apply("routes.yaml", &routes(0, 100));
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/")
            .await
            .backend(),
        Some("v2")
    );
    // A new file in a new subdirectory is seen too.
    std::fs::create_dir_all(gateway.config_dir().join("more")).unwrap();
    gateway.apply(
        "more/routes.yaml",
        &routes(100, 0).replace("name: web,", "name: other,"),
    );
    assert!(gateway.log().contains("configuration installed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_sigterm_drains_in_flight_requests_and_exits_zero() {
    let _serial = common::exclusive().await;
    let (v1, v2) = two_backends().await;
    v1.set_delay(Duration::from_millis(1500));
    let mut gateway = start(
        &v1,
        &v2,
        &["--drain-period", "1s", "--drain-timeout", "10s"],
    );
    let address = gateway.addr(80);
    let in_flight =
        tokio::spawn(async move { client::get(address, "web.example.com", "/slow").await });
    wait_for(|| v1.state.active.load(Ordering::Relaxed) == 1);

    gateway.signal("TERM");
    // Readiness fails at once, while listeners still accept during the drain period.
    wait_for(|| !gateway.ready());
    let during = client::get(address, "web.example.com", "/during").await;
    assert_eq!(during.status, 200);
    assert_eq!(
        during.header("connection"),
        Some("close"),
        "clients are asked to go"
    );

    let answered = in_flight.await.unwrap();
    assert_eq!(answered.status, 200, "the in-flight request finished");
    let status = gateway
        .wait_exit(Duration::from_secs(20))
        .expect("strait exits after draining");
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "nothing listens any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_shutdown() {
    let (v1, v2) = two_backends().await;
    v1.set_delay(Duration::from_secs(60));
    let mut gateway = start(&v1, &v2, &["--drain-period", "0s", "--drain-timeout", "1s"]);
    let address = gateway.addr(80);
    let stuck = tokio::spawn(async move {
        let mut connection = Connection::http1(address).await;
        let request = connection
            .request("web.example.com", "/stuck")
            .body(Default::default())
            .unwrap();
        connection.send(request).await
    });
    wait_for(|| v1.state.active.load(Ordering::Relaxed) == 1);
    gateway.signal("TERM");
    let status = gateway
        .wait_exit(Duration::from_secs(30))
        .expect("the drain timeout ends the wait for a stuck request");
    assert!(status.success());
    assert!(
        gateway.log().contains("drain timeout reached"),
        "{}",
        gateway.log()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request was cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_metrics_and_proxy_config_describe_what_is_served() {
    let (v1, v2) = two_backends().await;
    let gateway = start(&v1, &v2, &[]);
    for _ in 0..3 {
        assert_eq!(
            client::get(gateway.addr(80), "web.example.com", "/")
                .await
                .status,
            200
        );
    }
    assert_eq!(
        client::get(gateway.addr(80), "nowhere.example.com", "/")
            .await
            .status,
        404
    );

    let dump = gateway.config_dump();
    assert!(dump["version"].as_u64().unwrap() >= 1);
    let v1_cluster = "outbound|8080|v1|web.default.svc.cluster.local";
    assert!(
        dump["snapshot"]["clusters"][v1_cluster].is_object(),
        "{dump}"
    );
    assert_eq!(dump["endpoints"][v1_cluster][0]["health"], "HEALTHY");
    assert!(dump["snapshot"]["route_tables"]["http.80"].is_object());

    let cluster = [
        ("destination_service", "web.default.svc.cluster.local"),
        ("response_code", "200"),
    ];
    assert_eq!(gateway.metric("istio_requests_total", &cluster), 3.0);
    assert_eq!(
        gateway.metric(
            "istio_requests_total",
            &[("response_flags", "NR"), ("response_code", "404")]
        ),
        1.0
    );
    assert_eq!(
        gateway.metric("istio_request_duration_milliseconds_count", &cluster),
        3.0
    );
    assert_eq!(gateway.metric("istio_request_bytes_count", &cluster), 3.0);
    assert!(gateway.metric("istio_response_bytes_sum", &cluster) > 0.0);
    let text = gateway.metrics_text();
    for label in [
        "reporter=\"source\"",
        "source_workload=",
        "destination_service_name=\"web\"",
        "request_protocol=\"http\"",
    ] {
        assert!(text.contains(label), "metrics lack {label}:\n{text}");
    }

    let admin = gateway.admin.to_string();
    let show = |section: &str| {
        common::run(common::strait().args(["proxy-config", section, "--admin", &admin]))
    };
    let listeners = show("listeners");
    assert_eq!(listeners.code, Some(0), "{}", listeners.stderr);
    assert!(
        listeners.stdout.contains("Route: http.80"),
        "{}",
        listeners.stdout
    );
    let routes = show("routes");
    assert!(
        routes.stdout.contains("web.example.com") && routes.stdout.contains("100%"),
        "{}",
        routes.stdout
    );
    let clusters = show("clusters");
    assert!(clusters.stdout.contains(v1_cluster), "{}", clusters.stdout);
    let endpoints = show("endpoints");
    assert!(
        endpoints.stdout.contains(&v1.addr.to_string()) && endpoints.stdout.contains("HEALTHY")
    );
    let json = common::run(common::strait().args([
        "proxy-config",
        "clusters",
        "--admin",
        &admin,
        "-o",
        "json",
    ]));
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(parsed[v1_cluster].is_object());

    assert_eq!(http_get(gateway.health, "/healthz/ready").0, 200);
    assert_eq!(http_get(gateway.admin, "/nothing").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_says_when_nothing_runs() {
    let port = common::gateway::free_port();
    let result = common::run(common::strait().args([
        "proxy-config",
        "routes",
        "--admin",
        &format!("127.0.0.1:{port}"),
    ]));
    assert_eq!(result.code, Some(2));
    assert!(
        result.stderr.contains("is strait running?"),
        "{}",
        result.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_carries_envoys_fields_and_the_reason() {
    let (v1, v2) = two_backends().await;
    let gateway = start(&v1, &v2, &["--access-log-format", "json"]);
    assert_eq!(
        client::get(gateway.addr(80), "web.example.com", "/ok?q=1")
            .await
            .status,
        200
    );
    assert_eq!(
        client::get(gateway.addr(80), "nowhere.example.com", "/missing")
            .await
            .status,
        404
    );
    let ok: serde_json::Value =
        serde_json::from_str(&gateway.access_log_line(|l| l.contains("/ok?q=1"))).unwrap();
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["upstream_host"], v1.addr.to_string());
    assert_eq!(
        ok["upstream_cluster"],
        "outbound|8080|v1|web.default.svc.cluster.local"
    );
    assert_eq!(ok["authority"], "web.example.com");
    for field in [
        "start_time",
        "bytes_received",
        "bytes_sent",
        "duration",
        "route_name",
        "request_id",
    ] {
        assert!(!ok[field].is_null(), "{field} missing: {ok}");
    }
    let missing: serde_json::Value =
        serde_json::from_str(&gateway.access_log_line(|l| l.contains("/missing"))).unwrap();
    assert_eq!(missing["response_flags"], "NR");
    let reason = missing["reason"].as_str().unwrap();
    assert!(
        reason.contains("nowhere.example.com"),
        "the reason says what had no route: {missing}"
    );
}

/// Counts of what the load clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    v1: AtomicUsize,
    v2: AtomicUsize,
}

impl Tally {
    fn record(&self, result: Result<common::client::Response, String>, what: &str) {
        match result {
            Ok(response) if response.status == 200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                match response.backend() {
                    Some("v1") => self.v1.fetch_add(1, Ordering::Relaxed),
                    _ => self.v2.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(response) => {
                eprintln!("{what}: status {} {}", response.status, response.text());
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                eprintln!("{what}: {error}");
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// For 30 s the configuration changes every 100 ms — weights flip, a listener is added and
/// removed, endpoints are replaced, the certificate is rotated — while HTTP/1.1 keep-alive,
/// HTTP/2, HTTPS and new-connection clients send steady traffic: no request fails, and the
/// answers follow the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_reload_under_load_fails_no_request() {
    let _serial = common::exclusive().await;
    let ca = Ca::new("reload CA");
    let certificate = ca.server(&["web.example.com"]);
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let v2_replacement = Backend::start("v2").await;
    let gateway = Gateway::builder()
        .config("gateway.yaml", &gateway_with(true, false))
        .config(
            "service.yaml",
            &service(&[(v1.addr, "v1"), (v2.addr, "v2")]),
        )
        .config("routes.yaml", &routes(100, 0))
        .credential(
            "web",
            &[
                ("tls.crt", &certificate.cert),
                ("tls.key", &certificate.key),
            ],
        )
        .server_port(80)
        .server_port(81)
        .server_port(443)
        .start();
    let tls = client_config(&ca.pem, &["h2", "http/1.1"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (plain, secure) = (gateway.addr(80), gateway.addr(443));

    let mut clients = Vec::new();
    // HTTP/1.1 keep-alive.
    clients.push(tokio::spawn({
        let (stop, tally) = (stop.clone(), tally.clone());
        async move {
            let mut connection = Connection::http1(plain).await;
            while !stop.load(Ordering::Relaxed) {
                let request = connection
                    .request("web.example.com", "/keep-alive")
                    .body(Default::default())
                    .unwrap();
                tally.record(
                    connection.send(request).await.map_err(|e| e.to_string()),
                    "keep-alive",
                );
            }
        }
    }));
    // HTTP/2 (h2c), several streams at once on one connection.
    clients.push(tokio::spawn({
        let (stop, tally) = (stop.clone(), tally.clone());
        async move {
            let mut connection = Connection::h2c(plain).await;
            while !stop.load(Ordering::Relaxed) {
                let request = connection
                    .request("web.example.com", "/h2")
                    .body(Default::default())
                    .unwrap();
                tally.record(
                    connection.send(request).await.map_err(|e| e.to_string()),
                    "h2c",
                );
            }
        }
    }));
    // A new connection per request, plaintext and TLS (which sees the rotated certificates).
    clients.push(tokio::spawn({
        let (stop, tally) = (stop.clone(), tally.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let response = match tokio::net::TcpStream::connect(plain).await {
                    Ok(_) => Ok(client::get(plain, "web.example.com", "/new").await),
                    Err(error) => Err(error.to_string()),
                };
                tally.record(response, "new connection");
            }
        }
    }));
    clients.push(tokio::spawn({
        let (stop, tally) = (stop.clone(), tally.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let response =
                    match Connection::try_tls(secure, "web.example.com", tls.clone()).await {
                        Ok(mut connection) => {
                            let request = connection
                                .request("web.example.com", "/tls")
                                .body(Default::default())
                                .unwrap();
                            connection.send(request).await.map_err(|e| e.to_string())
                        }
                        Err(error) => Err(format!("TLS: {error}")),
                    };
                tally.record(response, "tls");
            }
        }
    }));

    let started = Instant::now();
    let mut change = 0u32;
    let mut checked = 0u32;
    while started.elapsed() < Duration::from_secs(30) {
        change += 1;
        let v2_only = change.is_multiple_of(2);
        gateway.write_config(
            "routes.yaml",
            &if v2_only {
                routes(0, 100)
            } else {
                routes(100, 0)
            },
        );
        if change.is_multiple_of(5) {
            gateway.write_config(
                "gateway.yaml",
                &gateway_with(true, change.is_multiple_of(10)),
            );
        }
        if change.is_multiple_of(7) {
            let second = if change.is_multiple_of(14) {
                &v2
            } else {
                &v2_replacement
            };
            gateway.write_config(
                "service.yaml",
                &service(&[(v1.addr, "v1"), (second.addr, "v2")]),
            );
        }
        if change.is_multiple_of(10) {
            let rotated = ca.server(&["web.example.com"]);
            gateway.write_credential(
                "web",
                &[("tls.crt", &rotated.cert), ("tls.key", &rotated.key)],
            );
        }
        // Every so often, let the change settle and check the answers follow it.
        if change.is_multiple_of(25) {
            let expected = if v2_only { "v2" } else { "v1" };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if client::get(plain, "web.example.com", "/check")
                    .await
                    .backend()
                    == Some(expected)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the answers did not follow change {change}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            checked += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "{change} changes, {} versions installed, {ok} requests ok (v1 {}, v2 {}), {failed} failed, {checked} checks",
        gateway.version(),
        tally.v1.load(Ordering::Relaxed),
        tally.v2.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(ok > 1000, "steady traffic flowed: {ok}");
    assert!(
        gateway.version() > 50,
        "the changes were applied: version {}",
        gateway.version()
    );
    assert!(tally.v1.load(Ordering::Relaxed) > 0 && tally.v2.load(Ordering::Relaxed) > 0);
    assert!(!gateway.log().contains("panicked"));
}

/// Polls `condition` for up to 10 s.
fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_counted_in_istios_tcp_metrics_and_logged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = common::tcp::echo("db").await;
    let config = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 5432, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/tcp]
  tcp:
  - route:
    - destination: {{host: db.default.svc.cluster.local, port: {{number: 5432}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.default.svc.cluster.local]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {port}}}}}]
"#,
        port = echo.addr.port()
    );
    let gateway = Gateway::builder()
        .config("tcp.yaml", &config)
        .server_port(5432)
        .start();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr(5432))
            .await
            .unwrap();
        stream.write_all(b"twelve bytes").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "db\ntwelve bytesbye db after 12 bytes\n");
    }
    let service = [("destination_service", "db.default.svc.cluster.local")];
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric("istio_tcp_connections_closed_total", &service) < 2.0 {
        assert!(Instant::now() < deadline, "{}", gateway.metrics_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gateway.metric("istio_tcp_connections_opened_total", &service),
        2.0
    );
    assert_eq!(
        gateway.metric("istio_tcp_received_bytes_total", &service),
        24.0
    );
    // What the backend sent: its greeting, the echo and its goodbye, twice.
    let sent = 2.0 * ("db\n".len() + 12 + "bye db after 12 bytes\n".len()) as f64;
    assert_eq!(gateway.metric("istio_tcp_sent_bytes_total", &service), sent);
    let line =
        gateway.access_log_line(|l| l.contains("outbound|5432||db.default.svc.cluster.local"));
    assert!(line.contains(&echo.addr.to_string()), "{line}");
}
