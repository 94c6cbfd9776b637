//! strait-certs: workload identity.
//!
//! Owns SPIFFE IDs, the cluster CA, SVID issuance and rotation, trust bundles kept per trust
//! domain, and the rustls client and server configurations and verifiers built from them.
//!
//! Must not know: proxies, listeners, routing, Istio resources or YAML, clusters and peers.
//! It is the bottom of the dependency stack (`certs <- proxy <- discovery <- federation <-
//! gateway`) and imports none of the crates above it.
