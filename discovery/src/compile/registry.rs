//! The service registry a snapshot is compiled from: services declared by ServiceEntry (with
//! endpoints inline, or WorkloadEntries selected by labels), DestinationRules by host, and the
//! mesh defaults from MeshConfig.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::dns::{DnsCache, Resolved};
use crate::hosts;
use crate::resources::common::Port;
use crate::resources::destination_rule::{DestinationRule, LocalityLoadBalancerSetting, Subset};
use crate::resources::mesh_config::{MeshConfig, OutboundTrafficPolicyMode};
use crate::resources::service_entry::{Resolution, ServiceEntry, WorkloadEntry};
use crate::resources::virtual_service::HttpRetry;
use crate::resources::{Object, Spec};

use super::networks::Networks;

/// A service: a ServiceEntry and the host it is declared for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Service<'a> {
    pub(crate) object: &'a Object,
    pub(crate) entry: &'a ServiceEntry,
}

impl Service<'_> {
    /// The port addressed as `number`, or the only port when none is named.
    pub(crate) fn port(&self, number: Option<u32>) -> Option<&Port> {
        match number {
            Some(number) => self.entry.ports.iter().find(|p| p.number == Some(number)),
            None if self.entry.ports.len() == 1 => self.entry.ports.first(),
            None => None,
        }
    }
}

/// One endpoint of a service port, with what subsets and metrics need.
#[derive(Debug, Clone)]
pub(crate) struct EndpointInfo {
    pub(crate) address: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) locality: Option<String>,
    /// The service account its workload runs as (WorkloadEntry `serviceAccount`).
    pub(crate) service_account: Option<String>,
    /// The trust domain of its workload's identity when it is not the mesh's: the annotation
    /// [`TRUST_DOMAIN_ANNOTATION`] on its WorkloadEntry (or, for inline endpoints, on the
    /// ServiceEntry). Endpoints of another cluster run as identities of that cluster's domain.
    pub(crate) trust_domain: Option<String>,
    /// Its network (MeshNetworks `fromCidr`, else WorkloadEntry `network`); none is every
    /// network.
    pub(crate) network: Option<String>,
    /// The DNS name the address was resolved from, when it was one.
    pub(crate) dns_name: Option<String>,
}

/// Strait's annotation naming the trust domain of the workloads behind a WorkloadEntry (or a
/// ServiceEntry's inline endpoints): `spiffe://DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT` is then
/// the identity callers expect of them. Istio has no such field (its multi-network meshes share
/// one trust domain); federated clusters each keep their own.
pub(crate) const TRUST_DOMAIN_ANNOTATION: &str = "strait.io/trust-domain";

/// Mesh-wide defaults from MeshConfig.
#[derive(Debug, Clone)]
pub(crate) struct MeshDefaults {
    pub(crate) root_namespace: String,
    pub(crate) connect_timeout: Duration,
    /// The mesh's trust domain (`trustDomain`, default `cluster.local`).
    pub(crate) trust_domain: String,
    /// `enableAutoMtls` (default true): mesh mTLS to endpoints labelled
    /// `security.istio.io/tlsMode: istio` unless a DestinationRule says otherwise.
    pub(crate) auto_mtls: bool,
    /// `outboundTrafficPolicy`: ALLOW_ANY (Istio's default) lets sidecars reach destinations
    /// outside the registry; REGISTRY_ONLY does not.
    pub(crate) allow_any: bool,
    /// The retry policy of routes that set none (Istio's, unless MeshConfig replaces it); no
    /// `retryOn` means Istio's default conditions.
    pub(crate) retry: HttpRetry,
    /// `localityLbSetting`: what a DestinationRule that sets none uses (unset: enabled).
    pub(crate) locality_lb: Option<LocalityLoadBalancerSetting>,
}

impl MeshDefaults {
    pub(crate) fn from(mesh: Option<&MeshConfig>) -> MeshDefaults {
        // Istio's: two retries on its default conditions (`compile::routes`).
        let default_retry = HttpRetry {
            attempts: Some(2),
            ..HttpRetry::default()
        };
        MeshDefaults {
            root_namespace: mesh
                .and_then(|m| m.root_namespace.clone())
                .unwrap_or_else(|| "istio-system".to_owned()),
            connect_timeout: mesh
                .and_then(|m| m.connect_timeout.as_ref())
                .and_then(|d| d.value)
                .unwrap_or(Duration::from_secs(10)),
            retry: mesh
                .and_then(|m| m.default_http_retry_policy.clone())
                .unwrap_or(default_retry),
            trust_domain: mesh
                .and_then(|m| m.trust_domain.clone())
                .unwrap_or_else(|| "cluster.local".to_owned()),
            auto_mtls: mesh.and_then(|m| m.enable_auto_mtls).unwrap_or(true),
            allow_any: mesh
                .and_then(|m| m.outbound_traffic_policy.as_ref())
                .and_then(|p| p.mode)
                != Some(OutboundTrafficPolicyMode::RegistryOnly),
            locality_lb: mesh.and_then(|m| m.locality_lb_setting.clone()),
        }
    }
}

