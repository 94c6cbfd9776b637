//! Clusters: for each destination a route names (host, port, subset), the endpoints from the
//! registry and the traffic policy from its DestinationRule, named `outbound|PORT|SUBSET|HOST`.
//!
//! Policy precedence follows Istio: a `portLevelSettings` entry replaces the destination-level
//! policy for its port; a subset's policy overrides field by field and inherits the rest,
//! except that a subset's own `portLevelSettings` entry replaces everything for its port.

use std::time::Duration;

use strait_proxy::snapshot::{
    Cluster, ConsistentHash, Endpoint, HashKey, HashPolicy, LbPolicy, MtlsMode,
    OutlierDetection as ProxyOutlier, PoolLimits, TcpKeepalive as ProxyKeepalive, UpstreamProtocol,
    UpstreamTls,
};

use super::Compiler;
use super::credentials;
use super::locality;
use super::registry::{DNS_PREFIX, EndpointInfo, Service};
use crate::resources::common::Protocol;
use crate::resources::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    H2UpgradePolicy, LoadBalancerSettings, OutlierDetection, SimpleLb, Subset, TrafficPolicy,
};

/// Istio's cluster name for a destination.
pub(crate) fn cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or_default())
}

/// The parts of a traffic policy that apply to one cluster.
#[derive(Debug, Default, Clone)]
pub(super) struct Policy<'a> {
    load_balancer: Option<&'a LoadBalancerSettings>,
    connection_pool: Option<&'a ConnectionPoolSettings>,
    outlier_detection: Option<&'a OutlierDetection>,
    tls: Option<&'a ClientTlsSettings>,
    /// Whether this is a `portLevelSettings` entry (which inherits nothing).
    port_level: bool,
}

