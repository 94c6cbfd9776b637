//! strait-federation: linking clusters into one mesh.
//!
//! Owns peers, SPIFFE trust bundle exchange, service export and import, and the east-west
//! transports (SNI passthrough and the QUIC trunk).
//!
//! Must not know: the command line, process lifecycle or how roles are assembled; those belong
//! to the `strait` binary above it. Depends on `strait-discovery` and below.
//!
//! Modules:
//! - [`sni`]: Istio's outbound names (`outbound_.PORT_.SUBSET_.HOST`, `outbound|PORT|SUBSET|HOST`).
//! - [`trunk`]: the QUIC trunk between east-west gateways and its trunk-ingress port.

pub mod sni;
pub mod trunk;