/// Everything a compilation looks things up in.
#[derive(Debug)]
pub(crate) struct Registry<'a> {
    pub(crate) domain_suffix: &'a str,
    pub(crate) mesh: MeshDefaults,
    /// Services by exact host; the first declaration of a host is the one used.
    services: HashMap<String, Service<'a>>,
    /// Services declared for wildcard hosts (`*.example.com`), in declaration order.
    wildcard_services: Vec<(String, Service<'a>)>,
    workloads: Vec<(&'a Object, &'a WorkloadEntry)>,
    /// DestinationRules by exact host, in declaration order.
    rules: HashMap<String, Vec<(&'a Object, &'a DestinationRule)>>,
    /// DestinationRules for wildcard hosts, in declaration order.
    wildcard_rules: Vec<(String, &'a Object, &'a DestinationRule)>,
    /// The latest answers for DNS names.
    dns: DnsCache,
    /// The networks MeshNetworks declares: endpoints' networks and their gateways.
    pub(crate) networks: Networks,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(
        objects: &[&'a Object],
        domain_suffix: &'a str,
        dns: &DnsCache,
    ) -> Registry<'a> {
        dns.begin_compile();
        let mut registry = Registry {
            domain_suffix,
            mesh: MeshDefaults::from(None),
            services: HashMap::new(),
            wildcard_services: Vec::new(),
            workloads: Vec::new(),
            rules: HashMap::new(),
            wildcard_rules: Vec::new(),
            dns: dns.clone(),
            networks: Networks::default(),
        };
        for object in objects {
            match &object.spec {
                Spec::ServiceEntry(entry) => {
                    for host in entry.hosts.iter().flatten() {
                        let host = hosts::qualify(host, &object.namespace, domain_suffix)
                            .to_ascii_lowercase();
                        let service = Service { object, entry };
                        if host.starts_with('*') {
                            registry.wildcard_services.push((host, service));
                        } else {
                            registry.services.entry(host).or_insert(service);
                        }
                    }
                }
                Spec::WorkloadEntry(entry) => registry.workloads.push((object, entry)),
                Spec::DestinationRule(rule) => {
                    if let Some(host) = &rule.host {
                        let host = hosts::qualify(host, &object.namespace, domain_suffix)
                            .to_ascii_lowercase();
                        if host.starts_with('*') {
                            registry.wildcard_rules.push((host, object, rule));
                        } else {
                            registry.rules.entry(host).or_default().push((object, rule));
                        }
                    }
                }
                Spec::MeshNetworks(networks) => registry.networks = Networks::from(networks),
                Spec::MeshConfig(mesh) => {
                    registry.mesh = MeshDefaults::from(Some(mesh));
                    dns.set_mesh_refresh_rate(mesh.dns_refresh_rate.as_ref().and_then(|d| d.value));
                }
                _ => {}
            }
        }
        registry
    }

    /// The compilation is over: DNS names it did not ask for are no longer looked up.
    pub(crate) fn end_dns_compile(&self) {
        self.dns.end_compile();
    }

    /// Every service by its qualified host: exact hosts in order of name, then wildcard hosts
    /// in declaration order.
    pub(crate) fn services(&self) -> Vec<(String, Service<'a>)> {
        let mut exact: Vec<(String, Service<'a>)> = self
            .services
            .iter()
            .map(|(host, service)| (host.clone(), *service))
            .collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        exact.extend(self.wildcard_services.iter().cloned());
        exact
    }

    pub(crate) fn qualify(&self, host: &str, namespace: &str) -> String {
        hosts::qualify(host, namespace, self.domain_suffix).to_ascii_lowercase()
    }

    /// The service declaring `host` (qualified): an exact host first, then the most specific
    /// wildcard.
    pub(crate) fn service(&self, host: &str) -> Option<Service<'a>> {
        let exact = match host.starts_with('*') {
            true => self
                .wildcard_services
                .iter()
                .find(|(h, _)| h == host)
                .map(|(_, service)| service),
            false => self.services.get(host),
        };
        if let Some(service) = exact {
            return Some(*service);
        }
        self.wildcard_services
            .iter()
            .filter(|(h, _)| hosts::within(host, h))
            .max_by_key(|(h, _)| h.len())
            .map(|(_, service)| *service)
    }

    /// The DestinationRule for `host`, looked up as Istio does for a client in `namespace`: an
    /// exact host before a wildcard, and the client's namespace, then the rule's, then the root
    /// namespace's.
    pub(crate) fn destination_rule(
        &self,
        host: &str,
        namespace: &str,
    ) -> Option<(&'a Object, &'a DestinationRule)> {
        let rank = |ns: &str| {
            if ns == namespace {
                0
            } else if ns == self.mesh.root_namespace {
                2
            } else {
                1
            }
        };
        let exact = match host.starts_with('*') {
            true => self
                .wildcard_rules
                .iter()
                .filter(|(h, _, _)| h == host)
                .map(|(_, object, rule)| (*object, *rule))
                .min_by_key(|(object, _)| rank(&object.namespace)),
            false => self.rules.get(host).and_then(|rules| {
                rules
                    .iter()
                    .copied()
                    .min_by_key(|(object, _)| rank(&object.namespace))
            }),
        };
        if exact.is_some() {
            return exact;
        }
        self.wildcard_rules
            .iter()
            .filter(|(h, _, _)| hosts::within(host, h))
            .max_by_key(|(h, _, _)| h.len())
            .map(|(_, object, rule)| (*object, *rule))
    }

    /// The endpoints of `service` on `port`, with `subset`'s labels applied. DNS names take
    /// the latest answer of the DNS cache (never waited on); what cannot be used is described
    /// in `problems`, and a DNS name without addresses there by a problem starting with
    /// [`DNS_PREFIX`].
    pub(crate) fn endpoints(
        &self,
        service: Service<'a>,
        port: &Port,
        subset: Option<&Subset>,
        problems: &mut Vec<String>,
    ) -> Vec<EndpointInfo> {
        let entry = service.entry;
        let target = port.target_port.or(port.number).unwrap_or(0);
        let port_name = port.name.as_deref().unwrap_or_default();
        // Endpoints are WorkloadEntries: selected by labels, or written inline.
        let workloads: Vec<(&Object, &WorkloadEntry)> = match &entry.workload_selector {
            Some(selector) => self
                .workloads
                .iter()
                .filter(|(object, workload)| {
                    object.namespace == service.object.namespace
                        && selector
                            .labels
                            .iter()
                            .all(|(k, v)| workload.labels.get(k) == Some(v))
                })
                .copied()
                .collect(),
            None => entry
                .endpoints
                .iter()
                .flatten()
                .map(|workload| (service.object, workload))
                .collect(),
        };
        let mut found: Vec<(String, u32, &Object, &WorkloadEntry)> = workloads
            .into_iter()
            .filter_map(|(object, workload)| {
                let number = workload
                    .ports
                    .as_ref()
                    .and_then(|p| p.get(port_name))
                    .copied()
                    .unwrap_or(target);
                Some((workload.address.clone()?, number, object, workload))
            })
            .collect();
        let dns = matches!(
            entry.resolution,
            Some(Resolution::Dns | Resolution::DnsRoundRobin)
        );
        if found.is_empty() && entry.workload_selector.is_none() && dns {
            // DNS with no endpoints: the hosts themselves are resolved.
            for host in entry.hosts.iter().flatten().filter(|h| !h.contains('*')) {
                found.push((host.clone(), target, service.object, &NO_WORKLOAD));
            }
        }
        let mut endpoints = Vec::new();
        for (address, number, object, workload) in found {
            let labels = &workload.labels;
            if subset.is_some_and(|s| !s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))) {
                continue;
            }
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            let mut addresses = resolve(&self.dns, &address, number, problems);
            let dns_name = address
                .parse::<IpAddr>()
                .is_err()
                .then(|| address.trim_end_matches('.').to_ascii_lowercase());
            if entry.resolution == Some(Resolution::DnsRoundRobin) {
                // LOGICAL_DNS: one endpoint, the first address of the latest answer.
                addresses.truncate(1);
            }
            let trust_domain = object
                .meta
                .annotations
                .get(TRUST_DOMAIN_ANNOTATION)
                .cloned();
            for resolved in addresses {
                let network = self
                    .networks
                    .network_of(resolved.ip(), workload.network.as_deref());
                endpoints.push(EndpointInfo {
                    address: resolved,
                    weight: workload.weight.unwrap_or(1).max(1),
                    labels: labels.clone(),
                    locality: workload.locality.clone(),
                    service_account: workload.service_account.clone(),
                    trust_domain: trust_domain.clone(),
                    network,
                    dns_name: dns_name.clone(),
                });
            }
        }
        endpoints
    }
}

/// The stand-in workload of a DNS host: no labels, weight 1.
static NO_WORKLOAD: WorkloadEntry = WorkloadEntry {
    address: None,
    ports: None,
    labels: BTreeMap::new(),
    network: None,
    locality: None,
    weight: None,
    service_account: None,
};

/// Starts the problem that says a DNS name has no addresses in the cache, and why.
pub(crate) const DNS_PREFIX: &str = "dns: ";

/// An endpoint's address: an IP, or a DNS name's latest answer in the cache (IPv6 left out
/// when the name also has IPv4 addresses).
fn resolve(
    dns: &DnsCache,
    address: &str,
    port: u16,
    problems: &mut Vec<String>,
) -> Vec<SocketAddr> {
    if address.starts_with("unix://") {
        problems.push(format!(
            "{address}: unix socket endpoints are not supported"
        ));
        return Vec::new();
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    match dns.resolve(address) {
        Resolved::Addresses(ips) => ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        Resolved::Empty(why) => {
            problems.push(format!("{DNS_PREFIX}{why}"));
            Vec::new()
        }
    }
}
