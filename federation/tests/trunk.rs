//! The QUIC trunk end to end on loopback, with real quinn, real TCP and real certificates from
//! two clusters' own CAs (trust domains `east.mesh` and `west.mesh`, bundles federated): a
//! sidecar stand-in in the east connects to the east gateway's trunk ingress, the trunk carries
//! the connection to the west gateway, which connects to a backend in the west.
//!
//! These run the trunk library, not the `strait` binary: no role wires the trunk in yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use strait_certs::rotation::{ISTIO_ALPN_TCP, MESH_SERVER_ALPN};
use strait_certs::{
    Authority, AuthorityOptions, Authorizer, CertificateRequest, ClientAuth, IdentityCell,
    SharedBundles, SpiffeId, Svid, TrustBundleSet, TrustDomain, mesh_client_config,
    mesh_server_config, peer_identity,
};
use strait_federation::sni::OutboundName;
use strait_federation::trunk::{
    Backoff, OpenError, Refusal, RefusalReason, StreamHeader, TrunkClient, TrunkConnector,
    TrunkIdentity, TrunkIngress, TrunkPath, TrunkPeer, TrunkServer, TrunkSetupError,
};
use strait_proxy::snapshot::{
    Application, ChainMatch, Cluster as ProxyCluster, Endpoint, FilterChain, LbPolicy, Listener,
    PoolLimits, Snapshot, TcpRoute, Transport, UpstreamProtocol, UpstreamTls,
};
use strait_proxy::telemetry::Telemetry;
use strait_proxy::telemetry::access_log::AccessLog;
use strait_proxy::telemetry::metrics::Metrics;
use strait_proxy::tls::mesh::MeshIdentity;
use strait_proxy::{NETWORK_LABEL, Proxy, ProxyOptions, UpstreamConnector, UpstreamTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most any step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);
const ECHO: &str = "echo.default.svc.cluster.local";
const ECHO_SNI: &str = "outbound_.9000_._.echo.default.svc.cluster.local";
const WEST: &str = "west";

/// A cluster's CA, in a directory removed when done.
struct Cluster {
    ca: Authority,
    dir: PathBuf,
}

impl Cluster {
    fn new(trust_domain: &str, test: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "strait-trunk-{test}-{trust_domain}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let td = TrustDomain::new(trust_domain).unwrap();
        let ca = Authority::init(td, &dir, &AuthorityOptions::default()).unwrap();
        Cluster { ca, dir }
    }

    fn id(&self, namespace: &str, account: &str) -> SpiffeId {
        SpiffeId::istio(self.ca.trust_domain(), namespace, account).unwrap()
    }

    fn svid(&self, namespace: &str, account: &str) -> Svid {
        let id = self.id(namespace, account);
        let request = CertificateRequest::new(&id).unwrap();
        let issued = self
            .ca
            .sign_csr(request.csr_der(), &id, Duration::ZERO)
            .unwrap();
        request
            .into_svid(issued.chain_der, issued.issued_at)
            .unwrap()
    }

    fn gateway_id(&self) -> SpiffeId {
        self.id("istio-system", "eastwest")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn identity(svid: Svid, bundles: &SharedBundles) -> TrunkIdentity {
    TrunkIdentity {
        cell: Arc::new(IdentityCell::new(svid)),
        bundles: bundles.clone(),
        unknown_issuer: None,
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(300),
    }
}

/// Both clusters, federated, and the trunk from east to west.
struct Trunk {
    east: Cluster,
    west: Cluster,
    bundles: SharedBundles,
    server: Option<TrunkServer>,
    /// The west gateway's trunk address.
    address: SocketAddr,
    client: Arc<TrunkClient>,
    ingress: TrunkIngress,
    /// Every stream the west gateway was asked for: the peer and the header.
    asked: Arc<Mutex<Vec<(SpiffeId, StreamHeader)>>>,
    /// QUIC connections the west gateway authorized.
    connections: Arc<AtomicUsize>,
}

/// Starts the west gateway's trunk server (serving `exports`: service and port to a local
/// address), the east gateway's client with `connections` connections to it, and the east
/// gateway's trunk ingress.
async fn trunk(test: &str, exports: Vec<(&str, u16, SocketAddr)>, connections: usize) -> Trunk {
    let east = Cluster::new("east.mesh", test);
    let west = Cluster::new("west.mesh", test);
    let bundles = TrustBundleSet::from_bundles([east.ca.trust_bundle(), west.ca.trust_bundle()])
        .unwrap()
        .into_shared();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let authorized = Arc::new(AtomicUsize::new(0));
    let server = west_server(&west, &east, &bundles, exports, &asked, &authorized, None).unwrap();
    let address = server.local_addr();
    let client = Arc::new(
        TrunkClient::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity(east.svid("istio-system", "eastwest"), &bundles),
            &TrunkPath::default(),
            backoff(),
            vec![TrunkPeer {
                name: WEST.to_owned(),
                address,
                identity: west.gateway_id(),
                connections,
            }],
        )
        .unwrap(),
    );
    let ingress = TrunkIngress::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        client.clone(),
        "east-net".to_owned(),
        Arc::new(|_: &OutboundName| Some(WEST.to_owned())),
    )
    .unwrap();
    wait_live(&client, connections).await;
    Trunk {
        east,
        west,
        bundles,
        server: Some(server),
        address,
        client,
        ingress,
        asked,
        connections: authorized,
    }
}

