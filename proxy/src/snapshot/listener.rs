//! Listeners: an address to accept on, and filter chains that decide, from the TLS ClientHello
//! (SNI), how a connection is handled: terminated and routed as HTTP, passed through by SNI, or
//! proxied as TCP.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One address the proxy accepts connections on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `0.0.0.0_8080`, as Envoy names listeners.
    pub name: String,
    pub address: SocketAddr,
    /// Read each connection's original destination (`SO_ORIGINAL_DST`, set by iptables
    /// REDIRECT) and select filter chains by it, as Envoy's `use_original_dst` does for the
    /// sidecar's captured traffic. Without it the destination is the address accepted on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_destination: bool,
    /// Chosen the way Envoy chooses: by destination port, then destination IP (longest
    /// prefix), then SNI (exact before the longest wildcard), then transport protocol, then
    /// the ALPN protocols the client offered. At each step, chains that name the criterion and
    /// match beat chains that do not name it; chains that name it and do not match drop out.
    pub filter_chains: Vec<FilterChain>,
}

/// How connections that select this chain are handled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterChain {
    pub name: String,
    /// SNI names (`example.com`, `*.example.com`); empty matches any connection.
    pub server_names: Vec<String>,
    /// The other criteria of Envoy's `filter_chain_match`; the default matches everything.
    #[serde(flatten)]
    pub matches: ChainMatch,
    pub transport: Transport,
    pub application: Application,
}

/// Criteria of a filter chain besides SNI; an empty criterion matches any connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainMatch {
    /// The connection's (original) destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// The connection's (original) destination IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_ranges: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<TransportProtocol>,
    /// Matches when the client's ClientHello offered any of these ALPN protocols (Istio's
    /// `istio-peer-exchange`, `istio-h2`, ... tell its mTLS from an application's own TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_protocols: Vec<String>,
}

/// Whether a connection opened with a TLS ClientHello, as Envoy's TLS inspector tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportProtocol {
    Tls,
    RawBuffer,
}

/// What happens to the bytes on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Plaintext,
    /// Terminate TLS here.
    Terminate(ServerTls),
    /// Route by SNI without terminating; the ClientHello is forwarded as it came.
    Passthrough,
    /// Terminate mesh mTLS (Istio's `ISTIO_MUTUAL`) with the proxy's own SPIFFE identity,
    /// requiring a client certificate from a trust domain the proxy trusts.
    IstioMutual,
    /// As `IstioMutual`, for the application's own TLS carried inside (an egress gateway's
    /// `ISTIO_MUTUAL` server of protocol TLS): the SNI routes and policies see is that of the
    /// application's ClientHello behind the mesh mTLS, read when they need it.
    IstioMutualInnerSni,
}

/// What the connection carries once the transport is set up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Application {
    /// HTTP/1.1 and HTTP/2 (h2 by ALPN, or h2c with prior knowledge), routed by this table.
    Http { route_table: String },
    /// Opaque bytes to the first matching route.
    Tcp { routes: Vec<TcpRoute> },
    /// An explicit HTTP proxy (Istio's `HTTP_PROXY` egress port) for applications that set
    /// `HTTP_PROXY`: HTTP served as for `Http`, routed by the request target instead.
    HttpProxy(HttpProxy),
}

/// Where an explicit HTTP proxy sends requests, by their target (`GET http://host:port/path`
/// and `CONNECT host:port`): the target's port picks the route table or the tunnels, its host
/// the virtual host or the tunnel's route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpProxy {
    /// Absolute-form requests: the route table of the target's port.
    pub route_tables: BTreeMap<u16, String>,
    /// Absolute-form requests to a port no table is for: a table sending them to the named
    /// host and port (outboundTrafficPolicy ALLOW_ANY); none refuses them (REGISTRY_ONLY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route_table: Option<String>,
    /// CONNECT: by the target's port, routes whose `server_names` are the names of the
    /// service the tunnel is for (a route without names takes any host).
    pub tunnels: BTreeMap<u16, Vec<TcpRoute>>,
    /// CONNECT to a host and port no tunnel route is for: a route to the named host and port
    /// (ALLOW_ANY); none refuses it (REGISTRY_ONLY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tunnel: Option<TcpRoute>,
}

/// A TCP (or passthrough TLS) route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpRoute {
    pub name: String,
    /// SNI names this route is for (passthrough); empty matches any.
    pub server_names: Vec<String>,
    /// Weighted clusters: `(cluster, weight)`.
    pub clusters: Vec<(String, u32)>,
}

/// TLS termination: the certificates to present, and whether to ask for the client's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerTls {
    pub certificate: CertificateKeyPair,
    pub client_auth: ClientAuth,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// OpenSSL-style names (`ECDHE-ECDSA-AES128-GCM-SHA256`); the defaults when empty.
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
}

/// A certificate chain and its key, as PEM. The key is never serialized.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateKeyPair {
    /// Where it came from (a file or credential name), for logs and `config_dump`.
    pub source: String,
    pub certificate_chain: String,
    #[serde(default, skip_serializing_if = "super::state_file::redacts")]
    pub private_key: String,
}

impl std::fmt::Debug for CertificateKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateKeyPair")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Whether a client certificate is asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    None,
    /// MUTUAL: a certificate signed by one of these CAs (PEM), and not revoked by the CRL
    /// (PEM) when there is one, is required.
    Required {
        ca_certificates: String,
        crl: Option<String>,
    },
    /// OPTIONAL_MUTUAL: asked for, validated if presented.
    Optional {
        ca_certificates: String,
        crl: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    V1_2,
    #[serde(rename = "TLSv1.3")]
    V1_3,
}
