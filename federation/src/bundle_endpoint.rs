//! The SPIFFE bundle endpoint (`https_spiffe`, port 15446): serves the local trust domain's
//! bundle to peers.
//!
//! HTTPS with the gateway's SVID ([`strait_certs::bundle_endpoint_server_config`]); no client
//! certificate is asked for, as SPIFFE federation requires. `GET` (or `HEAD`) of **any path**
//! answers `200` with the bundle as SPIFFE bundle JSON (`application/json`): one `x509-svid`
//! key per root, `spiffe_sequence`, and `spiffe_refresh_hint` (the configured hint when set,
//! else the bundle's own). Other methods get `405`; while the source holds no bundle for the
//! trust domain the answer is `503`.
//!
//! The bundle is read from a shared source ([`SharedBundles`]) on every request, so a new root
//! stored there is served at once; the SVID comes from an [`IdentityCell`] that can be swapped
//! the same way.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strait_certs::{SharedBundles, TrustDomain};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint serves.
#[derive(Debug, Clone)]
pub struct BundleEndpoint {
    /// Where the bundle is read from on every request.
    pub source: SharedBundles,
    /// The trust domain whose bundle is served (the local one).
    pub trust_domain: TrustDomain,
    /// `spiffe_refresh_hint` to announce; the bundle's own when `None`.
    pub refresh_hint: Option<Duration>,
}

impl BundleEndpoint {
    /// The answer to one request.
    pub fn respond(&self, method: &http::Method) -> http::Response<Full<Bytes>> {
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut response = plain(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "only GET serves the bundle\n",
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return response;
        }
        let set = self.source.load();
        let Some(bundle) = set.get(&self.trust_domain) else {
            return plain(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "no bundle for the local trust domain yet\n",
            );
        };
        let mut bundle = bundle.clone();
        drop(set);
        if let Some(hint) = self.refresh_hint {
            bundle.refresh_hint = Some(hint);
        }
        match bundle.to_spiffe_json() {
            Ok(json) => {
                let body = if method == http::Method::HEAD {
                    Bytes::new()
                } else {
                    Bytes::from(json)
                };
                http::Response::builder()
                    .status(http::StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CACHE_CONTROL, "no-store")
                    .body(Full::new(body))
                    .unwrap_or_default()
            }
            Err(error) => {
                tracing::error!(trust_domain = %self.trust_domain, "the bundle cannot be served: {error}");
                plain(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "the bundle cannot be written\n",
                )
            }
        }
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_default()
}

/// Serves `endpoint` on `listener` with `tls` (made by
/// [`strait_certs::bundle_endpoint_server_config`]) until `shutdown` completes. Each connection
/// runs in its own task; a handshake that does not finish within [`HANDSHAKE_TIMEOUT`] is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    endpoint: BundleEndpoint,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let endpoint = Arc::new(endpoint);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("bundle endpoint: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, "bundle endpoint: TLS handshake failed: {error}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "bundle endpoint: TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let response = endpoint.respond(request.method());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%remote, "bundle endpoint: connection ended: {error}");
            }
        });
    }
}
