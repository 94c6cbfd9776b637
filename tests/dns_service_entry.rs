//! `resolution: DNS` ServiceEntries end to end, against a real DNS server (dnsmasq on loopback)
//! whose records the test changes: no answer yet is a 503 that says it waits for DNS; traffic
//! follows the answer, survives the server going away, SERVFAIL and timeouts, and stops (with the
//! reason in the access log) only after NXDOMAIN outlasts its grace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use common::TempDir;
use common::backend::Backend;
use common::client;
use common::dnsmasq::Dnsmasq;
use common::gateway::{Gateway, free_port};

fn config(port: u16) -> String {
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
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/web]
  http:
  - route:
    - destination: {{host: web.mesh.test, port: {{number: {port}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.mesh.test]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: DNS
"#
    )
}

/// Sends requests until one is answered by `backend` (or the deadline passes).
async fn until_backend(gateway: SocketAddr, backend: &str) -> client::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = client::get(gateway, "web.example.com", "/").await;
        if response.status == 200 && response.backend() == Some(backend) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {backend}: last {} {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_hosts(path: &PathBuf, line: &str) {
    std::fs::write(path, format!("{line}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_the_dns_answer_keeps_the_last_good_one_and_stops_after_nxdomain_grace() {
    let first = Backend::start("web-1").await;
    let port = first.addr.port();
    let second = Backend::start_on("web-2", SocketAddr::from(([127, 0, 0, 2], port))).await;

    let dir = TempDir::new("dns");
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, "127.0.0.1 web.mesh.test");
    let dns_port = free_port();

    let gateway = Gateway::builder()
        .config("web.yaml", &config(port))
        .server_port(80)
        .arg("--dns-server")
        .arg(format!("127.0.0.1:{dns_port}"))
        .arg("--dns-refresh-rate")
        .arg("1s")
        .arg("--dns-nxdomain-grace")
        .arg("3s")
        .start();
    let address = gateway.addr(80);

    // No DNS server yet: the name has no answer, and the cluster says it is waiting.
    let response = client::get(address, "web.example.com", "/").await;
    assert_eq!(response.status, 503, "{}", response.text());
    let line = gateway.access_log_line(|l| l.contains(" 503 UH "));
    assert!(
        line.contains("waiting for DNS") && line.contains("web.mesh.test"),
        "{line}"
    );

    // The server answers: the answer's address takes the traffic.
    let dns = Dnsmasq::start(dns_port, &hosts);
    until_backend(address, "web-1").await;

    // The record moves to another backend: so does the traffic.
    write_hosts(&hosts, "127.0.0.2 web.mesh.test");
    dns.reload();
    until_backend(address, "web-2").await;
    assert!(second.requests() > 0);

    // The DNS server goes away: lookups fail, the last good answer stays, for longer than the
    // NXDOMAIN grace too (a failure is not NXDOMAIN).
    drop(dns);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let response = client::get(address, "web.example.com", "/").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.backend(), Some("web-2"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    assert!(
        gateway.metric("strait_dns_lookup_failures_total", &[]) > 0.0,
        "failed lookups are counted"
    );

    // The server is back and the name is gone: NXDOMAIN keeps the answer for the grace, then
    // the cluster empties and says why.
    write_hosts(&hosts, "127.0.0.9 other.mesh.test");
    let _dns = Dnsmasq::start(dns_port, &hosts);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client::get(address, "web.example.com", "/").await;
        if response.status == 503 {
            break;
        }
        assert_eq!(response.backend(), Some("web-2"));
        assert!(Instant::now() < deadline, "the cluster never emptied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let line = gateway.access_log_line(|l| l.contains(" 503 UH ") && !l.contains("waiting"));
    assert!(
        line.contains("NXDOMAIN") && line.contains("grace") && line.contains("web.mesh.test"),
        "{line}"
    );
}

/// What the relay in front of dnsmasq does with a query.
const FORWARD: u8 = 0;
const SERVFAIL: u8 = 1;
const SILENT: u8 = 2;

/// A DNS relay on loopback in front of `upstream`: it forwards queries, or answers each with
/// SERVFAIL (the query sent back with QR, RA and RCODE 2), or drops it so that the lookup times
/// out — whatever `mode` says at the moment the query arrives.
async fn relay(upstream: SocketAddr, mode: Arc<AtomicU8>) -> SocketAddr {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, client)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let query = buf[..len].to_vec();
            if query.len() < 12 {
                continue;
            }
            match mode.load(Ordering::SeqCst) {
                SERVFAIL => {
                    let mut answer = query;
                    answer[2] |= 0x80; // QR
                    answer[3] = (answer[3] & 0xf0) | 0x80 | 2; // RA, RCODE SERVFAIL
                    let _ = socket.send_to(&answer, client).await;
                }
                SILENT => {}
                _ => {
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        let out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        out.send_to(&query, upstream).await.unwrap();
                        let mut answer = vec![0u8; 4096];
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_secs(2), out.recv(&mut answer))
                                .await
                        {
                            let _ = socket.send_to(&answer[..n], client).await;
                        }
                    });
                }
            }
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_timeouts_keep_the_last_answer_and_count_as_failures() {
    let first = Backend::start("web-1").await;
    let port = first.addr.port();
    let _second = Backend::start_on("web-2", SocketAddr::from(([127, 0, 0, 2], port))).await;

    let dir = TempDir::new("dns-fail");
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, "127.0.0.1 web.mesh.test");
    let dns_port = free_port();
    let dns = Dnsmasq::start(dns_port, &hosts);
    let mode = Arc::new(AtomicU8::new(FORWARD));
    let relay = relay(SocketAddr::from(([127, 0, 0, 1], dns_port)), mode.clone()).await;

    let gateway = Gateway::builder()
        .config("web.yaml", &config(port))
        .server_port(80)
        .arg("--dns-server")
        .arg(relay.to_string())
        .arg("--dns-refresh-rate")
        .arg("1s")
        .start();
    let address = gateway.addr(80);
    until_backend(address, "web-1").await;

    // The record moves, but every lookup now fails: first with SERVFAIL, then by timing out.
    // The last answer keeps the traffic, and the failures are counted.
    write_hosts(&hosts, "127.0.0.2 web.mesh.test");
    dns.reload();
    for failing in [SERVFAIL, SILENT] {
        mode.store(failing, Ordering::SeqCst);
        let before = gateway.metric("strait_dns_lookup_failures_total", &[]);
        // Several refresh periods, and (for the silent relay) past the resolver's timeout.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let response = client::get(address, "web.example.com", "/").await;
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(response.backend(), Some("web-1"), "mode {failing}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            gateway.metric("strait_dns_lookup_failures_total", &[]) > before,
            "mode {failing}: failed lookups are counted"
        );
    }

    // Answers again: the traffic follows the record.
    mode.store(FORWARD, Ordering::SeqCst);
    until_backend(address, "web-2").await;
}
