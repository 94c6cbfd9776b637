//! DestinationRule rules: the host, subsets, and every part of a traffic policy (load balancer,
//! locality settings, connection pool, outlier detection, client TLS, port-level policies).
//! Locality and connection-pool rules are shared with MeshConfig and Sidecar.

use std::collections::BTreeSet;

use super::check::Check;
use super::rules;
use crate::resources::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection, PortTrafficPolicy,
    TrafficPolicy,
};
use crate::yaml::FieldPath;

pub(crate) fn validate(check: &mut Check<'_>, spec: &FieldPath, rule: &DestinationRule) {
    match rule.host.as_deref() {
        None => check.required(&spec.field("host")),
        Some(host) => {
            rules::wildcard_domain(check, &spec.field("host"), host);
        }
    }
    if let Some(policy) = &rule.traffic_policy {
        traffic_policy(check, &spec.field("trafficPolicy"), policy);
    }
    let subsets = spec.field("subsets");
    let mut names = BTreeSet::new();
    for (i, subset) in rule.subsets.iter().enumerate() {
        let at = subsets.index(i);
        match subset.name.as_deref() {
            None => check.required(&at.field("name")),
            Some("") => check.error(&at.field("name"), "required", "subset name cannot be empty"),
            Some(name) => {
                if !rules::is_dns1123_label(name) {
                    check.error(
                        &at.field("name"),
                        "invalid-value",
                        format!("subset name is invalid: {name:?} (a DNS-1123 label)"),
                    );
                }
                if !names.insert(name) {
                    check.error(
                        &at.field("name"),
                        "duplicate",
                        format!("duplicate subset names: {name}"),
                    );
                }
            }
        }
        rules::labels(check, &at.field("labels"), &subset.labels);
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(check, &at.field("trafficPolicy"), policy);
        }
    }
    let namespace = check.object().namespace.clone();
    let export_to = spec.field("exportTo");
    rules::export_to(check, &export_to, &rule.export_to, &namespace, false);
    if rule.workload_selector.is_some() && !rule.export_to.is_empty() {
        let only_own = rule.export_to.iter().all(|e| e == "." || *e == namespace);
        if !only_own {
            check.error(
                &export_to,
                "conflict",
                "a DestinationRule with a workloadSelector cannot be exported beyond its own namespace",
            );
        }
    }
    rules::workload_selector(
        check,
        &spec.field("workloadSelector"),
        &rule.workload_selector,
    );
}

