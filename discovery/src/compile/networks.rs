//! Networks: which network an endpoint is on, and the split-horizon view a proxy gets of the
//! endpoints of other networks (Istio's multi-network model, configured by hand).
//!
//! An endpoint's network is the first MeshNetworks network whose `fromCidr` holds its address,
//! else its WorkloadEntry's `network`. A proxy's own network is `--network` (Istio's
//! `ISTIO_META_NETWORK`). As in Istio, an endpoint or proxy without a network is on every
//! network, so without networks nothing changes. Endpoints on another network are replaced by
//! that network's east-west gateways (MeshNetworks `gateways[].address` and `port`), each
//! weighted by the number of endpoints behind it (a WorkloadEntry's `weight` counts as that
//! many: an imported service's entries carry the peer's counts so), so that traffic spreads
//! across networks as it would across the endpoints themselves; a network without a usable
//! gateway cannot be reached, and its endpoints are left out with a problem saying so.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use strait_proxy::snapshot::Endpoint;

use super::registry::EndpointInfo;
use crate::resources::mesh_config::MeshNetworks;

/// The label a gateway endpoint carries with its network's name (Istio's topology label).
pub(crate) use strait_proxy::NETWORK_LABEL;

/// Istio's default east-west gateway port (`DefaultNetworkGatewayPort`).
const DEFAULT_GATEWAY_PORT: u16 = 15443;

/// What MeshNetworks says about the networks.
#[derive(Debug, Default, Clone)]
pub(crate) struct Networks {
    /// `fromCidr` ranges, in order: the first that holds an address names its network.
    ranges: Vec<(IpNet, String)>,
    /// Each network's gateways, or why it has none that can be used.
    gateways: BTreeMap<String, Result<Vec<Gateway>, String>>,
}

/// A network's east-west gateway: its address and locality.
#[derive(Debug, Clone)]
struct Gateway {
    address: SocketAddr,
    locality: Option<String>,
}

impl Networks {
    pub(crate) fn from(networks: &MeshNetworks) -> Networks {
        let mut out = Networks::default();
        for (name, network) in &networks.networks {
            for endpoints in &network.endpoints {
                let Some(cidr) = endpoints.from_cidr.as_deref() else {
                    continue;
                };
                let range = cidr
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| cidr.parse::<IpAddr>().ok().map(IpNet::from));
                if let Some(range) = range {
                    out.ranges.push((range, name.clone()));
                }
            }
            let mut usable = Vec::new();
            let mut why = Vec::new();
            for gateway in &network.gateways {
                let port = gateway
                    .port
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(DEFAULT_GATEWAY_PORT);
                match (&gateway.address, &gateway.registry_service_name) {
                    (Some(address), _) => match address.parse::<IpAddr>() {
                        Ok(ip) => usable.push(Gateway {
                            address: SocketAddr::new(ip, port),
                            locality: gateway.locality.clone(),
                        }),
                        // As Istio's sidecars: only a gateway with an IP address is used.
                        Err(_) => why.push(format!("gateway address {address:?} is not an IP address")),
                    },
                    (None, Some(service)) => why.push(format!(
                        "gateway registryServiceName {service:?} is not supported (give its address)"
                    )),
                    (None, None) => {}
                }
            }
            let gateways = if usable.is_empty() {
                why.insert(0, "it has no gateway".to_owned());
                Err(why.join("; "))
            } else {
                Ok(usable)
            };
            out.gateways.insert(name.clone(), gateways);
        }
        out
    }

    /// The network of an endpoint at `address` whose WorkloadEntry says `declared`.
    pub(crate) fn network_of(&self, address: IpAddr, declared: Option<&str>) -> Option<String> {
        self.ranges
            .iter()
            .find(|(range, _)| range.contains(&address))
            .map(|(_, name)| name.clone())
            .or_else(|| declared.filter(|n| !n.is_empty()).map(str::to_owned))
    }

    /// The endpoints a proxy on network `own` uses: those on its network as they are, and for
    /// every other network its gateways, weighted by the number of endpoints behind them.
    /// Endpoints of a network without a usable gateway are left out, and `problems` says why.
    pub(crate) fn split_horizon(
        &self,
        endpoints: Vec<EndpointInfo>,
        own: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Vec<Endpoint> {
        let mut local = Vec::new();
        let mut remote: BTreeMap<String, u32> = BTreeMap::new();
        for endpoint in endpoints {
            match endpoint.network.as_deref() {
                Some(network) if !same_network(Some(network), own) => {
                    // A WorkloadEntry's weight counts as that many endpoints: an imported
                    // service's entry stands for all the peer's endpoints of its group.
                    *remote.entry(network.to_owned()).or_default() += endpoint.weight;
                }
                _ => local.push(Endpoint {
                    address: endpoint.address,
                    weight: endpoint.weight,
                    locality: endpoint.locality,
                    labels: endpoint.labels,
                    dns_name: endpoint.dns_name,
                    network_gateway: None,
                    priority: 0,
                }),
            }
        }
        let mut reachable = Vec::new();
        for (network, count) in remote {
            match self.gateways.get(&network) {
                Some(Ok(gateways)) => reachable.push((network, count, gateways)),
                Some(Err(why)) => problems.push(format!(
                    "{count} endpoint(s) on network {network} are left out: {why}"
                )),
                None => problems.push(format!(
                    "{count} endpoint(s) on network {network} are left out: MeshNetworks does not declare the network (nor its gateway)"
                )),
            }
        }
        // Each network's weight is split among its gateways: scaling every weight by the least
        // common multiple of the gateway counts keeps the shares whole numbers.
        let scale = reachable.iter().fold(1u32, |acc, (_, _, gateways)| {
            lcm(acc, gateways.len() as u32)
        });
        let mut out: Vec<Endpoint> = local
            .into_iter()
            .map(|mut e| {
                e.weight = e.weight.saturating_mul(scale);
                e
            })
            .collect();
        for (network, count, gateways) in reachable {
            let share = count.saturating_mul(scale) / gateways.len() as u32;
            for gateway in gateways {
                out.push(Endpoint {
                    address: gateway.address,
                    weight: share.max(1),
                    locality: gateway.locality.clone(),
                    labels: BTreeMap::from([(NETWORK_LABEL.to_owned(), network.clone())]),
                    dns_name: None,
                    network_gateway: Some(network.clone()),
                    priority: 0,
                });
            }
        }
        out
    }
}

