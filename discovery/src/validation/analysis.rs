//! Checks across objects, in the spirit of `istioctl analyze`: references to gateways, subsets
//! and hosts that nothing defines, Gateways whose selector matches no declared workload,
//! VirtualServices that claim the same host, duplicate objects, policies and Sidecars that
//! conflict with no creation time to order them, `namespaces` rules that admit other trust
//! domains, and routes of an egress gateway (selector `istio: egressgateway`) to hosts it
//! refuses under REGISTRY_ONLY (`resolution: NONE`). All are warnings (or infos): a directory
//! may hold alternatives.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::ValidateOptions;
use super::check::Check;
use crate::findings::Finding;
use crate::hosts;
use crate::resources::common::{LabelSelector, WorkloadSelector};
use crate::resources::security::{AuthorizationAction, AuthorizationPolicy, is_set};
use crate::resources::service_entry::Resolution;
use crate::resources::virtual_service::{Destination, VirtualService, gateway_ref};
use crate::resources::{Kind, Object, Spec};
use crate::yaml::FieldPath;

/// Istio's default root namespace, where mesh-wide policies live.
const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

pub(crate) fn analyze(objects: &[&Object], options: &ValidateOptions, out: &mut Vec<Finding>) {
    let index = Index::new(objects, options);
    duplicates(objects, out);
    for object in objects {
        let mut check = Check::new(object, out);
        match &object.spec {
            Spec::VirtualService(vs) => {
                gateway_references(&mut check, vs, &index);
                destinations(&mut check, vs, &index);
            }
            Spec::Gateway(gateway) if !index.selects_declared(&gateway.selector) => {
                let selector = format_labels(&gateway.selector);
                check.warning(
                    &FieldPath::ROOT.field("spec").field("selector"),
                    "selector-matches-nothing",
                    format!(
                        "selector {selector} matches no declared workload (WorkloadEntry, \
                             ServiceEntry endpoint, or gateway labels given to validate): no \
                             gateway serves this Gateway"
                    ),
                );
            }
            Spec::AuthorizationPolicy(policy)
                if matches!(
                    policy.action.unwrap_or_default(),
                    AuthorizationAction::Allow | AuthorizationAction::Deny
                ) =>
            {
                namespaces_rules(&mut check, policy);
            }
            Spec::ServiceExport(_)
                if !index
                    .services
                    .contains(&(object.namespace.clone(), object.name().to_owned())) =>
            {
                check.warning(
                    &FieldPath::ROOT.field("metadata").field("name"),
                    "reference-not-found",
                    format!(
                        "no ServiceEntry named {}/{} declares the service this exports",
                        object.namespace,
                        object.name()
                    ),
                );
            }
            _ => {}
        }
    }
    virtual_service_hosts(objects, &index, out);
    policy_conflicts(objects, &index, Kind::PeerAuthentication, out);
    policy_conflicts(objects, &index, Kind::Sidecar, out);
}

/// What the objects declare, for looking things up.
struct Index<'a> {
    options: &'a ValidateOptions,
    root_namespace: String,
    /// `(namespace, name)` of every Gateway.
    gateways: HashSet<(String, String)>,
    /// `(namespace, name)` of the Gateways egress gateways serve (`istio: egressgateway`).
    egress_gateways: HashSet<(String, String)>,
    /// Hosts of ServiceEntries with `resolution: NONE` (the default).
    original_destination_hosts: HostTable<()>,
    /// `(namespace, name)` of every ServiceEntry.
    services: HashSet<(String, String)>,
    /// Fully qualified hosts ServiceEntries declare, lowercase.
    service_hosts: HostTable<()>,
    /// Subset names DestinationRules define, by qualified host.
    subsets: HostTable<BTreeSet<String>>,
    /// `(namespace, labels)` of every declared workload: WorkloadEntries and endpoints.
    workloads: Vec<(String, BTreeMap<String, String>)>,
}