fn traffic_policy(check: &mut Check<'_>, path: &FieldPath, policy: &TrafficPolicy) {
    if policy.outlier_detection.is_none()
        && policy.connection_pool.is_none()
        && policy.load_balancer.is_none()
        && policy.tls.is_none()
        && policy.port_level_settings.is_empty()
        && policy.tunnel.is_none()
        && policy.proxy_protocol.is_none()
        && policy.retry_budget.is_none()
    {
        check.error(
            path,
            "required",
            "traffic policy must have at least one field",
        );
        return;
    }
    if policy.tunnel.is_some() && policy.proxy_protocol.is_some() {
        check.error(
            path,
            "conflict",
            "tunnel and proxyProtocol must not be set together",
        );
        return;
    }
    policy_parts(
        check,
        path,
        &policy.load_balancer,
        &policy.connection_pool,
        &policy.outlier_detection,
        &policy.tls,
    );
    let ports = path.field("portLevelSettings");
    if policy.port_level_settings.len() > 4096 {
        check.error(&ports, "out-of-range", "must have at most 4096 items");
    }
    for (i, port_policy) in policy.port_level_settings.iter().enumerate() {
        port_traffic_policy(check, &ports.index(i), port_policy);
    }
    if let Some(tunnel) = &policy.tunnel {
        let at = path.field("tunnel");
        if let Some(protocol) = tunnel.protocol.as_deref()
            && !matches!(protocol, "" | "CONNECT" | "POST")
        {
            check.error(
                &at.field("protocol"),
                "unsupported-value",
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        match tunnel.target_host.as_deref() {
            None => check.required(&at.field("targetHost")),
            Some(host) if !rules::is_fqdn(host) && !rules::is_ip(host) => check.error(
                &at.field("targetHost"),
                "invalid-host",
                format!("tunnel target host must be a valid FQDN or IP address: {host:?}"),
            ),
            Some(_) => {}
        }
        match tunnel.target_port {
            None => check.required(&at.field("targetPort")),
            Some(port) => {
                rules::port(check, &at.field("targetPort"), port);
            }
        }
    }
    if let Some(budget) = &policy.retry_budget
        && let Some(percent) = budget.percent
        && !(0.0..=100.0).contains(&percent)
    {
        check.error(
            &path.field("retryBudget").field("percent"),
            "out-of-range",
            "should be between 0 and 100",
        );
    }
}

fn port_traffic_policy(check: &mut Check<'_>, path: &FieldPath, policy: &PortTrafficPolicy) {
    if policy.port.is_none() {
        check.error(
            &path.field("port"),
            "required",
            "a port traffic policy must name its port",
        );
    }
    if policy.outlier_detection.is_none()
        && policy.connection_pool.is_none()
        && policy.load_balancer.is_none()
        && policy.tls.is_none()
    {
        check.error(
            path,
            "required",
            "port traffic policy must have at least one field",
        );
        return;
    }
    policy_parts(
        check,
        path,
        &policy.load_balancer,
        &policy.connection_pool,
        &policy.outlier_detection,
        &policy.tls,
    );
}

fn policy_parts(
    check: &mut Check<'_>,
    path: &FieldPath,
    load_balancer: &Option<LoadBalancerSettings>,
    connection_pool: &Option<ConnectionPoolSettings>,
    outlier: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
) {
    if let Some(outlier) = outlier {
        outlier_detection(check, &path.field("outlierDetection"), outlier);
    }
    if let Some(pool) = connection_pool {
        connection_pool_settings(check, &path.field("connectionPool"), pool);
    }
    if let Some(lb) = load_balancer {
        load_balancer_settings(check, &path.field("loadBalancer"), lb, outlier.is_some());
    }
    if let Some(tls) = tls {
        client_tls(check, &path.field("tls"), tls);
    }
}

fn outlier_detection(check: &mut Check<'_>, path: &FieldPath, outlier: &OutlierDetection) {
    rules::duration(
        check,
        &path.field("baseEjectionTime"),
        &outlier.base_ejection_time,
    );
    rules::duration(check, &path.field("interval"), &outlier.interval);
    if outlier.consecutive_errors.is_some_and(|e| e != 0) {
        check.warning(
            &path.field("consecutiveErrors"),
            "deprecated",
            "consecutiveErrors is deprecated: use consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if outlier.split_external_local_origin_errors != Some(true)
        && outlier
            .consecutive_local_origin_failures
            .is_some_and(|f| f > 0)
    {
        check.error(
            &path.field("consecutiveLocalOriginFailures"),
            "conflict",
            "consecutiveLocalOriginFailures is set, but splitExternalLocalOriginErrors is false",
        );
    }
    rules::percent(
        check,
        &path.field("maxEjectionPercent"),
        outlier.max_ejection_percent,
    );
    rules::percent(
        check,
        &path.field("minHealthPercent"),
        outlier.min_health_percent,
    );
    let codes = path.field("outlierDetectionHttpErrorCodes");
    for (i, code) in outlier
        .outlier_detection_http_error_codes
        .iter()
        .enumerate()
    {
        if !(100..=599).contains(code) {
            check.error(
                &codes.index(i),
                "out-of-range",
                format!("{code} is not an HTTP status code (100-599)"),
            );
        }
    }
}

pub(crate) fn connection_pool_settings(
    check: &mut Check<'_>,
    path: &FieldPath,
    pool: &ConnectionPoolSettings,
) {
    if pool.http.is_none() && pool.tcp.is_none() {
        check.error(
            path,
            "required",
            "connection pool must have at least one field",
        );
        return;
    }
    if let Some(http) = &pool.http {
        let at = path.field("http");
        for (field, value) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ] {
            if value.is_some_and(|v| v < 0) {
                check.error(
                    &at.field(field),
                    "out-of-range",
                    format!("{field} must be non-negative"),
                );
            }
        }
        rules::duration(check, &at.field("idleTimeout"), &http.idle_timeout);
        if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && http.use_client_protocol == Some(true)
        {
            check.error(
                &at.field("useClientProtocol"),
                "conflict",
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(keepalive) = &http.http2_keep_alive {
            let ka = at.field("http2KeepAlive");
            rules::duration(check, &ka.field("interval"), &keepalive.interval);
            rules::duration(check, &ka.field("timeout"), &keepalive.timeout);
        }
    }
    if let Some(tcp) = &pool.tcp {
        let at = path.field("tcp");
        if tcp.max_connections.is_some_and(|v| v < 0) {
            check.error(
                &at.field("maxConnections"),
                "out-of-range",
                "maxConnections must be non-negative",
            );
        }
        rules::duration(check, &at.field("connectTimeout"), &tcp.connect_timeout);
        rules::duration(
            check,
            &at.field("maxConnectionDuration"),
            &tcp.max_connection_duration,
        );
        // `0s` turns the idle timeout off.
        rules::duration_or_zero(check, &at.field("idleTimeout"), &tcp.idle_timeout);
        if let Some(keepalive) = &tcp.tcp_keepalive {
            let ka = at.field("tcpKeepalive");
            rules::duration(check, &ka.field("time"), &keepalive.time);
            rules::duration(check, &ka.field("interval"), &keepalive.interval);
        }
    }
}

fn load_balancer_settings(
    check: &mut Check<'_>,
    path: &FieldPath,
    lb: &LoadBalancerSettings,
    has_outlier_detection: bool,
) {
    check.exclusive(
        path,
        &[
            ("simple", lb.simple.is_some()),
            ("consistentHash", lb.consistent_hash.is_some()),
        ],
        "only one of simple or consistentHash can be set",
    );
    check.exclusive(
        path,
        &[
            ("localityLbSetting", lb.locality_lb_setting.is_some()),
            ("zoneAwareLbSetting", lb.zone_aware_lb_setting.is_some()),
        ],
        "only one of localityLbSetting or zoneAwareLbSetting can be set",
    );
    if let Some(hash) = &lb.consistent_hash {
        let at = path.field("consistentHash");
        check.exclusive(
            &at,
            &[
                ("httpHeaderName", hash.http_header_name.is_some()),
                ("httpCookie", hash.http_cookie.is_some()),
                ("useSourceIp", hash.use_source_ip.is_some()),
                ("httpQueryParameterName", hash.http_query_parameter_name.is_some()),
            ],
            "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set",
        );
        check.exclusive(
            &at,
            &[
                ("ringHash", hash.ring_hash.is_some()),
                ("maglev", hash.maglev.is_some()),
            ],
            "only one of ringHash or maglev can be set",
        );
        if let Some(cookie) = &hash.http_cookie {
            let cookie_path = at.field("httpCookie");
            if cookie.name.as_deref().is_none_or(str::is_empty) {
                check.error(
                    &cookie_path.field("name"),
                    "required",
                    "name required for httpCookie",
                );
            }
            for (i, attribute) in cookie.attributes.iter().enumerate() {
                if attribute.name.is_none() {
                    check.required(&cookie_path.field("attributes").index(i).field("name"));
                }
            }
        }
        if hash.minimum_ring_size.is_some_and(|s| s != 0) {
            let ring = at.field("minimumRingSize");
            check.warning(
                &ring,
                "deprecated",
                "minimumRingSize is deprecated: use ringHash.minimumRingSize",
            );
            if hash.ring_hash.is_some() || hash.maglev.is_some() {
                check.error(
                    &ring,
                    "conflict",
                    "only one of minimumRingSize or maglev/ringHash can be specified",
                );
            }
        }
        if let Some(maglev) = &hash.maglev {
            let size = maglev.table_size.unwrap_or(0);
            let table = at.field("maglev").field("tableSize");
            if size == 0 {
                check.error(&table, "required", "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                check.error(
                    &table,
                    "out-of-range",
                    "tableSize must be less than 5000011 for maglev",
                );
            } else if !is_prime(size) {
                check.error(
                    &table,
                    "invalid-value",
                    format!("tableSize must be a prime number for maglev ({size} is not)"),
                );
            }
        }
    }
    if let Some(locality) = &lb.locality_lb_setting {
        locality_lb_setting(
            check,
            &path.field("localityLbSetting"),
            locality,
            has_outlier_detection,
        );
    }
    if let Some(warmup) = &lb.warmup {
        let at = path.field("warmup");
        match &warmup.duration {
            None => check.required(&at.field("duration")),
            Some(_) => rules::duration(check, &at.field("duration"), &warmup.duration),
        }
        if let Some(percent) = warmup.minimum_percent
            && !(0.0..=100.0).contains(&percent)
        {
            check.error(
                &at.field("minimumPercent"),
                "out-of-range",
                format!("Invalid value: {percent}: minimumPercent should be between 0 and 100"),
            );
        }
        if let Some(aggression) = warmup.aggression
            && aggression < 1.0
        {
            check.error(
                &at.field("aggression"),
                "out-of-range",
                format!(
                    "Invalid value: {aggression}: aggression should be greater than or equal to 1"
                ),
            );
        }
    }
    rules::duration(
        check,
        &path.field("warmupDurationSecs"),
        &lb.warmup_duration_secs,
    );
}

/// Prime as Envoy checks a Maglev table size (which counts 1 as prime).
fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n > 0;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut divisor = 3;
    while divisor * divisor <= n {
        if n.is_multiple_of(divisor) {
            return false;
        }
        divisor += 2;
    }
    true
}

/// Locality load balancing (also MeshConfig's `localityLbSetting`).
pub(crate) fn locality_lb_setting(
    check: &mut Check<'_>,
    path: &FieldPath,
    setting: &LocalityLoadBalancerSetting,
    has_outlier_detection: bool,
) {
    if !setting.distribute.is_empty() && !setting.failover.is_empty() {
        check.error(
            path,
            "conflict",
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !setting.failover.is_empty()
        && let Some(label) = setting.failover_priority.iter().find(|l| {
            matches!(
                l.as_str(),
                "topology.kubernetes.io/region"
                    | "topology.kubernetes.io/zone"
                    | "topology.istio.io/subzone"
            )
        })
    {
        check.error(
                &path.field("failoverPriority"),
                "conflict",
                format!("can not simultaneously set 'failover' and topology label {label:?} in 'failoverPriority'"),
            );
        return;
    }
    let distribute = path.field("distribute");
    let mut sources = Vec::new();
    for (i, entry) in setting.distribute.iter().enumerate() {
        let at = distribute.index(i);
        if entry.to.values().any(|w| !(1..=100).contains(w)) {
            check.error(
                &at.field("to"),
                "out-of-range",
                "locality weight must be in range [1, 100]",
            );
            return;
        }
        let total: u64 = entry.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            check.error(
                &at.field("to"),
                "invalid-value",
                format!("total locality weight {total} != 100"),
            );
            return;
        }
        if let Err(message) = localities(entry.to.keys().map(String::as_str)) {
            check.error(&at.field("to"), "invalid-value", message);
            return;
        }
        sources.extend(entry.from.as_deref());
    }
    if let Err(message) = localities(sources.into_iter()) {
        check.error(&distribute, "invalid-value", message);
        return;
    }
    if (!setting.failover.is_empty() || !setting.failover_priority.is_empty())
        && !has_outlier_detection
    {
        check.warning(
            path,
            "no-effect",
            "failover needs outlier detection to take effect: without it, traffic is not failed over",
        );
    }
    let failover = path.field("failover");
    for (i, entry) in setting.failover.iter().enumerate() {
        let at = failover.index(i);
        let (from, to) = (
            entry.from.as_deref().unwrap_or(""),
            entry.to.as_deref().unwrap_or(""),
        );
        if from == to {
            check.error(
                &at,
                "invalid-value",
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            check.error(
                &at,
                "invalid-value",
                "locality lb failover only specify region",
            );
        }
        if from.contains('*') || to.contains('*') {
            check.error(
                &at,
                "invalid-value",
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities (`region/zone/subzone`, `*` allowed only as a last component) that do not overlap.
fn localities<'a>(list: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in list {
        if locality.contains('*') && (locality.matches('*').count() > 1 || !locality.ends_with('*'))
        {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        let overlaps = seen.iter().any(|other| {
            parts
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a == b || *a == "*" || *b == "*")
                && (parts.len() == other.len()
                    || parts.last() == Some(&"*")
                    || other.last() == Some(&"*"))
        });
        if overlaps {
            return Err(format!(
                "locality {locality} overlap with previous specified ones"
            ));
        }
        seen.push(parts);
    }
    Ok(())
}

/// Client-side TLS towards the upstream.
pub(crate) fn client_tls(check: &mut Check<'_>, path: &FieldPath, tls: &ClientTlsSettings) {
    let mode = tls.mode.unwrap_or_default();
    if let Some(name) = tls.credential_name.as_deref()
        && let Some(reference) = name.strip_prefix("configmap://")
    {
        let namespace = &check.object().namespace;
        let valid = reference
            .split_once('/')
            .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && ns == namespace);
        if !valid {
            check.error(
                &path.field("credentialName"),
                "invalid-value",
                format!(
                    "invalid configmap:// credentialName: expected configmap://{namespace}/NAME"
                ),
            );
        }
    }
    if tls.insecure_skip_verify == Some(true) {
        let conflicting = match mode {
            ClientTlsMode::Simple => {
                tls.ca_certificates.is_some()
                    || tls.credential_name.is_some()
                    || !tls.subject_alt_names.is_empty()
            }
            ClientTlsMode::Mutual => {
                tls.ca_certificates.is_some() || !tls.subject_alt_names.is_empty()
            }
            _ => false,
        };
        if conflicting {
            check.error(
                &path.field("insecureSkipVerify"),
                "conflict",
                "cannot specify caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true",
            );
        }
    }
    let terminating = matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if terminating && tls.credential_name.is_some() {
        if tls.client_certificate.is_some()
            || tls.ca_certificates.is_some()
            || tls.private_key.is_some()
            || tls.ca_crl.is_some()
        {
            check.error(
                path,
                "conflict",
                "cannot specify client certificates or CA certificate or CA CRL if credentialName is set",
            );
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if tls.client_certificate.as_deref().is_none_or(str::is_empty) {
            check.error(
                &path.field("clientCertificate"),
                "required",
                "client certificate required for mutual tls",
            );
        }
        if tls.private_key.as_deref().is_none_or(str::is_empty) {
            check.error(
                &path.field("privateKey"),
                "required",
                "private key required for mutual tls",
            );
        }
    }
    if mode == ClientTlsMode::IstioMutual {
        for (field, set) in [
            ("clientCertificate", tls.client_certificate.is_some()),
            ("privateKey", tls.private_key.is_some()),
            ("caCertificates", tls.ca_certificates.is_some()),
            ("credentialName", tls.credential_name.is_some()),
        ] {
            if set {
                check.warning(
                    &path.field(field),
                    "ignored",
                    format!("ISTIO_MUTUAL uses the workload certificate: {field} is ignored"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maglev_primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(!is_prime(65536));
        assert!(is_prime(1), "as Envoy counts");
        assert!(!is_prime(9));
    }

    #[test]
    fn localities_must_not_overlap() {
        assert!(localities(["us-west/zone1/*", "us-east/*"].into_iter()).is_ok());
        assert!(localities(["us-west/*", "us-west/zone1"].into_iter()).is_err());
        assert!(localities(["*", "us-west"].into_iter()).is_err());
        assert!(localities(["us-*/zone"].into_iter()).is_err());
        assert!(localities(["us-west//a"].into_iter()).is_err());
        assert!(localities(["us-west/zone1", "us-west/zone2"].into_iter()).is_ok());
    }
}
