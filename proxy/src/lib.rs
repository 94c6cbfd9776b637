//! strait-proxy: the shared proxy core every role is built from.
//!
//! Owns listeners, TLS, HTTP/1.1 and HTTP/2 (gRPC), TCP, routing, load balancing, resilience,
//! authorization and telemetry, all driven by a compiled, immutable `Snapshot` named the way
//! Envoy names things (listeners, route tables, clusters, endpoints).
//!
//! Must not know: YAML, Istio resources, DNS discovery, clusters or peers. It consumes a
//! `Snapshot`; `strait-discovery` produces one. Depends only on `strait-certs`.
