//! Backends and clients below plain HTTP routing, for protocol tests: a TCP echo server that
//! announces itself and reports half-closes, a WebSocket echo server, an HTTP/1.1 server that
//! streams a chunked response, TLS settings a test needs beyond `pki` (backends that require
//! client certificates, clients limited to some versions or cipher suites, a CA with a
//! revocation list), and a TLS client connection that shows which certificate was presented.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use super::client;
use super::pki::Issued;

/// A TCP server on loopback, stopped when dropped.
pub struct TcpServer {
    pub name: String,
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_tcp<F, Fut>(name: &str, handle: F) -> TcpServer
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let owned = name.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(handle(stream, owned.clone()));
        }
    });
    TcpServer {
        name: name.to_owned(),
        addr,
        connections,
        task,
    }
}

/// A TCP echo server: it first writes `NAME\n`, then echoes every byte it reads; when the client
/// half-closes, it writes `bye NAME after N bytes\n` (N = bytes read) and closes its side.
pub async fn echo(name: &str) -> TcpServer {
    serve_tcp(name, |mut stream, name| async move {
        if stream
            .write_all(format!("{name}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let mut total = 0usize;
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    if stream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let _ = stream
            .write_all(format!("bye {name} after {total} bytes\n").as_bytes())
            .await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// A WebSocket server: it greets each client with the text `hello from NAME`, then answers every
/// text message with `NAME: TEXT` and every binary message with the same bytes.
pub async fn websocket_echo(name: &str) -> TcpServer {
    serve_tcp(name, |stream, name| async move {
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        if socket
            .send(Message::text(format!("hello from {name}")))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            let reply = match message {
                Message::Text(text) => Message::text(format!("{name}: {}", text.as_str())),
                Message::Binary(bytes) => Message::binary(bytes),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The byte at `offset` of a streamed test body: a pattern that shows loss and reordering.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// An HTTP/1.1 server that reads the request body, then answers with a chunked body (no
/// `Content-Length`) of `x-test-stream-bytes` bytes (default 0) of `pattern_byte`, sent in 64 KiB
/// chunks. The answer's `x-request-bytes` says how many request body bytes arrived.
pub async fn chunked_backend(name: &str) -> TcpServer {
    serve_tcp(name, |stream, name| async move {
        let service = service_fn(move |request: Request<Incoming>| {
            let name = name.clone();
            async move {
                let size = request
                    .headers()
                    .get("x-test-stream-bytes")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let received = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                const CHUNK: usize = 64 * 1024;
                let chunks =
                    futures_util::stream::iter((0..size).step_by(CHUNK).map(move |start| {
                        let end = (start + CHUNK).min(size);
                        let bytes: Vec<u8> = (start..end).map(pattern_byte).collect();
                        Ok::<_, Infallible>(Frame::data(Bytes::from(bytes)))
                    }));
                let mut response = Response::new(StreamBody::new(chunks));
                response
                    .headers_mut()
                    .insert("x-backend", name.parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-request-bytes", received.to_string().parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The DER of the first certificate in `pem`.
pub fn first_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate in the PEM")
        .unwrap()
        .to_vec()
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(pem) {
        roots.add(cert).unwrap();
    }
    roots
}

/// A TLS backend configuration presenting `identity` that requires a client certificate signed
/// by `client_ca_pem`; offers h2 and http/1.1.
pub fn mutual_server_config(identity: &Issued, client_ca_pem: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_ca_pem)),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&identity.cert),
            PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What a test client offers beyond `pki::client_config`.
#[derive(Clone, Default)]
pub struct ClientOptions<'a> {
    /// TLS 1.2 only (else 1.2 and 1.3).
    pub tls12_only: bool,
    /// Only these TLS 1.2 suites (TLS 1.3's stay); all when empty.
    pub tls12_suites: Vec<rustls::CipherSuite>,
    pub identity: Option<&'a Issued>,
    pub alpn: Vec<&'a str>,
}

/// A client configuration trusting `ca_pem` with the versions and suites of `options`.
pub fn client_config_with(ca_pem: &str, options: &ClientOptions<'_>) -> Arc<rustls::ClientConfig> {
    let mut provider = provider();
    if !options.tls12_suites.is_empty() {
        provider
            .cipher_suites
            .retain(|s| s.tls13().is_some() || options.tls12_suites.contains(&s.suite()));
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if options.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(ca_pem));
    let mut config = match options.identity {
        Some(id) => builder
            .with_client_auth_cert(
                certs(&id.cert),
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A CA whose certificates carry serial numbers it chose, so that it can revoke them in a CRL.
pub struct RevokingCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
    next_serial: AtomicUsize,
}

impl RevokingCa {
    pub fn new(name: &str) -> RevokingCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        RevokingCa {
            issuer,
            pem,
            next_serial: AtomicUsize::new(1000),
        }
    }

    /// A certificate for `names` with `usage`, and its serial number.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (Issued, u64) {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed) as u64;
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            Issued {
                cert: cert.pem(),
                key: key.serialize_pem(),
            },
            serial,
        )
    }

    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth).0
    }

    /// A client certificate and its serial number.
    pub fn client(&self, name: &str) -> (Issued, u64) {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A CRL (PEM) revoking `serials`, valid from yesterday to well after the test.
    pub fn crl(&self, serials: &[u64]) -> String {
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let params = CertificateRevocationListParams {
            this_update: (now - day).into(),
            next_update: (now + 30 * day).into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: (now - day).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

/// A TLS connection to the gateway carrying HTTP/1.1, and what its handshake settled on.
pub struct TlsHttp1 {
    sender: http1::SendRequest<Full<Bytes>>,
    /// The DER of the certificate the server presented.
    pub presented: Vec<u8>,
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
    pub alpn: Option<Vec<u8>>,
}

/// Connects with TLS (SNI `sni`); the handshake's error when it fails.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    TlsConnector::from(config).connect(name, stream).await
}

impl TlsHttp1 {
    /// A TLS handshake then an HTTP/1.1 connection over it.
    pub async fn connect(
        addr: SocketAddr,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsHttp1> {
        let tls = tls_connect(addr, sni, config).await?;
        let connection = tls.get_ref().1;
        let presented = connection
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let version = connection.protocol_version();
        let suite = connection.negotiated_cipher_suite().map(|s| s.suite());
        let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
        let (sender, driver) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(driver);
        Ok(TlsHttp1 {
            sender,
            presented,
            version,
            suite,
            alpn,
        })
    }

    /// A GET on this connection, read to its end.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<client::Response, hyper::Error> {
        self.get_with(host, path, &[]).await
    }

    /// A GET with extra headers on this connection, read to its end.
    pub async fn get_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<client::Response, hyper::Error> {
        self.sender.ready().await?;
        let mut request = Request::get(path).header(http::header::HOST, host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::default()).unwrap();
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(client::Response {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

/// A handshake and one GET: the response, or why it failed (handshake or request). With TLS
/// 1.3 a server refuses a client certificate after the client's handshake is done, so the
/// refusal shows on the first request.
pub async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(client::Response, Vec<u8>), String> {
    let mut connection = TlsHttp1::connect(addr, sni, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let response = connection
        .get(sni, path)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok((response, connection.presented))
}

/// A relay on loopback in front of `target` that forwards the client's first `slow_bytes` bytes
/// in `piece`-byte segments a millisecond apart (the rest, and everything back, as it comes), so
/// that a TLS ClientHello reaches `target` spread over many segments.
pub async fn slow_relay(target: SocketAddr, piece: usize, slow_bytes: usize) -> TcpServer {
    serve_tcp("relay", move |client, _| async move {
        let _ = client.set_nodelay(true);
        let Ok(upstream) = TcpStream::connect(target).await else {
            return;
        };
        let _ = upstream.set_nodelay(true);
        let (mut client_read, mut client_write) = client.into_split();
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        let forward = async move {
            let mut sent = 0usize;
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for chunk in buffer[..n].chunks(if sent < slow_bytes { piece } else { n }) {
                    if upstream_write.write_all(chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    if sent < slow_bytes {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
            }
            let _ = upstream_write.shutdown().await;
        };
        let back = async move {
            let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        tokio::join!(forward, back);
    })
    .await
}
