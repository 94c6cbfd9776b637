//! The east-west gateway's `AUTO_PASSTHROUGH` servers (Istio's cross-network gateway, router
//! mode `sni-dnat`): the SNI of a caller's mesh mTLS, `outbound_.PORT_.SUBSET_.HOST` or
//! `outbound|PORT|SUBSET|HOST`, names the destination, and the connection is passed through,
//! never terminated, to an endpoint of that service and subset on the gateway's own network,
//! so that the destination's sidecar sees the caller's own identity.
//!
//! Only exported services are reachable: a ServiceEntry labelled `strait.io/export: "true"`, or
//! one a ServiceExport (`multicluster.x-k8s.io`) of the same name and namespace exports. With
//! Istio's usual `hosts: ["*.local"]` everything would otherwise be open to every peer. Each
//! exported (host, port, subset) with local endpoints is a filter chain of its own, selected
//! by both SNI forms and leading to a cluster named in the `outbound_.` form, so that
//! `/config_dump` lists exactly what is exposed. Everything else meets the refusal chain,
//! whose routes say why (not exported, no endpoint on this network, or no such service, port
//! or subset) in the access log of the connection they reset.

use strait_proxy::snapshot::{Application, ChainMatch, Endpoint, FilterChain, TcpRoute, Transport};

use super::Compiler;
use super::clusters::{cluster_name, service_telemetry};
use super::networks::same_network;
use super::registry::{DNS_PREFIX, Service};
use crate::hosts;
use crate::resources::Spec;

/// The label that exports a ServiceEntry's service to peer clusters.
pub(crate) const EXPORT_LABEL: &str = "strait.io/export";
/// The cluster of connections whose SNI names nothing the gateway exposes.
pub(crate) const REFUSED_CLUSTER: &str = "AutoPassthroughRefused";
/// The name of the refusal chain.
const REFUSAL_CHAIN: &str = "auto_passthrough_refused";

/// One destination an SNI can name: a port and subset of a service.
struct Destination<'a> {
    host: String,
    service: Service<'a>,
    port: u32,
    subset: Option<String>,
}

impl Destination<'_> {
    /// `outbound_.PORT_.SUBSET_.HOST`: Istio's SNI, and the name of the gateway's cluster.
    fn sni(&self) -> String {
        format!(
            "outbound_.{}_.{}_.{}",
            self.port,
            self.subset.as_deref().unwrap_or_default(),
            self.host
        )
    }

    /// Both forms Istio accepts in the SNI.
    fn server_names(&self) -> Vec<String> {
        vec![
            self.sni(),
            cluster_name(self.port, self.subset.as_deref(), &self.host),
        ]
    }
}

impl<'a> Compiler<'a> {
    /// The filter chains of an `AUTO_PASSTHROUGH` server whose `hosts` are `(namespace
    /// filter, host)` pairs: one per exported destination with endpoints on this network,
    /// then the refusal chain.
    pub(super) fn auto_passthrough_chains(
        &mut self,
        hosts: &[(Option<String>, String)],
    ) -> Vec<FilterChain> {
        let mut chains = Vec::new();
        let mut refusals = Vec::new();
        for destination in self.destinations(hosts) {
            self.note_remote_networks(&destination);
            let names = destination.server_names();
            let sni = destination.sni();
            let why = if !self.exported(destination.service) {
                Some(format!(
                    "{} is not exported (label {EXPORT_LABEL}: \"true\" on its ServiceEntry {}/{}, or a ServiceExport of that name)",
                    destination.host,
                    destination.service.object.namespace,
                    destination.service.object.name()
                ))
            } else {
                self.local_cluster(&destination).err()
            };
            match why {
                Some(why) => {
                    self.blackhole_clusters.insert(sni.clone());
                    self.missing_clusters.insert(sni.clone(), why);
                    refusals.push(TcpRoute {
                        name: sni.clone(),
                        server_names: names,
                        clusters: vec![(sni, 1)],
                    });
                }
                None => chains.push(FilterChain {
                    name: sni.clone(),
                    server_names: names,
                    matches: ChainMatch::default(),
                    transport: Transport::Passthrough,
                    application: Application::Tcp {
                        routes: vec![TcpRoute {
                            name: sni.clone(),
                            server_names: Vec::new(),
                            clusters: vec![(sni, 1)],
                        }],
                    },
                }),
            }
        }
        self.blackhole_clusters.insert(REFUSED_CLUSTER.to_owned());
        self.missing_clusters.insert(
            REFUSED_CLUSTER.to_owned(),
            "the SNI names no service, port and subset this east-west gateway exposes (it must be outbound_.PORT_.SUBSET_.HOST or outbound|PORT|SUBSET|HOST of an exported service)".to_owned(),
        );
        refusals.push(TcpRoute {
            name: REFUSED_CLUSTER.to_owned(),
            server_names: Vec::new(),
            clusters: vec![(REFUSED_CLUSTER.to_owned(), 1)],
        });
        chains.push(FilterChain {
            name: REFUSAL_CHAIN.to_owned(),
            server_names: Vec::new(),
            matches: ChainMatch::default(),
            transport: Transport::Passthrough,
            application: Application::Tcp { routes: refusals },
        });
        chains
    }