/// Whether an endpoint on `endpoint` is on the network `own` (no network is every network).
pub(crate) fn same_network(endpoint: Option<&str>, own: Option<&str>) -> bool {
    match (endpoint, own) {
        (Some(endpoint), Some(own)) => endpoint == own,
        _ => true,
    }
}

fn lcm(a: u32, b: u32) -> u32 {
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    if a == 0 || b == 0 {
        return a.max(b);
    }
    (a / gcd(a, b)).saturating_mul(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::mesh_config::{IstioNetworkGateway, Network, NetworkEndpoints};
    use strait_proxy::snapshot::ConnectFailure;

    fn endpoint(address: &str, network: Option<&str>) -> EndpointInfo {
        EndpointInfo {
            address: address.parse().unwrap(),
            weight: 1,
            labels: BTreeMap::new(),
            locality: None,
            service_account: None,
            trust_domain: None,
            network: network.map(str::to_owned),
            dns_name: None,
        }
    }

    fn gateway(address: &str, port: Option<u32>) -> IstioNetworkGateway {
        IstioNetworkGateway {
            address: Some(address.to_owned()),
            port,
            ..IstioNetworkGateway::default()
        }
    }

    fn networks() -> Networks {
        Networks::from(&MeshNetworks {
            networks: BTreeMap::from([
                (
                    "west".to_owned(),
                    Network {
                        endpoints: vec![NetworkEndpoints {
                            from_cidr: Some("10.2.0.0/16".to_owned()),
                            from_registry: None,
                        }],
                        gateways: vec![gateway("192.0.2.10", Some(15443))],
                    },
                ),
                (
                    "south".to_owned(),
                    Network {
                        endpoints: Vec::new(),
                        gateways: vec![gateway("192.0.2.20", None), gateway("192.0.2.21", None)],
                    },
                ),
                (
                    "dark".to_owned(),
                    Network {
                        endpoints: Vec::new(),
                        gateways: vec![gateway("gw.dark.example", Some(15443))],
                    },
                ),
            ]),
        })
    }

    #[test]
    fn from_cidr_names_the_network_before_the_workload_entry() {
        let networks = networks();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            networks.network_of(ip("10.2.3.4"), Some("east")).as_deref(),
            Some("west")
        );
        assert_eq!(
            networks.network_of(ip("10.9.3.4"), Some("east")).as_deref(),
            Some("east")
        );
        assert_eq!(networks.network_of(ip("10.9.3.4"), None), None);
    }

    #[test]
    fn remote_endpoints_become_their_gateway_weighted_by_their_number() {
        let mut problems = Vec::new();
        let endpoints = networks().split_horizon(
            vec![
                endpoint("10.1.0.1:80", Some("east")),
                endpoint("10.1.0.2:80", None),
                endpoint("10.2.0.1:80", Some("west")),
                endpoint("10.2.0.2:80", Some("west")),
                endpoint("10.2.0.3:80", Some("west")),
            ],
            Some("east"),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let summary: Vec<(String, u32, Option<String>)> = endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.weight, e.network_gateway.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("10.1.0.1:80".to_owned(), 1, None),
                ("10.1.0.2:80".to_owned(), 1, None),
                ("192.0.2.10:15443".to_owned(), 3, Some("west".to_owned())),
            ]
        );
        assert_eq!(endpoints[2].labels[NETWORK_LABEL], "west");
    }

    #[test]
    fn a_remote_entry_s_weight_counts_as_that_many_endpoints() {
        // An imported group of four endpoints is one WorkloadEntry of weight 4.
        let mut imported = endpoint("192.0.2.10:80", Some("west"));
        imported.weight = 4;
        let mut problems = Vec::new();
        let endpoints = networks().split_horizon(
            vec![imported, endpoint("10.2.0.1:80", Some("west"))],
            Some("east"),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address.to_string(), "192.0.2.10:15443");
        assert_eq!(endpoints[0].weight, 5);
    }

    #[test]
    fn a_network_of_two_gateways_splits_its_weight_between_them() {
        let mut problems = Vec::new();
        let endpoints = networks().split_horizon(
            vec![
                endpoint("10.1.0.1:80", Some("east")),
                endpoint("10.3.0.1:80", Some("south")),
            ],
            Some("east"),
            &mut problems,
        );
        let weights: Vec<(String, u32)> = endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.weight))
            .collect();
        // One local endpoint against one endpoint behind two gateways: 2 : 1 + 1.
        assert_eq!(
            weights,
            [
                ("10.1.0.1:80".to_owned(), 2),
                ("192.0.2.20:15443".to_owned(), 1),
                ("192.0.2.21:15443".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn networks_without_a_usable_gateway_are_left_out_with_a_reason() {
        let mut problems = Vec::new();
        let endpoints = networks().split_horizon(
            vec![
                endpoint("10.1.0.1:80", Some("east")),
                endpoint("10.4.0.1:80", Some("dark")),
                endpoint("10.5.0.1:80", Some("nowhere")),
            ],
            Some("east"),
            &mut problems,
        );
        assert_eq!(endpoints.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("network dark") && problems[0].contains("not an IP"));
        assert!(
            problems[1].contains("network nowhere") && problems[1].contains("does not declare")
        );
    }

    #[test]
    fn without_an_own_network_every_endpoint_is_local() {
        let mut problems = Vec::new();
        let endpoints = networks().split_horizon(
            vec![endpoint("10.2.0.1:80", Some("west"))],
            None,
            &mut problems,
        );
        assert_eq!(endpoints[0].address.to_string(), "10.2.0.1:80");
        assert!(endpoints[0].network_gateway.is_none());
    }

    const REMOTE: &str = r#"
networks:
  west:
    endpoints: [{fromCidr: 10.2.0.0/16}]
    gateways: [{address: 192.0.2.10, port: 15443}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-east, namespace: default}
spec:
  address: 10.1.0.7
  labels: {app: ratings, security.istio.io/tlsMode: istio}
  serviceAccount: ratings
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-west-1
  namespace: default
  annotations: {strait.io/trust-domain: west.mesh}
spec:
  address: 10.2.0.7
  labels: {app: ratings, security.istio.io/tlsMode: istio}
  serviceAccount: ratings
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-west-2
  namespace: default
  annotations: {strait.io/trust-domain: west.mesh}
spec:
  address: 10.2.0.8
  labels: {app: ratings, security.istio.io/tlsMode: istio}
  serviceAccount: ratings
"#;

    #[test]
    fn a_sidecar_reaches_another_network_through_its_gateway_with_mesh_mtls() {
        use strait_proxy::snapshot::UpstreamTls;

        use crate::compile::{SidecarOptions, compile_sidecar};

        let loaded = crate::resources::load_clean(&[("test.yaml", REMOTE)]);
        let options = SidecarOptions {
            namespace: "default".to_owned(),
            labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
            domain_suffix: "cluster.local".to_owned(),
            outbound: "0.0.0.0:15001".parse().unwrap(),
            inbound: "0.0.0.0:15006".parse().unwrap(),
            captured: true,
            instance_ip: None,
            workload_name: "caller".to_owned(),
            service_account: "caller".to_owned(),
            http_proxy: None,
            dns: Default::default(),
            network: Some("east".to_owned()),
            locality: None,
        };
        let snapshot = compile_sidecar(&loaded.objects, &options, 1).snapshot;
        let cluster = &snapshot.clusters["outbound|9080||ratings.default.svc.cluster.local"];
        let endpoints: Vec<(String, u32, Option<&str>)> = cluster
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.address.to_string(),
                    e.weight,
                    e.network_gateway.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            endpoints,
            [
                ("10.1.0.7:9080".to_owned(), 1, None),
                ("192.0.2.10:15443".to_owned(), 2, Some("west")),
            ]
        );
        // Istio's SNI names the destination for the remote gateway; the remote endpoints' own
        // identities, in their trust domain, are expected beside the local one.
        assert_eq!(
            cluster.tls,
            UpstreamTls::IstioMutual {
                sni: "outbound_.9080_._.ratings.default.svc.cluster.local".to_owned(),
                subject_alt_names: vec![
                    "spiffe://cluster.local/ns/default/sa/ratings".to_owned(),
                    "spiffe://west.mesh/ns/default/sa/ratings".to_owned(),
                ],
            }
        );
        // What a failed connection to the gateway is put down to, by how it failed.
        let gateway = "192.0.2.10:15443".parse().unwrap();
        let reason = |failure| cluster.connect_failure(gateway, &"E", failure);
        assert_eq!(
            reason(ConnectFailure::Unreachable),
            "network west's gateway 192.0.2.10:15443 unreachable: E"
        );
        assert!(
            reason(ConnectFailure::Closed).starts_with(
                "network west's gateway 192.0.2.10:15443 closed the connection during the mesh TLS handshake: it refused the destination"
            )
        );
        assert!(reason(ConnectFailure::Handshake).starts_with(
            "mesh TLS through network west's gateway 192.0.2.10:15443 failed: a trust failure"
        ));
        // An address that is no network's gateway.
        let local = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(
            cluster.connect_failure(local, &"E", ConnectFailure::Closed),
            "upstream connect error: E"
        );
    }

    #[test]
    fn a_cluster_whose_endpoints_are_all_unreachable_says_why_it_is_empty() {
        use crate::compile::{GatewayOptions, compile_gateway};

        let config = REMOTE
            .replace(
                "gateways: [{address: 192.0.2.10, port: 15443}]",
                "gateways: []",
            )
            .replace("address: 10.1.0.7", "address: 10.2.0.9");
        let config = format!(
            "{config}---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings, namespace: istio-system}}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http: [{{route: [{{destination: {{host: ratings.default.svc.cluster.local, port: {{number: 9080}}}}}}]}}]\n"
        );
        let loaded = crate::resources::load_clean(&[("test.yaml", &config)]);
        let options = GatewayOptions {
            network: Some("east".to_owned()),
            ..GatewayOptions::default()
        };
        let compiled = compile_gateway(&loaded.objects, &options, 1);
        let cluster =
            &compiled.snapshot.clusters["outbound|9080||ratings.default.svc.cluster.local"];
        assert!(cluster.endpoints.is_empty());
        let why = cluster.empty_reason.as_deref().unwrap_or_default();
        assert!(
            why.contains("3 endpoint(s) on network west are left out: it has no gateway"),
            "{why}"
        );
        assert!(
            compiled
                .findings
                .iter()
                .any(|f| f.message.contains("network west are left out")),
            "{:?}",
            compiled.findings
        );
    }
}