/// The west gateway: authorizes the east gateway only; resolves exported services.
fn west_server(
    west: &Cluster,
    east: &Cluster,
    bundles: &SharedBundles,
    exports: Vec<(&str, u16, SocketAddr)>,
    asked: &Arc<Mutex<Vec<(SpiffeId, StreamHeader)>>>,
    authorized: &Arc<AtomicUsize>,
    bind: Option<SocketAddr>,
) -> Result<TrunkServer, TrunkSetupError> {
    let exports: HashMap<(String, u16), SocketAddr> = exports
        .into_iter()
        .map(|(host, port, address)| ((host.to_owned(), port), address))
        .collect();
    let east_gateway = east.gateway_id();
    let authorized = authorized.clone();
    let asked = asked.clone();
    TrunkServer::start(
        bind.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
        &identity(west.svid("istio-system", "eastwest"), bundles),
        &TrunkPath::default(),
        Arc::new(move |peer: &SpiffeId| {
            if *peer == east_gateway {
                authorized.fetch_add(1, Ordering::SeqCst);
                Ok(())
            } else {
                Err(format!("{peer} is not a peer gateway"))
            }
        }),
        Arc::new(move |peer: &SpiffeId, header: &StreamHeader| {
            asked.lock().unwrap().push((peer.clone(), header.clone()));
            exports
                .get(&(header.service.clone(), header.port))
                .copied()
                .ok_or_else(|| Refusal {
                    reason: RefusalReason::NotExported,
                    text: format!("{}:{} is not exported", header.service, header.port),
                })
        }),
    )
}

/// The west gateway of `trunk` again, on `bind`.
fn try_west_server(
    trunk: &Trunk,
    exports: Vec<(&str, u16, SocketAddr)>,
    bind: Option<SocketAddr>,
) -> Result<TrunkServer, TrunkSetupError> {
    west_server(
        &trunk.west,
        &trunk.east,
        &trunk.bundles,
        exports,
        &trunk.asked,
        &trunk.connections,
        bind,
    )
}

async fn wait_live(client: &TrunkClient, at_least: usize) {
    let mut live = client.live_connections(WEST).unwrap();
    tokio::time::timeout(PATIENCE, live.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("the trunk did not come up: {:?}", client.last_failure(WEST)))
        .unwrap();
}

