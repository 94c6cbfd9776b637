//! strait-discovery: configuration and service discovery.
//!
//! Owns reading Istio's own YAML (networking.istio.io, security.istio.io, ServiceExport,
//! MeshConfig and MeshNetworks) into typed resources, validating them with Istio's rules, and
//! (as the proxy core grows) compiling them into the `strait_proxy::Snapshot` each role serves.
//!
//! Must not know: the command line, process lifecycle, federation with peer clusters, or how a
//! proxy serves traffic. It depends on `strait-proxy` (for the `Snapshot` it produces) and below.

pub mod compile;
pub mod dns;
pub mod dns_proxy;
pub mod findings;
pub mod hosts;
pub mod resources;
pub mod source;
pub mod state;
pub mod validation;
pub mod yaml;
