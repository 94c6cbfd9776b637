//! What an east-west gateway exports to its peers: for every exported service (the same
//! decision as its `AUTO_PASSTHROUGH` servers make, `Compiler::exported`), its host,
//! namespace, ports and protocols, and its endpoints on the gateway's own network counted per
//! (labels, locality, SPIFFE ID). Peers import these records as endpoints behind this
//! network's gateway; the endpoints' addresses never leave the cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Compiler;
use super::networks::same_network;

/// One exported service, as peers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedService {
    /// The fully qualified host.
    pub host: String,
    /// The namespace of its ServiceEntry (namespace sameness: the importing side merges it
    /// with its own service of the same host).
    pub namespace: String,
    pub ports: Vec<ExportedPort>,
    /// The endpoints on the exporting gateway's network, counted per group.
    pub endpoints: Vec<EndpointGroup>,
}

/// A port of an exported service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedPort {
    pub number: u32,
    pub name: String,
    /// The declared protocol (`HTTP`, `TCP`, ...), empty when the port declares none.
    pub protocol: String,
}

/// How many endpoints share labels, locality and identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointGroup {
    /// The endpoints' labels (subsets select on them).
    pub labels: BTreeMap<String, String>,
    /// `region/zone/subzone`, empty when unknown.
    pub locality: String,
    /// The SPIFFE ID the endpoints run as, empty when they declare no service account.
    pub spiffe_id: String,
    pub count: u32,
}

impl ExportedService {
    /// The distinct SPIFFE IDs the service's endpoints run as.
    pub fn spiffe_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .endpoints
            .iter()
            .map(|g| g.spiffe_id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A service the local configuration declares, as an import needs it: where imported
/// endpoints of the same host go (namespace sameness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    pub namespace: String,
    /// The ServiceEntry's `workloadSelector` labels; `None` when it lists its endpoints inline
    /// (then nothing can be added to it).
    pub selector: Option<BTreeMap<String, String>>,
}

/// What federation needs from one compilation of an east-west gateway's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationView {
    /// What the gateway exports, in order of host.
    pub exported: Vec<ExportedService>,
    /// Every non-wildcard host the configuration declares.
    pub local: BTreeMap<String, LocalService>,
}

/// The exports and local services of what `compiler` compiles (an east-west gateway's
/// configuration); read from its registry, so that the DNS names asked for are the
/// compilation's.
pub(super) fn federation_view(compiler: &Compiler<'_>) -> FederationView {
    let local = compiler
        .registry
        .services()
        .into_iter()
        .filter(|(host, _)| !host.starts_with('*'))
        .map(|(host, service)| {
            let local = LocalService {
                namespace: service.object.namespace.clone(),
                selector: service
                    .entry
                    .workload_selector
                    .as_ref()
                    .map(|s| s.labels.clone()),
            };
            (host, local)
        })
        .collect();
    let exported = exported_services(compiler);
    FederationView { exported, local }
}

