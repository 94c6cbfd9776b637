//! Opening connections to endpoints: TCP with a connect timeout, keepalive and no Nagle, from
//! the source address and with the socket mark the proxy is set up with, then TLS when the
//! cluster originates it; or through an [`UpstreamConnector`](super::connector::UpstreamConnector)'s
//! stream, with TLS inside it the same way.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::snapshot::{ConnectFailure, TcpKeepalive};
use crate::upstream::connector::{BoxedUpstreamIo, ConnectFuture};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connecting to {0} timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("connecting to {0}: {1}")]
    Io(SocketAddr, io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(SocketAddr, io::Error),
    #[error("connecting to {0} through the upstream connector: {1}")]
    Connector(SocketAddr, io::Error),
}

impl ConnectError {
    /// What kind of failure this was: no connection, a connection the peer closed during the
    /// handshake (a gateway refusing the destination does that), or a failed handshake.
    pub(crate) fn failure(&self) -> ConnectFailure {
        match self {
            ConnectError::Tls(_, error) => match error.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe => ConnectFailure::Closed,
                _ => ConnectFailure::Handshake,
            },
            _ => ConnectFailure::Unreachable,
        }
    }
}

/// How the proxy's sockets towards endpoints are set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct SocketSetup {
    /// The source address to bind (Envoy's `upstream_bind_config`): the sidecar reaches its
    /// application from 127.0.0.6, so that capture rules do not send it back to the proxy.
    pub(crate) source: Option<IpAddr>,
    /// `SO_MARK`, by which capture rules tell the proxy's own traffic from the application's.
    pub(crate) mark: Option<u32>,
}

/// TLS to originate towards an endpoint.
#[derive(Debug)]
pub(crate) struct TlsOrigination {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

/// A connection to an endpoint, with or without TLS.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A connection an upstream connector made.
    Connector(BoxedUpstreamIo),
    ConnectorTls(Box<tokio_rustls::client::TlsStream<BoxedUpstreamIo>>),
}

impl UpstreamStream {
    /// The ALPN protocol the TLS handshake settled on.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamStream::Plain(_) | UpstreamStream::Connector(_) => None,
            UpstreamStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            UpstreamStream::ConnectorTls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

/// Connects to `address` within `timeout`, then originates TLS if asked to.
pub(crate) async fn connect(
    address: SocketAddr,
    timeout: Duration,
    keepalive: Option<&TcpKeepalive>,
    tls: Option<&TlsOrigination>,
    setup: SocketSetup,
) -> Result<UpstreamStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, connect_tcp(address, setup))
        .await
        .map_err(|_| ConnectError::Timeout(address, timeout))?
        .map_err(|e| ConnectError::Io(address, e))?;
    let _ = stream.set_nodelay(true);
    if let Some(keepalive) = keepalive {
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&socket_keepalive(keepalive));
    }
    let Some(tls) = tls else {
        return Ok(UpstreamStream::Plain(stream));
    };
    let handshake = TlsConnector::from(tls.config.clone()).connect(tls.server_name.clone(), stream);
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout(address, timeout))?
        .map_err(|e| ConnectError::Tls(address, e))?;
    Ok(UpstreamStream::Tls(Box::new(stream)))
}

/// Waits for a connector's connection to `address` within `timeout`, then originates TLS
/// inside it if asked to.
pub(crate) async fn connect_through(
    connecting: ConnectFuture<'_>,
    address: SocketAddr,
    timeout: Duration,
    tls: Option<&TlsOrigination>,
) -> Result<UpstreamStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(address, timeout))?
        .map_err(|e| ConnectError::Connector(address, e))?;
    let Some(tls) = tls else {
        return Ok(UpstreamStream::Connector(stream));
    };
    let handshake = TlsConnector::from(tls.config.clone()).connect(tls.server_name.clone(), stream);
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout(address, timeout))?
        .map_err(|e| ConnectError::Tls(address, e))?;
    Ok(UpstreamStream::ConnectorTls(Box::new(stream)))
}

async fn connect_tcp(address: SocketAddr, setup: SocketSetup) -> io::Result<TcpStream> {
    if setup == SocketSetup::default() {
        return TcpStream::connect(address).await;
    }
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(mark) = setup.mark {
        set_socket_mark(&socket, mark)?;
    }
    if let Some(source) = setup.source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("binding source {source}: {e}")))?;
    }
    socket.connect(address).await
}

/// Sets `SO_MARK` on a socket (TCP or UDP), by which capture rules tell the proxy's own
/// traffic from the application's. Needs CAP_NET_ADMIN.
pub fn set_socket_mark<S: std::os::fd::AsFd>(socket: &S, mark: u32) -> io::Result<()> {
    socket2::SockRef::from(socket)
        .set_mark(mark)
        .map_err(|e| io::Error::new(e.kind(), format!("setting SO_MARK {mark}: {e}")))
}

/// Istio's `tcpKeepalive` as the socket option (unset parts keep the OS defaults).
pub(crate) fn socket_keepalive(keepalive: &TcpKeepalive) -> socket2::TcpKeepalive {
    let mut socket = socket2::TcpKeepalive::new();
    if let Some(time) = keepalive.time {
        socket = socket.with_time(time);
    }
    if let Some(interval) = keepalive.interval {
        socket = socket.with_interval(interval);
    }
    if let Some(probes) = keepalive.probes {
        socket = socket.with_retries(probes);
    }
    socket
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            UpstreamStream::Connector(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::ConnectorTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            UpstreamStream::Connector(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::ConnectorTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            UpstreamStream::Connector(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::ConnectorTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
            UpstreamStream::Connector(s) => s.is_write_vectored(),
            UpstreamStream::ConnectorTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            UpstreamStream::Connector(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::ConnectorTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            UpstreamStream::Connector(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::ConnectorTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_the_peer_cuts_short_is_told_from_one_that_failed() {
        let address: SocketAddr = "192.0.2.1:15443".parse().unwrap_or_else(|_| unreachable!());
        let tls = |kind| ConnectError::Tls(address, io::Error::from(kind));
        // A gateway refusing the destination resets (or closes) before any TLS alert.
        assert_eq!(
            tls(io::ErrorKind::ConnectionReset).failure(),
            ConnectFailure::Closed
        );
        assert_eq!(
            tls(io::ErrorKind::UnexpectedEof).failure(),
            ConnectFailure::Closed
        );
        // rustls reports a certificate it does not trust, or an alert, as invalid data.
        let untrusted = ConnectError::Tls(
            address,
            io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate"),
        );
        assert_eq!(untrusted.failure(), ConnectFailure::Handshake);
        let refused = ConnectError::Io(address, io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.failure(), ConnectFailure::Unreachable);
        let slow = ConnectError::Timeout(address, Duration::from_secs(1));
        assert_eq!(slow.failure(), ConnectFailure::Unreachable);
    }
}
