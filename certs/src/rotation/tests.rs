use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::authority::{Authority, AuthorityOptions};
use crate::bundle::TrustBundleSet;
use crate::fs::test_dir::TestDir;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::CertificateRequest;
use crate::verify::peer_identity;

/// Gets an SVID the way a proxy does: a CSR signed by the CA.
fn svid_from(ca: &Authority, id: &SpiffeId) -> Svid {
    let request = CertificateRequest::new(id).unwrap();
    let issued = ca
        .sign_csr(request.csr_der(), id, Duration::from_secs(3600))
        .unwrap();
    request
        .into_svid(issued.chain_der, issued.issued_at)
        .unwrap()
}

/// An echo server over mesh mTLS on a loopback port.
async fn echo_server(config: ServerConfig) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
    config: ClientConfig,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("api.default.svc.cluster.local").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

async fn echo(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, message: &[u8]) -> Vec<u8> {
    tls.write_all(message).await.unwrap();
    let mut buf = vec![0u8; message.len()];
    tls.read_exact(&mut buf).await.unwrap();
    buf
}

fn server_leaf(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reaches_new_handshakes_and_leaves_open_connections_alone() {
    let dir = TestDir::new("rotation");
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = Authority::init(
        td.clone(),
        &dir.path().join("ca"),
        &AuthorityOptions::default(),
    )
    .unwrap();
    let bundles = TrustBundleSet::from_bundles([ca.trust_bundle()])
        .unwrap()
        .into_shared();
    let api = SpiffeId::istio(&td, "default", "api").unwrap();
    let web = SpiffeId::istio(&td, "default", "web").unwrap();

    let cert_a = svid_from(&ca, &api);
    let cert_b = svid_from(&ca, &api);
    assert_ne!(cert_a.leaf(), cert_b.leaf());

    let cell = Arc::new(IdentityCell::new(cert_a.clone()));
    let server_config = mesh_server_config(
        cell.clone(),
        bundles.clone(),
        ClientAuth::Required(Authorizer::Any),
        MESH_SERVER_ALPN,
    )
    .unwrap();
    let addr = echo_server(server_config).await;
    // Each connection gets its own client config, so that the second handshake is a full one
    // and not a resumption of the first session.
    let client_config = || {
        mesh_client_config(
            Arc::new(IdentityCell::new(svid_from(&ca, &web))),
            bundles.clone(),
            Authorizer::ids([api.clone()]),
            ISTIO_ALPN_HTTP11,
        )
        .unwrap()
    };

    let mut first = connect(addr, client_config()).await;
    assert_eq!(server_leaf(&first), *cert_a.leaf());
    assert_eq!(echo(&mut first, b"before").await, b"before");

    let previous = cell.install(cert_b.clone()).unwrap();
    assert_eq!(previous.leaf(), cert_a.leaf());
    assert_eq!(cell.current().unwrap().leaf(), cert_b.leaf());

    // The connection opened before the rotation keeps working.
    assert_eq!(echo(&mut first, b"after").await, b"after");

    let mut second = connect(addr, client_config()).await;
    assert_eq!(server_leaf(&second), *cert_b.leaf());
    assert_eq!(
        peer_identity(second.get_ref().1.peer_certificates().unwrap()),
        Ok(api.clone())
    );
    assert_eq!(echo(&mut second, b"second").await, b"second");
    assert_eq!(echo(&mut first, b"still").await, b"still");
}

/// One client config across a rotation of the client's own certificate: the server sees the
/// new one at the next connection (sessions are not resumed with the old certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_certificate_is_presented_at_the_next_connection() {
    let dir = TestDir::new("rotation-client");
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = Authority::init(
        td.clone(),
        &dir.path().join("ca"),
        &AuthorityOptions::default(),
    )
    .unwrap();
    let bundles = TrustBundleSet::from_bundles([ca.trust_bundle()])
        .unwrap()
        .into_shared();
    let api = SpiffeId::istio(&td, "default", "api").unwrap();
    let web = SpiffeId::istio(&td, "default", "web").unwrap();
    let server_config = mesh_server_config(
        Arc::new(IdentityCell::new(svid_from(&ca, &api))),
        bundles.clone(),
        ClientAuth::Required(Authorizer::Any),
        MESH_SERVER_ALPN,
    )
    .unwrap();
    // The server reports the client certificate it saw.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let _ = tls.write_all(&leaf).await;
            let _ = tls.shutdown().await;
        }
    });
    let (web_a, web_b) = (svid_from(&ca, &web), svid_from(&ca, &web));
    let cell = Arc::new(IdentityCell::new(web_a.clone()));
    let config = Arc::new(
        mesh_client_config(
            cell.clone(),
            bundles,
            Authorizer::ids([api]),
            ISTIO_ALPN_HTTP11,
        )
        .unwrap(),
    );
    let seen = |config: Arc<ClientConfig>| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("api.default.svc.cluster.local").unwrap();
        let mut tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let mut leaf = Vec::new();
        tls.read_to_end(&mut leaf).await.unwrap();
        leaf
    };
    assert_eq!(seen(config.clone()).await, web_a.leaf().as_ref());
    cell.install(web_b.clone());
    assert_eq!(seen(config).await, web_b.leaf().as_ref());
}

#[test]
fn alpn_lists_are_istios() {
    let strings = |list: &[&[u8]]| -> Vec<String> {
        list.iter()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    };
    assert_eq!(
        strings(ISTIO_ALPN_HTTP11),
        ["istio-http/1.1", "istio", "http/1.1"]
    );
    assert_eq!(strings(ISTIO_ALPN_H2), ["istio-h2", "istio", "h2"]);
    assert_eq!(
        strings(ISTIO_ALPN_HTTP10),
        ["istio-http/1.0", "istio", "http/1.0"]
    );
    assert_eq!(strings(ISTIO_ALPN_TCP), ["istio-peer-exchange", "istio"]);
    assert_eq!(strings(MESH_SERVER_ALPN), ["h2", "http/1.1", "istio"]);
    assert!(!MESH_SERVER_ALPN.contains(&&b"istio-peer-exchange"[..]));
}

#[test]
fn an_empty_cell_has_no_certificate() {
    let cell = IdentityCell::empty();
    assert!(!ResolvesClientCert::has_certs(&cell));
    assert!(cell.current().is_none());
}