/// Waits until the client records a failure with `text` in it.
async fn wait_failure(client: &TrunkClient, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(failure) = client.last_failure(WEST)
            && failure.contains(text)
        {
            return failure;
        }
        assert!(
            Instant::now() < deadline,
            "no failure with {text:?}; last: {:?}",
            client.last_failure(WEST)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the client holds no live connection to the west. Under TLS 1.3 the client's
/// side of a handshake completes before the server has checked the client's certificate, so
/// a refused attempt counts as live until the server's close arrives.
async fn wait_no_live_connection(client: &TrunkClient) {
    let mut live = client.live_connections(WEST).unwrap();
    tokio::time::timeout(PATIENCE, live.wait_for(|n| *n == 0))
        .await
        .expect("a refused connection stays live")
        .unwrap();
}

/// A TCP echo server: echoes until the client's FIN, then sends its own. Counts the
/// connections open at once.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (address, open)
}

/// The west's echo workload: terminates mesh mTLS with its own SVID, records the verified
/// caller of each connection, and echoes until the caller's FIN.
fn mesh_echo_backend(trunk: &Trunk, listener: TcpListener) -> Arc<Mutex<Vec<Option<String>>>> {
    let echo = identity(trunk.west.svid("default", "echo"), &trunk.bundles);
    let server_tls = mesh_server_config(
        echo.cell.clone(),
        trunk.bundles.clone(),
        ClientAuth::Required(Authorizer::Any),
        MESH_SERVER_ALPN,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let callers = Arc::new(Mutex::new(Vec::new()));
    let seen = callers.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let caller = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default());
                seen.lock()
                    .unwrap()
                    .push(caller.ok().map(|id| id.to_string()));
                let (mut read, mut write) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    callers
}

/// Sends `payload` over a new stream to west's echo service and checks that it comes back.
async fn echo_round_trip(client: &TrunkClient, payload: &[u8]) {
    let mut stream = client.open(WEST, &echo_header(), payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
}

fn echo_header() -> StreamHeader {
    StreamHeader {
        service: ECHO.to_owned(),
        port: 9000,
        subset: String::new(),
        original_sni: ECHO_SNI.to_owned(),
        source_network: "east-net".to_owned(),
    }
}

/// The first flight of a real TLS client for `sni`: what a sidecar sends first.
fn client_hello(config: Arc<rustls::ClientConfig>, sni: &str) -> Vec<u8> {
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    hello
}

/// The ClientHello of a mesh client without a certificate: enough for the trunk ingress, which
/// only reads the SNI.
fn anonymous_hello(bundles: &SharedBundles, sni: &str) -> Vec<u8> {
    let config = mesh_client_config(
        Arc::new(IdentityCell::empty()),
        bundles.clone(),
        Authorizer::Any,
        ISTIO_ALPN_TCP,
    )
    .unwrap();
    client_hello(Arc::new(config), sni)
}

async fn expect_reset(mut tcp: TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("the connection was neither answered nor reset");
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sidecars_mtls_crosses_the_trunk_untouched_and_keeps_its_identity() {
    // The west workload: terminates mesh mTLS itself and echoes; records who called.
    let test = "mtls";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let trunk = trunk(test, vec![(ECHO, 9000, backend)], 1).await;
    let callers = mesh_echo_backend(&trunk, listener);

    // The east sidecar: its own mTLS to the west workload, through the east trunk ingress.
    let web = identity(trunk.east.svid("default", "web"), &trunk.bundles);
    let client_tls = mesh_client_config(
        web.cell.clone(),
        trunk.bundles.clone(),
        Authorizer::ids([trunk.west.id("default", "echo")]),
        ISTIO_ALPN_TCP,
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
    let tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    let mut tls = tokio::time::timeout(
        PATIENCE,
        connector.connect(ServerName::try_from(ECHO_SNI).unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let server = peer_identity(tls.get_ref().1.peer_certificates().unwrap()).unwrap();
    assert_eq!(server, trunk.west.id("default", "echo"));
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    tls.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert!(back == payload, "the payload came back changed");
    tls.shutdown().await.unwrap();

    // The workload saw the east sidecar's identity, not a gateway's.
    assert_eq!(
        *callers.lock().unwrap(),
        vec![Some("spiffe://east.mesh/ns/default/sa/web".to_owned())]
    );
    // The west gateway saw the header the ingress built from the SNI, from the east gateway.
    let asked = trunk.asked.lock().unwrap().clone();
    assert_eq!(asked, vec![(trunk.east.gateway_id(), echo_header())]);
}

#[tokio::test]
async fn half_closes_cross_the_trunk_both_ways() {
    // A backend that speaks first and half-closes, then reads until the caller's FIN.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (received_tx, received_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"server speaks first").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        let _ = received_tx.send(received);
    });
    let trunk = trunk("halfclose", vec![(ECHO, 9000, backend)], 1).await;
    let hello = anonymous_hello(&trunk.bundles, ECHO_SNI);

    let mut tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    tcp.write_all(&hello).await.unwrap();
    // The server's FIN arrives while our side is still open ...
    let mut first = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b"server speaks first");
    // ... and what we send after it still reaches the server, up to our own FIN.
    tcp.write_all(b" and the caller answers after")
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    let received = tokio::time::timeout(PATIENCE, received_rx)
        .await
        .unwrap()
        .unwrap();
    let mut expected = hello.clone();
    expected.extend_from_slice(b" and the caller answers after");
    assert!(received == expected, "the server got other bytes");
}

#[tokio::test]
async fn two_hundred_fifty_streams_are_open_at_once_on_one_connection() {
    const STREAMS: usize = 250;
    let (backend, open) = echo_server().await;
    let trunk = trunk("streams", vec![(ECHO, 9000, backend)], 1).await;
    let all_open = Arc::new(tokio::sync::Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let client = trunk.client.clone();
        let all_open = all_open.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = client.open(WEST, &echo_header(), &[]).await?;
            // Every stream waits here until all are open: more than quinn's default limit of
            // 100 would never get here.
            all_open.wait().await;
            let message = format!("stream {i}");
            stream.write_all(message.as_bytes()).await?;
            stream.shutdown().await?;
            let mut back = String::new();
            stream.read_to_string(&mut back).await?;
            assert_eq!(back, message);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    let results = tokio::time::timeout(PATIENCE, futures_join(tasks))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not all streams got open at once ({} backend connections open)",
                open.load(Ordering::SeqCst)
            )
        });
    for result in results {
        result.unwrap().unwrap();
    }
    assert_eq!(trunk.connections.load(Ordering::SeqCst), 1);
    assert_eq!(trunk.asked.lock().unwrap().len(), STREAMS);
}

async fn futures_join<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await);
    }
    results
}

