//! Strait's benchmark harness: inputs the benchmarks share (generated configuration) and, as
//! the proxy grows, the runners that put Strait side by side with direct connections, Envoy,
//! nginx and HAProxy. Results are recorded under `bench/results/`.

pub mod config;
