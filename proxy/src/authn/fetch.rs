//! Fetching a JWKS document from its `jwksUri`: one HTTP/1.1 GET, bounded in time and size.
//! `https://` needs trusted roots, which the proxy does not have for the public web yet, so
//! it fails with a reason that says so.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::upstream::connect::{SocketSetup, UpstreamStream, connect};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Why a JWKS could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0:?} is not a valid URI")]
    InvalidUri(String),
    #[error(
        "https JWKS URIs need trusted root certificates, which are not configured; serve the \
         keys inline (jwks) or over http"
    )]
    HttpsUnsupported,
    #[error("scheme {0:?} is not http")]
    UnsupportedScheme(String),
    #[error("resolving {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("{0}")]
    Connect(String),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// GETs `uri` and returns the body as text.
pub(crate) async fn fetch(
    uri: &str,
    timeout: Duration,
    mark: Option<u32>,
) -> Result<String, FetchError> {
    match tokio::time::timeout(timeout, get(uri, timeout, mark)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn get(text: &str, timeout: Duration, mark: Option<u32>) -> Result<String, FetchError> {
    let uri: Uri = text
        .parse()
        .map_err(|_| FetchError::InvalidUri(text.to_owned()))?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return Err(FetchError::HttpsUnsupported);
        }
        Some(other) => return Err(FetchError::UnsupportedScheme(other.to_owned())),
        None => return Err(FetchError::InvalidUri(text.to_owned())),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| FetchError::InvalidUri(text.to_owned()))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let address = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| FetchError::Resolve {
            host: host.to_owned(),
            why: e.to_string(),
        })?
        .next()
        .ok_or_else(|| FetchError::Resolve {
            host: host.to_owned(),
            why: "no address".to_owned(),
        })?;
    let setup = SocketSetup { source: None, mark };
    let stream = match connect(address, timeout, None, None, setup).await {
        Ok(UpstreamStream::Plain(stream)) => stream,
        // Without TLS origination `connect` makes plain TCP only.
        Ok(_) => return Err(FetchError::HttpsUnsupported),
        Err(error) => return Err(FetchError::Connect(error.to_string())),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Body(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| FetchError::Body("not UTF-8".to_owned()))
}