#[tokio::test]
async fn streams_spread_over_several_connections_to_one_peer() {
    let (backend, _) = echo_server().await;
    // `trunk` waits for all three to be up.
    let trunk = trunk("several", vec![(ECHO, 9000, backend)], 3).await;
    for i in 0..6 {
        let message = format!("stream {i}");
        let mut stream = trunk
            .client
            .open(WEST, &echo_header(), message.as_bytes())
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let mut back = String::new();
        stream.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
    // Round robin put streams on each connection, so the west has authorized all three.
    assert_eq!(trunk.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_stream_gets_the_status_and_the_ingress_resets_its_connection() {
    let (backend, _) = echo_server().await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = "gone.default.svc.cluster.local";
    let trunk = trunk(
        "refused",
        vec![(ECHO, 9000, backend), (gone, 9000, closed)],
        1,
    )
    .await;
    // Exported, but nothing listens: refused with the connect error.
    let to_gone = StreamHeader {
        service: gone.to_owned(),
        ..echo_header()
    };
    match trunk.client.open(WEST, &to_gone, &[]).await {
        Err(OpenError::Refused { reason, text, .. }) => {
            assert_eq!(reason, RefusalReason::UpstreamConnectFailure);
            assert!(
                text.starts_with(&format!("connecting to {closed}: ")),
                "{text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let secret = StreamHeader {
        service: "secret.default.svc.cluster.local".to_owned(),
        original_sni: "outbound_.9000_._.secret.default.svc.cluster.local".to_owned(),
        ..echo_header()
    };
    match trunk.client.open(WEST, &secret, b"early bytes").await {
        Err(OpenError::Refused { reason, text, .. }) => {
            assert_eq!(reason, RefusalReason::NotExported);
            assert_eq!(
                text,
                "secret.default.svc.cluster.local:9000 is not exported"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let hello = anonymous_hello(&trunk.bundles, &secret.original_sni);
    let mut tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    tcp.write_all(&hello).await.unwrap();
    expect_reset(tcp).await;
    // The trunk itself is fine: the next stream goes through.
    echo_round_trip(&trunk.client, b"ping").await;
}

#[tokio::test]
async fn a_trunk_that_is_down_fails_at_once_and_the_ingress_resets() {
    let east = Cluster::new("east.mesh", "down");
    let west = Cluster::new("west.mesh", "down");
    let bundles = TrustBundleSet::from_bundles([east.ca.trust_bundle(), west.ca.trust_bundle()])
        .unwrap()
        .into_shared();
    // A UDP port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Arc::new(
        TrunkClient::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity(east.svid("istio-system", "eastwest"), &bundles),
            &TrunkPath::default(),
            backoff(),
            vec![TrunkPeer {
                name: WEST.to_owned(),
                address: silent.local_addr().unwrap(),
                identity: west.gateway_id(),
                connections: 2,
            }],
        )
        .unwrap(),
    );
    let opened = tokio::time::timeout(PATIENCE, client.open(WEST, &echo_header(), &[]))
        .await
        .expect("open waited for a trunk that is down");
    assert!(
        matches!(opened, Err(OpenError::Down(ref peer)) if peer == WEST),
        "{opened:?}"
    );
    assert!(matches!(
        client.open("nobody", &echo_header(), &[]).await,
        Err(OpenError::UnknownPeer(_))
    ));
    let twice = TrunkPeer {
        name: WEST.to_owned(),
        address: silent.local_addr().unwrap(),
        identity: west.gateway_id(),
        connections: 1,
    };
    assert!(matches!(
        TrunkClient::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity(east.svid("istio-system", "eastwest"), &bundles),
            &TrunkPath::default(),
            backoff(),
            vec![twice.clone(), twice],
        ),
        Err(TrunkSetupError::DuplicatePeer(_))
    ));

    let ingress = TrunkIngress::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        client.clone(),
        "east-net".to_owned(),
        Arc::new(|_: &OutboundName| Some(WEST.to_owned())),
    )
    .unwrap();
    let hello = anonymous_hello(&bundles, ECHO_SNI);
    let mut tcp = TcpStream::connect(ingress.local_addr()).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    expect_reset(tcp).await;

    // A connection that names no outbound destination is reset too.
    let mut tcp = TcpStream::connect(ingress.local_addr()).await.unwrap();
    tcp.write_all(&client_hello(
        Arc::new(
            mesh_client_config(
                Arc::new(IdentityCell::empty()),
                bundles.clone(),
                Authorizer::Any,
                ISTIO_ALPN_TCP,
            )
            .unwrap(),
        ),
        "echo.example.com",
    ))
    .await
    .unwrap();
    expect_reset(tcp).await;
}

#[tokio::test]
async fn the_trunk_reconnects_after_the_remote_gateway_restarts() {
    let (backend, _) = echo_server().await;
    let mut trunk = trunk("restart", vec![(ECHO, 9000, backend)], 1).await;
    let address = trunk.address;
    echo_round_trip(&trunk.client, b"before").await;

    // The west gateway goes away: the trunk goes down and opening fails at once.
    let mut live = trunk.client.live_connections(WEST).unwrap();
    drop(trunk.server.take());
    tokio::time::timeout(PATIENCE, live.wait_for(|n| *n == 0))
        .await
        .expect("the trunk did not notice the remote going away")
        .unwrap();
    assert!(matches!(
        trunk.client.open(WEST, &echo_header(), &[]).await,
        Err(OpenError::Down(_))
    ));

    // It comes back on the same address; the client reconnects by itself.
    let deadline = Instant::now() + PATIENCE;
    let server = loop {
        match try_west_server(&trunk, vec![(ECHO, 9000, backend)], Some(address)) {
            Ok(server) => break server,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{address} did not come free: {error}"),
        }
    };
    trunk.server = Some(server);
    wait_live(&trunk.client, 1).await;
    echo_round_trip(&trunk.client, b"after").await;
}

#[tokio::test]
async fn a_gateway_with_the_wrong_identity_is_refused_at_the_handshake() {
    let (backend, _) = echo_server().await;
    let trunk = trunk("identity", vec![(ECHO, 9000, backend)], 1).await;
    let peer = |identity: SpiffeId| TrunkPeer {
        name: WEST.to_owned(),
        address: trunk.address,
        identity,
        connections: 1,
    };

    // The west gateway is not who the client expects (it expects a workload's ID).
    let expects_other = TrunkClient::start(
        "127.0.0.1:0".parse().unwrap(),
        &identity(trunk.east.svid("istio-system", "eastwest"), &trunk.bundles),
        &TrunkPath::default(),
        backoff(),
        vec![peer(trunk.west.id("default", "echo"))],
    )
    .unwrap();
    // The client's verifier refuses the server's ID.
    wait_failure(&expects_other, "NotAuthorized").await;
    wait_no_live_connection(&expects_other).await;

    // A gateway of a trust domain the west does not trust: its own CA, unknown to the west.
    let rogue = Cluster::new("rogue.mesh", "identity");
    let rogue_bundles =
        TrustBundleSet::from_bundles([rogue.ca.trust_bundle(), trunk.west.ca.trust_bundle()])
            .unwrap()
            .into_shared();
    let untrusted = TrunkClient::start(
        "127.0.0.1:0".parse().unwrap(),
        &identity(rogue.svid("istio-system", "eastwest"), &rogue_bundles),
        &TrunkPath::default(),
        backoff(),
        vec![peer(trunk.west.gateway_id())],
    )
    .unwrap();
    // The west's verifier has no bundle for the rogue trust domain.
    wait_failure(&untrusted, "UnknownTrustDomain").await;
    wait_no_live_connection(&untrusted).await;
    assert!(matches!(
        untrusted.open(WEST, &echo_header(), &[]).await,
        Err(OpenError::Down(_))
    ));

    // A trusted certificate that is not a peer gateway's: the west's authorizer closes it.
    let workload = TrunkClient::start(
        "127.0.0.1:0".parse().unwrap(),
        &identity(trunk.east.svid("default", "web"), &trunk.bundles),
        &TrunkPath::default(),
        backoff(),
        vec![peer(trunk.west.gateway_id())],
    )
    .unwrap();
    wait_failure(&workload, "not authorized").await;

    // None of them got a stream resolved, and only the real east gateway was authorized.
    assert_eq!(trunk.connections.load(Ordering::SeqCst), 1);
    assert!(trunk.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_connector_carries_a_peer_networks_endpoints_over_the_trunk() {
    let (backend, _) = echo_server().await;
    let trunk = trunk("connector", vec![(ECHO, 9000, backend)], 1).await;
    let connector = TrunkConnector::new(
        trunk.client.clone(),
        HashMap::from([("west-net".to_owned(), WEST.to_owned())]),
        "east-net".to_owned(),
    );
    let target = UpstreamTarget {
        cluster: format!("outbound|9000||{ECHO}"),
        address: "10.0.0.1:15443".parse().unwrap(),
        network: Some("west-net".to_owned()),
        server_name: Some(ECHO_SNI.to_owned()),
    };
    let mut stream = connector.connect(target.clone()).unwrap().await.unwrap();
    stream.write_all(b"via the connector").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"via the connector");
    assert_eq!(
        trunk.asked.lock().unwrap().clone(),
        vec![(trunk.east.gateway_id(), echo_header())]
    );

    // Other networks, and endpoints without one, are the core's to dial.
    let local = UpstreamTarget {
        network: Some("east-net".to_owned()),
        ..target.clone()
    };
    assert!(connector.connect(local).is_none());
    assert!(
        connector
            .connect(UpstreamTarget {
                network: None,
                ..target.clone()
            })
            .is_none()
    );
    // A refused stream is a connect error.
    let refused = UpstreamTarget {
        cluster: "outbound|9000||secret.default.svc.cluster.local".to_owned(),
        ..target
    };
    let error = connector.connect(refused).unwrap().await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(error.to_string().contains("not exported"), "{error}");
}

#[tokio::test]
async fn a_reset_on_either_side_resets_the_other() {
    // A backend that resets every connection once it has read something.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resetting = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 16 * 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.set_zero_linger();
            drop(tcp);
        }
    });
    // A backend that reports how each connection ended.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reporting = listener.local_addr().unwrap();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let ended = ended_tx.clone();
            tokio::spawn(async move {
                let _ = ended.send(None);
                let mut sink = Vec::new();
                let _ = ended.send(Some(tcp.read_to_end(&mut sink).await.map_err(|e| e.kind())));
            });
        }
    });
    let trunk = trunk(
        "reset",
        vec![
            (ECHO, 9000, resetting),
            ("reporting.default.svc.cluster.local", 9000, reporting),
        ],
        1,
    )
    .await;
    let hello = |sni: &str| anonymous_hello(&trunk.bundles, sni);

    // The backend resets: the caller's connection is reset, not closed cleanly.
    let mut tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    tcp.write_all(&hello(ECHO_SNI)).await.unwrap();
    expect_reset(tcp).await;

    // The caller resets once the backend has its connection: the backend's is reset too.
    let mut tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    tcp.write_all(&hello(
        "outbound_.9000_._.reporting.default.svc.cluster.local",
    ))
    .await
    .unwrap();
    let accepted = tokio::time::timeout(PATIENCE, ended_rx.recv())
        .await
        .unwrap();
    assert_eq!(accepted, Some(None));
    tcp.set_zero_linger().unwrap();
    drop(tcp);
    let reset = tokio::time::timeout(PATIENCE, ended_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let reset = reset.map(|ended| ended.map(|_| ()));
    assert_eq!(reset, Some(Err(std::io::ErrorKind::ConnectionReset)));
}