impl<'a> Index<'a> {
    fn new(objects: &[&Object], options: &'a ValidateOptions) -> Index<'a> {
        let mut index = Index {
            options,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
            gateways: HashSet::new(),
            egress_gateways: HashSet::new(),
            original_destination_hosts: HostTable::default(),
            services: HashSet::new(),
            service_hosts: HostTable::default(),
            subsets: HostTable::default(),
            workloads: Vec::new(),
        };
        for object in objects {
            let key = (object.namespace.clone(), object.name().to_owned());
            match &object.spec {
                Spec::Gateway(gateway) => {
                    if gateway.selector.get("istio").map(String::as_str) == Some("egressgateway") {
                        index.egress_gateways.insert(key.clone());
                    }
                    index.gateways.insert(key);
                }
                Spec::ServiceEntry(entry) => {
                    index.services.insert(key);
                    let none = entry.resolution.unwrap_or_default() == Resolution::None;
                    for host in entry.hosts.iter().flatten() {
                        let host = index.qualify(host, &object.namespace);
                        if none {
                            index.original_destination_hosts.insert(host.clone(), ());
                        }
                        index.service_hosts.insert(host, ());
                    }
                    for endpoint in entry.endpoints.iter().flatten() {
                        index
                            .workloads
                            .push((object.namespace.clone(), endpoint.labels.clone()));
                    }
                }
                Spec::WorkloadEntry(entry) => {
                    index
                        .workloads
                        .push((object.namespace.clone(), entry.labels.clone()));
                }
                Spec::DestinationRule(rule) => {
                    if let Some(host) = &rule.host {
                        let host = index.qualify(host, &object.namespace);
                        let names = rule.subsets.iter().filter_map(|s| s.name.clone());
                        index.subsets.entry(host).extend(names);
                    }
                }
                Spec::MeshConfig(mesh) => {
                    if let Some(root) = &mesh.root_namespace {
                        index.root_namespace = root.clone();
                    }
                }
                _ => {}
            }
        }
        index
    }

    fn qualify(&self, host: &str, namespace: &str) -> String {
        hosts::qualify(host, namespace, &self.options.domain_suffix)
    }

    /// Whether a selector matches some declared workload or gateway (an empty one matches all).
    fn selects_declared(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.is_empty()
            || self
                .workloads
                .iter()
                .any(|(_, labels)| is_subset(selector, labels))
            || self
                .options
                .gateway_labels
                .iter()
                .any(|labels| is_subset(selector, labels))
    }
}

/// Values keyed by host, where a key may be a wildcard (`*.example.com`): exact hosts are
/// looked up directly, wildcards scanned (there are few).
#[derive(Default)]
struct HostTable<T> {
    exact: std::collections::HashMap<String, T>,
    wildcards: Vec<(String, T)>,
}

impl<T: Default> HostTable<T> {
    fn entry(&mut self, host: String) -> &mut T {
        let host = host.to_ascii_lowercase();
        if host.starts_with('*') {
            let at = match self.wildcards.iter().position(|(h, _)| *h == host) {
                Some(at) => at,
                None => {
                    self.wildcards.push((host, T::default()));
                    self.wildcards.len() - 1
                }
            };
            &mut self.wildcards[at].1
        } else {
            self.exact.entry(host).or_default()
        }
    }

    fn insert(&mut self, host: String, value: T) {
        *self.entry(host) = value;
    }