impl<'a> Policy<'a> {
    /// The policy of `traffic` for `port`: its port-level entry if it has one, else its own.
    fn of(traffic: &'a TrafficPolicy, port: u32) -> Policy<'a> {
        match traffic
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
        {
            Some(level) => Policy {
                load_balancer: level.load_balancer.as_ref(),
                connection_pool: level.connection_pool.as_ref(),
                outlier_detection: level.outlier_detection.as_ref(),
                tls: level.tls.as_ref(),
                port_level: true,
            },
            None => Policy {
                load_balancer: traffic.load_balancer.as_ref(),
                connection_pool: traffic.connection_pool.as_ref(),
                outlier_detection: traffic.outlier_detection.as_ref(),
                tls: traffic.tls.as_ref(),
                port_level: false,
            },
        }
    }

    /// A subset's policy over this one: field by field, unless the subset's is port-level.
    fn overridden_by(self, subset: Policy<'a>) -> Policy<'a> {
        if subset.port_level {
            return subset;
        }
        Policy {
            load_balancer: subset.load_balancer.or(self.load_balancer),
            connection_pool: subset.connection_pool.or(self.connection_pool),
            outlier_detection: subset.outlier_detection.or(self.outlier_detection),
            tls: subset.tls.or(self.tls),
            port_level: self.port_level,
        }
    }
}

impl<'a> Compiler<'a> {
    /// Builds (once) the cluster for `host:port` and `subset`, as the client in `namespace` sees
    /// it; returns its name, or `None` (with a finding) when no service declares the host.
    pub(crate) fn cluster(
        &mut self,
        host: &str,
        port: Option<u32>,
        subset: Option<&str>,
        namespace: &str,
    ) -> Option<String> {
        let missing = cluster_name(port.unwrap_or_default(), subset, host);
        let Some(service) = self.registry.service(host) else {
            let why = match self.options.egress {
                Some(_) => {
                    format!("REGISTRY_ONLY at the egress gateway: no ServiceEntry declares {host}")
                }
                None => format!("no ServiceEntry declares {host}"),
            };
            self.problem(format!(
                "{why}: requests routed there get 503 (NC, no cluster)"
            ));
            self.missing_clusters.insert(missing, why);
            return None;
        };
        let Some(service_port) = service.port(port).cloned() else {
            let why = match port {
                Some(port) => format!("{host} has no port {port}"),
                None => format!("{host} has several ports: the destination must name one"),
            };
            self.problem(why.clone());
            self.missing_clusters.insert(missing, why);
            return None;
        };
        let number = service_port.number.unwrap_or_default();
        let name = cluster_name(number, subset, host);
        if self.clusters.contains_key(&name) {
            return Some(name);
        }
        let (subset_spec, policy) = self.destination_policy(host, number, subset, namespace);
        let mut problems = Vec::new();
        let found = self
            .registry
            .endpoints(service, &service_port, subset_spec, &mut problems);
        // Names the DNS cache has no addresses for are not configuration problems: they are
        // the cluster's reason to be empty.
        let (dns_waits, problems): (Vec<String>, Vec<String>) = problems
            .into_iter()
            .partition(|p| p.starts_with(DNS_PREFIX));
        let dns_waits: Vec<String> = dns_waits
            .into_iter()
            .map(|p| p.trim_start_matches(DNS_PREFIX).to_owned())
            .collect();
        let meshed = found.iter().filter(|e| is_meshed(&e.labels)).count();
        // The destination's PeerAuthentication matters only where auto-mTLS could apply.
        let auto_mtls_applies = policy.tls.is_none()
            && self.options.mesh_identity
            && self.registry.mesh.auto_mtls
            && meshed > 0;
        let mesh = MeshDestination {
            sni: format!("outbound_.{number}_.{}_.{host}", subset.unwrap_or_default()),
            subject_alt_names: self.mesh_names(service, &found),
            meshed,
            total: found.len(),
            peer_authentication: if auto_mtls_applies {
                self.destination_mtls(service, &service_port, &found)
            } else {
                None
            },
        };
        // What every endpoint agrees on describes the destination in the metrics.
        let agreed = |name: &str| {
            let mut values = found.iter().map(|e| e.labels.get(name));
            let first = values.next().flatten()?;
            values.all(|v| v == Some(first)).then(|| first.clone())
        };
        let mut telemetry = service_telemetry(host, service);
        for (label, value) in [
            ("destination_app", agreed("app")),
            ("destination_version", agreed("version")),
        ] {
            if let Some(value) = value {
                telemetry.push((label.to_owned(), value));
            }
        }
        if let [principal] = mesh.subject_alt_names.as_slice() {
            telemetry.push(("destination_principal".to_owned(), principal.clone()));
            telemetry.push((
                "destination_workload_namespace".to_owned(),
                service.object.namespace.clone(),
            ));
        }
        // Endpoints on other networks are reached through their networks' gateways; those of
        // a network without one cannot be reached.
        let mut unreachable = Vec::new();
        let mut endpoints: Vec<Endpoint> = self.registry.networks.split_horizon(
            found,
            self.options.network.as_deref(),
            &mut unreachable,
        );
        let locality_lb = policy
            .load_balancer
            .and_then(|lb| lb.locality_lb_setting.as_ref());
        let client = locality::Client {
            locality: self.options.locality.as_deref(),
            network: self.options.network.as_deref(),
            labels: &self.options.labels,
        };
        for problem in locality::assign_priorities(
            &mut endpoints,
            locality_lb,
            self.registry.mesh.locality_lb.as_ref(),
            policy.outlier_detection.is_some(),
            client,
        ) {
            self.problem(format!("{host}: {problem}"));
        }
        for problem in problems.iter().chain(&unreachable) {
            self.problem(format!("{host}: {problem}"));
        }
        let protocol = upstream_protocol(service_port.declared_protocol(), policy.connection_pool);
        let tls = match policy.tls {
            Some(tls) if tls.mode == Some(ClientTlsMode::IstioMutual) => {
                // `sni` replaces Istio's `outbound_.PORT_.SUBSET_.HOST`, as an egress gateway's
                // ISTIO_MUTUAL server chooses its filter chain by the external host's name.
                let sni = tls.sni.clone();
                mesh.istio_mutual(sni)
            }
            Some(tls) => self.upstream_tls(tls, host, &service.entry.subject_alt_names),
            None => self.auto_mtls(host, mesh),
        };
        if matches!(tls, UpstreamTls::IstioMutual { .. }) && !self.options.mesh_identity {
            let why = format!(
                "{host}: ISTIO_MUTUAL needs a mesh identity, which this proxy does not have"
            );
            self.problem(format!(
                "{why}; requests routed there get 503 (NC, no cluster)"
            ));
            self.missing_clusters.insert(name, why);
            return None;
        }
        // Settings TLS cannot be originated with leave the cluster out (requests routed there
        // get 503 NC with the reason) rather than keep the whole configuration from installing.
        if let Err(error) = strait_proxy::tls::upstream::check(&tls) {
            let why = format!("{host}: TLS origination cannot be set up: {error}");
            self.problem(format!(
                "{why}; requests routed there get 503 (NC, no cluster)"
            ));
            self.missing_clusters.insert(name, why);
            return None;
        }
        let (lb, original_destination) = lb_policy(policy.load_balancer);
        if let Some(why) = self.egress_refusal(host, service, &endpoints, original_destination) {
            self.problem(format!(
                "{why}; requests routed there get 503 (NC, no cluster)"
            ));
            self.missing_clusters.insert(name, why);
            return None;
        }
        // A cluster whose DNS names have no addresses (yet, or any more), or whose endpoints
        // are all on unreachable networks, says why.
        let why_empty: Vec<String> = dns_waits.into_iter().chain(unreachable).collect();
        let empty_reason =
            (endpoints.is_empty() && !why_empty.is_empty()).then(|| why_empty.join("; "));
        let cluster = Cluster {
            name: name.clone(),
            lb,
            connect_timeout: policy
                .connection_pool
                .and_then(|p| p.tcp.as_ref())
                .and_then(|t| t.connect_timeout.as_ref())
                .and_then(|d| d.value)
                .unwrap_or(self.registry.mesh.connect_timeout),
            pool: pool_limits(policy.connection_pool),
            outlier: policy.outlier_detection.map(outlier),
            tls,
            protocol,
            endpoints,
            original_destination,
            upstream_bind: None,
            telemetry,
            empty_reason,
        };
        self.clusters
            .insert(name.clone(), std::sync::Arc::new(cluster));
        Some(name)
    }

    /// The DestinationRule subset `subset` of `host` (as a client in `namespace` sees it) and
    /// the traffic policy for port `number`: the rule's, its port-level entry's, the subset's
    /// over it.
    pub(super) fn destination_policy(
        &mut self,
        host: &str,
        number: u32,
        subset: Option<&str>,
        namespace: &str,
    ) -> (Option<&'a Subset>, Policy<'a>) {
        let rule = self.registry.destination_rule(host, namespace);
        let rule_spec: Option<&'a DestinationRule> = rule.map(|(_, r)| r);
        let subset_spec = match (subset, rule_spec) {
            (None, _) => None,
            (Some(wanted), Some(rule)) => {
                let found = rule
                    .subsets
                    .iter()
                    .find(|s| s.name.as_deref() == Some(wanted));
                if found.is_none() {
                    self.problem(format!(
                        "subset {wanted:?} of {host} is not defined by a DestinationRule"
                    ));
                }
                found
            }
            (Some(wanted), None) => {
                self.problem(format!(
                    "subset {wanted:?} of {host}: no DestinationRule for the host"
                ));
                None
            }
        };
        let mut policy = rule_spec
            .and_then(|r| r.traffic_policy.as_ref())
            .map(|t| Policy::of(t, number))
            .unwrap_or_default();
        if let Some(subset_policy) = subset_spec.and_then(|s| s.traffic_policy.as_ref()) {
            policy = policy.overridden_by(Policy::of(subset_policy, number));
        }
        (subset_spec, policy)
    }

    fn upstream_tls(
        &mut self,
        tls: &ClientTlsSettings,
        host: &str,
        entry_names: &[String],
    ) -> UpstreamTls {
        let sni = Some(tls.sni.clone().unwrap_or_else(|| host.to_owned()));
        let subject_alt_names = if tls.subject_alt_names.is_empty() {
            entry_names.to_vec()
        } else {
            tls.subject_alt_names.clone()
        };
        let credential = tls.credential_name.as_deref().and_then(|name| {
            match credentials::load(self.options.credentials.as_deref(), name) {
                Ok(credential) => Some(credential),
                Err(error) => {
                    self.problem(format!("{host}: {error}"));
                    None
                }
            }
        });
        let read = |compiler: &mut Self, path: &Option<String>| -> Option<String> {
            let path = path.as_deref()?;
            match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(error) => {
                    compiler.problem(format!("{host}: reading {path}: {error}"));
                    None
                }
            }
        };
        // The credential's own ca.crt, else the `<name>-cacert` credential's, as for servers.
        let ca_certificates = tls
            .credential_name
            .as_deref()
            .zip(credential.as_ref())
            .and_then(|(name, credential)| {
                credentials::load_client_ca(self.options.credentials.as_deref(), name, credential)
                    .ok()
            })
            .map(|(ca, _crl)| ca)
            .or_else(|| read(self, &tls.ca_certificates));
        match tls.mode.unwrap_or_default() {
            ClientTlsMode::Disable => UpstreamTls::Disabled,
            ClientTlsMode::Simple => UpstreamTls::Simple {
                sni,
                ca_certificates,
                subject_alt_names,
            },
            ClientTlsMode::Mutual => {
                let (chain, key) = match credential {
                    Some(c) => (c.certificate_chain, c.private_key),
                    None => (
                        read(self, &tls.client_certificate),
                        read(self, &tls.private_key),
                    ),
                };
                match (chain, key) {
                    (Some(certificate_chain), Some(private_key)) => UpstreamTls::Mutual {
                        sni,
                        ca_certificates,
                        subject_alt_names,
                        certificate_chain,
                        private_key,
                    },
                    _ => {
                        self.problem(format!("{host}: MUTUAL TLS has no client certificate; sending plaintext is refused"));
                        UpstreamTls::Simple {
                            sni,
                            ca_certificates,
                            subject_alt_names,
                        }
                    }
                }
            }
            // Handled before: mesh mTLS comes from the proxy's own identity.
            ClientTlsMode::IstioMutual => UpstreamTls::Disabled,
        }
    }
}

/// The label that marks an endpoint as running a mesh proxy.
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

fn is_meshed(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio")
}

/// What mesh mTLS to a destination would be.
struct MeshDestination {
    /// `outbound_.PORT_.SUBSET_.HOST`.
    sni: String,
    /// The SPIFFE IDs its endpoints run as.
    subject_alt_names: Vec<String>,
    /// How many of its endpoints run a mesh proxy, of how many.
    meshed: usize,
    total: usize,
    /// The destination's PeerAuthentication mode on the port, when it can be told.
    peer_authentication: Option<MtlsMode>,
}

impl MeshDestination {
    fn istio_mutual(self, sni: Option<String>) -> UpstreamTls {
        UpstreamTls::IstioMutual {
            sni: sni.unwrap_or(self.sni),
            subject_alt_names: self.subject_alt_names,
        }
    }
}

impl Compiler<'_> {
    /// Istio's auto-mTLS: mesh mTLS when every endpoint runs a mesh proxy and the
    /// destination's PeerAuthentication does not DISABLE it; plaintext otherwise.
    fn auto_mtls(&mut self, host: &str, mesh: MeshDestination) -> UpstreamTls {
        if !self.options.mesh_identity || !self.registry.mesh.auto_mtls || mesh.meshed == 0 {
            return UpstreamTls::Disabled;
        }
        if mesh.peer_authentication == Some(MtlsMode::Disable) {
            return UpstreamTls::Disabled;
        }
        if mesh.meshed < mesh.total {
            self.problem(format!(
                "{host}: {} of {} endpoints run a mesh proxy ({TLS_MODE_LABEL}: istio); auto mTLS needs all of them, so this destination gets plaintext",
                mesh.meshed, mesh.total
            ));
            return UpstreamTls::Disabled;
        }
        mesh.istio_mutual(None)
    }

