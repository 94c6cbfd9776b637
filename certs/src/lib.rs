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
//! - [`authority`]: the CA ([`Authority`]): root and issuing intermediate as files, CSR signing.
//! - [`svid`]: the workload side: [`Svid`], [`CertificateRequest`], renewal time, XFCC.
//! - [`verify`]: the mesh rustls verifiers ([`MeshServerVerifier`], [`MeshClientVerifier`]) and
//!   [`peer_identity`].
//! - [`rotation`]: [`IdentityCell`] and the mesh rustls config builders.
//! - [`tokens`]: one-time bootstrap tokens ([`TokenLedger`]).
//! - [`fs`]: atomic, owner-only file writes.

pub mod authority;
pub mod bundle;
pub mod fs;
pub mod rotation;
pub mod spiffe;
pub mod svid;
pub mod tokens;
pub mod verify;
mod x509;

pub use authority::{Authority, AuthorityError, AuthorityOptions, IssuedSvid};
pub use bundle::{BundleError, SharedBundles, TrustBundle, TrustBundleSet};

pub use rotation::{IdentityCell, mesh_client_config, mesh_server_config};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use svid::{CertificateRequest, Svid, SvidError, renew_at, xfcc_value};
pub use tokens::{TokenError, TokenLedger};
pub use verify::{
    Authorizer, ClientAuth, MeshClientVerifier, MeshServerVerifier, VerifyError, peer_identity,
};
