//! The trunk's mTLS: quinn client and server configurations made from the mesh rustls
//! configurations of `strait-certs`, so that both gateways present their SVIDs (rotated in
//! place) and verify the other's against the bundle of the trust domain it names. The client
//! accepts exactly the peer gateway's SPIFFE ID; the server accepts any ID whose chain verifies
//! and leaves the decision to its authorizer. Either side tells the identity's
//! [`UnknownIssuerObserver`] (if any) about a peer whose chain ends at none of the roots held
//! for its trust domain, so that the peer's bundle is fetched early. ALPN is [`TRUNK_ALPN`] on both sides: a mesh
//! client that dialled UDP 15443 by mistake fails the handshake.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use strait_certs::{
    Authorizer, ClientAuth, IdentityCell, SharedBundles, SpiffeId, UnknownIssuerObserver,
    mesh_client_config_observed, mesh_server_config_observed,
};

use super::transport::TrunkPath;

/// The ALPN protocol of a trunk connection.
pub const TRUNK_ALPN: &[u8] = b"strait-trunk/1";

/// A gateway's identity in the mesh: the SVID it presents and the bundles it trusts, live.
#[derive(Clone, Debug)]
pub struct TrunkIdentity {
    pub cell: Arc<IdentityCell>,
    pub bundles: SharedBundles,
    /// Told the trust domain of a peer gateway whose chain ends at no root held for it.
    pub unknown_issuer: Option<UnknownIssuerObserver>,
}

/// Why a trunk could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrunkSetupError {
    #[error("trunk TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("trunk QUIC configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("two trunk peers are named {0:?}")]
    DuplicatePeer(String),
    #[error("binding the trunk's UDP socket on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl TrunkIdentity {
    /// The client side towards one peer gateway, which must present `peer`.
    pub(crate) fn client_config(
        &self,
        peer: &SpiffeId,
        path: &TrunkPath,
    ) -> Result<quinn::ClientConfig, TrunkSetupError> {
        let tls = mesh_client_config_observed(
            self.cell.clone(),
            self.bundles.clone(),
            Authorizer::ids([peer.clone()]),
            &[TRUNK_ALPN],
            self.unknown_issuer.clone(),
        )?;
        let quic = QuicClientConfig::try_from(Arc::new(tls))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(path.transport_config());
        Ok(config)
    }

    /// The server side: a client certificate is required and must verify against its own
    /// trust domain's bundle.
    pub(crate) fn server_config(
        &self,
        path: &TrunkPath,
    ) -> Result<quinn::ServerConfig, TrunkSetupError> {
        let tls = mesh_server_config_observed(
            self.cell.clone(),
            self.bundles.clone(),
            ClientAuth::Required(Authorizer::Any),
            &[TRUNK_ALPN],
            self.unknown_issuer.clone(),
        )?;
        let quic = QuicServerConfig::try_from(Arc::new(tls))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(path.transport_config());
        Ok(config)
    }
}

/// The verified SPIFFE ID of a connection's peer.
pub(crate) fn peer_id(connection: &quinn::Connection) -> Option<SpiffeId> {
    let certificates = connection
        .peer_identity()?
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    strait_certs::peer_identity(&certificates).ok()
}
