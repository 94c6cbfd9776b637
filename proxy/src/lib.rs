//! strait-proxy: the shared proxy core every role is built from.
//!
//! Owns listeners, TLS, HTTP/1.1 and HTTP/2 (gRPC), TCP, routing, load balancing, resilience,
//! authorization and telemetry, all driven by a compiled, immutable `Snapshot` named the way
//! Envoy names things (listeners, route tables, clusters, endpoints).
//!
//! Must not know: YAML, Istio resources, DNS discovery, clusters or peers. It consumes a
//! `Snapshot`; `strait-discovery` produces one. Depends only on `strait-certs`.
//!
//! A request's way through: `listener` accepts and picks a filter chain (reading the TLS
//! ClientHello when there is TLS) -> `http::server` serves the connection -> `http::handler`
//! authenticates its token (`authn`) and authorizes it (`authz`), routes it (`http::routing`), applies faults, redirects and CORS, and forwards it
//! (`http::forward`) to an endpoint the cluster's balancer picks (`upstream`) over a pooled
//! connection; `tcp` does the same for opaque bytes. `telemetry` records every request.

pub mod authn;
pub mod authz;
pub mod snapshot;

pub mod http;
pub mod io;
mod listener;
mod runtime;
mod tcp;
pub mod telemetry;
pub mod tls;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;

use runtime::Shared;
pub use runtime::{InstallError, ProxyOptions};
use snapshot::Snapshot;
use telemetry::Telemetry;
pub use upstream::connect::set_socket_mark;
pub use upstream::connector::{
    BoxedUpstreamIo, ConnectFuture, NETWORK_LABEL, UpstreamConnector, UpstreamIo, UpstreamTarget,
};

/// A running proxy: the listeners of the snapshot installed last, and what outlives snapshots.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<String, RunningListener>>,
}

#[derive(Debug)]
struct RunningListener {
    address: SocketAddr,
    /// The address actually bound (differs from `address` for port 0).
    bound: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Proxy {
    pub fn new(telemetry: Telemetry, options: ProxyOptions) -> Proxy {
        Proxy::build(telemetry, options, None)
    }

    /// A proxy that offers every connection a TCP route opens to an endpoint to `connector`
    /// first (see [`UpstreamConnector`]).
    pub fn with_upstream_connector(
        telemetry: Telemetry,
        options: ProxyOptions,
        connector: Arc<dyn UpstreamConnector>,
    ) -> Proxy {
        Proxy::build(telemetry, options, Some(connector))
    }

    fn build(
        telemetry: Telemetry,
        options: ProxyOptions,
        connector: Option<Arc<dyn UpstreamConnector>>,
    ) -> Proxy {
        Proxy {
            shared: Arc::new(Shared::new(telemetry, options, connector)),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `snapshot` the configuration served. Listeners that stay keep running (their
    /// connections untouched), new ones are bound, and ones that went stop accepting while their
    /// connections finish. When anything fails (a port cannot be bound, a certificate does not
    /// load) nothing changes and the error says what.
    pub async fn install(&self, snapshot: Snapshot) -> Result<(), InstallError> {
        let snapshot = Arc::new(snapshot);
        let running: HashMap<String, SocketAddr> = self
            .listeners
            .lock()
            .map(|l| {
                l.iter()
                    .map(|(name, r)| (name.clone(), r.address))
                    .collect()
            })
            .unwrap_or_default();
        let mut bound = Vec::new();
        for listener in &snapshot.listeners {
            if running.get(&listener.name) == Some(&listener.address) {
                continue;
            }
            let socket = TcpListener::bind(listener.address)
                .await
                .map_err(|source| InstallError::Bind {
                    listener: listener.name.clone(),
                    address: listener.address,
                    source,
                })?;
            bound.push((listener.name.clone(), listener.address, socket));
        }
        // Building TLS configurations and cluster state is the sync part of an install, tens of
        // milliseconds for a large snapshot: off the runtime's threads, which serve traffic.
        let (shared, building) = (self.shared.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || shared.install(building))
            .await
            .map_err(|error| InstallError::Interrupted(error.to_string()))??;
        let Ok(mut listeners) = self.listeners.lock() else {
            return Ok(());
        };
        listeners.retain(|name, running| {
            let keep = snapshot
                .listeners
                .iter()
                .any(|l| l.name == *name && l.address == running.address);
            if !keep {
                let _ = running.stop.send(true);
            }
            keep
        });
        for (name, address, socket) in bound {
            let local = socket.local_addr().unwrap_or(address);
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(listener::accept_loop(
                socket,
                name.clone(),
                self.shared.clone(),
                stopped,
            ));
            if let Some(previous) = listeners.insert(
                name,
                RunningListener {
                    address,
                    bound: local,
                    stop,
                },
            ) {
                let _ = previous.stop.send(true);
            }
        }
        Ok(())
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.active().snapshot.clone()
    }

    /// Each listener's name and the address it is bound to.
    pub fn listening(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .lock()
            .map(|l| l.iter().map(|(n, r)| (n.clone(), r.bound)).collect())
            .unwrap_or_default()
    }

    /// Starts draining: open connections finish their requests and close (`Connection: close`,
    /// GOAWAY); listeners keep accepting until `stop_accepting`.
    pub fn drain(&self) {
        let _ = self.shared.draining.send(true);
    }

    /// Stops accepting new connections on every listener.
    pub fn stop_accepting(&self) {
        if let Ok(listeners) = self.listeners.lock() {
            for running in listeners.values() {
                let _ = running.stop.send(true);
            }
        }
    }

    /// Downstream connections open now.
    pub fn open_connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Waits until no downstream connection is open.
    pub async fn idle(&self) {
        let mut open = self.shared.connections.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// The live snapshot, the state of every endpoint and the downstream connections open now,
    /// as JSON (`/config_dump`).
    pub fn config_dump(&self) -> serde_json::Value {
        let active = self.shared.active();
        let endpoints: serde_json::Map<String, serde_json::Value> = active
            .clusters
            .iter()
            .map(|(name, state)| {
                let config = state.config();
                let list: Vec<serde_json::Value> = state
                    .endpoint_health()
                    .into_iter()
                    .zip(&config.endpoints)
                    .map(|((address, healthy, active_requests), endpoint)| {
                        serde_json::json!({
                            "address": address.to_string(),
                            "health": if healthy { "HEALTHY" } else { "EJECTED" },
                            "active_requests": active_requests,
                            "priority": endpoint.priority,
                            "locality": endpoint.locality,
                        })
                    })
                    .collect();
                (name.clone(), serde_json::Value::Array(list))
            })
            .collect();
        // Each cluster's tiers and their share of the traffic now: failover made visible.
        let priority_load: serde_json::Map<String, serde_json::Value> = active
            .clusters
            .iter()
            .map(|(name, state)| {
                let tiers: Vec<serde_json::Value> = state
                    .priority_load()
                    .into_iter()
                    .map(|(priority, percent)| {
                        serde_json::json!({"priority": priority, "load_percent": percent})
                    })
                    .collect();
                (name.clone(), serde_json::Value::Array(tiers))
            })
            .collect();
        serde_json::json!({
            "version": active.snapshot.version,
            "snapshot": &*active.snapshot,
            "endpoints": endpoints,
            "priority_load": priority_load,
            "open_connections": self.open_connections(),
        })
    }

    /// Istio's standard metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.shared.telemetry.metrics.encode()
    }

    /// Access log lines dropped because the writer fell behind.
    pub fn access_log_dropped(&self) -> u64 {
        self.shared.telemetry.access_log.dropped()
    }
}