/// Not an assertion: how long opening 100 connections one after another takes over an open
/// trunk (a stream each, the remote connecting to a local backend) and as TCP+mTLS handshakes,
/// on loopback, where the round trips the trunk saves cost next to nothing.
#[tokio::test]
async fn opening_100_streams_next_to_100_tcp_and_tls_handshakes() {
    let (backend, _) = echo_server().await;
    let trunk = trunk("measure", vec![(ECHO, 9000, backend)], 1).await;
    let started = Instant::now();
    for _ in 0..100 {
        let mut stream = trunk.client.open(WEST, &echo_header(), b"x").await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
    }
    let streams = started.elapsed();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = identity(trunk.west.svid("istio-system", "eastwest"), &trunk.bundles);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        mesh_server_config(
            server.cell.clone(),
            trunk.bundles.clone(),
            ClientAuth::Required(Authorizer::Any),
            MESH_SERVER_ALPN,
        )
        .unwrap(),
    ));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(&byte).await;
                        let _ = tls.flush().await;
                    }
                }
            });
        }
    });
    let client = identity(trunk.east.svid("istio-system", "eastwest"), &trunk.bundles);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        mesh_client_config(
            client.cell.clone(),
            trunk.bundles.clone(),
            Authorizer::Any,
            ISTIO_ALPN_TCP,
        )
        .unwrap(),
    ));
    let started = Instant::now();
    for _ in 0..100 {
        let tcp = TcpStream::connect(address).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from(ECHO_SNI).unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
    }
    let handshakes = started.elapsed();
    println!(
        "100 trunk streams: {streams:?}; 100 TCP+mTLS connections: {handshakes:?} (loopback, debug build)"
    );
}

