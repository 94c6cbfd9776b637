//! A plugged `UpstreamConnector` carries the TCP route's connections to the endpoints it takes
//! (here: those of network `west`), and the core connects over TCP itself to the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_proxy::snapshot::{
    Application, ChainMatch, Cluster, Endpoint, FilterChain, LbPolicy, Listener, PoolLimits,
    Snapshot, TcpRoute, Transport, UpstreamProtocol, UpstreamTls,
};
use strait_proxy::telemetry::Telemetry;
use strait_proxy::telemetry::access_log::AccessLog;
use strait_proxy::telemetry::metrics::Metrics;
use strait_proxy::{
    ConnectFuture, NETWORK_LABEL, Proxy, ProxyOptions, UpstreamConnector, UpstreamTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Takes the endpoints of network `west` and carries them to `relay` (a stand-in for a trunk),
/// recording what it was asked.
#[derive(Debug)]
struct WestConnector {
    relay: SocketAddr,
    asked: Mutex<Vec<UpstreamTarget>>,
}

impl UpstreamConnector for WestConnector {
    fn connect(&self, target: UpstreamTarget) -> Option<ConnectFuture<'_>> {
        let west = target.network.as_deref() == Some("west");
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(target);
        }
        if !west {
            return None;
        }
        let relay = self.relay;
        Some(Box::pin(async move {
            let stream = TcpStream::connect(relay).await?;
            Ok(Box::new(stream) as strait_proxy::BoxedUpstreamIo)
        }))
    }
}

/// A server that answers each connection with `name` and closes.
async fn named_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = stream.write_all(name.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

fn snapshot(cluster: &str, endpoint: SocketAddr, network: Option<&str>) -> Snapshot {
    let labels: BTreeMap<String, String> = network
        .map(|n| (NETWORK_LABEL.to_owned(), n.to_owned()))
        .into_iter()
        .collect();
    let mut snapshot = Snapshot {
        version: 1,
        ..Snapshot::default()
    };
    snapshot.listeners.push(Listener {
        name: "tcp".to_owned(),
        address: "127.0.0.1:0".parse().unwrap(),
        original_destination: false,
        filter_chains: vec![FilterChain {
            name: "tcp".to_owned(),
            server_names: Vec::new(),
            matches: ChainMatch::default(),
            transport: Transport::Plaintext,
            application: Application::Tcp {
                routes: vec![TcpRoute {
                    name: "route".to_owned(),
                    server_names: Vec::new(),
                    clusters: vec![(cluster.to_owned(), 1)],
                }],
            },
        }],
    });
    snapshot.clusters.insert(
        cluster.to_owned(),
        Arc::new(Cluster {
            name: cluster.to_owned(),
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(5),
            pool: PoolLimits::default(),
            outlier: None,
            tls: UpstreamTls::default(),
            protocol: UpstreamProtocol::default(),
            endpoints: vec![Endpoint {
                address: endpoint,
                weight: 1,
                locality: None,
                labels,
                dns_name: None,
                network_gateway: None,
                priority: 0,
            }],
            original_destination: false,
            upstream_bind: None,
            telemetry: Vec::new(),
            empty_reason: None,
        }),
    );
    snapshot
}

async fn read_through(proxy: &Proxy) -> String {
    let (_, address) = proxy.listening().into_iter().next().unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_connector_carries_the_endpoints_it_takes_and_tcp_the_rest() {
    let relay = named_server("through the connector").await;
    let direct = named_server("direct").await;
    let connector = Arc::new(WestConnector {
        relay,
        asked: Mutex::new(Vec::new()),
    });
    let proxy = Proxy::with_upstream_connector(
        Telemetry::new(AccessLog::disabled(), Metrics::new(Vec::new())),
        ProxyOptions::default(),
        connector.clone(),
    );
    let cluster = "outbound|9000|v1|echo.default.svc.cluster.local";

    // An endpoint of network `west`: its address is never dialled (nothing listens on it).
    let unreachable: SocketAddr = "127.0.0.1:1".parse().unwrap();
    proxy
        .install(snapshot(cluster, unreachable, Some("west")))
        .await
        .unwrap();
    assert_eq!(read_through(&proxy).await, "through the connector");

    // An endpoint of no network: the connector declines and the core dials it.
    proxy
        .install(snapshot(cluster, direct, None))
        .await
        .unwrap();
    assert_eq!(read_through(&proxy).await, "direct");

    let asked = connector.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![
            UpstreamTarget {
                cluster: cluster.to_owned(),
                address: unreachable,
                network: Some("west".to_owned()),
                server_name: None,
            },
            UpstreamTarget {
                cluster: cluster.to_owned(),
                address: direct,
                network: None,
                server_name: None,
            },
        ]
    );
}

#[tokio::test]
async fn a_failing_connector_is_a_connect_failure() {
    #[derive(Debug)]
    struct Refusing;
    impl UpstreamConnector for Refusing {
        fn connect(&self, _target: UpstreamTarget) -> Option<ConnectFuture<'_>> {
            Some(Box::pin(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "trunk down",
                ))
            }))
        }
    }
    let proxy = Proxy::with_upstream_connector(
        Telemetry::new(AccessLog::disabled(), Metrics::new(Vec::new())),
        ProxyOptions::default(),
        Arc::new(Refusing),
    );
    let direct = named_server("direct").await;
    proxy
        .install(snapshot("outbound|9000||echo", direct, Some("west")))
        .await
        .unwrap();
    // The connection is closed without a byte from the endpoint the connector refused.
    assert_eq!(read_through(&proxy).await, "");
}