    /// Every value whose host covers `host`.
    fn covering<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a T> {
        let host = host.to_ascii_lowercase();
        let exact = self.exact.get(&host);
        let wildcards = self
            .wildcards
            .iter()
            .filter(move |(pattern, _)| hosts::within(&host, pattern))
            .map(|(_, value)| value);
        exact.into_iter().chain(wildcards)
    }
}

fn is_subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Objects of the same kind, namespace and name: the last one read is the one used.
fn duplicates(objects: &[&Object], out: &mut Vec<Finding>) {
    let mut seen: HashMap<(Kind, &str, &str), &Object> = HashMap::new();
    for object in objects {
        if object.name().is_empty() && !matches!(object.kind, Kind::MeshConfig | Kind::MeshNetworks)
        {
            continue;
        }
        let key = (object.kind, object.namespace.as_str(), object.name());
        if let Some(earlier) = seen.insert(key, object) {
            let place = format!("{}:{}", earlier.source.file, earlier.source.position.line);
            Check::new(object, out).warning(
                &FieldPath::ROOT.field("metadata").field("name"),
                "duplicate-name",
                format!("defined again (also at {place}); the one read last is used"),
            );
        }
    }
}

/// The gateways a VirtualService binds to (top level and per match) must exist.
fn gateway_references(check: &mut Check<'_>, vs: &VirtualService, index: &Index<'_>) {
    let namespace = check.object().namespace.clone();
    let spec = FieldPath::ROOT.field("spec");
    let missing = |check: &mut Check<'_>, path: &FieldPath, name: &str| {
        let Some(gateway) = gateway_ref(&namespace, name) else {
            return;
        };
        if !index.gateways.contains(&gateway) {
            let (gateway_namespace, gateway_name) = gateway;
            check.warning(
                path,
                "gateway-not-found",
                format!(
                    "Gateway {gateway_namespace}/{gateway_name} is not defined: this VirtualService \
                     does not bind to any gateway through it"
                ),
            );
        }
    };
    let top = spec.field("gateways");
    for (i, name) in vs.gateways.iter().enumerate() {
        missing(check, &top.index(i), name);
    }
    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        let route_path = http.index(i);
        let matches = route_path.field("match");
        for (j, m) in route.matches.iter().enumerate() {
            let gateways = matches.index(j).field("gateways");
            for (k, name) in m.gateways.iter().enumerate() {
                missing(check, &gateways.index(k), name);
            }
        }
    }
}

/// Every destination's host should be declared, and its subset defined by a DestinationRule.
fn destinations(check: &mut Check<'_>, vs: &VirtualService, index: &Index<'_>) {
    let namespace = check.object().namespace.clone();
    let spec = FieldPath::ROOT.field("spec");
    // Whether a route whose match blocks name these gateways (none: the VirtualService's) is
    // served by an egress gateway.
    let egress = |blocks: Vec<&Vec<String>>| {
        let mut references: Vec<&String> = blocks
            .iter()
            .flat_map(|gateways| {
                if gateways.is_empty() {
                    vs.gateways.iter()
                } else {
                    gateways.iter()
                }
            })
            .collect();
        if blocks.is_empty() {
            references.extend(&vs.gateways);
        }
        references.into_iter().any(|reference| {
            gateway_ref(&namespace, reference)
                .is_some_and(|key| index.egress_gateways.contains(&key))
        })
    };
    let visit = |check: &mut Check<'_>,
                 path: &FieldPath,
                 destination: &Destination,
                 egress: bool| {
        let Some(host) = &destination.host else {
            return;
        };
        let host = index.qualify(host, &namespace);
        if egress
            && index
                .original_destination_hosts
                .covering(&host)
                .next()
                .is_some()
        {
            check.warning(
                &path.field("host"),
                "egress-destination-refused",
                format!(
                    "{host} has resolution NONE: an egress gateway enforces REGISTRY_ONLY and \
                     refuses to forward to the original destination (its own address); declare \
                     the host with resolution DNS or STATIC"
                ),
            );
        }
        if index.service_hosts.covering(&host).next().is_none() {
            check.warning(
                &path.field("host"),
                "host-not-declared",
                format!("no ServiceEntry declares {host}: Strait has no endpoints to send this traffic to"),
            );
        }
        let Some(subset) = &destination.subset else {
            return;
        };
        let defined = index
            .subsets
            .covering(&host)
            .any(|names| names.contains(subset));
        if !defined {
            check.warning(
                &path.field("subset"),
                "subset-not-found",
                format!(
                    "subset {subset:?} of {host} is not defined by any DestinationRule: requests \
                     routed to it fail with 503"
                ),
            );
        }
    };
    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        let at = http.index(i);
        let routes = at.field("route");
        let egress = egress(route.matches.iter().map(|m| &m.gateways).collect());
        for (j, destination) in route.route.iter().enumerate() {
            if let Some(d) = &destination.destination {
                visit(check, &routes.index(j).field("destination"), d, egress);
            }
        }
        if let Some(mirror) = &route.mirror {
            visit(check, &at.field("mirror"), mirror, egress);
        }
        let mirrors = at.field("mirrors");
        for (j, mirror) in route.mirrors.iter().enumerate() {
            if let Some(d) = &mirror.destination {
                visit(check, &mirrors.index(j).field("destination"), d, egress);
            }
        }
    }
    let tls = vs.tls.iter().map(|r| {
        let blocks = r.matches.iter().flatten().map(|m| &m.gateways).collect();
        (&r.route, egress(blocks))
    });
    let tcp = vs.tcp.iter().map(|r| {
        (
            &r.route,
            egress(r.matches.iter().map(|m| &m.gateways).collect()),
        )
    });
    for (field, routes) in [("tls", tls.collect::<Vec<_>>()), ("tcp", tcp.collect())] {
        let list = spec.field(field);
        for (i, (route, egress)) in routes.into_iter().enumerate() {
            let at = list.index(i);
            let at = at.field("route");
            for (j, destination) in route.iter().enumerate() {
                if let Some(d) = &destination.destination {
                    visit(check, &at.index(j).field("destination"), d, egress);
                }
            }
        }
    }
}

