//! The cluster CA over gRPC: the service `strait.ca.v1.CertificateService` (Istio's port 15012)
//! and the client proxies use against it.
//!
//! - `CreateCertificate`: a CSR in, a chain for the caller's **own** identity out. The caller is
//!   authenticated by its current SVID (mTLS client certificate of the CA's trust domain) or,
//!   presenting none, by a one-time bootstrap token (`authorization: Bearer TOKEN`), redeemed
//!   before anything is signed. Only the CSR's public key is used.
//! - `WatchBundles`: the trust bundles per trust domain (the CA's own, re-read from its
//!   `root-cert.pem`, and the federated ones the operator drops in `federated/`), now and after
//!   every change, with a sequence.
//!
//! The server presents an SVID of its own (`spiffe://TD/ns/istio-system/sa/strait-control`),
//! issued by its CA at start and renewed at half-life; clients accept exactly that identity.
//!
//! Modules: [`server`] ([`CaServer`]), [`client`] ([`IdentityClient`]), [`bundles`] (snapshots
//! and the federated folder), `auth` (who is calling) and `tls` (the rustls transport both
//! sides use under tonic).

pub mod bundles;
pub mod client;
pub mod server;

mod auth;
pub mod tls;

/// The generated messages, client and server of `proto/ca.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("strait.ca.v1");
}

pub use auth::bearer_token;
pub use bundles::{BundlePublisher, SnapshotError, bundle_set_from_snapshot};
pub use client::{ClientError, IdentityClient, RetryOptions};
pub use server::{CaServer, CaServerOptions, ServiceError};
pub use tls::PeerInfo;

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// The namespace of the control role's identity.
pub const CONTROL_NAMESPACE: &str = "istio-system";
/// The service account of the control role's identity.
pub const CONTROL_SERVICE_ACCOUNT: &str = "strait-control";
/// The largest gRPC message either side decodes (a CSR is about 300 bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The only ALPN the service speaks: gRPC is HTTP/2.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// The identity the CA service presents in `trust_domain`.
pub fn control_id(trust_domain: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::istio(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}
