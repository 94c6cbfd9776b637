//! Locality load balancing: each endpoint's priority tier, as Istio maps `localityLbSetting`
//! onto Envoy's priorities for the proxy's own locality, network and labels.
//!
//! Istio's rules: the DestinationRule's `localityLbSetting` replaces the mesh's whole, and the
//! mesh's is enabled by default. Failover tiers apply only when the destination has outlier
//! detection (nothing else tells a tier it is unhealthy); without it every endpoint is in one
//! tier and traffic spreads by weight, across networks too. With `failoverPriority`, an endpoint
//! matching more leading labels of the proxy's is preferred; otherwise the tier is how much of
//! the proxy's region/zone/subzone the endpoint shares (0 all, 1 region and zone, 2 region,
//! 3 none), and `failover` (from region -> to region) sends a region's traffic only to the
//! region named before any other (4). Tiers are numbered from 0 without gaps. `distribute`
//! instead sets weights by locality (and excludes failover, as in Istio).

use std::collections::{BTreeMap, BTreeSet};

use strait_proxy::snapshot::Endpoint;

use super::networks::NETWORK_LABEL;
use crate::resources::destination_rule::{LocalityFailover, LocalityLoadBalancerSetting};

/// Istio's labels an endpoint's and the proxy's locality stand for in `failoverPriority`.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// What the proxy knows of itself that locality load balancing compares endpoints with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client<'a> {
    /// `region/zone/subzone` (`--locality`), any depth.
    pub locality: Option<&'a str>,
    /// `--network`.
    pub network: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
}

/// A `region/zone/subzone` locality, missing parts empty.
#[derive(Debug, Default, PartialEq, Eq)]
struct Locality<'a> {
    region: &'a str,
    zone: &'a str,
    subzone: &'a str,
}

