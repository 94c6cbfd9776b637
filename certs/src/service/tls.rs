//! The rustls transport under tonic, both sides (the CA service's, and the federation API's in
//! `strait-federation`).
//!
//! Server: an accept loop that runs each TLS handshake in its own task (bounded by a timeout, so
//! a slow client holds up nobody), reads the verified client identity once, and hands tonic
//! [`MeshTlsStream`]s whose [`PeerInfo`] tonic puts in every request's extensions.
//!
//! Client: a tonic channel whose connector dials TCP and runs the mesh client handshake; the
//! server name is for SNI only (the verifier checks the SPIFFE ID).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::spiffe::SpiffeId;
use crate::verify::peer_identity;

/// What the server knows of a caller's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The caller's address.
    pub remote: SocketAddr,
    /// The caller's verified SPIFFE ID, when it presented a client certificate.
    pub id: Option<SpiffeId>,
}

/// A server-side TLS connection with its caller's identity.
#[derive(Debug)]
pub struct MeshTlsStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for MeshTlsStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for MeshTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts on `listener` and yields handshaken connections; the task ends when the returned
/// stream is dropped and the next connection arrives, or when the handle is aborted.
pub fn accept(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> (
    impl Stream<Item = Result<MeshTlsStream, io::Error>>,
    JoinHandle<()>,
) {
    let (sender, receiver) = mpsc::channel::<MeshTlsStream>(64);
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accepting a gRPC connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if sender.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::info!(%remote, "gRPC connection refused in the handshake: {error}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "gRPC connection: handshake timed out");
                        return;
                    }
                };
                let id = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|certs| !certs.is_empty())
                    .and_then(|certs| peer_identity(certs).ok());
                let stream = MeshTlsStream {
                    inner: tls,
                    info: PeerInfo { remote, id },
                };
                let _ = sender.send(stream).await;
            });
        }
    });
    let incoming = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|stream| (Ok::<_, io::Error>(stream), receiver))
    });
    (incoming, task)
}

/// A channel to `address` (`HOST:PORT`) over mesh TLS. `lazy` channels connect on first use
/// (and reconnect after failures); others connect now and report a failure at once.
pub async fn channel(
    address: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
    lazy: bool,
    mark: Option<u32>,
) -> Result<Channel, tonic::transport::Error> {
    // No request timeout here: the bundle stream lives as long as the connection. Unary calls
    // set their own deadline.
    let endpoint = Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: http::Uri| {
        let connector = TlsConnector::from(config.clone());
        async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(15012);
            let tcp = tokio::time::timeout(connect_timeout, connect_tcp(&host, port, mark))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    if lazy {
        Ok(endpoint.connect_with_connector_lazy(connector))
    } else {
        endpoint.connect_with_connector(connector).await
    }
}

/// Connects to `host:port`, with `SO_MARK` set first when asked (so that a sidecar's capture
/// rules leave the proxy's own connection to its CA alone).
async fn connect_tcp(host: &str, port: u16, mark: Option<u32>) -> io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket2::SockRef::from(&socket)
            .set_mark(mark)
            .map_err(|e| io::Error::new(e.kind(), format!("setting SO_MARK {mark}: {e}")))?;
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}
