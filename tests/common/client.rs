//! Test clients: hyper connections speaking HTTP/1.1 (keep-alive), h2c with prior knowledge, or
//! either over TLS by ALPN, and plain helpers for one request on a new connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A response read to its end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The backend's echo of the request (see `backend`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The backend that answered (`x-backend`), if one did.
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// One client connection, reused for every request sent on it.
pub struct Connection {
    sender: Sender,
    scheme: &'static str,
}

impl Connection {
    pub async fn http1(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        Connection::handshake_http1(TokioIo::new(stream), "http").await
    }

    pub async fn h2c(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        Connection::handshake_http2(TokioIo::new(stream), "http").await
    }

    /// TLS to `addr` with `sni`; HTTP/2 when the server selects `h2`, else HTTP/1.1.
    pub async fn tls(addr: SocketAddr, sni: &str, config: Arc<rustls::ClientConfig>) -> Connection {
        Connection::try_tls(addr, sni, config).await.unwrap()
    }

    /// As `tls`, returning the handshake's error instead of panicking.
    pub async fn try_tls(
        addr: SocketAddr,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let tls = TlsConnector::from(config).connect(name, stream).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(if h2 {
            Connection::handshake_http2(TokioIo::new(tls), "https").await
        } else {
            Connection::handshake_http1(TokioIo::new(tls), "https").await
        })
    }

    async fn handshake_http1<IO>(io: IO, scheme: &'static str) -> Connection
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(io).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        Connection {
            sender: Sender::Http1(sender),
            scheme,
        }
    }

    async fn handshake_http2<IO>(io: IO, scheme: &'static str) -> Connection
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        Connection {
            sender: Sender::Http2(sender),
            scheme,
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::Http2(_))
    }

    /// A request for `host` and `path` in the form this connection's protocol needs.
    pub fn request(&self, host: &str, path: &str) -> http::request::Builder {
        match self.sender {
            Sender::Http1(_) => Request::get(path).header(http::header::HOST, host),
            Sender::Http2(_) => Request::get(format!("{}://{host}{path}", self.scheme)),
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response, hyper::Error> {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Response {
        let request = self.request(host, path).body(Full::default()).unwrap();
        self.send(request).await.unwrap()
    }

    /// A GET with extra headers.
    pub async fn get_with(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut builder = self.request(host, path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::default()).unwrap())
            .await
            .unwrap()
    }
}

/// One GET on a new HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Connection::http1(addr).await.get(host, path).await
}

/// One GET with headers on a new HTTP/1.1 connection.
pub async fn get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    Connection::http1(addr)
        .await
        .get_with(host, path, headers)
        .await
}
