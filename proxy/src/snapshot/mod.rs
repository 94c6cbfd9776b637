//! The contract between discovery and the proxy: an immutable, versioned `Snapshot` of
//! listeners, route tables, clusters and policies, named the way Envoy names them.
//!
//! Everything derivable from configuration is compiled here once (anchored regexes, header
//! names, weights), so that the request path does no parsing. Live state (load-balancer
//! counters, outlier ejections, pools) is kept outside, keyed by cluster and endpoint, so that
//! installing a new snapshot does not reset it.

mod authn;
mod cluster;
mod listener;
mod matcher;
mod policy;
mod route;
pub mod state_file;

pub use authn::{ClaimToHeader, JwksSource, JwtRule, TokenLocation};
pub use cluster::{
    Cluster, ConnectFailure, ConsistentHash, Endpoint, HashKey, HashPolicy, LbPolicy,
    OutlierDetection, PoolLimits, TcpKeepalive, UpstreamProtocol, UpstreamTls,
};
pub use listener::{
    Application, CertificateKeyPair, ChainMatch, ClientAuth, FilterChain, HttpProxy, Listener,
    ServerTls, TcpRoute, TlsVersion, Transport, TransportProtocol,
};
pub use matcher::{Pattern, StringMatcher};
pub use policy::{
    Attribute, AuthorizationPolicy, AuthzString, Cidr, Clause, FieldMatch, MtlsMode,
    PathNormalization, PeerAuthentication, Policies, PolicyError, Rule, ValueMatcher,
};
pub use route::{
    Cors, DirectResponse, Fault, FaultAbort, FaultDelay, HeaderEdits, HeaderMatch, HeaderOps,
    Mirror, QueryMatch, Redirect, RedirectPort, RetryOn, RetryPolicy, Rewrite, Route, RouteAction,
    RouteMatch, RouteTable, VirtualHost, WeightedCluster,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Everything a proxy serves, as one immutable value. A new configuration is a new snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Increases with every snapshot a source produces.
    pub version: u64,
    pub listeners: Vec<Listener>,
    pub route_tables: BTreeMap<String, Arc<RouteTable>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Clusters that routes name but that could not be built, with why (say, no service
    /// declares the host): requests routed to one are answered 503 NC with that reason.
    pub missing_clusters: BTreeMap<String, String>,
    /// Clusters that refuse on purpose (Envoy's `BlackHoleCluster` under REGISTRY_ONLY), named
    /// in `missing_clusters` with why: a request routed to one is answered 502 NC, and a TCP
    /// connection is reset (under capture the client's handshake already succeeded with the
    /// proxy, so a reset is how it learns of the refusal).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub blackhole_clusters: std::collections::BTreeSet<String>,
    /// The authorization and peer-authentication policies of the workload (or gateway) this
    /// snapshot serves; every listener of the snapshot is checked against them.
    pub policies: Arc<Policies>,
}

impl Snapshot {
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Why a cluster a route names is not served, for the access log: one that refuses on
    /// purpose says so.
    pub fn missing_cluster_reason(&self, name: &str) -> String {
        match (
            self.missing_clusters.get(name),
            self.blackhole_clusters.contains(name),
        ) {
            (Some(why), true) => format!("refused by {name}: {why}"),
            (Some(why), false) => format!("cluster {name} is not configured: {why}"),
            (None, _) => format!("cluster {name} is not configured"),
        }
    }
}
