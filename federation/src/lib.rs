//! strait-federation: linking clusters into one mesh.
//!
//! Owns peers, SPIFFE trust bundle exchange, service export and import, and the east-west
//! transports (SNI passthrough and the QUIC trunk).
//!
//! Must not know: the command line, process lifecycle or how roles are assembled; those belong
//! to the `strait` binary above it. Depends on `strait-discovery` and below.
//!
//! Modules:
//! - [`peer`]: the Peer document (`strait.io/v1alpha1`, `kind: Peer`), read and validated.
//! - [`peer_store`]: peers and their latest bundles as owner-only files under `DATA/peers`,
//!   and the one write path of a peer's bundle (also to `DATA/ca/federated`, where the CA
//!   service streams it to sidecars).
//! - [`peer_watch`]: the one reader of `DATA/peers` in a running process, publishing the
//!   peers as they change.
//! - [`bundle_endpoint`]: the SPIFFE bundle endpoint (`https_spiffe`, port 15446) serving the
//!   local trust domain's bundle.
//! - [`bundle_fetch`]: one `https_spiffe` fetch of a peer's bundle.
//! - [`bundle_poller`]: which fetched bundles are accepted (sequence rules), and polling every
//!   peer at its refresh hint with backoff and rate-limited early refreshes.
//! - [`sni`]: Istio's outbound names (`outbound_.PORT_.SUBSET_.HOST`, `outbound|PORT|SUBSET|HOST`).
//! - [`trunk`]: the QUIC trunk between east-west gateways and its trunk-ingress port.
//! - [`export`]: the federation API (gRPC, port 15445) streaming a cluster's exported services
//!   to its peers' gateways.
//! - [`import`]: a peer's exports kept and turned into Istio YAML for the importing cluster.

pub mod bundle_endpoint;
pub mod bundle_fetch;
pub mod bundle_poller;
pub mod export;
pub mod import;
pub mod peer;
pub mod peer_store;
pub mod peer_watch;
pub mod sni;
pub mod trunk;

#[cfg(test)]
mod test_support;