/// The services `compiler`'s configuration exports, in order of host.
fn exported_services(compiler: &Compiler<'_>) -> Vec<ExportedService> {
    let own = compiler.options.network.as_deref();
    let mut out = Vec::new();
    for (host, service) in compiler.registry.services() {
        if host.starts_with('*') || !compiler.exported(service) {
            continue;
        }
        let ports: Vec<ExportedPort> = service
            .entry
            .ports
            .iter()
            .filter_map(|port| {
                Some(ExportedPort {
                    number: port.number?,
                    name: port.name.clone().unwrap_or_default(),
                    protocol: port.protocol.clone().unwrap_or_default(),
                })
            })
            .collect();
        let mut groups: BTreeMap<(BTreeMap<String, String>, String, String), u32> = BTreeMap::new();
        // Every port selects the same workloads: the first one counts them.
        if let Some(port) = service.entry.ports.first() {
            let mut ignored = Vec::new();
            for endpoint in compiler
                .registry
                .endpoints(service, port, None, &mut ignored)
            {
                if !same_network(endpoint.network.as_deref(), own) {
                    continue;
                }
                let spiffe_id = endpoint
                    .service_account
                    .as_deref()
                    .map(|account| {
                        let trust_domain = endpoint
                            .trust_domain
                            .as_deref()
                            .unwrap_or(&compiler.registry.mesh.trust_domain);
                        format!(
                            "spiffe://{trust_domain}/ns/{}/sa/{account}",
                            service.object.namespace
                        )
                    })
                    .unwrap_or_default();
                let key = (
                    endpoint.labels,
                    endpoint.locality.unwrap_or_default(),
                    spiffe_id,
                );
                *groups.entry(key).or_default() += 1;
            }
        }
        out.push(ExportedService {
            host,
            namespace: service.object.namespace.clone(),
            ports,
            endpoints: groups
                .into_iter()
                .map(|((labels, locality, spiffe_id), count)| EndpointGroup {
                    labels,
                    locality,
                    spiffe_id,
                    count,
                })
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compile::{GatewayOptions, compile_gateway};
    use crate::resources::Object;

    fn objects(yaml: &str) -> Vec<Arc<Object>> {
        let loaded = crate::resources::load_clean(&[
            ("mesh.yaml", "trustDomain: west.mesh\n"),
            ("exports.yaml", yaml),
        ]);
        loaded.objects.into_iter().map(Arc::new).collect()
    }

    fn options() -> GatewayOptions {
        GatewayOptions {
            network: Some("west".to_owned()),
            eastwest: true,
            ..GatewayOptions::default()
        }
    }

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default, labels: {strait.io/export: "true"}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9000, name: tcp-echo}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: shop}
spec:
  hosts: [details.shop.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  workloadSelector: {labels: {app: details}}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: details, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: default}
spec: {address: 10.2.0.1, network: west, locality: eu/a, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-2, namespace: default}
spec: {address: 10.2.0.2, network: west, locality: eu/a, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-3, namespace: default}
spec: {address: 10.2.0.3, network: west, locality: eu/b, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-elsewhere, namespace: default}
spec: {address: 10.3.0.1, network: south, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-1, namespace: shop}
spec: {address: 10.2.0.9, labels: {app: details}, serviceAccount: details}
"#;

    #[test]
    fn label_and_service_export_both_export_and_nothing_else_is() {
        let view = compile_gateway(&objects(CONFIG), &options(), 1).federation;
        assert_eq!(view.local.len(), 3);
        assert_eq!(
            view.local["ratings.default.svc.cluster.local"].selector,
            Some(BTreeMap::from([("app".to_owned(), "ratings".to_owned())]))
        );
        let exported = view.exported;
        let hosts: Vec<&str> = exported.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "details.shop.svc.cluster.local",
                "reviews.default.svc.cluster.local"
            ]
        );
        assert_eq!(exported[0].namespace, "shop");
        assert_eq!(
            exported[0].spiffe_ids(),
            ["spiffe://west.mesh/ns/shop/sa/details"]
        );
    }

    #[test]
    fn endpoints_on_the_gateway_s_network_are_counted_per_labels_locality_and_identity() {
        let exported = compile_gateway(&objects(CONFIG), &options(), 1)
            .federation
            .exported;
        let reviews = &exported[1];
        assert_eq!(
            reviews.ports,
            [
                ExportedPort {
                    number: 9080,
                    name: "http".to_owned(),
                    protocol: "HTTP".to_owned()
                },
                ExportedPort {
                    number: 9000,
                    name: "tcp-echo".to_owned(),
                    protocol: String::new()
                },
            ]
        );
        let labels = |version: &str| {
            BTreeMap::from([
                ("app".to_owned(), "reviews".to_owned()),
                ("version".to_owned(), version.to_owned()),
            ])
        };
        assert_eq!(
            reviews.endpoints,
            [
                EndpointGroup {
                    labels: labels("v1"),
                    locality: "eu/a".to_owned(),
                    spiffe_id: "spiffe://west.mesh/ns/default/sa/reviews".to_owned(),
                    count: 2,
                },
                EndpointGroup {
                    labels: labels("v2"),
                    locality: "eu/b".to_owned(),
                    spiffe_id: String::new(),
                    count: 1,
                },
            ]
        );
        assert_eq!(
            reviews.spiffe_ids(),
            ["spiffe://west.mesh/ns/default/sa/reviews"]
        );
    }
}
