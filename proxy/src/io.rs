//! Stream adapters shared by the listeners.
//!
//! [`Prefixed`] replays bytes that were already read from a connection (for example a TLS
//! ClientHello peeked to route by SNI, or the first bytes sniffed to tell TLS from plain HTTP)
//! before reading through to the connection itself. Writes are never buffered: they go straight
//! to the wrapped stream, so a `Prefixed` stream can be handed to a TLS acceptor, an HTTP server
//! or `tokio::io::copy_bidirectional` as if nothing had been read yet.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose reads return `prefix` first and then read through to `io`.
///
/// Writes, flush and shutdown go straight to `io`.
#[derive(Debug)]
pub struct Prefixed<IO> {
    /// Bytes already read from `io` and not yet returned to the reader.
    prefix: Bytes,
    /// The wrapped stream.
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// Wraps `io`, whose reads will first return `prefix` (bytes already read from `io`).
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Self { prefix, io }
    }

    /// Unwraps the stream, returning the part of the prefix not read yet and the inner stream.
    pub fn into_inner(self) -> (Bytes, IO) {
        (self.prefix, self.io)
    }

    /// The wrapped stream, for example to ask a `TcpStream` for its peer address.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let len = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(len));
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn reads_prefix_then_stream() {
        let (mut client, server) = duplex(64);
        client.write_all(b" world").await.unwrap();
        client.shutdown().await.unwrap();

        let mut stream = Prefixed::new(Bytes::from_static(b"hello"), server);
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn small_reads_split_the_prefix() {
        let (mut client, server) = duplex(64);
        client.write_all(b"!").await.unwrap();

        let mut stream = Prefixed::new(Bytes::from_static(b"abcdefg"), server);
        let mut chunk = [0u8; 3];
        let mut reads = Vec::new();
        for _ in 0..4 {
            let n = stream.read(&mut chunk).await.unwrap();
            reads.push(chunk[..n].to_vec());
        }
        assert_eq!(
            reads,
            [
                b"abc".to_vec(),
                b"def".to_vec(),
                b"g".to_vec(),
                b"!".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn empty_prefix_reads_through() {
        let (mut client, server) = duplex(64);
        client.write_all(b"direct").await.unwrap();
        drop(client);

        let mut stream = Prefixed::new(Bytes::new(), server);
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "direct");
    }

    #[tokio::test]
    async fn into_inner_returns_unread_prefix() {
        let (_client, server) = duplex(64);
        let mut stream = Prefixed::new(Bytes::from_static(b"0123456789"), server);
        let mut chunk = [0u8; 4];
        stream.read_exact(&mut chunk).await.unwrap();
        assert_eq!(&chunk, b"0123");

        let (rest, _io) = stream.into_inner();
        assert_eq!(rest, Bytes::from_static(b"456789"));
    }

    #[tokio::test]
    async fn writes_flush_and_shutdown_go_through() {
        let (mut client, server) = duplex(64);
        let mut stream = Prefixed::new(Bytes::from_static(b"unread"), server);
        assert_eq!(
            stream.is_write_vectored(),
            stream.get_ref().is_write_vectored()
        );

        stream.write_all(b"plain ").await.unwrap();
        let slices = [IoSlice::new(b"vec"), IoSlice::new(b"tored")];
        let written = stream.write_vectored(&slices).await.unwrap();
        // A short vectored write is allowed; finish with a plain write.
        stream.write_all(&b"vectored"[written..]).await.unwrap();
        stream.flush().await.unwrap();
        stream.shutdown().await.unwrap();

        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"plain vectored");
    }

    #[tokio::test]
    async fn works_with_copy_bidirectional() {
        // client <-> (proxy_in, wrapped in Prefixed) ... (proxy_out) <-> upstream
        let (mut client, proxy_in) = duplex(1024);
        let (proxy_out, mut upstream) = duplex(1024);

        let proxy = tokio::spawn(async move {
            let mut inbound = Prefixed::new(Bytes::from_static(b"peeked "), proxy_in);
            let mut outbound = proxy_out;
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                .await
                .unwrap()
        });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut request = Vec::new();
        upstream.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"peeked request");

        upstream.write_all(b"response").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"response");

        let (to_upstream, to_client) = proxy.await.unwrap();
        assert_eq!((to_upstream, to_client), (14, 8));
    }
}