    /// The SPIFFE IDs a destination's servers may present: the ServiceEntry's
    /// `subjectAltNames`, else the service accounts of its endpoints.
    fn mesh_names(&self, service: Service<'_>, endpoints: &[EndpointInfo]) -> Vec<String> {
        if !service.entry.subject_alt_names.is_empty() {
            return service.entry.subject_alt_names.clone();
        }
        let mut names: Vec<String> = endpoints
            .iter()
            .filter_map(|e| Some((e.service_account.as_deref()?, e.trust_domain.as_deref())))
            .map(|(sa, trust_domain)| {
                format!(
                    "spiffe://{}/ns/{}/sa/{sa}",
                    trust_domain.unwrap_or(&self.registry.mesh.trust_domain),
                    service.object.namespace
                )
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The PeerAuthentication mode of the destination's workloads on the port, when all its
    /// endpoints agree; `None` when the configuration has no PeerAuthentication (the mode is
    /// then PERMISSIVE everywhere).
    fn destination_mtls(
        &self,
        service: Service<'_>,
        port: &crate::resources::common::Port,
        endpoints: &[EndpointInfo],
    ) -> Option<MtlsMode> {
        if !self.has_peer_authentication {
            return None;
        }
        let target = u16::try_from(port.target_port.or(port.number)?).ok()?;
        let mut modes = endpoints.iter().map(|e| {
            let workload = super::policies::Workload {
                namespace: &service.object.namespace,
                labels: &e.labels,
            };
            super::policies::compile(&self.objects, workload, &mut Vec::new())
                .peer_authentication
                .mode_for(target)
        });
        let first = modes.next()?;
        modes.all(|m| m == first).then_some(first)
    }
}

impl Policy<'_> {
    /// A cluster of `endpoints` that carries the bytes as they come, adding no TLS of its own,
    /// balanced, pooled and watched for outliers as the policy says: where an east-west
    /// gateway forwards the mTLS connections it passes through.
    pub(super) fn passthrough_cluster(
        &self,
        name: String,
        endpoints: Vec<Endpoint>,
        mesh_connect_timeout: Duration,
        telemetry: Vec<(String, String)>,
    ) -> Cluster {
        let (lb, _) = lb_policy(self.load_balancer);
        Cluster {
            name,
            lb,
            connect_timeout: self
                .connection_pool
                .and_then(|p| p.tcp.as_ref())
                .and_then(|t| t.connect_timeout.as_ref())
                .and_then(|d| d.value)
                .unwrap_or(mesh_connect_timeout),
            pool: pool_limits(self.connection_pool),
            outlier: self.outlier_detection.map(outlier),
            tls: UpstreamTls::Disabled,
            protocol: UpstreamProtocol::Downstream,
            endpoints,
            original_destination: false,
            upstream_bind: None,
            telemetry,
            empty_reason: None,
        }
    }
}

/// The metric labels that name the destination service.
pub(super) fn service_telemetry(host: &str, service: Service<'_>) -> Vec<(String, String)> {
    vec![
        ("destination_service".to_owned(), host.to_owned()),
        (
            "destination_service_name".to_owned(),
            host.split('.').next().unwrap_or(host).to_owned(),
        ),
        (
            "destination_service_namespace".to_owned(),
            service.object.namespace.clone(),
        ),
    ]
}

/// The protocol to the endpoints: HTTP/2 for HTTP2 and gRPC ports (declared by the
/// `protocol` field or the port name, as the listeners read it) or when upgraded.
fn upstream_protocol(
    port_protocol: Option<Protocol>,
    pool: Option<&ConnectionPoolSettings>,
) -> UpstreamProtocol {
    let http = pool.and_then(|p| p.http.as_ref());
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        return UpstreamProtocol::Downstream;
    }
    if http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade) {
        return UpstreamProtocol::Http2;
    }
    match port_protocol {
        Some(Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb) => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    }
}