#[tokio::test]
async fn a_sidecar_proxy_reaches_a_peer_networks_endpoint_over_the_trunk() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let trunk = trunk("sidecar", vec![(ECHO, 9000, backend)], 1).await;
    let callers = mesh_echo_backend(&trunk, listener);

    // An east proxy with the web workload's identity, whose TCP route sends to an ISTIO_MUTUAL
    // cluster with one endpoint in network `west-net` (an address never dialled).
    let web = identity(trunk.east.svid("default", "web"), &trunk.bundles);
    let connector = TrunkConnector::new(
        trunk.client.clone(),
        HashMap::from([("west-net".to_owned(), WEST.to_owned())]),
        "east-net".to_owned(),
    );
    let proxy = Proxy::with_upstream_connector(
        Telemetry::new(AccessLog::disabled(), Metrics::new(Vec::new())),
        ProxyOptions {
            mesh: Some(MeshIdentity {
                cell: web.cell.clone(),
                bundles: web.bundles.clone(),
            }),
            ..ProxyOptions::default()
        },
        Arc::new(connector),
    );
    let cluster = format!("outbound|9000||{ECHO}");
    let mut snapshot = Snapshot {
        version: 1,
        ..Snapshot::default()
    };
    snapshot.listeners.push(Listener {
        name: "outbound".to_owned(),
        address: "127.0.0.1:0".parse().unwrap(),
        original_destination: false,
        filter_chains: vec![FilterChain {
            name: "echo".to_owned(),
            server_names: Vec::new(),
            matches: ChainMatch::default(),
            transport: Transport::Plaintext,
            application: Application::Tcp {
                routes: vec![TcpRoute {
                    name: "echo".to_owned(),
                    server_names: Vec::new(),
                    clusters: vec![(cluster.clone(), 1)],
                }],
            },
        }],
    });
    snapshot.clusters.insert(
        cluster.clone(),
        Arc::new(ProxyCluster {
            name: cluster.clone(),
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(5),
            pool: PoolLimits::default(),
            outlier: None,
            tls: UpstreamTls::IstioMutual {
                sni: ECHO_SNI.to_owned(),
                subject_alt_names: vec![trunk.west.id("default", "echo").to_string()],
            },
            protocol: UpstreamProtocol::default(),
            endpoints: vec![Endpoint {
                address: "10.255.0.1:15443".parse().unwrap(),
                weight: 1,
                locality: None,
                labels: [(NETWORK_LABEL.to_owned(), "west-net".to_owned())].into(),
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
    proxy.install(snapshot).await.unwrap();
    let (_, address) = proxy.listening().into_iter().next().unwrap();

    let mut app = TcpStream::connect(address).await.unwrap();
    app.write_all(b"plain text from the app").await.unwrap();
    app.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, app.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"plain text from the app");
    // The proxy's own mTLS went through the trunk: the workload saw the web identity, and the
    // west gateway the header built from the cluster and the originated SNI.
    assert_eq!(
        *callers.lock().unwrap(),
        vec![Some("spiffe://east.mesh/ns/default/sa/web".to_owned())]
    );
    assert_eq!(
        trunk.asked.lock().unwrap().clone(),
        vec![(trunk.east.gateway_id(), echo_header())]
    );
}

#[tokio::test]
async fn peers_set_while_running_are_connected_closed_or_left_alone() {
    let (backend, _) = echo_server().await;
    let trunk = trunk("set-peers", vec![(ECHO, 9000, backend)], 1).await;
    let west = |connections: usize| TrunkPeer {
        name: WEST.to_owned(),
        address: trunk.address,
        identity: trunk.west.gateway_id(),
        connections,
    };
    wait_authorized(&trunk, 1).await;

    // The same definition again: nothing reconnects.
    let changed = trunk.client.set_peers(vec![west(1)]).unwrap();
    assert_eq!(changed, Default::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trunk.connections.load(Ordering::SeqCst), 1);
    let mut live = trunk.client.live_connections(WEST).unwrap();
    assert_eq!(*live.borrow_and_update(), 1);

    // Removed: its connection is closed and streams are refused as for an unknown peer.
    let changed = trunk.client.set_peers(Vec::new()).unwrap();
    assert_eq!(changed.removed, [WEST]);
    assert_eq!(*live.borrow(), 0);
    assert!(trunk.client.live_connections(WEST).is_none());
    assert!(matches!(
        trunk.client.open(WEST, &echo_header(), &[]).await,
        Err(OpenError::UnknownPeer(_))
    ));
    let ingress_hello = anonymous_hello(&trunk.bundles, ECHO_SNI);
    let mut tcp = TcpStream::connect(trunk.ingress.local_addr())
        .await
        .unwrap();
    tcp.write_all(&ingress_hello).await.unwrap();
    expect_reset(tcp).await;

    // Added again, then redefined (two connections): connected, then reconnected.
    let changed = trunk.client.set_peers(vec![west(1)]).unwrap();
    assert_eq!(changed.added, [WEST]);
    wait_live(&trunk.client, 1).await;
    wait_authorized(&trunk, 2).await;
    let changed = trunk.client.set_peers(vec![west(2)]).unwrap();
    assert_eq!(changed.restarted, [WEST]);
    wait_live(&trunk.client, 2).await;
    wait_authorized(&trunk, 4).await;
    echo_round_trip(&trunk.client, b"again").await;

    // Two peers of one name change nothing.
    assert!(matches!(
        trunk.client.set_peers(vec![west(1), west(1)]),
        Err(TrunkSetupError::DuplicatePeer(_))
    ));
    assert_eq!(*trunk.client.live_connections(WEST).unwrap().borrow(), 2);
}

#[tokio::test]
async fn a_chain_to_a_root_not_held_is_reported_with_the_peer_s_trust_domain_on_both_sides() {
    // East holds west's old root; west's gateway already presents a certificate of its new
    // root, and east's gateway one of east's new root, which west does not hold either.
    let east_old = Cluster::new("east.mesh", "unknown-issuer-old");
    let east_new = Cluster::new("east.mesh", "unknown-issuer-new");
    let west_old = Cluster::new("west.mesh", "unknown-issuer-old");
    let west_new = Cluster::new("west.mesh", "unknown-issuer-new");
    let east_holds =
        TrustBundleSet::from_bundles([east_new.ca.trust_bundle(), west_old.ca.trust_bundle()])
            .unwrap()
            .into_shared();
    let west_holds =
        TrustBundleSet::from_bundles([east_old.ca.trust_bundle(), west_new.ca.trust_bundle()])
            .unwrap()
            .into_shared();
    let heard = |side: &'static str, log: &Arc<Mutex<Vec<String>>>| {
        let log = log.clone();
        strait_certs::UnknownIssuerObserver::new(move |td: &TrustDomain| {
            log.lock().unwrap().push(format!("{side} {td}"));
        })
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = TrunkServer::start(
        "127.0.0.1:0".parse().unwrap(),
        &TrunkIdentity {
            unknown_issuer: Some(heard("west", &log)),
            ..identity(west_new.svid("istio-system", "eastwest"), &west_holds)
        },
        &TrunkPath::default(),
        Arc::new(|_: &SpiffeId| Ok(())),
        Arc::new(|_: &SpiffeId, _: &StreamHeader| {
            Err(Refusal {
                reason: RefusalReason::NotExported,
                text: "nothing".to_owned(),
            })
        }),
    )
    .unwrap();
    let client = TrunkClient::start(
        "127.0.0.1:0".parse().unwrap(),
        &TrunkIdentity {
            unknown_issuer: Some(heard("east", &log)),
            ..identity(east_new.svid("istio-system", "eastwest"), &east_holds)
        },
        &TrunkPath::default(),
        backoff(),
        vec![TrunkPeer {
            name: WEST.to_owned(),
            address: server.local_addr(),
            identity: west_new.gateway_id(),
            connections: 1,
        }],
    )
    .unwrap();
    // The client checks the server first: east hears of west.
    wait_failure(&client, "invalid peer certificate").await;
    assert!(
        log.lock().unwrap().contains(&"east west.mesh".to_owned()),
        "{:?}",
        log.lock().unwrap()
    );

    // With west's new root held, the client accepts the server; then west refuses east's
    // certificate and hears of east.
    let mut both = (*east_holds.load_full()).clone();
    both.insert(west_new.ca.trust_bundle()).unwrap();
    east_holds.store(Arc::new(both));
    let deadline = Instant::now() + PATIENCE;
    while !log.lock().unwrap().contains(&"west east.mesh".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "west never heard of east: {:?}, last failure {:?}",
            log.lock().unwrap(),
            client.last_failure(WEST)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|line| line == "east west.mesh" || line == "west east.mesh"),
        "{:?}",
        log.lock().unwrap()
    );
}

/// Waits until the west gateway has authorized `count` connections in all.
async fn wait_authorized(trunk: &Trunk, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    while trunk.connections.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "the west authorized {} connections, not {count}",
            trunk.connections.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(trunk.connections.load(Ordering::SeqCst), count);
}

#[tokio::test]
async fn a_peer_no_longer_authorized_loses_its_open_connection_when_asked_again() {
    let (backend, _) = echo_server().await;
    let east = Cluster::new("east.mesh", "deauthorized");
    let west = Cluster::new("west.mesh", "deauthorized");
    let bundles = TrustBundleSet::from_bundles([east.ca.trust_bundle(), west.ca.trust_bundle()])
        .unwrap()
        .into_shared();
    let allowed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let server = {
        let allowed = allowed.clone();
        TrunkServer::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity(west.svid("istio-system", "eastwest"), &bundles),
            &TrunkPath::default(),
            Arc::new(move |peer: &SpiffeId| {
                if allowed.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(format!("{peer} was removed"))
                }
            }),
            Arc::new(move |_: &SpiffeId, _: &StreamHeader| Ok(backend)),
        )
        .unwrap()
    };
    let client = TrunkClient::start(
        "127.0.0.1:0".parse().unwrap(),
        &identity(east.svid("istio-system", "eastwest"), &bundles),
        &TrunkPath::default(),
        backoff(),
        vec![TrunkPeer {
            name: WEST.to_owned(),
            address: server.local_addr(),
            identity: west.gateway_id(),
            connections: 1,
        }],
    )
    .unwrap();
    wait_live(&client, 1).await;
    echo_round_trip(&client, b"before").await;

    // Asking again changes nothing while the peer is authorized.
    assert_eq!(server.reauthorize(), 0);
    assert!(client.open(WEST, &echo_header(), b"still").await.is_ok());

    // The peer is removed on the west: asked again, its open connection is closed.
    allowed.store(false, Ordering::SeqCst);
    assert_eq!(server.reauthorize(), 1);
    wait_failure(&client, "not authorized").await;
}