    /// Every port and subset (and no subset) of the services whose hosts the server's hosts
    /// take in, in order of host.
    fn destinations(&self, hosts: &[(Option<String>, String)]) -> Vec<Destination<'a>> {
        let mut out = Vec::new();
        for (host, service) in self.registry.services() {
            // A wildcard host names no destination an SNI could carry.
            if host.starts_with('*') {
                continue;
            }
            let served = hosts.iter().any(|(namespace, pattern)| {
                namespace
                    .as_deref()
                    .is_none_or(|ns| ns == service.object.namespace)
                    && hosts::within(&host, pattern)
            });
            if !served {
                continue;
            }
            let mut subsets: Vec<Option<String>> = vec![None];
            if let Some((_, rule)) = self
                .registry
                .destination_rule(&host, &self.options.namespace)
            {
                subsets.extend(rule.subsets.iter().filter_map(|s| s.name.clone()).map(Some));
            }
            for port in service.entry.ports.iter().filter_map(|p| p.number) {
                for subset in &subsets {
                    out.push(Destination {
                        host: host.clone(),
                        service,
                        port,
                        subset: subset.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether `service` is exported: by its label, or by a ServiceExport of its name.
    pub(super) fn exported(&self, service: Service<'_>) -> bool {
        let object = service.object;
        if object.meta.labels.get(EXPORT_LABEL).map(String::as_str) == Some("true") {
            return true;
        }
        self.objects.iter().any(|o| {
            matches!(o.spec, Spec::ServiceExport(_))
                && o.namespace == object.namespace
                && o.name() == object.name()
        })
    }

    /// Records the networks other than the gateway's that hold endpoints of the destination
    /// (any subset): where the trunk ingress sends connections for its host.
    fn note_remote_networks(&mut self, destination: &Destination<'a>) {
        let Some(port) = destination.service.port(Some(destination.port)) else {
            return;
        };
        // Problems with the endpoints are the local cluster's to report.
        let mut ignored = Vec::new();
        let own = self.options.network.as_deref();
        let networks: Vec<String> = self
            .registry
            .endpoints(destination.service, port, None, &mut ignored)
            .into_iter()
            .filter_map(|e| e.network)
            .filter(|network| !same_network(Some(network.as_str()), own))
            .collect();
        if !networks.is_empty() {
            self.remote_networks
                .entry(destination.host.clone())
                .or_default()
                .extend(networks);
        }
    }

    /// Builds the cluster of the destination's endpoints on this gateway's network, or says
    /// why there is none.
    fn local_cluster(&mut self, destination: &Destination<'a>) -> Result<(), String> {
        let host = destination.host.as_str();
        let Some(port) = destination.service.port(Some(destination.port)).cloned() else {
            return Err(format!("{host} has no port {}", destination.port));
        };
        let namespace = self.options.namespace.clone();
        let (subset, policy) = self.destination_policy(
            host,
            destination.port,
            destination.subset.as_deref(),
            &namespace,
        );
        let mut problems = Vec::new();
        let found = self
            .registry
            .endpoints(destination.service, &port, subset, &mut problems);
        for problem in problems {
            self.problem(format!(
                "{host}: {}",
                problem.trim_start_matches(DNS_PREFIX)
            ));
        }
        let own = self.options.network.as_deref();
        let endpoints: Vec<Endpoint> = found
            .into_iter()
            .filter(|e| same_network(e.network.as_deref(), own))
            .map(|e| Endpoint {
                address: e.address,
                weight: e.weight,
                locality: e.locality,
                labels: e.labels,
                dns_name: e.dns_name,
                network_gateway: None,
                priority: 0,
            })
            .collect();
        if endpoints.is_empty() {
            let network = match own {
                Some(network) => format!("network {network}"),
                None => "this gateway's network".to_owned(),
            };
            return Err(format!(
                "{host} is exported, but has no endpoint on {network} for port {} and subset {:?}",
                destination.port,
                destination.subset.as_deref().unwrap_or_default()
            ));
        }
        let name = destination.sni();
        let cluster = policy.passthrough_cluster(
            name.clone(),
            endpoints,
            self.registry.mesh.connect_timeout,
            service_telemetry(host, destination.service),
        );
        self.clusters.insert(name, std::sync::Arc::new(cluster));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strait_proxy::snapshot::{Application, Snapshot};

    use crate::compile::{Compiled, GatewayOptions, compile_gateway};

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default, labels: {strait.io/export: "true"}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 10.2.0.1, labels: {version: v1}, network: west}
  - {address: 10.2.0.2, labels: {version: v2}, network: west}
  - {address: 10.9.0.1, labels: {version: v3}, network: south}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.2.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.2.0.4}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: details, namespace: default}
"#;

    fn compile_with(config: &str, eastwest: bool) -> Compiled {
        let loaded = crate::resources::load_clean(&[("test.yaml", config)]);
        let options = GatewayOptions {
            labels: [("istio".to_owned(), "eastwestgateway".to_owned())].into(),
            network: Some("west".to_owned()),
            eastwest,
            ..GatewayOptions::default()
        };
        compile_gateway(&loaded.objects, &options, 1)
    }

    fn compile(config: &str) -> Snapshot {
        compile_with(config, true).snapshot
    }

    fn chain_names(snapshot: &Snapshot) -> Vec<String> {
        snapshot.listeners[0]
            .filter_chains
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn only_exported_destinations_with_local_endpoints_get_a_chain_named_by_both_sni_forms() {
        let snapshot = compile(CONFIG);
        assert_eq!(snapshot.listeners.len(), 1);
        assert_eq!(snapshot.listeners[0].address.port(), 15443);
        assert_eq!(
            chain_names(&snapshot),
            [
                "outbound_.9080_._.details.default.svc.cluster.local",
                "outbound_.9080_._.reviews.default.svc.cluster.local",
                "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
                super::REFUSAL_CHAIN,
            ]
        );
        let v1 = &snapshot.listeners[0].filter_chains[2];
        assert_eq!(
            v1.server_names,
            [
                "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
                "outbound|9080|v1|reviews.default.svc.cluster.local",
            ]
        );
        assert_eq!(v1.transport, strait_proxy::snapshot::Transport::Passthrough);
        // The subset's endpoints on the gateway's network, carried as they come (the
        // DestinationRule's ISTIO_MUTUAL is the caller's business, not the gateway's).
        let cluster = &snapshot.clusters["outbound_.9080_.v1_.reviews.default.svc.cluster.local"];
        let addresses: Vec<String> = cluster
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addresses, ["10.2.0.1:9080"]);
        assert_eq!(cluster.tls, strait_proxy::snapshot::UpstreamTls::Disabled);
        let all = &snapshot.clusters["outbound_.9080_._.reviews.default.svc.cluster.local"];
        assert_eq!(all.endpoints.len(), 2, "the south endpoint is not local");
    }

    #[test]
    fn other_networks_holding_a_host_s_endpoints_are_recorded_for_the_trunk_ingress() {
        let compiled = compile_with(CONFIG, true);
        let remote: Vec<(&str, Vec<&str>)> = compiled
            .remote_networks
            .iter()
            .map(|(host, networks)| (host.as_str(), networks.iter().map(String::as_str).collect()))
            .collect();
        // reviews has endpoints on south too; the others have no network (every network's).
        assert_eq!(
            remote,
            [("reviews.default.svc.cluster.local", vec!["south"])]
        );
    }

    #[test]
    fn the_refusal_chain_says_why_for_each_destination_it_refuses() {
        let snapshot = compile(CONFIG);
        let refusal = snapshot.listeners[0].filter_chains.last().unwrap();
        assert!(refusal.server_names.is_empty());
        let Application::Tcp { routes } = &refusal.application else {
            panic!("the refusal chain is TCP");
        };
        let refused: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            refused,
            [
                "outbound_.9080_._.ratings.default.svc.cluster.local",
                "outbound_.9080_.v3_.reviews.default.svc.cluster.local",
                super::REFUSED_CLUSTER,
            ]
        );
        assert_eq!(
            routes[0].server_names[1],
            "outbound|9080||ratings.default.svc.cluster.local"
        );
        let why = |name: &str| snapshot.missing_cluster_reason(name);
        assert!(
            why("outbound_.9080_._.ratings.default.svc.cluster.local").contains("is not exported"),
            "{}",
            why("outbound_.9080_._.ratings.default.svc.cluster.local")
        );
        assert!(
            why("outbound_.9080_.v3_.reviews.default.svc.cluster.local")
                .contains("no endpoint on network west for port 9080 and subset \"v3\"")
        );
        assert!(why(super::REFUSED_CLUSTER).contains("names no service, port and subset"));
        let blackholes: BTreeSet<&str> = snapshot
            .blackhole_clusters
            .iter()
            .map(String::as_str)
            .collect();
        assert!(blackholes.contains(super::REFUSED_CLUSTER));
        assert!(
            !snapshot
                .clusters
                .contains_key("outbound_.9080_._.ratings.default.svc.cluster.local")
        );
    }

    #[test]
    fn auto_passthrough_is_served_only_by_the_east_west_role() {
        let compiled = compile_with(CONFIG, false);
        assert!(compiled.snapshot.listeners.is_empty());
        assert!(
            compiled
                .findings
                .iter()
                .any(|f| f.message.contains("AutoPassthrough")),
            "{:?}",
            compiled.findings
        );
    }

    #[test]
    fn several_auto_passthrough_servers_on_a_port_expose_their_hosts_together() {
        let config = CONFIG.replace(
            "    hosts: [\"*.local\"]\n",
            "    hosts: [\"*/reviews.default.svc.cluster.local\"]\n  - port: {number: 15443, name: tls-details, protocol: TLS}\n    tls: {mode: AUTO_PASSTHROUGH}\n    hosts: [\"details.default.svc.cluster.local\"]\n",
        );
        let snapshot = compile(&config);
        assert_eq!(
            chain_names(&snapshot),
            [
                "outbound_.9080_._.details.default.svc.cluster.local",
                "outbound_.9080_._.reviews.default.svc.cluster.local",
                "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
                super::REFUSAL_CHAIN,
            ]
        );
        // ratings is outside both servers' hosts: only the catch-all refuses it.
        let Application::Tcp { routes } = &snapshot.listeners[0].filter_chains[3].application
        else {
            panic!("the refusal chain is TCP");
        };
        assert!(routes.iter().all(|r| !r.name.contains("ratings")));
    }
}
