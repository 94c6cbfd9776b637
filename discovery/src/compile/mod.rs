//! Compiling Istio configuration into the `Snapshot` a role serves.
//!
//! For the ingress and egress gateways: the Gateway servers whose selector matches the gateway's labels
//! become listeners (`listeners`), the VirtualServices bound to them become route tables
//! (`routes`), and every destination a route names becomes a cluster (`clusters`) whose
//! endpoints and policy come from the registry (`registry`): ServiceEntry, WorkloadEntry,
//! DestinationRule and MeshConfig. Certificates named by `credentialName` come from the
//! credential store (`credentials`). The AuthorizationPolicies and PeerAuthentications that
//! select the gateway become its `Policies` (`policies`). An egress gateway also enforces
//! REGISTRY_ONLY on where its routes lead (`egress`).
//!
//! Compilation never fails as a whole: what cannot be served (a destination no ServiceEntry
//! declares, a certificate that does not load) is left out and described by a warning naming
//! the object and field, and everything else is served.

mod clusters;
pub mod credentials;
mod eastwest;
mod egress;
pub mod exports;
mod listeners;
mod locality;
mod networks;
pub mod policies;
mod registry;
mod routes;
mod sidecar;
mod sidecar_http_proxy;
mod sidecar_listeners;
mod sidecar_scope;
pub mod vips;

pub use egress::EgressOptions;
pub use sidecar::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, SidecarOptions, compile_sidecar};

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use strait_proxy::snapshot::{Cluster, Listener, Pattern, RouteTable, Snapshot};

use crate::findings::{Finding, Level};
use crate::resources::{Object, Spec};
use crate::validation::check::Check;
use crate::yaml::FieldPath;
use registry::Registry;

/// What an ingress (or egress) gateway is, beyond the configuration it serves.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The gateway's own labels: Gateways whose selector they satisfy are served.
    pub labels: BTreeMap<String, String>,
    /// The gateway's namespace: whose DestinationRules apply first, and the namespace of `.` in
    /// a server's hosts.
    pub namespace: String,
    /// Short host names resolve under it (`reviews` -> `reviews.NS.svc.SUFFIX`).
    pub domain_suffix: String,
    /// The folder `credentialName` is looked up in.
    pub credentials: Option<PathBuf>,
    /// The address listeners bind to, unless a server names its own `bind`.
    pub bind: IpAddr,
    /// Server port -> the port actually bound, as a Kubernetes Service maps `port` to
    /// `targetPort` (Istio's ingress maps 80 to 8080). Unmapped ports bind as written.
    pub ports: BTreeMap<u32, u16>,
    /// Server certificates that loaded, kept across compilations for when one stops loading.
    pub last_good: credentials::LastGood,
    /// Whether the proxy has a mesh identity: without one, auto-mTLS sends plaintext and a
    /// destination that requires `ISTIO_MUTUAL` cannot be served.
    pub mesh_identity: bool,
    /// The latest DNS answers for `resolution: DNS` hosts (read, never waited on).
    pub dns: crate::dns::DnsCache,
    /// Set for an egress gateway, which enforces REGISTRY_ONLY (`egress`).
    pub egress: Option<EgressOptions>,
    /// The proxy's network (`--network`, Istio's `ISTIO_META_NETWORK`): endpoints on other
    /// networks are reached through their gateways (`networks`). None is every network.
    pub network: Option<String>,
    /// The proxy's locality, `region/zone/subzone` (`--locality`, Istio's node locality):
    /// locality load balancing prefers endpoints that share it.
    pub locality: Option<String>,
    /// Set for an east-west gateway, which serves `AUTO_PASSTHROUGH` servers (`eastwest`).
    pub eastwest: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            labels: BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]),
            namespace: "istio-system".to_owned(),
            domain_suffix: "cluster.local".to_owned(),
            credentials: None,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: BTreeMap::new(),
            last_good: credentials::LastGood::default(),
            mesh_identity: false,
            dns: crate::dns::DnsCache::default(),
            egress: None,
            network: None,
            locality: None,
            eastwest: false,
        }
    }
}

/// A compiled snapshot and what could not be served.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    /// Warnings about what was left out; the snapshot serves everything else.
    pub findings: Vec<Finding>,
    /// The names a sidecar's DNS proxy answers (empty for gateways).
    pub names: crate::dns_proxy::NameTable,
    /// An east-west gateway's view of the other networks: for each host its `AUTO_PASSTHROUGH`
    /// servers take in, the networks other than the gateway's that hold endpoints of it
    /// (where the trunk ingress sends a connection for it). Empty for every other role.
    pub remote_networks: RemoteNetworks,
    /// An east-west gateway's exports and the hosts its configuration declares (what its
    /// federation streams to peers and imports against). Empty for every other role.
    pub federation: exports::FederationView,
}