impl<'a> Locality<'a> {
    fn parse(locality: Option<&'a str>) -> Locality<'a> {
        let mut parts = locality.unwrap_or_default().splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    }
}

/// Sets the priority of each of a cluster's `endpoints`, or with `distribute` their weights
/// (leaving out those of localities it gives no traffic). `rule` is the DestinationRule's
/// setting, `mesh` MeshConfig's (neither: enabled); `outlier_detection` whether the destination
/// has outlier detection. Returns what could not be applied.
pub(crate) fn assign_priorities(
    endpoints: &mut Vec<Endpoint>,
    rule: Option<&LocalityLoadBalancerSetting>,
    mesh: Option<&LocalityLoadBalancerSetting>,
    outlier_detection: bool,
    client: Client<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for endpoint in endpoints.iter_mut() {
        endpoint.priority = 0;
    }
    let default = LocalityLoadBalancerSetting::default();
    let setting = rule.or(mesh).unwrap_or(&default);
    if setting.enabled == Some(false) {
        return problems;
    }
    // Istio ignores a rule's failover settings silently without outlier detection; say so.
    if rule.is_some()
        && !outlier_detection
        && setting.distribute.is_empty()
        && (!setting.failover.is_empty() || !setting.failover_priority.is_empty())
    {
        problems.push(
            "localityLbSetting failover has no effect without outlierDetection (nothing tells a tier it is unhealthy): one tier"
                .to_owned(),
        );
    }
    let own = Locality::parse(client.locality);
    if !setting.distribute.is_empty() {
        // As Istio: `distribute` excludes failover, with or without outlier detection.
        let before = endpoints.len();
        distribute(endpoints, &own, setting);
        let dropped = before - endpoints.len();
        if dropped > 0 {
            problems.push(format!(
                "{dropped} endpoint(s) are left out: localityLbSetting.distribute gives their localities no traffic"
            ));
        }
        return problems;
    }
    if !outlier_detection {
        return problems;
    }
    let mut priorities: Vec<u32> = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints.iter() {
        let by_labels = if setting.failover_priority.is_empty() {
            0
        } else {
            label_priority(endpoint, &setting.failover_priority, client)
        };
        let by_locality = if setting.failover_priority.is_empty() || !setting.failover.is_empty() {
            locality_priority(&own, endpoint.locality.as_deref(), &setting.failover)
        } else {
            0
        };
        // As Istio: at most five locality tiers within each label tier.
        priorities.push(by_labels * 5 + by_locality);
    }
    let dense: BTreeSet<u32> = priorities.iter().copied().collect();
    let rank: BTreeMap<u32, u32> = dense.into_iter().zip(0..).collect();
    for (endpoint, priority) in endpoints.iter_mut().zip(priorities) {
        endpoint.priority = rank.get(&priority).copied().unwrap_or_default();
    }
    problems
}

/// Scales each endpoint's weight so that the endpoints of each `to` locality of the first
/// `distribute` entry whose `from` matches the proxy's locality share its percent (in
/// proportion to their weights); endpoints in no `to` locality get no traffic and are left out.
/// Nothing changes when no entry is for the proxy's locality.
fn distribute(
    endpoints: &mut Vec<Endpoint>,
    own: &Locality<'_>,
    setting: &LocalityLoadBalancerSetting,
) {
    /// Weights are scaled by this, so that a percent split over many endpoints stays whole.
    const SCALE: u64 = 1_000;
    let Some(rule) = setting
        .distribute
        .iter()
        .find(|d| d.from.as_deref().is_some_and(|from| matches(own, from)))
    else {
        return;
    };
    let mut weights: Vec<Option<u32>> = vec![None; endpoints.len()];
    for (pattern, &percent) in &rule.to {
        let members: Vec<usize> = (0..endpoints.len())
            .filter(|&i| weights.get(i).is_some_and(Option::is_none))
            .filter(|&i| {
                endpoints
                    .get(i)
                    .is_some_and(|e| matches(&Locality::parse(e.locality.as_deref()), pattern))
            })
            .collect();
        let total: u64 = members
            .iter()
            .filter_map(|&i| endpoints.get(i))
            .map(|e| u64::from(e.weight.max(1)))
            .sum();
        for &i in &members {
            let (Some(endpoint), Some(slot)) = (endpoints.get(i), weights.get_mut(i)) else {
                continue;
            };
            let share = (u64::from(percent) * u64::from(endpoint.weight.max(1)) * SCALE)
                .checked_div(total)
                .unwrap_or(0);
            *slot = Some(u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    let mut kept = Vec::with_capacity(endpoints.len());
    for (mut endpoint, weight) in endpoints.drain(..).zip(weights) {
        match weight {
            Some(weight) if weight > 0 => {
                endpoint.weight = weight;
                kept.push(endpoint);
            }
            _ => {}
        }
    }
    *endpoints = kept;
}

/// Whether `locality` is in `pattern` (`region/zone/subzone`, `*` for any part, missing zone
/// or subzone for any), as Istio matches `distribute` localities.
fn matches(locality: &Locality<'_>, pattern: &str) -> bool {
    let rule = Locality::parse(Some(pattern));
    let part = |rule: &str, value: &str, optional: bool| {
        rule == "*" || (optional && rule.is_empty()) || rule == value
    };
    part(rule.region, locality.region, false)
        && part(rule.zone, locality.zone, true)
        && part(rule.subzone, locality.subzone, true)
}

/// The locality tier: 0 when region, zone and subzone match the proxy's, 1 region and zone,
/// 2 region, 3 none; 4 for another region than the one `failover` names for the proxy's.
fn locality_priority(
    own: &Locality<'_>,
    endpoint: Option<&str>,
    failover: &[LocalityFailover],
) -> u32 {
    let theirs = Locality::parse(endpoint);
    if theirs.region == own.region {
        if theirs.zone == own.zone {
            return if theirs.subzone == own.subzone { 0 } else { 1 };
        }
        return 2;
    }
    match failover
        .iter()
        .find(|f| f.from.as_deref() == Some(own.region))
    {
        Some(rule) if rule.to.as_deref() != Some(theirs.region) => 4,
        _ => 3,
    }
}

/// The label tier from `failoverPriority`: with N labels, 0 when the endpoint matches all N,
/// 1 the first N-1, ..., N none. A `key=value` entry compares with the value given instead of
/// the proxy's; a label the proxy lacks matches nothing from there on.
fn label_priority(endpoint: &Endpoint, labels: &[String], client: Client<'_>) -> u32 {
    let own = Locality::parse(client.locality);
    let theirs = Locality::parse(endpoint.locality.as_deref());
    let mut matched = 0u32;
    for entry in labels {
        let (key, wanted) = match entry.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (entry.as_str(), None),
        };
        let wanted = wanted.or_else(|| match key {
            NETWORK_LABEL => client.network,
            REGION_LABEL => Some(own.region).filter(|r| !r.is_empty()),
            ZONE_LABEL => Some(own.zone).filter(|z| !z.is_empty()),
            SUBZONE_LABEL => Some(own.subzone).filter(|s| !s.is_empty()),
            _ => client.labels.get(key).map(String::as_str),
        });
        let Some(wanted) = wanted else { break };
        let value = match key {
            // Endpoints of this proxy's network carry no network label; a gateway standing in
            // for another network's does.
            NETWORK_LABEL => endpoint
                .labels
                .get(key)
                .map(String::as_str)
                .or(client.network),
            REGION_LABEL => Some(theirs.region),
            ZONE_LABEL => Some(theirs.zone),
            SUBZONE_LABEL => Some(theirs.subzone),
            _ => endpoint.labels.get(key).map(String::as_str),
        };
        if value != Some(wanted) {
            break;
        }
        matched += 1;
    }
    u32::try_from(labels.len())
        .unwrap_or(u32::MAX)
        .saturating_sub(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16, locality: Option<&str>, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            address: ([10, 0, 0, 1], port).into(),
            weight: 1,
            locality: locality.map(str::to_owned),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dns_name: None,
            network_gateway: None,
            priority: 9,
        }
    }

    fn priorities(endpoints: &[Endpoint]) -> Vec<u32> {
        endpoints.iter().map(|e| e.priority).collect()
    }

    fn client<'a>(labels: &'a BTreeMap<String, String>) -> Client<'a> {
        Client {
            locality: Some("us-east/a/1"),
            network: Some("net-1"),
            labels,
        }
    }