/// The balancer (LEAST_REQUEST unless set) and whether the cluster forwards to the original
/// destination (PASSTHROUGH).
fn lb_policy(settings: Option<&LoadBalancerSettings>) -> (LbPolicy, bool) {
    let Some(settings) = settings else {
        return (LbPolicy::LeastRequest, false);
    };
    if let Some(hash) = &settings.consistent_hash {
        return (LbPolicy::ConsistentHash(consistent_hash(hash)), false);
    }
    match settings.simple.unwrap_or_default() {
        SimpleLb::Unspecified | SimpleLb::LeastRequest | SimpleLb::LeastConn => {
            (LbPolicy::LeastRequest, false)
        }
        SimpleLb::RoundRobin => (LbPolicy::RoundRobin, false),
        SimpleLb::Random => (LbPolicy::Random, false),
        SimpleLb::Passthrough => (LbPolicy::LeastRequest, true),
    }
}

fn consistent_hash(hash: &ConsistentHashLb) -> ConsistentHash {
    let key = if let Some(header) = &hash.http_header_name {
        HashKey::Header(header.to_ascii_lowercase())
    } else if let Some(cookie) = &hash.http_cookie {
        HashKey::Cookie {
            name: cookie.name.clone().unwrap_or_default(),
            path: cookie.path.clone(),
            ttl: cookie.ttl.as_ref().and_then(|d| d.value),
        }
    } else if let Some(parameter) = &hash.http_query_parameter_name {
        HashKey::QueryParameter(parameter.clone())
    } else {
        HashKey::SourceIp
    };
    let policy = match &hash.maglev {
        Some(maglev) => HashPolicy::Maglev {
            table_size: maglev.table_size.unwrap_or(65_537),
        },
        None => HashPolicy::RingHash {
            minimum_ring_size: hash
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(hash.minimum_ring_size)
                .unwrap_or(1024),
        },
    };
    ConsistentHash { key, policy }
}

