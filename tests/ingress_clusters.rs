//! Clusters at the ingress gateway, end to end against real backends: DestinationRule load
//! balancing (round robin, random, least request and its aliases, subsets by labels),
//! consistent hashing (header, cookie, source IP, query parameter; ring hash and maglev, and how
//! many keys move when an endpoint goes), outlier detection (ejection, return, Istio's
//! defaults, the panic threshold), connection pool limits, the errors a cluster explains in the
//! access log, `portLevelSettings` and subset policy precedence, and live endpoint state that
//! outlives a configuration change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::backend::Backend;
use common::client::{self, Connection, Response};
use common::gateway::Gateway;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "web.example.com";
const SERVICE: &str = "web.default.svc.cluster.local";

/// The cluster of `service` (a short name in `default`) on port 8080, with an optional subset.
fn cluster(service: &str, subset: &str) -> String {
    format!("outbound|8080|{subset}|{service}.default.svc.cluster.local")
}

/// The Gateway (port 80, every host) and a VirtualService for `HOST` with `http` (the routes,
/// block YAML indented under `http:`).
fn gateway_and_routes(http: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
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
  hosts: [{HOST}]
  gateways: [istio-system/web]
  http:
{http}"#
    )
}

/// One route (an item of `http:`) to `service` port 8080, with `fields` (`key: value` lines in
/// flow style) added to it.
fn route_to(service: &str, fields: &[&str]) -> String {
    let mut text = String::from("  - route:\n");
    text.push_str(&format!(
        "    - destination: {{host: {service}, port: {{number: 8080}}}}\n"
    ));
    for field in fields {
        text.push_str(&format!("    {field}\n"));
    }
    text
}

/// A STATIC ServiceEntry `NAME.default.svc.cluster.local` on port 8080 with one endpoint per
/// address, each labelled with its `labels` (a flow map's inside, may be empty).
fn service_entry_labelled(name: &str, endpoints: &[(SocketAddr, &str)]) -> String {
    let list = if endpoints.is_empty() {
        "  endpoints: []\n".to_owned()
    } else {
        let mut list = String::from("  endpoints:\n");
        for (address, labels) in endpoints {
            list.push_str(&format!(
                "  - {{address: {}, ports: {{http: {}}}, labels: {{{labels}}}}}\n",
                address.ip(),
                address.port()
            ));
        }
        list
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
{list}"#
    )
}

fn service_entry(name: &str, endpoints: &[SocketAddr]) -> String {
    let labelled: Vec<(SocketAddr, &str)> = endpoints.iter().map(|a| (*a, "")).collect();
    service_entry_labelled(name, &labelled)
}

/// A DestinationRule for `name` whose spec continues with `body` (block YAML, two spaces in).
fn destination_rule(name: &str, body: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}
{body}"#
    )
}

fn documents(parts: &[String]) -> String {
    parts.join("\n---\n")
}