    fn localities() -> Vec<Endpoint> {
        vec![
            endpoint(1, Some("us-east/a/1"), &[]),
            endpoint(2, Some("us-east/a/2"), &[]),
            endpoint(3, Some("us-east/b"), &[]),
            endpoint(4, Some("us-west/a/1"), &[]),
            endpoint(5, Some("eu-west/a"), &[]),
            endpoint(6, None, &[]),
        ]
    }

    #[test]
    fn without_outlier_detection_everything_is_one_tier() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        let problems = assign_priorities(&mut endpoints, None, None, false, client(&labels));
        assert!(problems.is_empty());
        assert_eq!(priorities(&endpoints), [0; 6]);
    }

    #[test]
    fn with_outlier_detection_tiers_follow_the_shared_locality() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        assign_priorities(&mut endpoints, None, None, true, client(&labels));
        // subzone, zone, region, elsewhere (twice), and no locality counts as elsewhere.
        assert_eq!(priorities(&endpoints), [0, 1, 2, 3, 3, 3]);
    }

    #[test]
    fn failover_without_outlier_detection_is_one_tier_and_a_finding() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        let setting = LocalityLoadBalancerSetting {
            failover_priority: vec![REGION_LABEL.to_owned()],
            ..Default::default()
        };
        let problems =
            assign_priorities(&mut endpoints, Some(&setting), None, false, client(&labels));
        assert_eq!(priorities(&endpoints), [0; 6]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The mesh's failover settings apply to every destination: no finding for each.
        let problems =
            assign_priorities(&mut endpoints, None, Some(&setting), false, client(&labels));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn disabled_locality_lb_is_one_tier_even_with_outlier_detection() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        let setting = LocalityLoadBalancerSetting {
            enabled: Some(false),
            ..Default::default()
        };
        assign_priorities(&mut endpoints, Some(&setting), None, true, client(&labels));
        assert_eq!(priorities(&endpoints), [0; 6]);
    }

    #[test]
    fn failover_names_the_region_to_try_first() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        let setting = LocalityLoadBalancerSetting {
            failover: vec![LocalityFailover {
                from: Some("us-east".to_owned()),
                to: Some("eu-west".to_owned()),
            }],
            ..Default::default()
        };
        assign_priorities(&mut endpoints, Some(&setting), None, true, client(&labels));
        // eu-west before us-west and the locality-less endpoint.
        assert_eq!(priorities(&endpoints), [0, 1, 2, 4, 3, 4]);
    }

    #[test]
    fn failover_priority_prefers_more_leading_labels() {
        let labels = BTreeMap::from([("version".to_owned(), "v1".to_owned())]);
        let mut endpoints = vec![
            endpoint(1, None, &[("version", "v1")]),
            endpoint(2, None, &[("version", "v1"), (NETWORK_LABEL, "net-2")]),
            endpoint(3, None, &[("version", "v2")]),
            endpoint(4, None, &[("version", "v2"), (NETWORK_LABEL, "net-2")]),
        ];
        let setting = LocalityLoadBalancerSetting {
            failover_priority: vec![NETWORK_LABEL.to_owned(), "version".to_owned()],
            ..Default::default()
        };
        assign_priorities(&mut endpoints, Some(&setting), None, true, client(&labels));
        // Own network and version; own network; another network (version not compared).
        assert_eq!(priorities(&endpoints), [0, 2, 1, 2]);
    }

    #[test]
    fn failover_priority_with_a_value_and_locality_labels() {
        let labels = BTreeMap::new();
        let mut endpoints = vec![
            endpoint(1, Some("us-east/a"), &[("tier", "gold")]),
            endpoint(2, Some("us-west/a"), &[("tier", "gold")]),
            endpoint(3, Some("us-east/b"), &[("tier", "silver")]),
        ];
        let setting = LocalityLoadBalancerSetting {
            failover_priority: vec!["tier=gold".to_owned(), REGION_LABEL.to_owned()],
            ..Default::default()
        };
        assign_priorities(&mut endpoints, Some(&setting), None, true, client(&labels));
        assert_eq!(priorities(&endpoints), [0, 1, 2]);
    }

    fn distribution(from: &str, to: &[(&str, u32)]) -> LocalityLoadBalancerSetting {
        LocalityLoadBalancerSetting {
            distribute: vec![crate::resources::destination_rule::LocalityDistribute {
                from: Some(from.to_owned()),
                to: to.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            }],
            ..Default::default()
        }
    }

    fn weights(endpoints: &[Endpoint]) -> Vec<(u16, u32)> {
        endpoints
            .iter()
            .map(|e| (e.address.port(), e.weight))
            .collect()
    }

    #[test]
    fn distribute_splits_traffic_by_locality_and_drops_the_rest() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        endpoints[2].weight = 3;
        // us-east/* matches ports 1, 2 (weight 1 each) and 3 (weight 3): 80% split 1:1:3.
        let setting = distribution("us-east/a/*", &[("us-east/*", 80), ("us-west", 20)]);
        let problems =
            assign_priorities(&mut endpoints, Some(&setting), None, true, client(&labels));
        assert_eq!(
            problems,
            [
                "2 endpoint(s) are left out: localityLbSetting.distribute gives their localities no traffic"
            ]
        );
        assert_eq!(
            weights(&endpoints),
            [(1, 16_000), (2, 16_000), (3, 48_000), (4, 20_000)],
            "eu-west and the locality-less endpoint get nothing"
        );
        assert_eq!(
            priorities(&endpoints),
            [0; 4],
            "no failover tiers with distribute"
        );
    }

    #[test]
    fn distribute_for_another_locality_changes_nothing() {
        let labels = BTreeMap::new();
        let mut endpoints = localities();
        let setting = distribution("us-west/*", &[("us-west/*", 100)]);
        assign_priorities(&mut endpoints, Some(&setting), None, false, client(&labels));
        let mut expected = localities();
        for endpoint in &mut expected {
            endpoint.priority = 0;
        }
        assert_eq!(endpoints, expected);
    }

    /// Compiles an ingress gateway in `us-east/a` routing to `api`, whose endpoints are in
    /// us-east/a, us-east/b and us-west/a, with `rule` (the DestinationRule's `trafficPolicy`
    /// lines) and `mesh` (a MeshConfig, may be empty); the endpoints' priorities in that order
    /// and the findings.
    fn compiled(rule: &str, mesh: &str) -> (Vec<u32>, Vec<String>) {
        let endpoints = "  - {address: 10.0.0.1, locality: us-east/a}\n  - {address: 10.0.0.2, locality: us-east/b}\n  - {address: 10.0.0.3, locality: us-west/a}\n";
        let (endpoints, findings) = compiled_with(endpoints, rule, mesh, None);
        (priorities(&endpoints), findings)
    }

    /// [`compiled`] with `endpoints` (the ServiceEntry's, block YAML) and the gateway on
    /// `network`; the cluster's endpoints and the findings. `mesh` may hold MeshNetworks too.
    fn compiled_with(
        endpoints: &str,
        rule: &str,
        mesh: &str,
        network: Option<&str>,
    ) -> (Vec<Endpoint>, Vec<String>) {
        use crate::compile::{GatewayOptions, compile_gateway};

        let config = format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http: [{{route: [{{destination: {{host: api, port: {{number: 8080}}}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.default.svc.cluster.local]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api
  trafficPolicy:
{rule}"#
        );
        let mut files = vec![("test.yaml", config.as_str())];
        if !mesh.is_empty() {
            files.push(("mesh.yaml", mesh));
        }
        let loaded = crate::resources::load_clean(&files);
        let options = GatewayOptions {
            locality: Some("us-east/a".to_owned()),
            network: network.map(str::to_owned),
            ..GatewayOptions::default()
        };
        let compiled = compile_gateway(&loaded.objects, &options, 1);
        let cluster = &compiled.snapshot.clusters["outbound|8080||api.default.svc.cluster.local"];
        (
            cluster.endpoints.clone(),
            compiled
                .findings
                .iter()
                .map(|f| f.message.clone())
                .collect(),
        )
    }

    const OUTLIER: &str = "    outlierDetection: {consecutive5xxErrors: 3}\n";

    #[test]
    fn compiled_clusters_get_tiers_only_with_outlier_detection() {
        let (tiers, _) = compiled("    loadBalancer: {simple: ROUND_ROBIN}\n", "");
        assert_eq!(tiers, [0, 0, 0]);
        let (tiers, _) = compiled(OUTLIER, "");
        assert_eq!(tiers, [0, 1, 2], "the mesh default enables locality LB");
    }

    #[test]
    fn the_destination_rules_setting_replaces_the_meshs() {
        let off = "localityLbSetting: {enabled: false}\n";
        let (tiers, _) = compiled(OUTLIER, off);
        assert_eq!(tiers, [0, 0, 0], "disabled mesh-wide");
        let on = format!("{OUTLIER}    loadBalancer: {{localityLbSetting: {{enabled: true}}}}\n");
        let (tiers, _) = compiled(&on, off);
        assert_eq!(tiers, [0, 1, 2], "enabled again by the rule");
    }

    #[test]
    fn compiled_distribute_keeps_the_localities_it_names() {
        let rule = format!(
            "{OUTLIER}    loadBalancer: {{localityLbSetting: {{distribute: [{{from: us-east/*, to: {{us-east/*: 100}}}}]}}}}\n"
        );
        let (tiers, findings) = compiled(&rule, "");
        assert_eq!(tiers, [0, 0], "us-west is left out");
        assert!(
            findings
                .iter()
                .any(|f| f.contains("1 endpoint(s) are left out")),
            "{findings:?}"
        );
    }

    #[test]
    fn a_network_s_gateways_in_the_proxy_s_locality_come_first() {
        // How a sidecar prefers the local east-west gateway's trunk ingress to the peer's
        // gateway and falls back to it: the gateways' localities put them in two tiers.
        let networks = "networks:\n  west:\n    endpoints: [{fromCidr: 10.2.0.0/16}]\n    gateways:\n    - {address: 10.1.0.100, port: 15444, locality: us-east/a}\n    - {address: 192.0.2.10, port: 15443, locality: us-west/a}\n";
        let endpoints = "  - {address: 10.2.0.7}\n  - {address: 10.2.0.8}\n";
        let tiers = |rule: &str| -> Vec<(String, u32)> {
            let (list, _) = compiled_with(endpoints, rule, networks, Some("east"));
            list.iter()
                .map(|e| (e.address.to_string(), e.priority))
                .collect()
        };
        let gateways = |first: u32, second: u32| {
            vec![
                ("10.1.0.100:15444".to_owned(), first),
                ("192.0.2.10:15443".to_owned(), second),
            ]
        };
        assert_eq!(tiers(OUTLIER), gateways(0, 1));
        assert_eq!(
            tiers("    loadBalancer: {simple: ROUND_ROBIN}\n"),
            gateways(0, 0),
            "without outlier detection both share the traffic"
        );
    }

    #[test]
    fn failover_priority_by_network_prefers_this_network_to_other_networks_gateways() {
        let networks = "networks:\n  west:\n    endpoints: [{fromCidr: 10.2.0.0/16}]\n    gateways: [{address: 192.0.2.10, port: 15443}]\n";
        let endpoints =
            "  - {address: 10.1.0.7}\n  - {address: 10.2.0.7}\n  - {address: 10.2.0.8}\n";
        let summary = |endpoints: &[Endpoint]| -> Vec<(String, u32, u32)> {
            endpoints
                .iter()
                .map(|e| (e.address.to_string(), e.weight, e.priority))
                .collect()
        };
        // Without outlier detection: one tier, the gateway weighted by the two endpoints behind it.
        let (list, _) = compiled_with(
            endpoints,
            "    loadBalancer: {simple: ROUND_ROBIN}\n",
            networks,
            Some("east"),
        );
        assert_eq!(
            summary(&list),
            [
                ("10.1.0.7:8080".to_owned(), 1, 0),
                ("192.0.2.10:15443".to_owned(), 2, 0)
            ]
        );
        let rule = format!(
            "{OUTLIER}    loadBalancer: {{localityLbSetting: {{failoverPriority: [{NETWORK_LABEL}]}}}}\n"
        );
        let (list, findings) = compiled_with(endpoints, &rule, networks, Some("east"));
        assert_eq!(
            summary(&list),
            [
                ("10.1.0.7:8080".to_owned(), 1, 0),
                ("192.0.2.10:15443".to_owned(), 2, 1)
            ],
            "{findings:?}"
        );
    }
}