/// Connection pool limits; an unset or non-positive value means no limit.
fn pool_limits(pool: Option<&ConnectionPoolSettings>) -> PoolLimits {
    let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let idle = http
        .and_then(|h| h.idle_timeout.as_ref())
        .and_then(|d| d.value);
    PoolLimits {
        max_connections: positive(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: positive(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: positive(http.and_then(|h| h.http2_max_requests)),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection)),
        max_retries: positive(http.and_then(|h| h.max_retries)),
        idle_timeout: match idle {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(Duration::from_secs(3600)),
        },
        tcp_keepalive: tcp
            .and_then(|t| t.tcp_keepalive.as_ref())
            .map(|k| ProxyKeepalive {
                time: k.time.as_ref().and_then(|d| d.value),
                interval: k.interval.as_ref().and_then(|d| d.value),
                probes: k.probes,
            }),
    }
}

/// Outlier detection with Istio's defaults: 5 consecutive 5xx, 10s interval, 30s base
/// ejection, at most 10% ejected, no panic threshold.
fn outlier(detection: &OutlierDetection) -> ProxyOutlier {
    let duration = |d: &Option<crate::resources::common::Duration>, default: u64| {
        d.as_ref()
            .and_then(|d| d.value)
            .unwrap_or(Duration::from_secs(default))
    };
    ProxyOutlier {
        consecutive_5xx: detection
            .consecutive_5xx_errors
            .or(detection
                .consecutive_errors
                .and_then(|e| u32::try_from(e).ok()))
            .unwrap_or(5),
        consecutive_gateway_errors: detection.consecutive_gateway_errors.unwrap_or(0),
        interval: duration(&detection.interval, 10),
        base_ejection_time: duration(&detection.base_ejection_time, 30),
        max_ejection_percent: detection
            .max_ejection_percent
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(10),
        min_health_percent: detection
            .min_health_percent
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_istio() {
        assert_eq!(
            cluster_name(9080, Some("v1"), "reviews.default.svc.cluster.local"),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(
            cluster_name(80, None, "a.example.com"),
            "outbound|80||a.example.com"
        );
    }

    #[test]
    fn the_default_balancer_is_least_request() {
        assert_eq!(lb_policy(None), (LbPolicy::LeastRequest, false));
        let settings = LoadBalancerSettings {
            simple: Some(SimpleLb::Unspecified),
            ..LoadBalancerSettings::default()
        };
        assert_eq!(lb_policy(Some(&settings)).0, LbPolicy::LeastRequest);
    }

    #[test]
    fn outlier_defaults_are_istios() {
        let detection = outlier(&OutlierDetection::default());
        assert_eq!(detection.consecutive_5xx, 5);
        assert_eq!(detection.interval, Duration::from_secs(10));
        assert_eq!(detection.base_ejection_time, Duration::from_secs(30));
        assert_eq!(detection.max_ejection_percent, 10);
        assert_eq!(detection.min_health_percent, 0);
    }

    #[test]
    fn idle_timeout_defaults_to_an_hour_and_zero_disables() {
        assert_eq!(
            pool_limits(None).idle_timeout,
            Some(Duration::from_secs(3600))
        );
    }
}
