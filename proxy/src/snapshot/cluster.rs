//! Clusters: a named set of endpoints, how to choose among them, how to connect to them, and
//! when to stop sending to one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `outbound|PORT|SUBSET|HOST`, as Envoy and Istio name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub pool: PoolLimits,
    pub outlier: Option<OutlierDetection>,
    pub tls: UpstreamTls,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
    /// Forward to the request's original destination instead of `endpoints` (PASSTHROUGH).
    pub original_destination: bool,
    /// The source address of connections to the endpoints (Envoy's `upstream_bind_config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_bind: Option<IpAddr>,
    /// Labels added to the metrics of requests to this cluster (`destination_service`, ...).
    pub telemetry: Vec<(String, String)>,
    /// Why the cluster has no endpoints when it has none (a DNS name not resolved yet, or gone):
    /// requests get 503 UH with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_reason: Option<String>,
}

/// How a connection to an endpoint failed, as far as the caller can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// No TCP connection was made.
    Unreachable,
    /// The peer closed or reset the connection during the TLS handshake, before any alert.
    Closed,
    /// The TLS handshake failed on a certificate or an alert.
    Handshake,
    /// Anything else (an HTTP handshake, a full pool).
    Other,
}

impl Cluster {
    /// Why connecting to the endpoint at `address` failed, for the access log. The gateway of
    /// another network is named as such, since the caller never sees the workloads behind it,
    /// with what each kind of failure means there.
    pub fn connect_failure(
        &self,
        address: SocketAddr,
        error: &dyn std::fmt::Display,
        failure: ConnectFailure,
    ) -> String {
        let gateway_of = self
            .endpoints
            .iter()
            .find(|e| e.address == address)
            .and_then(|e| e.network_gateway.as_deref());
        let Some(network) = gateway_of else {
            return format!("upstream connect error: {error}");
        };
        match failure {
            ConnectFailure::Unreachable => {
                format!("network {network}'s gateway {address} unreachable: {error}")
            }
            ConnectFailure::Closed => format!(
                "network {network}'s gateway {address} closed the connection during the mesh TLS handshake: it refused the destination (not exported, no endpoint, or, at a trunk ingress, the trunk to the peer is down; its access log says why): {error}"
            ),
            ConnectFailure::Handshake => format!(
                "mesh TLS through network {network}'s gateway {address} failed: a trust failure (the destination's certificate, or ours at the destination): {error}"
            ),
            ConnectFailure::Other => {
                format!("connecting through network {network}'s gateway {address}: {error}")
            }
        }
    }
}

/// How an endpoint is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    /// The fewer active requests, the likelier (power of two choices). Istio's default.
    LeastRequest,
    Random,
    /// A key from the request picks an endpoint consistently.
    ConsistentHash(ConsistentHash),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub policy: HashPolicy,
}

/// What the hash is computed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(String),
    /// A cookie; with a ttl, the proxy sets it when the request has none.
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

/// Connection pool limits (Istio's `connectionPool`); `None` means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolLimits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    /// Active requests to the cluster at once.
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    /// An idle pooled connection is closed after this long.
    pub idle_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpKeepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

/// Ejecting endpoints that keep failing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// 5xx responses (and connect failures) in a row that eject; 0 disables.
    pub consecutive_5xx: u32,
    /// 502/503/504 in a row that eject; 0 disables.
    pub consecutive_gateway_errors: u32,
    pub interval: Duration,
    /// An ejection lasts this long times the number of times the endpoint was ejected.
    pub base_ejection_time: Duration,
    /// At most this share of endpoints is ejected, but always at least one.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored (the panic threshold).
    pub min_health_percent: u32,
}

/// TLS towards the endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTls {
    #[default]
    Disabled,
    Simple {
        sni: Option<String>,
        /// PEM; the system roots when unset.
        ca_certificates: Option<String>,
        /// Names the server certificate must hold; the SNI (or host) when empty.
        subject_alt_names: Vec<String>,
    },
    Mutual {
        sni: Option<String>,
        ca_certificates: Option<String>,
        subject_alt_names: Vec<String>,
        certificate_chain: String,
        #[serde(default, skip_serializing_if = "super::state_file::redacts")]
        private_key: String,
    },
    /// Mesh mTLS with the proxy's own identity (`ISTIO_MUTUAL`).
    IstioMutual {
        /// `outbound_.PORT_.SUBSET_.HOST`.
        sni: String,
        /// The SPIFFE IDs the server may have; any the trust bundles vouch for when empty.
        subject_alt_names: Vec<String>,
    },
}

/// The protocol spoken to the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// The downstream request's protocol (`useClientProtocol`), for HTTP; bytes for TCP.
    Downstream,
}

/// One endpoint of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    pub locality: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The DNS name whose answer gave the address (`resolution: DNS` hosts and endpoints), so
    /// that a restart without DNS can start from the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// Set when this endpoint is the east-west gateway of another network, standing in for
    /// that network's endpoints (Istio's split-horizon view): the network's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_gateway: Option<String>,
    /// The endpoint's tier (Envoy's priority): 0 is the most preferred; a tier takes traffic
    /// as the tiers before it lose health (`upstream::priority`). Compiled from locality load
    /// balancing; every endpoint is 0 without it.
    #[serde(default)]
    pub priority: u32,
}
