//! A trunk stream as a byte stream, and the splice between it and a TCP connection.
//!
//! The mapping at either end of the trunk: a TCP half-close (FIN) becomes the stream's FIN and
//! the reverse; an error on either side (a TCP reset, a failed write, a QUIC RESET_STREAM or
//! STOP_SENDING) resets the other side: RESET_STREAM plus STOP_SENDING on the stream, an RST
//! (zero linger) on the TCP connection. Nothing is ever closed gracefully that failed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The application error code a stream is reset with when the connection it carries failed.
pub const STREAM_RESET: VarInt = VarInt::from_u32(1);
/// The application error code a refused stream is ended with.
pub const STREAM_REFUSED: VarInt = VarInt::from_u32(2);

/// One cross-cluster connection on a trunk: both halves of a QUIC bidirectional stream.
/// Shutting down the write side sends FIN; dropping it unfinished sends FIN too, so call
/// [`TrunkStream::reset`] when the connection failed.
#[derive(Debug)]
pub struct TrunkStream {
    send: SendStream,
    recv: RecvStream,
}

impl TrunkStream {
    pub(crate) fn new(send: SendStream, recv: RecvStream) -> TrunkStream {
        TrunkStream { send, recv }
    }

    /// Ends the stream abruptly both ways: RESET_STREAM and STOP_SENDING with
    /// [`STREAM_RESET`], so the other end resets its TCP connection.
    pub fn reset(&mut self) {
        self.reset_with(STREAM_RESET);
    }

    pub(crate) fn reset_with(&mut self, code: VarInt) {
        let _ = self.send.reset(code);
        let _ = self.recv.stop(code);
    }

    pub(crate) fn send_mut(&mut self) -> &mut SendStream {
        &mut self.send
    }

    pub(crate) fn recv_mut(&mut self) -> &mut RecvStream {
        &mut self.recv
    }
}

impl AsyncRead for TrunkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for TrunkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().send), cx)
    }
}

/// Copies both ways between a trunk stream and a TCP connection until both directions have
/// ended, mapping half-closes to FINs and failures to resets (see the module doc). Returns the
/// bytes copied from TCP to the trunk and from the trunk to TCP.
///
/// # Errors
///
/// The failure that ended it; both sides have been reset by then.
pub async fn splice(mut trunk: TrunkStream, mut tcp: TcpStream) -> io::Result<(u64, u64)> {
    match tokio::io::copy_bidirectional(&mut tcp, &mut trunk).await {
        Ok(copied) => Ok(copied),
        Err(error) => {
            trunk.reset();
            reset_tcp(tcp);
            Err(error)
        }
    }
}

/// Closes a TCP connection with an RST rather than a FIN, so that the peer sees a failure (a
/// sidecar takes it as a connect failure and its direct path).
pub fn reset_tcp(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}
