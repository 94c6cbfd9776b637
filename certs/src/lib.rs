//! strait-certs: workload identity.
//!
//! Owns SPIFFE IDs, the cluster CA, SVID issuance and rotation, trust bundles kept per trust
//! domain, and the rustls client and server configurations and verifiers built from them.
//!
//! Must not know: proxies, listeners, routing, Istio resources or YAML, clusters and peers.
//! It is the bottom of the dependency stack (`certs <- proxy <- discovery <- federation <-
//! gateway`) and imports none of the crates above it.
//!
//! Modules:
//! - [`spiffe`]: [`SpiffeId`] and [`TrustDomain`], validated per the SPIFFE ID specification.
//! - [`bundle`]: [`TrustBundle`] (SPIFFE bundle JSON and PEM) and [`TrustBundleSet`], bundles
//!   kept per trust domain.
//! - [`authority`]: the CA ([`Authority`]): root and issuing intermediate as files, CSR signing,
//!   and root rotation with overlapping anchors ([`authority::root_rotation`]).
//! - [`svid`]: the workload side: [`Svid`], [`CertificateRequest`], renewal time, XFCC.
//! - [`verify`]: the mesh rustls verifiers ([`MeshServerVerifier`], [`MeshClientVerifier`]) and
//!   [`peer_identity`].
//! - [`rotation`]: [`IdentityCell`] and the mesh rustls config builders.
//! - [`tokens`]: one-time bootstrap tokens ([`TokenLedger`]).
//! - [`service`]: the CA over gRPC (`strait.ca.v1`): [`service::CaServer`] and the proxies'
//!   [`service::IdentityClient`] (bootstrap, renewal, the trust bundle stream).
//! - [`fs`]: atomic, owner-only file writes.
//!
//! The whole path, from a new CA to a mesh handshake's verified peer:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use strait_certs::rotation::{ISTIO_ALPN_H2, MESH_SERVER_ALPN};
//! use strait_certs::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("strait-certs-doc-{}", std::process::id()));
//! // The control role: a CA for the trust domain (files under `dir`, reloaded on restart).
//! let td = TrustDomain::new("cluster.local")?;
//! let ca = Authority::init(td.clone(), &dir, &AuthorityOptions::default())?;
//!
//! // A proxy: a key that stays in the process, a CSR, and the CA's answer.
//! let web = SpiffeId::istio(&td, "default", "web")?;
//! let request = CertificateRequest::new(&web)?;
//! let issued = ca.sign_csr(request.csr_der(), &web, Duration::ZERO)?; // 24 h default
//! let svid = request.into_svid(issued.chain_der, issued.issued_at)?;
//! let renew = svid.renew_at(svid::random_jitter()); // about 12 h from now
//! # assert!(renew > SystemTime::now());
//!
//! // rustls configs over a live identity and live bundles.
//! let cell = Arc::new(IdentityCell::new(svid));
//! let bundles = TrustBundleSet::from_bundles([ca.trust_bundle()])?.into_shared();
//! let client = mesh_client_config(cell.clone(), bundles.clone(), Authorizer::Any, ISTIO_ALPN_H2)?;
//! let server = mesh_server_config(
//!     cell.clone(),
//!     bundles.clone(),
//!     ClientAuth::Required(Authorizer::Any),
//!     MESH_SERVER_ALPN,
//! )?;
//! # let _ = (client, server);
//! // After a handshake: `peer_identity(conn.peer_certificates().unwrap_or_default())`.
//! // Rotation: `cell.install(new_svid)`; federation: `bundles.store(Arc::new(new_set))`.
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

pub mod authority;
pub mod bundle;
pub mod fs;
pub mod rotation;
pub mod service;
pub mod spiffe;
pub mod svid;
pub mod tokens;
pub mod verify;
mod x509;

pub use authority::{
    Authority, AuthorityError, AuthorityOptions, IssuedSvid, published_trust_bundle,
};
pub use bundle::{BundleError, SharedBundles, TrustBundle, TrustBundleSet};

pub use rotation::{
    IdentityCell, bundle_endpoint_client_config, bundle_endpoint_server_config, mesh_client_config,
    mesh_client_config_observed, mesh_server_config, mesh_server_config_observed,
};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use svid::{
    CertificateRequest, Svid, SvidError, client_certificate_xfcc, renew_at, xfcc_value,
};
pub use tokens::{TokenError, TokenLedger};
pub use verify::{
    Authorizer, ClientAuth, MeshClientVerifier, MeshServerVerifier, UnknownIssuerObserver,
    VerifyError, peer_identity,
};
