//! One fetch of a peer's bundle over the `https_spiffe` profile of SPIFFE federation.
//!
//! The client presents no certificate. The server must present an X.509-SVID that verifies
//! against the peer's **latest** bundle (the previous fetch's, or the Peer document's for first
//! contact) and whose SPIFFE ID is exactly the configured endpoint ID; the mesh verifier of
//! `strait-certs` does both, as for mesh mTLS. The document served is taken as the bundle of
//! the trust domain of that SPIFFE ID, and refused when its content claims another (a root
//! naming another trust domain), when it has no usable X.509 root, or when it is larger than
//! [`MAX_BUNDLE_BYTES`]. Redirects are not followed (a redirect is reported as the status it
//! is): the configured URL is always the one asked.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use strait_certs::{
    Authorizer, BundleError, TrustBundle, TrustBundleSet, VerifyError,
    bundle_endpoint_client_config,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::peer::{BundleEndpointRef, check_bundle};

/// The largest bundle document accepted (a bundle of a few roots is a few KiB).
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why a fetch failed. The last good bundle stays in use whatever the reason.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: connecting: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: the bundle endpoint's certificate was refused: {reason}")]
    Refused {
        url: String,
        reason: String,
        /// It chained to none of the roots held (the peer may have rotated past them).
        unknown_issuer: bool,
    },
    #[error("{url}: TLS: {source}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: HTTP: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: answered {status}, not 200")]
    Status { url: String, status: u16 },
    #[error("{url}: the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a SPIFFE bundle: {source}")]
    Bundle {
        url: String,
        #[source]
        source: BundleError,
    },
    #[error("{url}: bundle refused: {reason}")]
    Unusable { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: TLS client configuration: {source}")]
    Config {
        url: String,
        #[source]
        source: rustls::Error,
    },
}

impl FetchError {
    /// Whether the endpoint's certificate chained to none of the roots held: the peer may have
    /// rotated past the bundle this side holds.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                unknown_issuer: true,
                ..
            }
        )
    }
}

/// Fetches the bundle `endpoint` serves, trusting `latest` (the peer's latest bundle, whose
/// trust domain is the endpoint ID's), within `timeout`.
pub async fn fetch_bundle(
    endpoint: &BundleEndpointRef,
    latest: &TrustBundle,
    timeout: Duration,
) -> Result<TrustBundle, FetchError> {
    let url = endpoint.url.to_string();
    match tokio::time::timeout(timeout, fetch(endpoint, latest, &url)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { url, timeout }),
    }
}

async fn fetch(
    endpoint: &BundleEndpointRef,
    latest: &TrustBundle,
    url: &str,
) -> Result<TrustBundle, FetchError> {
    let trust_domain = endpoint.spiffe_id.trust_domain();
    let anchors = TrustBundleSet::from_bundles([latest.clone()])
        .map_err(|source| FetchError::Bundle {
            url: url.to_owned(),
            source,
        })?
        .into_shared();
    let config =
        bundle_endpoint_client_config(anchors, Authorizer::ids([endpoint.spiffe_id.clone()]))
            .map_err(|source| FetchError::Config {
                url: url.to_owned(),
                source,
            })?;
    let tcp = TcpStream::connect((endpoint.host(), endpoint.port()))
        .await
        .map_err(|source| FetchError::Connect {
            url: url.to_owned(),
            source,
        })?;
    // The name is for SNI only; the verifier checks the SPIFFE ID.
    let server_name = ServerName::try_from(endpoint.host().to_owned()).unwrap_or(
        ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
    );
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|source| tls_error(url, source))?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| FetchError::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let driver = tokio::spawn(connection);
    let authority = endpoint
        .url
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let request = http::Request::get(endpoint.path())
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    if response.status() != http::StatusCode::OK {
        driver.abort();
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge {
                    url: url.to_owned(),
                }
            } else {
                FetchError::Http {
                    url: url.to_owned(),
                    reason: e.to_string(),
                }
            }
        })?
        .to_bytes();
    driver.abort();
    let bundle = TrustBundle::from_spiffe_json(trust_domain, &body).map_err(|source| {
        FetchError::Bundle {
            url: url.to_owned(),
            source,
        }
    })?;
    check_bundle(&bundle).map_err(|reason| FetchError::Unusable {
        url: url.to_owned(),
        reason,
    })?;
    Ok(bundle)
}

/// A TLS failure, with the verifier's reason when the server's certificate was refused.
fn tls_error(url: &str, source: std::io::Error) -> FetchError {
    let rustls_error = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(error @ rustls::Error::InvalidCertificate(certificate)) => {
            // Our CAs name their certificates after the trust domain, so a chain to a root
            // this side does not hold finds a root of the same name with another key: a bad
            // signature is an unknown issuer too.
            let unknown_issuer = matches!(
                certificate,
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
            );
            let reason = match VerifyError::from_rustls(error) {
                Some(verify) => verify.to_string(),
                None if unknown_issuer => format!(
                    "it chains to none of the peer's roots held here (unknown issuer: {certificate:?})"
                ),
                None => format!("{certificate:?}"),
            };
            FetchError::Refused {
                url: url.to_owned(),
                reason,
                unknown_issuer,
            }
        }
        _ => FetchError::Tls {
            url: url.to_owned(),
            source,
        },
    }
}
