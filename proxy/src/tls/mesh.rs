//! Mesh mTLS (Istio's `ISTIO_MUTUAL`): the proxy's own SPIFFE identity and the trust bundles it
//! follows, turned into rustls configurations. Inbound, the client certificate is required and
//! verified against the trust bundle of the trust domain it names; authorization of the ID is
//! left to the policies. Outbound, the server's ID must be one the cluster expects, and the
//! client offers Istio's ALPN list for the protocol.
//!
//! Both sides read the identity and the bundles live, so a rotated certificate or a new root
//! reaches new handshakes without rebuilding anything; open connections are untouched.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use strait_certs::rotation::{ISTIO_ALPN_H2, ISTIO_ALPN_HTTP11, ISTIO_ALPN_TCP, MESH_SERVER_ALPN};
use strait_certs::{
    Authorizer, ClientAuth, IdentityCell, SharedBundles, SpiffeId, mesh_client_config,
    mesh_server_config, peer_identity, xfcc_value,
};

use crate::snapshot::UpstreamProtocol;
use crate::upstream::connect::TlsOrigination;

/// The identity a proxy presents in the mesh and the bundles it trusts.
#[derive(Clone, Debug)]
pub struct MeshIdentity {
    pub cell: Arc<IdentityCell>,
    pub bundles: SharedBundles,
}

/// Why mesh TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MeshTlsError {
    #[error(
        "the proxy has no mesh identity (start it with one to serve or originate ISTIO_MUTUAL)"
    )]
    NoIdentity,
    #[error("{0:?} is not a SPIFFE ID a server may be expected to have: {1}")]
    ExpectedId(String, strait_certs::SpiffeIdError),
    #[error("SNI {0:?} is not usable")]
    ServerName(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

impl MeshIdentity {
    /// The inbound side: a client certificate from any trust domain the bundles hold.
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, MeshTlsError> {
        let config = mesh_server_config(
            self.cell.clone(),
            self.bundles.clone(),
            ClientAuth::Required(Authorizer::Any),
            MESH_SERVER_ALPN,
        )?;
        Ok(Arc::new(config))
    }

    /// The outbound side towards a cluster: SNI `outbound_.PORT_.SUBSET_.HOST`, the server's ID
    /// among `expected` (any ID the bundles vouch for when empty), and Istio's ALPN list.
    pub(crate) fn origination(
        &self,
        sni: &str,
        expected: &[String],
        protocol: UpstreamProtocol,
        tcp: bool,
    ) -> Result<TlsOrigination, MeshTlsError> {
        let authorizer = if expected.is_empty() {
            Authorizer::Any
        } else {
            let ids = expected
                .iter()
                .map(|id| {
                    id.parse::<SpiffeId>()
                        .map_err(|e| MeshTlsError::ExpectedId(id.clone(), e))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            Authorizer::Ids(ids)
        };
        let alpn = match (tcp, protocol) {
            (true, _) => ISTIO_ALPN_TCP,
            (false, UpstreamProtocol::Http2) => ISTIO_ALPN_H2,
            (false, _) => ISTIO_ALPN_HTTP11,
        };
        let config: ClientConfig =
            mesh_client_config(self.cell.clone(), self.bundles.clone(), authorizer, alpn)?;
        let server_name = ServerName::try_from(sni.to_owned())
            .map_err(|_| MeshTlsError::ServerName(sni.to_owned()))?;
        Ok(TlsOrigination {
            config: Arc::new(config),
            server_name,
        })
    }

    /// What a connection learned about its verified peer: its ID, and the
    /// `x-forwarded-client-cert` element Envoy writes for it.
    pub(crate) fn peer(
        &self,
        certificates: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Option<MeshPeer> {
        let id = peer_identity(certificates).ok()?;
        let own = self.cell.current()?;
        let leaf = certificates.first()?;
        let xfcc = xfcc_value(own.id(), leaf.as_ref(), &id);
        Some(MeshPeer {
            principal: id.to_string(),
            xfcc: http::HeaderValue::from_str(&xfcc).ok()?,
        })
    }
}

/// The verified peer of a mesh mTLS connection.
#[derive(Clone, Debug)]
pub(crate) struct MeshPeer {
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    pub(crate) principal: String,
    /// `By=...;Hash=...;Subject="";URI=...`.
    pub(crate) xfcc: http::HeaderValue,
}