fn addresses(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// Starts three (or `n`) backends named `prefix-1`...
async fn backends(prefix: &str, n: usize) -> Vec<Backend> {
    let mut list = Vec::new();
    for i in 1..=n {
        list.push(Backend::start(&format!("{prefix}-{i}")).await);
    }
    list
}

fn start(config: &str) -> Gateway {
    Gateway::builder()
        .config("web.yaml", config)
        .server_port(80)
        .start()
}

/// Sends `n` GETs for `path` on one connection and counts the answers by backend; each must be
/// 200.
async fn spread(gateway: &Gateway, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let response = connection.get(HOST, path).await;
        assert_eq!(response.status, 200, "{}", response.text());
        *counts
            .entry(response.backend().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// Sends `total` GETs for `path` from `workers` connections at once and counts the answers by
/// backend; each must be 200.
async fn concurrent_spread(
    gateway: &Gateway,
    path: &str,
    total: usize,
    workers: usize,
) -> BTreeMap<String, usize> {
    let sent = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (sent, counts, addr, path) = (
            sent.clone(),
            counts.clone(),
            gateway.addr(80),
            path.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::http1(addr).await;
            while sent.fetch_add(1, Ordering::Relaxed) < total {
                let response = connection.get(HOST, &path).await;
                assert_eq!(response.status, 200, "{}", response.text());
                let backend = response.backend().unwrap_or_default().to_owned();
                *counts.lock().unwrap().entry(backend).or_insert(0) += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    counts.lock().unwrap().clone()
}

/// `(response code, flags, reason)` of an access log line.
fn parsed(line: &str) -> (u16, String, String) {
    let after_request = line.splitn(3, '"').nth(2).unwrap_or_default();
    let mut fields = after_request.split_whitespace();
    let code = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let flags = fields.next().unwrap_or_default().to_owned();
    let reason = line
        .split_once("reason=\"")
        .map(|(_, r)| r.trim_end().trim_end_matches('"').to_owned())
        .unwrap_or_default();
    (code, flags, reason)
}

/// The access log line of the request for `path` (paths are unique per check).
fn log_line(gateway: &Gateway, path: &str) -> (u16, String, String, String) {
    let needle = format!(" {path} ");
    let line = gateway.access_log_line(|l| l.contains(&needle));
    let (code, flags, reason) = parsed(&line);
    (code, flags, reason, line)
}

/// Each endpoint's health (`HEALTHY` or `EJECTED`) in `/config_dump`, by address.
fn health(gateway: &Gateway, cluster: &str) -> BTreeMap<SocketAddr, String> {
    let dump = gateway.config_dump();
    let list = dump["endpoints"][cluster]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints for {cluster} in config_dump: {dump}"))
        .clone();
    list.iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().parse().unwrap(),
                e["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ejected(gateway: &Gateway, cluster: &str) -> BTreeSet<SocketAddr> {
    health(gateway, cluster)
        .into_iter()
        .filter(|(_, h)| h == "EJECTED")
        .map(|(a, _)| a)
        .collect()
}

/// Waits (up to 15 s) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Load balancing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_over_three_endpoints() {
    let list = backends("rr", 3).await;
    let config = documents(&[
        gateway_and_routes(&route_to("web", &[])),
        service_entry("web", &addresses(&list)),
        destination_rule(
            "web",
            "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
        ),
    ]);
    let gateway = start(&config);
    let counts = spread(&gateway, "/rr", 300).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (backend, count) in &counts {
        // Requests one after another rotate strictly: 100 each (one off at most where the
        // rotation started).
        assert!(
            (99..=101).contains(count),
            "{backend} got {count} of 300: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reaches_every_endpoint_in_no_fixed_order() {
    let list = backends("random", 3).await;
    let config = documents(&[
        gateway_and_routes(&route_to("web", &[])),
        service_entry("web", &addresses(&list)),
        destination_rule("web", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}"),
    ]);
    let gateway = start(&config);
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut sequence = Vec::new();
    for _ in 0..1200 {
        let response = connection.get(HOST, "/random").await;
        assert_eq!(response.status, 200);
        sequence.push(response.backend().unwrap().to_owned());
    }
    let mut counts = BTreeMap::new();
    for name in &sequence {
        *counts.entry(name.clone()).or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    // 400 expected each; a standard deviation is about 16.
    for (backend, count) in &counts {
        assert!(
            (300..=500).contains(count),
            "{backend} got {count} of 1200: {counts:?}"
        );
    }
    // A rotation never repeats an endpoint twice in a row; random choice does about 400 times.
    let repeats = sequence.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(repeats > 200, "only {repeats} repeats: not a random choice");
}

/// Sends 400 requests from 8 connections at once to `path`, while `slow` takes 400 ms per
/// request, and checks the slow endpoint got clearly fewer than each fast one.
async fn assert_avoids_slow(gateway: &Gateway, path: &str, slow: &Backend) {
    let counts = concurrent_spread(gateway, path, 400, 8).await;
    let slow_count = counts.get(&slow.name).copied().unwrap_or(0);
    let fastest_least = counts
        .iter()
        .filter(|(name, _)| **name != slow.name)
        .map(|(_, count)| *count)
        .min()
        .unwrap_or(0);
    // An even spread would give each a third (about 133); two choices of least request give
    // the busy endpoint only the draws where both choices fall on it (about one in nine).
    assert!(
        slow_count * 2 < fastest_least,
        "{path}: the slow endpoint got {slow_count}, a fast one only {fastest_least}: {counts:?}"
    );
}

fn least_request_config(list: &[Backend], variants: &[(&str, &str)]) -> String {
    let mut http = String::new();
    let mut parts = Vec::new();
    for (service, lb) in variants {
        http.push_str(&format!(
            "  - match: [{{uri: {{prefix: /{service}}}}}]\n    route:\n    - destination: {{host: {service}, port: {{number: 8080}}}}\n"
        ));
        parts.push(service_entry(service, &addresses(list)));
        if !lb.is_empty() {
            parts.push(destination_rule(
                service,
                &format!("  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}"),
            ));
        }
    }
    parts.insert(0, gateway_and_routes(&http));
    documents(&parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_balancer_is_least_request_and_avoids_a_slow_endpoint() {
    let list = backends("default-lb", 3).await;
    list[2].set_delay(Duration::from_millis(400));
    let gateway = start(&least_request_config(
        &list,
        &[("unset", ""), ("unspecified", "UNSPECIFIED")],
    ));
    assert_avoids_slow(&gateway, "/unset", &list[2]).await;
    assert_avoids_slow(&gateway, "/unspecified", &list[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_least_conn_avoid_a_slow_endpoint() {
    let list = backends("least", 3).await;
    list[2].set_delay(Duration::from_millis(400));
    let gateway = start(&least_request_config(
        &list,
        &[
            ("leastrequest", "LEAST_REQUEST"),
            ("leastconn", "LEAST_CONN"),
        ],
    ));
    assert_avoids_slow(&gateway, "/leastrequest", &list[2]).await;
    assert_avoids_slow(&gateway, "/leastconn", &list[2]).await;
}

/// Routes `x-version: v2` to subset v2 and everything else to subset v1.
fn versioned_routes() -> String {
    gateway_and_routes(
        "  - match: [{headers: {x-version: {exact: v2}}}]
    route:
    - destination: {host: web, port: {number: 8080}, subset: v2}
  - route:
    - destination: {host: web, port: {number: 8080}, subset: v1}
",
    )
}

const VERSION_SUBSETS: &str = "  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}";

/// Subset v1 reaches exactly `v1`, subset v2 exactly `v2`.
async fn assert_subsets(gateway: &Gateway, v1: &[&str], v2: &[&str]) {
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut seen = [BTreeSet::new(), BTreeSet::new()];
    for i in 0..60 {
        let (headers, slot): (&[(&str, &str)], usize) = if i % 2 == 0 {
            (&[], 0)
        } else {
            (&[("x-version", "v2")], 1)
        };
        let response = connection.get_with(HOST, "/subset", headers).await;
        assert_eq!(response.status, 200, "{}", response.text());
        seen[slot].insert(response.backend().unwrap().to_owned());
    }
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(seen[0], names(v1), "subset v1");
    assert_eq!(seen[1], names(v2), "subset v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_select_workload_entries_by_version_label() {
    let v1a = Backend::start("we-v1-a").await;
    let v1b = Backend::start("we-v1-b").await;
    let v2 = Backend::start("we-v2").await;
    let other = Backend::start("we-other-app").await;
    let workload = |name: &str, backend: &Backend, labels: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{{labels}}}}}",
            backend.addr.port()
        )
    };
    let config = documents(&[
        versioned_routes(),
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [{SERVICE}]
  location: MESH_INTERNAL
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: web}}}}"
        ),
        workload("web-v1-a", &v1a, "app: web, version: v1"),
        workload("web-v1-b", &v1b, "app: web, version: v1"),
        workload("web-v2", &v2, "app: web, version: v2"),
        // Has the version but not the selected app: never an endpoint of web.
        workload("other-v1", &other, "app: other, version: v1"),
        destination_rule("web", VERSION_SUBSETS),
    ]);
    let gateway = start(&config);
    assert_subsets(&gateway, &["we-v1-a", "we-v1-b"], &["we-v2"]).await;
    assert_eq!(other.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_select_inline_endpoints_by_labels() {
    let v1a = Backend::start("inline-v1-a").await;
    let v1b = Backend::start("inline-v1-b").await;
    let v2 = Backend::start("inline-v2").await;
    let config = documents(&[
        versioned_routes(),
        service_entry_labelled(
            "web",
            &[
                (v1a.addr, "version: v1"),
                (v2.addr, "version: v2"),
                (v1b.addr, "version: v1, zone: b"),
            ],
        ),
        destination_rule("web", VERSION_SUBSETS),
    ]);
    let gateway = start(&config);
    assert_subsets(&gateway, &["inline-v1-a", "inline-v1-b"], &["inline-v2"]).await;
    let dump = gateway.config_dump();
    let v2_endpoints = dump["endpoints"][cluster("web", "v2")].as_array().unwrap();
    assert_eq!(v2_endpoints.len(), 1, "{v2_endpoints:?}");
}

// ---------------------------------------------------------------------------------------------
// Consistent hashing

/// Sends each key `times` times (each on the connection given) with `request(key)` and returns
/// the endpoint each key reached, checking it is always the same.
async fn key_map<F>(
    gateway: &Gateway,
    keys: impl Iterator<Item = String>,
    times: usize,
    request: F,
) -> BTreeMap<String, String>
where
    F: Fn(&str) -> (String, Vec<(String, String)>),
{
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut map = BTreeMap::new();
    for key in keys {
        let (path, headers) = request(&key);
        for _ in 0..times {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let response = connection.get_with(HOST, &path, &headers).await;
            assert_eq!(response.status, 200, "{}", response.text());
            let backend = response.backend().unwrap().to_owned();
            if let Some(before) = map.insert(key.clone(), backend.clone()) {
                assert_eq!(before, backend, "key {key} moved between requests");
            }
        }
    }
    map
}

fn distinct(map: &BTreeMap<String, String>) -> BTreeSet<&String> {
    map.values().collect()
}

fn hash_config(list: &[Backend], consistent_hash: &str) -> String {
    documents(&[
        gateway_and_routes(&route_to("web", &[])),
        service_entry("web", &addresses(list)),
        destination_rule(
            "web",
            &format!("  trafficPolicy: {{loadBalancer: {{consistentHash: {consistent_hash}}}}}"),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_hash_keeps_each_key_on_one_endpoint() {
    let list = backends("hash-header", 4).await;
    let gateway = start(&hash_config(&list, "{httpHeaderName: x-user}"));
    let map = key_map(&gateway, (0..100).map(|i| format!("user-{i}")), 3, |key| {
        ("/h".to_owned(), vec![("x-user".to_owned(), key.to_owned())])
    })
    .await;
    assert!(distinct(&map).len() >= 3, "keys are not spread: {map:?}");
    // Without the header there is no key: the request is still served.
    let response = client::get(gateway.addr(80), HOST, "/no-key").await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_hash_keeps_each_key_on_one_endpoint() {
    let list = backends("hash-query", 4).await;
    let gateway = start(&hash_config(&list, "{httpQueryParameterName: user}"));
    let map = key_map(&gateway, (0..100).map(|i| format!("u{i}")), 3, |key| {
        (format!("/q?a=1&user={key}&b=2"), vec![])
    })
    .await;
    assert!(distinct(&map).len() >= 3, "keys are not spread: {map:?}");
}

/// One GET from source address `source` (any 127.0.0.0/8 address) on a new connection.
async fn get_from(source: std::net::IpAddr, gateway: SocketAddr, path: &str) -> Response {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(gateway).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, HOST)
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_ip_hash_keeps_each_client_address_on_one_endpoint() {
    let list = backends("hash-source", 4).await;
    let gateway = start(&hash_config(&list, "{useSourceIp: true}"));
    let mut map = BTreeMap::new();
    for last in 10..50u8 {
        let source = std::net::IpAddr::from([127, 0, 0, last]);
        for _ in 0..3 {
            // A new connection each time: a new source port, the same source address.
            let response = get_from(source, gateway.addr(80), "/src").await;
            assert_eq!(response.status, 200, "{}", response.text());
            let backend = response.backend().unwrap().to_owned();
            if let Some(before) = map.insert(source.to_string(), backend.clone()) {
                assert_eq!(before, backend, "client {source} moved between connections");
            }
        }
    }
    assert!(
        distinct(&map).len() >= 3,
        "client addresses are not spread: {map:?}"
    );
}

/// `name=value` of a `Set-Cookie` value, as a client sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_hash_is_sticky_and_a_ttl_makes_the_gateway_set_the_cookie() {
    let list = backends("hash-cookie", 4).await;
    let addresses = addresses(&list);
    let config = documents(&[
        gateway_and_routes(
            "  - match: [{uri: {prefix: /session}}]
    route:
    - destination: {host: nottl, port: {number: 8080}}
  - route:
    - destination: {host: web, port: {number: 8080}}
",
        ),
        service_entry("web", &addresses),
        service_entry("nottl", &addresses),
        destination_rule(
            "web",
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: affinity, path: /, ttl: 60s}}",
        ),
        destination_rule(
            "nottl",
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: affinity}}",
        ),
    ]);
    let gateway = start(&config);

    // A request carrying the cookie always reaches the same endpoint, and nothing is set.
    let map = key_map(&gateway, (0..60).map(|i| format!("c{i}")), 3, |key| {
        (
            "/app".to_owned(),
            vec![("cookie".to_owned(), format!("theme=dark; affinity={key}"))],
        )
    })
    .await;
    assert!(distinct(&map).len() >= 3, "cookies are not spread: {map:?}");
    let with_cookie =
        client::get_with(gateway.addr(80), HOST, "/app", &[("cookie", "affinity=c1")]).await;
    assert_eq!(with_cookie.header("set-cookie"), None);

    // Without the cookie, a ttl makes the gateway choose one and set it (Envoy's format); the
    // cookie then leads back to the endpoint that answered.
    let mut first_backends = BTreeSet::new();
    for _ in 0..20 {
        let first = client::get(gateway.addr(80), HOST, "/app").await;
        assert_eq!(first.status, 200);
        let set_cookie = first
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no set-cookie without the cookie: {:?}", first.headers))
            .to_owned();
        assert!(set_cookie.starts_with("affinity="), "{set_cookie}");
        assert!(set_cookie.contains("Max-Age=60"), "{set_cookie}");
        assert!(set_cookie.contains("Path=/"), "{set_cookie}");
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        let answered = first.backend().unwrap().to_owned();
        first_backends.insert(answered.clone());
        let pair = cookie_pair(&set_cookie);
        for _ in 0..3 {
            let again =
                client::get_with(gateway.addr(80), HOST, "/app", &[("cookie", pair.as_str())])
                    .await;
            assert_eq!(again.status, 200);
            assert_eq!(
                again.backend(),
                Some(answered.as_str()),
                "the cookie {pair} set by the first answer leads elsewhere"
            );
            assert_eq!(again.header("set-cookie"), None, "set again though sent");
        }
    }
    assert!(
        first_backends.len() >= 2,
        "every new client was sent to {first_backends:?}"
    );

    // Without a ttl, a request without the cookie is served and no cookie is set.
    let response = client::get(gateway.addr(80), HOST, "/session").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("set-cookie"), None);
}

/// 400 keys on four endpoints; removing one moves only its keys.
async fn assert_minimal_disruption(consistent_hash: &str) {
    let list = backends("disrupt", 4).await;
    let all = addresses(&list);
    let config = |endpoints: &[SocketAddr]| {
        documents(&[
            gateway_and_routes(&route_to("web", &[])),
            service_entry("web", endpoints),
            destination_rule(
                "web",
                &format!(
                    "  trafficPolicy: {{loadBalancer: {{consistentHash: {consistent_hash}}}}}"
                ),
            ),
        ])
    };
    let gateway = start(&config(&all));
    let keys = || (0..400).map(|i| format!("key-{i}"));
    let header = |key: &str| ("/k".to_owned(), vec![("x-user".to_owned(), key.to_owned())]);
    let before = key_map(&gateway, keys(), 2, header).await;
    let per_endpoint = |map: &BTreeMap<String, String>| {
        let mut counts = BTreeMap::<String, usize>::new();
        for backend in map.values() {
            *counts.entry(backend.clone()).or_insert(0) += 1;
        }
        counts
    };
    let counts = per_endpoint(&before);
    assert_eq!(counts.len(), 4, "{consistent_hash}: {counts:?}");
    for (backend, count) in &counts {
        assert!(
            (40..=180).contains(count),
            "{consistent_hash}: {backend} has {count} of 400 keys: {counts:?}"
        );
    }

    let removed = &list[3];
    gateway.apply("web.yaml", &config(&all[..3]));
    let after = key_map(&gateway, keys(), 2, header).await;
    let mut moved_from_removed = 0;
    let mut moved_from_staying = 0;
    for (key, was) in &before {
        let now = &after[key];
        assert_ne!(
            now, &removed.name,
            "{key} still reaches the removed endpoint"
        );
        if *was == removed.name {
            moved_from_removed += 1;
        } else if now != was {
            moved_from_staying += 1;
        }
    }
    let staying = 400 - moved_from_removed;
    // Ring hash moves none of the other keys; maglev may move a few. Allow 5%.
    assert!(
        moved_from_staying * 20 <= staying,
        "{consistent_hash}: {moved_from_staying} of {staying} keys of endpoints that stayed moved"
    );
    let moved = moved_from_removed + moved_from_staying;
    assert!(
        (40..=180).contains(&moved),
        "{consistent_hash}: {moved} of 400 keys moved, about 100 expected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_moves_only_the_keys_of_a_removed_endpoint() {
    assert_minimal_disruption("{httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_moves_about_the_keys_of_a_removed_endpoint() {
    assert_minimal_disruption("{httpHeaderName: x-user, maglev: {tableSize: 65537}}").await;
}

// ---------------------------------------------------------------------------------------------
// Outlier detection

/// Three backends behind round robin (so that each gets every third request), no retries, and
/// `outlier` as the DestinationRule's `outlierDetection`.
fn outlier_config(list: &[Backend], outlier: &str) -> String {
    documents(&[
        gateway_and_routes(&route_to("web", &["retries: {attempts: 0}"])),
        service_entry("web", &addresses(list)),
        destination_rule(
            "web",
            &format!(
                "  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    outlierDetection: {outlier}"
            ),
        ),
    ])
}

/// Sends `n` requests one after another; returns how many were answered by each status.
async fn statuses(gateway: &Gateway, path: &str, n: usize) -> BTreeMap<u16, usize> {
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts
            .entry(connection.get(HOST, path).await.status)
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_5xx_is_ejected_then_returns_after_the_base_ejection_time() {
    let list = backends("eject", 3).await;
    let gateway = start(&outlier_config(
        &list,
        "{consecutive5xxErrors: 3, interval: 500ms, baseEjectionTime: 2s, maxEjectionPercent: 100}",
    ));
    let bad = &list[2];
    bad.set_status(503);
    let answered = statuses(&gateway, "/eject", 30).await;
    assert_eq!(bad.requests(), 3, "ejected after exactly 3 errors in a row");
    assert_eq!(answered.get(&503), Some(&3), "{answered:?}");
    let state = health(&gateway, &cluster("web", ""));
    assert_eq!(state[&bad.addr], "EJECTED", "{state:?}");
    assert_eq!(state[&list[0].addr], "HEALTHY", "{state:?}");
    assert_eq!(state[&list[1].addr], "HEALTHY", "{state:?}");

    // While ejected it gets nothing.
    let answered = statuses(&gateway, "/eject", 20).await;
    assert_eq!(answered, BTreeMap::from([(200, 20)]));
    assert_eq!(bad.requests(), 3);

    // Healthy again, it comes back once the ejection has run its course.
    bad.set_status(0);
    eventually("the ejected endpoint returns", || {
        health(&gateway, &cluster("web", ""))[&bad.addr] == "HEALTHY"
    })
    .await;
    let answered = statuses(&gateway, "/eject", 30).await;
    assert_eq!(answered, BTreeMap::from([(200, 30)]));
    assert!(
        bad.requests() >= 3 + 9,
        "the returned endpoint got {} requests in total",
        bad.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_gateway_errors_eject_on_502_503_504_only() {
    let list = backends("gateway-errors", 3).await;
    let gateway = start(&outlier_config(
        &list,
        "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
    ));
    let bad = &list[0];
    bad.set_status(500);
    statuses(&gateway, "/gw", 30).await;
    assert_eq!(
        bad.requests(),
        10,
        "500 is not a gateway error: never ejected"
    );
    assert!(ejected(&gateway, &cluster("web", "")).is_empty());

    bad.set_status(502);
    statuses(&gateway, "/gw", 30).await;
    assert_eq!(bad.requests(), 12, "ejected after two 502 in a row");
    assert_eq!(
        ejected(&gateway, &cluster("web", "")),
        BTreeSet::from([bad.addr])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_defaults_eject_one_of_three_endpoints_despite_ten_percent() {
    let a = backends("defaults-a", 3).await;
    let b = backends("defaults-b", 3).await;
    let config = documents(&[
        gateway_and_routes(&format!(
            "  - match: [{{uri: {{prefix: /b}}}}]\n    retries: {{attempts: 0}}\n    route:\n    - destination: {{host: svcb, port: {{number: 8080}}}}\n{}",
            route_to("svca", &["retries: {attempts: 0}"])
        )),
        service_entry("svca", &addresses(&a)),
        service_entry("svcb", &addresses(&b)),
        destination_rule(
            "svca",
            "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {}",
        ),
        destination_rule(
            "svcb",
            "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2}",
        ),
    ]);
    let gateway = start(&config);

    // `outlierDetection: {}`: five 5xx in a row eject, even though 10% of three is none.
    a[2].set_status(503);
    statuses(&gateway, "/a", 30).await;
    assert_eq!(a[2].requests(), 5, "ejected after Istio's default of 5");
    assert_eq!(
        ejected(&gateway, &cluster("svca", "")),
        BTreeSet::from([a[2].addr])
    );
    // A second failing endpoint is not ejected: one of three is the most 10% allows.
    a[1].set_status(503);
    let before = a[1].requests();
    statuses(&gateway, "/a", 30).await;
    assert!(a[1].requests() - before >= 14, "the second stays in use");
    assert_eq!(
        ejected(&gateway, &cluster("svca", "")),
        BTreeSet::from([a[2].addr])
    );

    // Only `consecutive5xxErrors` set: the other fields take Istio's defaults.
    b[0].set_status(503);
    statuses(&gateway, "/b", 30).await;
    assert_eq!(b[0].requests(), 2);
    assert_eq!(
        ejected(&gateway, &cluster("svcb", "")),
        BTreeSet::from([b[0].addr])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_health_percent_every_endpoint_is_used_again() {
    let list = backends("panic", 3).await;
    let gateway = start(&outlier_config(
        &list,
        "{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100, minHealthPercent: 70}",
    ));
    let bad = &list[1];
    bad.set_status(503);
    statuses(&gateway, "/panic", 12).await;
    assert_eq!(
        ejected(&gateway, &cluster("web", "")),
        BTreeSet::from([bad.addr]),
        "the failing endpoint is ejected"
    );
    // Two of three healthy is below 70%: the panic threshold sends to all three regardless.
    let before = bad.requests();
    let answered = statuses(&gateway, "/panic", 30).await;
    assert_eq!(bad.requests() - before, 10, "{answered:?}");
    assert_eq!(answered.get(&503), Some(&10), "{answered:?}");
}

// ---------------------------------------------------------------------------------------------
// Connection pools

/// One backend behind a DestinationRule whose `connectionPool` is `connection_pool`, routed with
/// `route_fields`.
async fn pool_setup(
    name: &str,
    connection_pool: &str,
    route_fields: &[&str],
) -> (Backend, Gateway) {
    let backend = Backend::start(name).await;
    let config = documents(&[
        gateway_and_routes(&route_to("web", route_fields)),
        service_entry("web", &[backend.addr]),
        destination_rule(
            "web",
            &format!("  trafficPolicy:\n    connectionPool: {connection_pool}"),
        ),
    ]);
    (backend, start(&config))
}

/// Starts `n` GETs for `path{i}`, each on its own connection, 150 ms apart, and returns their
/// statuses in order.
async fn staggered(gateway: &Gateway, path: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (addr, path) = (gateway.addr(80), format!("{path}{i}"));
        tasks.push(tokio::spawn(async move {
            client::get(addr, HOST, &path).await.status
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_and_one_pending_request_overflow_with_503_uo() {
    let (backend, gateway) = pool_setup(
        "pool-pending",
        "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        &[],
    )
    .await;
    backend.set_delay(Duration::from_millis(1500));
    let statuses = staggered(&gateway, "/pending-", 4).await;
    // One on the connection, one waiting for it; the others find the queue full.
    assert_eq!(statuses, vec![200, 200, 503, 503]);
    assert_eq!(backend.requests(), 2);
    assert_eq!(backend.state.connections.load(Ordering::Relaxed), 1);
    for path in ["/pending-2", "/pending-3"] {
        let (code, flags, reason, line) = log_line(&gateway, path);
        assert_eq!((code, flags.as_str()), (503, "UO"), "{line}");
        assert!(reason.contains("pending"), "{line}");
        assert!(line.contains(&cluster("web", "")), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_limits_the_active_requests_of_a_cluster() {
    let (backend, gateway) =
        pool_setup("pool-requests", "{http: {http2MaxRequests: 2}}", &[]).await;
    backend.set_delay(Duration::from_millis(1500));
    let statuses = staggered(&gateway, "/active-", 4).await;
    assert_eq!(statuses, vec![200, 200, 503, 503]);
    let (code, flags, reason, line) = log_line(&gateway, "/active-3");
    assert_eq!((code, flags.as_str()), (503, "UO"), "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");
    // Once they are done, there is room again.
    backend.set_delay(Duration::ZERO);
    assert_eq!(
        client::get(gateway.addr(80), HOST, "/active-after")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_one_opens_a_connection_per_request() {
    let (once, gateway) =
        pool_setup("pool-once", "{http: {maxRequestsPerConnection: 1}}", &[]).await;
    let counts = spread(&gateway, "/once", 10).await;
    assert_eq!(counts.get("pool-once"), Some(&10));
    assert_eq!(once.state.connections.load(Ordering::Relaxed), 10);

    // Without the limit, requests one after another reuse connections (one goes back to the
    // pool just after its response ends, so a request right behind may open a second).
    let (reused, gateway) = pool_setup("pool-reused", "{http: {http2MaxRequests: 100}}", &[]).await;
    spread(&gateway, "/reused", 10).await;
    let connections = reused.state.connections.load(Ordering::Relaxed);
    assert!(
        connections <= 3,
        "{connections} connections for 10 requests in a row"
    );
}

/// A listener whose accept queue is full: connection attempts to it get no answer, as to an
/// unroutable address.
async fn black_hole() -> (
    tokio::net::TcpListener,
    Vec<std::net::TcpStream>,
    SocketAddr,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue does not fill");
    }
    (listener, fillers, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_to_an_unanswering_address_gives_503_uf() {
    let (_listener, _fillers, unanswering) = black_hole().await;
    let config = documents(&[
        gateway_and_routes(&route_to("web", &["retries: {attempts: 0}"])),
        service_entry("web", &[unanswering]),
        destination_rule(
            "web",
            "  trafficPolicy:\n    connectionPool: {tcp: {connectTimeout: 300ms}}",
        ),
    ]);
    let gateway = start(&config);
    let started = Instant::now();
    let response = client::get(gateway.addr(80), HOST, "/connect-timeout").await;
    let took = started.elapsed();
    assert_eq!(response.status, 503);
    // The default connect timeout is 10 s; 300 ms ends it long before.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let (_, flags, reason, line) = log_line(&gateway, "/connect-timeout");
    assert_eq!(flags, "UF", "{line}");
    assert!(reason.contains("timed out"), "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");
}

/// A raw HTTP/1.1 server for one connection: answers each request with a keep-alive 200 and
/// reports through the returned channel when the peer closes the connection.
async fn watched_backend() -> (SocketAddr, tokio::sync::oneshot::Receiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = closed.send(Instant::now());
                    return;
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                buffer.drain(..end + 4);
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: watched\r\n\r\nok";
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        }
    });
    (addr, closed_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_idle_upstream_connections() {
    let (short, short_closed) = watched_backend().await;
    let (long, mut long_closed) = watched_backend().await;
    let config = documents(&[
        gateway_and_routes(&format!(
            "  - match: [{{uri: {{prefix: /long}}}}]\n    route:\n    - destination: {{host: long, port: {{number: 8080}}}}\n{}",
            route_to("short", &[])
        )),
        service_entry("short", &[short]),
        service_entry("long", &[long]),
        destination_rule(
            "short",
            "  trafficPolicy:\n    connectionPool: {http: {idleTimeout: 300ms}}",
        ),
    ]);
    let gateway = start(&config);
    let sent = Instant::now();
    let short_response = client::get(gateway.addr(80), HOST, "/short").await;
    assert_eq!(short_response.backend(), Some("watched"));
    let long_response = client::get(gateway.addr(80), HOST, "/long").await;
    assert_eq!(long_response.backend(), Some("watched"));
    let closed = tokio::time::timeout(Duration::from_secs(10), short_closed)
        .await
        .expect("the idle connection was not closed")
        .unwrap();
    assert!(
        closed.duration_since(sent) >= Duration::from_millis(300),
        "closed before the idle timeout"
    );
    // With Istio's default (an hour), the idle connection stays open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        long_closed.try_recv().is_err(),
        "closed without an idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_connections_honour_idle_timeout_and_max_requests_per_connection() {
    let idle = Backend::start("h2-idle").await;
    let once = Backend::start("h2-once").await;
    let http2 = |name: &str, backend: &Backend| {
        service_entry(name, &[backend.addr]).replace("protocol: HTTP}", "protocol: HTTP2}")
    };
    let config = documents(&[
        gateway_and_routes(&format!(
            "  - match: [{{uri: {{prefix: /once}}}}]\n    route:\n    - destination: {{host: once, port: {{number: 8080}}}}\n{}",
            route_to("idle", &[])
        )),
        http2("idle", &idle),
        http2("once", &once),
        destination_rule(
            "idle",
            "  trafficPolicy:\n    connectionPool: {http: {idleTimeout: 300ms}}",
        ),
        destination_rule(
            "once",
            "  trafficPolicy:\n    connectionPool: {http: {maxRequestsPerConnection: 1}}",
        ),
    ]);
    let gateway = start(&config);
    let connections = |b: &Backend| b.state.connections.load(Ordering::Relaxed);

    let first = client::get(gateway.addr(80), HOST, "/idle").await;
    assert_eq!(first.json()["version"], "HTTP/2.0", "{}", first.text());
    client::get(gateway.addr(80), HOST, "/idle").await;
    assert_eq!(
        connections(&idle),
        1,
        "requests share the HTTP/2 connection"
    );
    // Idle for five times the timeout: closed, so the next request opens another.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client::get(gateway.addr(80), HOST, "/idle").await;
    assert_eq!(connections(&idle), 2);

    for _ in 0..5 {
        let response = client::get(gateway.addr(80), HOST, "/once").await;
        assert_eq!(response.backend(), Some("h2-once"));
    }
    assert_eq!(connections(&once), 5, "one request per HTTP/2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_bounds_the_retries_in_flight_for_a_cluster() {
    let (backend, gateway) = pool_setup(
        "pool-retries",
        "{http: {maxRetries: 1}}",
        &["retries: {attempts: 3, retryOn: 5xx}"],
    )
    .await;
    backend.set_status(503);
    // Alone, a request may use all its retries: one retry at a time is within the budget.
    let response = client::get(gateway.addr(80), HOST, "/retries-alone").await;
    assert_eq!(response.status, 503);
    assert_eq!(backend.requests(), 4, "the first try and three retries");

    // Eight at once: at most one retry is in flight, so most give up after their first try.
    backend.set_delay(Duration::from_millis(400));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let addr = gateway.addr(80);
        tasks.push(tokio::spawn(async move {
            client::get(addr, HOST, &format!("/retries-{i}"))
                .await
                .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 503);
    }
    let tries = backend.requests() - 4;
    assert!(
        (8..8 * 4).contains(&tries),
        "{tries} tries for 8 requests of up to 4 tries each"
    );
    assert!(
        gateway
            .access_log()
            .lines()
            .any(|l| l.contains("/retries-") && l.contains("maxRetries")),
        "no request says its retries were cut by maxRetries:\n{}",
        gateway.access_log()
    );
}

// ---------------------------------------------------------------------------------------------
// Errors that explain themselves

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_gives_503_uh() {
    let config = documents(&[
        gateway_and_routes(&route_to("web", &[])),
        service_entry("web", &[]),
    ]);
    let gateway = start(&config);
    let response = client::get(gateway.addr(80), HOST, "/no-endpoints").await;
    assert_eq!(response.status, 503);
    let (_, flags, reason, line) = log_line(&gateway, "/no-endpoints");
    assert_eq!(flags, "UH", "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");
    assert!(reason.contains("no endpoints"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_destination_host_gives_503_nc_saying_why() {
    let config = gateway_and_routes(&route_to("missing", &[]));
    let gateway = start(&config);
    let response = client::get(gateway.addr(80), HOST, "/undeclared").await;
    assert_eq!(response.status, 503);
    let (_, flags, reason, line) = log_line(&gateway, "/undeclared");
    assert_eq!(flags, "NC", "{line}");
    assert!(reason.contains(&cluster("missing", "")), "{line}");
    assert!(
        reason.contains("no ServiceEntry declares missing.default.svc.cluster.local"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_gives_503_uf_and_urx_once_retries_are_spent() {
    let stopped = Backend::start("stopped").await;
    stopped.stop();
    let refusing = stopped.addr;
    eventually("the stopped backend refuses connections", || {
        std::net::TcpStream::connect(refusing).is_err()
    })
    .await;
    let config = documents(&[
        gateway_and_routes(&format!(
            "  - match: [{{uri: {{prefix: /retried}}}}]\n    retries: {{attempts: 2, retryOn: connect-failure}}\n    route:\n    - destination: {{host: web, port: {{number: 8080}}}}\n{}",
            route_to("web", &["retries: {attempts: 0}"])
        )),
        service_entry("web", &[refusing]),
    ]);
    let gateway = start(&config);
    let response = client::get(gateway.addr(80), HOST, "/refused").await;
    assert_eq!(response.status, 503);
    let (_, flags, reason, line) = log_line(&gateway, "/refused");
    assert_eq!(flags, "UF", "{line}");
    assert!(reason.to_lowercase().contains("refused"), "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");

    let response = client::get(gateway.addr(80), HOST, "/retried").await;
    assert_eq!(response.status, 503);
    let (_, flags, reason, line) = log_line(&gateway, "/retried");
    assert_eq!(flags, "UF,URX", "{line}");
    assert!(reason.to_lowercase().contains("refused"), "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_ejected_gives_503_uh() {
    let list = backends("all-ejected", 2).await;
    for backend in &list {
        backend.set_status(503);
    }
    let config = documents(&[
        gateway_and_routes(&route_to("web", &["retries: {attempts: 0}"])),
        service_entry("web", &addresses(&list)),
        destination_rule(
            "web",
            "  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
        ),
    ]);
    let gateway = start(&config);
    let mut connection = Connection::http1(gateway.addr(80)).await;
    for _ in 0..10 {
        if ejected(&gateway, &cluster("web", "")).len() == 2 {
            break;
        }
        connection.get(HOST, "/failing").await;
    }
    assert_eq!(ejected(&gateway, &cluster("web", "")).len(), 2);
    let response = connection.get(HOST, "/all-ejected").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.backend(), None, "answered by the gateway");
    let (_, flags, reason, line) = log_line(&gateway, "/all-ejected");
    assert_eq!(flags, "UH", "{line}");
    assert!(reason.contains("ejected"), "{line}");
    assert!(reason.contains(&cluster("web", "")), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Policy precedence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_level_settings_replace_the_destination_policy_for_their_port() {
    let list = backends("port-level", 3).await;
    let mut endpoints = String::from("  endpoints:\n");
    for backend in &list {
        endpoints.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {p}, http-alt: {p}}}}}\n",
            p = backend.addr.port()
        ));
    }
    let config = documents(&[
        gateway_and_routes(
            "  - match: [{uri: {prefix: /alt}}]
    retries: {attempts: 0}
    route:
    - destination: {host: web, port: {number: 9090}}
  - retries: {attempts: 0}
    route:
    - destination: {host: web, port: {number: 8080}}
",
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [{SERVICE}]
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 9090, name: http-alt, protocol: HTTP}}
  resolution: STATIC
{endpoints}"
        ),
        destination_rule(
            "web",
            "  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}",
        ),
    ]);
    let gateway = start(&config);
    let main = format!("outbound|8080||{SERVICE}");
    let alt = format!("outbound|9090||{SERVICE}");

    // Port 8080 keeps the destination-level policy: round robin.
    let counts = spread(&gateway, "/main", 90).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![30, 30, 30]
    );
    // Port 9090 hashes on the header instead.
    let map = key_map(&gateway, (0..30).map(|i| format!("u{i}")), 3, |key| {
        (
            "/alt".to_owned(),
            vec![("x-user".to_owned(), key.to_owned())],
        )
    })
    .await;
    assert!(distinct(&map).len() >= 2, "{map:?}");

    // And it inherits nothing: no outlier detection on 9090, while 8080 ejects.
    list[0].set_status(503);
    let mut connection = Connection::http1(gateway.addr(80)).await;
    for i in 0..30 {
        connection
            .get_with(HOST, "/alt", &[("x-user", &format!("u{i}"))])
            .await;
    }
    assert!(
        ejected(&gateway, &alt).is_empty(),
        "9090 has no outlier detection"
    );
    statuses(&gateway, "/main", 6).await;
    assert_eq!(ejected(&gateway, &main), BTreeSet::from([list[0].addr]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_policy_overrides_field_by_field_and_inherits_the_rest() {
    let list = backends("subset-policy", 4).await;
    let config = documents(&[
        gateway_and_routes(
            "  - match: [{uri: {prefix: /v2}}]
    retries: {attempts: 0}
    route:
    - destination: {host: web, port: {number: 8080}, subset: v2}
  - retries: {attempts: 0}
    route:
    - destination: {host: web, port: {number: 8080}, subset: v1}
",
        ),
        service_entry_labelled(
            "web",
            &[
                (list[0].addr, "version: v1"),
                (list[1].addr, "version: v1"),
                (list[2].addr, "version: v2"),
                (list[3].addr, "version: v2"),
            ],
        ),
        destination_rule(
            "web",
            "  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {http: {http2MaxRequests: 1}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  - name: v2
    labels: {version: v2}",
        ),
    ]);
    let gateway = start(&config);

    // v1 overrides the balancer: each key sticks to one endpoint.
    let map = key_map(&gateway, (0..40).map(|i| format!("u{i}")), 3, |key| {
        (
            "/v1".to_owned(),
            vec![("x-user".to_owned(), key.to_owned())],
        )
    })
    .await;
    assert_eq!(distinct(&map).len(), 2, "{map:?}");
    // v2 has no policy of its own: round robin alternates strictly.
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut previous = String::new();
    for _ in 0..20 {
        let response = connection.get(HOST, "/v2").await;
        let backend = response.backend().unwrap().to_owned();
        assert_ne!(backend, previous, "round robin repeated an endpoint");
        previous = backend;
    }
    // v1 inherits the connection pool: one active request at a time.
    for backend in &list {
        backend.set_delay(Duration::from_millis(1500));
    }
    let statuses = staggered(&gateway, "/v1-pool-", 2).await;
    assert_eq!(statuses, vec![200, 503]);
    let (_, flags, _, line) = log_line(&gateway, "/v1-pool-1");
    assert_eq!(flags, "UO", "{line}");
}

// ---------------------------------------------------------------------------------------------
// Live state across configuration changes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_stays_ejected_across_configuration_changes() {
    let list = backends("keep", 4).await;
    let three = addresses(&list[..3]);
    let outlier =
        "{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}";
    let gateway = start(&outlier_config(&list[..3], outlier));
    let bad = &list[2];
    bad.set_status(503);
    statuses(&gateway, "/keep", 12).await;
    let name = cluster("web", "");
    assert_eq!(ejected(&gateway, &name), BTreeSet::from([bad.addr]));

    // An unrelated change: another file routing another host to another service.
    let other = Backend::start("keep-other").await;
    gateway.apply(
        "other.yaml",
        &documents(&[
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other, namespace: default}
spec:
  hosts: [other.example.com]
  gateways: [istio-system/web]
  http:
  - route:
    - destination: {host: other, port: {number: 8080}}"
                .to_owned(),
            service_entry("other", &[other.addr]),
            destination_rule("other", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}"),
        ]),
    );
    let response = client::get(gateway.addr(80), "other.example.com", "/").await;
    assert_eq!(response.backend(), Some("keep-other"));
    assert_eq!(ejected(&gateway, &name), BTreeSet::from([bad.addr]));
    statuses(&gateway, "/keep", 12).await;
    assert_eq!(
        bad.requests(),
        2,
        "the ejected endpoint got traffic after a reload"
    );

    // A change to the cluster itself: a fourth endpoint joins.
    let mut four = three.clone();
    four.push(list[3].addr);
    gateway.apply(
        "web.yaml",
        &documents(&[
            gateway_and_routes(&route_to("web", &["retries: {attempts: 0}"])),
            service_entry("web", &four),
            destination_rule(
                "web",
                &format!(
                    "  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    outlierDetection: {outlier}"
                ),
            ),
        ]),
    );
    assert_eq!(health(&gateway, &name).len(), 4);
    assert_eq!(ejected(&gateway, &name), BTreeSet::from([bad.addr]));
    let counts = spread(&gateway, "/keep", 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.contains_key("keep-4"), "{counts:?}");
    assert_eq!(bad.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_added_by_a_configuration_change_ends_its_ejections() {
    let list = backends("added", 3).await;
    let plain = documents(&[
        gateway_and_routes(&route_to("web", &["retries: {attempts: 0}"])),
        service_entry("web", &addresses(&list)),
        destination_rule(
            "web",
            "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
        ),
    ]);
    let gateway = start(&plain);
    spread(&gateway, "/added", 6).await;
    gateway.apply(
        "web.yaml",
        &outlier_config(
            &list,
            "{consecutive5xxErrors: 2, interval: 200ms, baseEjectionTime: 1s, maxEjectionPercent: 100}",
        ),
    );
    let bad = &list[0];
    bad.set_status(503);
    statuses(&gateway, "/added", 12).await;
    let name = cluster("web", "");
    assert_eq!(ejected(&gateway, &name), BTreeSet::from([bad.addr]));
    bad.set_status(0);
    eventually("the endpoint ejected under the new policy returns", || {
        ejected(&gateway, &name).is_empty()
    })
    .await;
}