/// Hosts and the other networks holding their endpoints; see [`Compiled::remote_networks`].
pub type RemoteNetworks = BTreeMap<String, std::collections::BTreeSet<String>>;

/// Compiles the snapshot of a gateway: `objects` should be valid (objects with validation errors
/// left out); `version` is the snapshot's version.
pub fn compile_gateway<O: Borrow<Object>>(
    objects: &[O],
    options: &GatewayOptions,
    version: u64,
) -> Compiled {
    let objects: Vec<&Object> = objects.iter().map(Borrow::borrow).collect();
    let mut compiler = Compiler::new(&objects, options);
    let (listeners, route_tables) = compiler.gateway_listeners(&objects);
    // Read from the same registry (and DNS answers) as the snapshot.
    let federation = if options.eastwest {
        exports::federation_view(&compiler)
    } else {
        exports::FederationView::default()
    };
    let mut compiled = compiler.finish(&objects, version, listeners, route_tables);
    compiled.federation = federation;
    compiled
}

/// The state of one compilation.
pub(crate) struct Compiler<'a> {
    /// Everything being compiled (the destination's policies decide auto-mTLS).
    objects: Vec<&'a Object>,
    /// Whether any PeerAuthentication is among them.
    has_peer_authentication: bool,
    registry: Registry<'a>,
    options: &'a GatewayOptions,
    clusters: BTreeMap<String, Arc<Cluster>>,
    /// Clusters routes name that could not be built, with why.
    missing_clusters: BTreeMap<String, String>,
    findings: Vec<Finding>,
    /// The object and field being compiled, which findings name.
    at: Option<(&'a Object, FieldPath)>,
    /// Whole-value regexes compiled so far, by source: the same regex in many routes is
    /// compiled once and shared (a compiled regex takes kilobytes).
    patterns: HashMap<String, Pattern>,
    /// The destination labels a sidecar's inbound clusters report (empty elsewhere).
    inbound_telemetry: Vec<(String, String)>,
    /// The VIPs allocated to address-less hosts (a captured sidecar's; empty elsewhere).
    vips: vips::Vips,
    /// Clusters that refuse on purpose (`BlackHoleCluster`).
    blackhole_clusters: std::collections::BTreeSet<String>,
    /// The addresses the gateway's listeners bind: an egress destination there is a loop.
    listening: Vec<std::net::SocketAddr>,
    /// See [`Compiled::remote_networks`].
    remote_networks: RemoteNetworks,
}

impl<'a> Compiler<'a> {
    fn new(objects: &[&'a Object], options: &'a GatewayOptions) -> Compiler<'a> {
        Compiler {
            objects: objects.to_vec(),
            has_peer_authentication: objects
                .iter()
                .any(|o| matches!(o.spec, Spec::PeerAuthentication(_))),
            registry: Registry::new(objects, &options.domain_suffix, &options.dns),
            options,
            clusters: BTreeMap::new(),
            missing_clusters: BTreeMap::new(),
            findings: Vec::new(),
            at: None,
            patterns: HashMap::new(),
            inbound_telemetry: Vec::new(),
            vips: vips::Vips::default(),
            blackhole_clusters: Default::default(),
            listening: Vec::new(),
            remote_networks: RemoteNetworks::new(),
        }
    }

    /// The snapshot of what was compiled, with the authorization and peer authentication
    /// policies of the workload (or gateway) the options describe.
    fn finish(
        mut self,
        objects: &[&'a Object],
        version: u64,
        listeners: Vec<Listener>,
        route_tables: BTreeMap<String, Arc<RouteTable>>,
    ) -> Compiled {
        let workload = policies::Workload {
            namespace: &self.options.namespace,
            labels: &self.options.labels,
        };
        let policies = policies::compile(objects, workload, &mut self.findings);
        self.registry.end_dns_compile();
        Compiled {
            snapshot: Snapshot {
                version,
                listeners,
                route_tables,
                clusters: self.clusters,
                missing_clusters: self.missing_clusters,
                blackhole_clusters: self.blackhole_clusters,
                policies: Arc::new(policies),
            },
            findings: self.findings,
            names: crate::dns_proxy::NameTable::default(),
            remote_networks: self.remote_networks,
            federation: exports::FederationView::default(),
        }
    }

    /// Findings from here on name `object` and `path`.
    fn at(&mut self, object: &'a Object, path: FieldPath) {
        self.at = Some((object, path));
    }

    /// Something that cannot be served, described where it is configured.
    fn problem(&mut self, message: impl Into<String>) {
        let message = message.into();
        match &self.at {
            Some((object, path)) => {
                Check::new(object, &mut self.findings).warning(path, "not-served", message)
            }
            None => self
                .findings
                .push(Finding::new(Level::Warning, "not-served", message)),
        }
    }
}

#[cfg(test)]
mod tests;
