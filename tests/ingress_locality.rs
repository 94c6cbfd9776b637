//! Locality load balancing at the ingress gateway, end to end against real backends: endpoints
//! in two localities (ServiceEntry endpoints' `locality`), the gateway in the first
//! (`--locality`). With outlier detection the local tier takes all the traffic, fails over to
//! the other tier as its endpoints are ejected and takes the traffic back once the ejections end;
//! `/config_dump` shows each endpoint's priority and each tier's share. Without outlier
//! detection there is one tier and traffic spreads over both localities, as in Istio.
//!
//! The local backends are stopped the way a process dies (listener and connections closed) and
//! started again on the same addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::client::Connection;
use common::gateway::Gateway;

const HOST: &str = "web.example.com";
const CLUSTER: &str = "outbound|8080||web.default.svc.cluster.local";
const EAST: &str = "us-east/zone-a";
const WEST: &str = "us-west/zone-b";
const EJECTED_LINE: &str = "outlier detection ejected an endpoint";

/// The Gateway, a VirtualService without retries (every failure is seen), a ServiceEntry with
/// `east` endpoints in `EAST` and `west` in `WEST`, and a DestinationRule with `policy` (the
/// lines under `trafficPolicy:`).
fn config(east: &[Backend], west: &[Backend], policy: &str) -> String {
    let mut endpoints = String::new();
    for (list, locality) in [(east, EAST), (west, WEST)] {
        for backend in list {
            endpoints.push_str(&format!(
                "  - {{address: {}, ports: {{http: {}}}, locality: {locality}}}\n",
                backend.addr.ip(),
                backend.addr.port()
            ));
        }
    }
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
  - retries: {{attempts: 0}}
    route:
    - destination: {{host: web, port: {{number: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  trafficPolicy:
{policy}"#
    )
}

async fn backends(prefix: &str) -> Vec<Backend> {
    vec![
        Backend::start(&format!("{prefix}-1")).await,
        Backend::start(&format!("{prefix}-2")).await,
    ]
}

fn start(config: &str) -> Gateway {
    Gateway::builder()
        .config("web.yaml", config)
        .server_port(80)
        .arg("--locality")
        .arg(format!("{EAST}/rack-1"))
        .start()
}

/// Sends `n` requests one after another; counts the answers by (status, backend).
async fn send(gateway: &Gateway, n: usize) -> BTreeMap<(u16, String), usize> {
    let mut connection = Connection::http1(gateway.addr(80)).await;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let response = connection.get(HOST, "/").await;
        let backend = response.backend().unwrap_or("-").to_owned();
        *counts.entry((response.status, backend)).or_insert(0) += 1;
    }
    counts
}

/// Each endpoint's (priority, health) from `/config_dump`.
fn endpoints(gateway: &Gateway) -> BTreeMap<SocketAddr, (u64, String)> {
    let dump = gateway.config_dump();
    dump["endpoints"][CLUSTER]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints for {CLUSTER}: {dump}"))
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().parse().unwrap(),
                (
                    e["priority"].as_u64().unwrap(),
                    e["health"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// Each tier's percent of the traffic now, from `/config_dump`.
fn priority_load(gateway: &Gateway) -> Vec<(u64, u64)> {
    let dump = gateway.config_dump();
    dump["priority_load"][CLUSTER]
        .as_array()
        .unwrap_or_else(|| panic!("no priority_load for {CLUSTER}: {dump}"))
        .iter()
        .map(|t| {
            (
                t["priority"].as_u64().unwrap(),
                t["load_percent"].as_u64().unwrap(),
            )
        })
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

fn names(list: &[Backend]) -> Vec<String> {
    list.iter().map(|b| b.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_outlier_detection_the_local_tier_fails_over_and_takes_the_traffic_back() {
    let mut east = backends("east").await;
    let west = backends("west").await;
    // maxEjectionPercent 100: with Istio's 10% only one of the four endpoints could ever be
    // ejected, and the second local one would keep failing (istio/istio#34605).
    let gateway = start(&config(
        &east,
        &west,
        "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 1, interval: 200ms, baseEjectionTime: 3s, maxEjectionPercent: 100}\n",
    ));
    let state = endpoints(&gateway);
    for backend in &east {
        assert_eq!(state[&backend.addr].0, 0, "local tier: {state:?}");
    }
    for backend in &west {
        assert_eq!(state[&backend.addr].0, 1, "other locality: {state:?}");
    }
    assert_eq!(priority_load(&gateway), [(0, 100), (1, 0)]);

    // Healthy, the local tier takes everything.
    let answered = send(&gateway, 40).await;
    let expected: BTreeMap<(u16, String), usize> =
        names(&east).into_iter().map(|n| ((200, n), 20)).collect();
    assert_eq!(answered, expected);

    // The local backends stop: each failure (a refused or closed connection) ejects the
    // endpoint that gave it (one error in a row is the threshold; the route has no retries, so
    // every failure reaches the client), and the traffic moves to the other tier. The only
    // failed requests are those that triggered an ejection: as many as the log has ejections
    // (two, unless the machine is so slow that an ejection ended and the endpoint failed again).
    for backend in &east {
        backend.kill();
    }
    let answered = send(&gateway, 20).await;
    let failed: usize = answered
        .iter()
        .filter(|((status, _), _)| *status != 200)
        .map(|(_, n)| n)
        .sum();
    let ejections = gateway.log().matches(EJECTED_LINE).count();
    assert!(failed >= 2, "{answered:?}");
    assert_eq!(failed, ejections, "{answered:?}\n{}", gateway.log());
    for (status, backend) in answered.keys() {
        assert!(
            *status == 503 || names(&west).contains(backend),
            "{answered:?}"
        );
    }
    let state = endpoints(&gateway);
    for backend in &east {
        assert_eq!(state[&backend.addr].1, "EJECTED", "{state:?}");
    }
    assert_eq!(priority_load(&gateway), [(0, 0), (1, 100)]);
    let answered = send(&gateway, 20).await;
    let expected: BTreeMap<(u16, String), usize> =
        names(&west).into_iter().map(|n| ((200, n), 10)).collect();
    assert_eq!(answered, expected, "all on the other tier");

    // Started again, the local endpoints return when their ejection ends, and with them the
    // traffic.
    let addresses: Vec<(String, SocketAddr)> =
        east.iter().map(|b| (b.name.clone(), b.addr)).collect();
    east.clear();
    for (name, addr) in addresses {
        east.push(Backend::start_on(&name, addr).await);
    }
    eventually("the local tier takes all the traffic again", || {
        priority_load(&gateway) == [(0, 100), (1, 0)]
    })
    .await;
    let answered = send(&gateway, 40).await;
    let expected: BTreeMap<(u16, String), usize> =
        names(&east).into_iter().map(|n| ((200, n), 20)).collect();
    assert_eq!(answered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_outlier_detection_traffic_spreads_over_both_localities() {
    let east = backends("spread-east").await;
    let west = backends("spread-west").await;
    let gateway = start(&config(
        &east,
        &west,
        "    loadBalancer: {simple: ROUND_ROBIN}\n",
    ));
    let state = endpoints(&gateway);
    assert!(state.values().all(|(p, _)| *p == 0), "one tier: {state:?}");
    assert_eq!(priority_load(&gateway), [(0, 100)]);
    let answered = send(&gateway, 40).await;
    let expected: BTreeMap<(u16, String), usize> = names(&east)
        .into_iter()
        .chain(names(&west))
        .map(|n| ((200, n), 10))
        .collect();
    assert_eq!(answered, expected, "round robin over all four");
}