/// Two VirtualServices that claim the same host for the same gateway (or the mesh).
fn virtual_service_hosts(objects: &[&Object], index: &Index<'_>, out: &mut Vec<Finding>) {
    let mut claims: HashMap<(String, String), &Object> = HashMap::new();
    for object in objects {
        let Spec::VirtualService(vs) = &object.spec else {
            continue;
        };
        let bindings: Vec<String> = if vs.gateways.is_empty() {
            vec!["mesh".to_owned()]
        } else {
            vs.gateways
                .iter()
                .map(|g| match g.split_once('/') {
                    Some(_) => g.clone(),
                    None if g == "mesh" => g.clone(),
                    None => format!("{}/{g}", object.namespace),
                })
                .collect()
        };
        let hosts_path = FieldPath::ROOT.field("spec").field("hosts");
        for (i, host) in vs.hosts.iter().enumerate() {
            let host = index.qualify(host, &object.namespace).to_ascii_lowercase();
            for binding in &bindings {
                if let Some(other) = claims.insert((binding.clone(), host.clone()), object) {
                    // The same object twice is a duplicate, reported as such.
                    if other.namespace == object.namespace && other.name() == object.name() {
                        continue;
                    }
                    Check::new(object, out).warning(
                        &hosts_path.index(i),
                        "host-conflict",
                        format!(
                            "host {host} on {binding} is also routed by VirtualService {}/{}: which \
                             routes apply first depends on creation order",
                            other.namespace,
                            other.name()
                        ),
                    );
                }
            }
        }
    }
}

/// Several PeerAuthentications (or Sidecars) at the same scope: Istio applies the oldest, and
/// without creation times there is no oldest.
fn policy_conflicts(objects: &[&Object], index: &Index<'_>, kind: Kind, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<String, Vec<&Object>> = BTreeMap::new();
    for object in objects.iter().filter(|o| o.kind == kind) {
        let selector = match &object.spec {
            Spec::PeerAuthentication(pa) => selector_labels(&pa.selector),
            Spec::Sidecar(sidecar) => label_selector_labels(&sidecar.workload_selector),
            _ => continue,
        };
        let scope = match selector {
            None if object.namespace == index.root_namespace => "the whole mesh".to_owned(),
            None => format!("namespace {}", object.namespace),
            Some(labels) => {
                // Workload policies conflict when they select the same declared workload, or have
                // the same selector.
                // Each label set once: workloads with the same labels are one group.
                let selected: BTreeSet<String> = index
                    .workloads
                    .iter()
                    .filter(|(ns, l)| *ns == object.namespace && is_subset(&labels, l))
                    .map(|(_, l)| format_labels(l))
                    .collect();
                for workload in &selected {
                    groups
                        .entry(format!(
                            "workloads {workload} in namespace {}",
                            object.namespace
                        ))
                        .or_default()
                        .push(object);
                }
                if !selected.is_empty() {
                    continue;
                }
                format!(
                    "workloads {} in namespace {}",
                    format_labels(&labels),
                    object.namespace
                )
            }
        };
        groups.entry(scope).or_default().push(object);
    }
    for (scope, mut members) in groups {
        if members.len() < 2 {
            continue;
        }
        members.sort_by(|a, b| {
            (a.namespace.as_str(), a.name()).cmp(&(b.namespace.as_str(), b.name()))
        });
        let times: Vec<Option<&str>> = members
            .iter()
            .map(|o| o.meta.creation_timestamp.as_deref())
            .collect();
        let distinct: BTreeSet<&str> = times.iter().flatten().copied().collect();
        let ordered = times.iter().all(Option::is_some) && distinct.len() == members.len();
        let names: Vec<String> = members
            .iter()
            .map(|o| format!("{}/{}", o.namespace, o.name()))
            .collect();
        for object in &members {
            let mut check = Check::new(object, out);
            let path = FieldPath::ROOT.field("metadata").field("name");
            if ordered {
                // RFC 3339 timestamps in UTC order as text.
                let oldest = members
                    .iter()
                    .min_by_key(|o| o.meta.creation_timestamp.clone())
                    .map(|o| format!("{}/{}", o.namespace, o.name()))
                    .unwrap_or_default();
                check.info(
                    &path,
                    "policy-conflict",
                    format!(
                        "{kind}s {} all apply to {scope}; the oldest, {oldest}, is used",
                        names.join(", ")
                    ),
                );
            } else {
                check.warning(
                    &path,
                    "policy-conflict",
                    format!(
                        "{kind}s {} all apply to {scope} and have no creation times to order them; \
                         Strait uses {} (the first by name) and ignores the others",
                        names.join(", "),
                        names.first().cloned().unwrap_or_default()
                    ),
                );
            }
        }
    }
}

