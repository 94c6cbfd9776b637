//! Certificate rotation and the mesh rustls configurations.
//!
//! An [`IdentityCell`] holds the current [`Svid`] behind an `ArcSwap` and is the certificate
//! resolver of both the server and the client configs: [`IdentityCell::install`] swaps in a new
//! SVID, the next handshake presents it, and connections already open keep going untouched. The
//! configs are built with the aws-lc-rs provider passed explicitly (never the process default),
//! for TLS 1.2 and 1.3, and without session resumption: a resumed session would carry the
//! certificates of the first handshake, so the peer would keep seeing a rotated-out
//! certificate and nobody would verify it against the current bundles again. Every new
//! connection makes a full handshake; connections are pooled, so there are few of them.
//!
//! Istio's mTLS ALPN lists, exactly: as a client Strait offers one list per protocol; as a server
//! it selects from [`MESH_SERVER_ALPN`] and never selects `istio-peer-exchange`.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::bundle::SharedBundles;
use crate::svid::Svid;
use crate::verify::{
    Authorizer, ClientAuth, MeshClientVerifier, MeshServerVerifier, UnknownIssuerObserver,
};

/// What a mesh client offers for HTTP/1.1.
pub const ISTIO_ALPN_HTTP11: &[&[u8]] = &[b"istio-http/1.1", b"istio", b"http/1.1"];
/// What a mesh client offers for HTTP/2.
pub const ISTIO_ALPN_H2: &[&[u8]] = &[b"istio-h2", b"istio", b"h2"];
/// What a mesh client offers for HTTP/1.0.
pub const ISTIO_ALPN_HTTP10: &[&[u8]] = &[b"istio-http/1.0", b"istio", b"http/1.0"];
/// What a mesh client offers for TCP.
pub const ISTIO_ALPN_TCP: &[&[u8]] = &[b"istio-peer-exchange", b"istio"];
/// What a mesh server selects from, in order of preference.
pub const MESH_SERVER_ALPN: &[&[u8]] = &[b"h2", b"http/1.1", b"istio"];

/// The SVID a proxy presents now; swapped in place on rotation.
#[derive(Debug, Default)]
pub struct IdentityCell {
    current: ArcSwapOption<Svid>,
}

impl IdentityCell {
    /// A cell holding `svid`.
    pub fn new(svid: Svid) -> Self {
        Self {
            current: ArcSwapOption::from_pointee(svid),
        }
    }

    /// A cell with no identity yet: handshakes that need a certificate fail until
    /// [`IdentityCell::install`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// Makes `svid` the certificate of every new handshake; returns the one it replaced.
    pub fn install(&self, svid: Svid) -> Option<Arc<Svid>> {
        self.current.swap(Some(Arc::new(svid)))
    }

    /// The SVID presented now.
    pub fn current(&self) -> Option<Arc<Svid>> {
        self.current.load_full()
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|svid| svid.certified_key())
    }
}

impl ResolvesServerCert for IdentityCell {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for IdentityCell {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A mesh server config: presents the cell's SVID, verifies clients with
/// [`MeshClientVerifier`] over `bundles`, and selects an ALPN from `alpn`
/// (usually [`MESH_SERVER_ALPN`]).
pub fn mesh_server_config(
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    mesh_server_config_observed(cell, bundles, client_auth, alpn, None)
}

/// [`mesh_server_config`] whose verifier tells `unknown_issuer` about clients whose chain ends
/// at none of the roots held for their trust domain.
pub fn mesh_server_config_observed(
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
    unknown_issuer: Option<UnknownIssuerObserver>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier =
        MeshClientVerifier::new(bundles, client_auth).observing_unknown_issuers(unknown_issuer);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(cell);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A mesh client config: presents the cell's SVID, accepts servers whose SVID verifies against
/// `bundles` and whose ID `authorizer` allows, and offers `alpn` (one of the `ISTIO_ALPN_*`
/// lists). The server name is used for SNI only.
pub fn mesh_client_config(
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    authorizer: Authorizer,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    mesh_client_config_observed(cell, bundles, authorizer, alpn, None)
}

/// [`mesh_client_config`] whose verifier tells `unknown_issuer` about servers whose chain ends
/// at none of the roots held for their trust domain.
pub fn mesh_client_config_observed(
    cell: Arc<IdentityCell>,
    bundles: SharedBundles,
    authorizer: Authorizer,
    alpn: &[&[u8]],
    unknown_issuer: Option<UnknownIssuerObserver>,
) -> Result<ClientConfig, rustls::Error> {
    let verifier =
        MeshServerVerifier::new(bundles, authorizer).observing_unknown_issuers(unknown_issuer);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(cell);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// What a SPIFFE bundle endpoint serves and its clients speak: HTTP/1.1.
pub const BUNDLE_ENDPOINT_ALPN: &[&[u8]] = &[b"http/1.1"];

/// The server config of an `https_spiffe` bundle endpoint: presents the cell's SVID and asks
/// for no client certificate (SPIFFE federation forbids requiring one: anyone may read a
/// bundle).
pub fn bundle_endpoint_server_config(
    cell: Arc<IdentityCell>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(cell);
    config.alpn_protocols = BUNDLE_ENDPOINT_ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The client config of an `https_spiffe` bundle fetch: presents no certificate, and accepts a
/// server whose SVID verifies against `bundles` (the peer's latest bundle) and whose ID
/// `authorizer` allows (exactly the configured endpoint SPIFFE ID), with the same verifier as
/// mesh mTLS.
pub fn bundle_endpoint_client_config(
    bundles: SharedBundles,
    authorizer: Authorizer,
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(bundles, authorizer)))
        .with_no_client_auth();
    config.alpn_protocols = BUNDLE_ENDPOINT_ALPN.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests;