fn selector_labels(selector: &Option<WorkloadSelector>) -> Option<BTreeMap<String, String>> {
    selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .filter(|l| !l.is_empty())
}

fn label_selector_labels(selector: &Option<LabelSelector>) -> Option<BTreeMap<String, String>> {
    selector
        .as_ref()
        .map(|s| s.labels.clone())
        .filter(|l| !l.is_empty())
}

/// `namespaces: [payments]` matches `ns/payments` under every trust domain, so once clusters are
/// federated (or trust domains aliased) an ALLOW admits `west.mesh/ns/payments/...` as well, a
/// DENY refuses it too, and a DENY's `notNamespaces` exempts it. Istio's behaviour is kept;
/// each is a warning.
fn namespaces_rules(check: &mut Check<'_>, policy: &AuthorizationPolicy) {
    let deny = policy.action.unwrap_or_default() == AuthorizationAction::Deny;
    let rules = FieldPath::ROOT.field("spec").field("rules");
    for (i, rule) in policy.rules.iter().flatten().enumerate() {
        let rule_path = rules.index(i);
        let from = rule_path.field("from");
        for (j, entry) in rule.from.iter().enumerate() {
            let Some(source) = &entry.source else {
                continue;
            };
            if is_set(&source.principals) || is_set(&source.trust_domains) {
                // The trust domain is pinned by the principals or named outright.
                continue;
            }
            let at = from.index(j).field("source");
            if let Some(example) = source.namespaces.as_ref().and_then(|n| n.first()) {
                let effect = if deny {
                    format!(
                        "this DENY also refuses callers such as spiffe://west.mesh/ns/{example}/sa/..."
                    )
                } else {
                    format!(
                        "callers such as spiffe://west.mesh/ns/{example}/sa/... are admitted too"
                    )
                };
                check.warning(
                    &at.field("namespaces"),
                    "namespaces-any-trust-domain",
                    format!(
                        "namespaces match the namespace under every trust domain: with federated \
                         clusters or trustDomainAliases, {effect}; pin the trust domain with \
                         principals (cluster.local/ns/{example}/sa/*) or trustDomains"
                    ),
                );
            }
            if deny && let Some(example) = source.not_namespaces.as_ref().and_then(|n| n.first()) {
                check.warning(
                    &at.field("notNamespaces"),
                    "namespaces-any-trust-domain",
                    format!(
                        "notNamespaces match the namespace under every trust domain: with \
                         federated clusters or trustDomainAliases, callers such as \
                         spiffe://west.mesh/ns/{example}/sa/... are exempt from this DENY too; \
                         pin the trust domain with notPrincipals (cluster.local/ns/{example}/sa/*) \
                         or trustDomains"
                    ),
                );
            }
        }
    }
}
