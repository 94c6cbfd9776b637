//! What Strait does not implement: valid Istio fields that the proxy ignores, each reported as a
//! warning that names the field and says it is ignored. This table is the one place that says
//! so; the README's status table follows it, and each change that implements a field removes
//! its row.
//!
//! A pattern is a field path with `[]` for any list item and `*` for any map key; a trailing
//! `=VALUE` matches only that value (`spec.action=CUSTOM`).

use std::borrow::Cow;
use std::sync::LazyLock;

use super::check::Check;
use crate::resources::Kind;
use crate::yaml::{FieldPath, Node, Value};

/// A row of the table as written: the kind, the pattern, and why it is ignored.
struct Entry {
    kind: Kind,
    pattern: &'static str,
    note: &'static str,
}

const fn row(kind: Kind, pattern: &'static str, note: &'static str) -> Entry {
    Entry {
        kind,
        pattern,
        note,
    }
}

/// One unimplemented field, its pattern split into the steps `find` follows.
#[derive(Debug)]
pub struct Unimplemented {
    pub kind: Kind,
    pub pattern: String,
    pub note: &'static str,
    segments: Vec<String>,
    value: Option<String>,
}

impl Unimplemented {
    fn new(kind: Kind, pattern: String, note: &'static str) -> Unimplemented {
        let (fields, value) = match pattern.split_once('=') {
            Some((fields, value)) => (fields.to_owned(), Some(value.to_owned())),
            None => (pattern.clone(), None),
        };
        Unimplemented {
            kind,
            segments: fields.split('.').map(str::to_owned).collect(),
            value,
            pattern,
            note,
        }
    }
}

/// The whole table, expanded once.
static ROWS: LazyLock<Vec<Unimplemented>> = LazyLock::new(|| {
    let mut rows: Vec<Unimplemented> = UNIMPLEMENTED
        .iter()
        .map(|r| Unimplemented::new(r.kind, r.pattern.to_owned(), r.note))
        .collect();
    for root in POLICY_ROOTS {
        for (field, note) in POLICY_FIELDS {
            let allowed_in_port_policy =
                !matches!(*field, "tunnel" | "proxyProtocol" | "retryBudget");
            if root.ends_with("portLevelSettings[]") && !allowed_in_port_policy {
                continue;
            }
            rows.push(Unimplemented::new(
                Kind::DestinationRule,
                format!("{root}.{field}"),
                note,
            ));
        }
    }
    rows
});

/// Traffic-policy fields, which appear at four depths of a DestinationRule.
const POLICY_ROOTS: [&str; 4] = [
    "spec.trafficPolicy",
    "spec.trafficPolicy.portLevelSettings[]",
    "spec.subsets[].trafficPolicy",
    "spec.subsets[].trafficPolicy.portLevelSettings[]",
];

const POLICY_FIELDS: &[(&str, &str)] = &[
    (
        "loadBalancer.warmup",
        "slow-start warmup is not implemented",
    ),
    (
        "loadBalancer.warmupDurationSecs",
        "slow-start warmup is not implemented",
    ),
    (
        "loadBalancer.zoneAwareLbSetting",
        "zone-aware load balancing is not implemented; use localityLbSetting",
    ),
    (
        "loadBalancer.consistentHash.hashBalanceFactor",
        "bounded-load hashing is not implemented",
    ),
    (
        "connectionPool.tcp.maxConnectionDuration",
        "a maximum connection lifetime is not implemented",
    ),
    (
        "connectionPool.tcp.idleTimeout",
        "the TCP idle timeout is not implemented",
    ),
    (
        "connectionPool.http.maxConcurrentStreams",
        "the upstream's own SETTINGS limit streams per connection",
    ),
    (
        "connectionPool.http.http2KeepAlive",
        "HTTP/2 keepalive pings are not implemented",
    ),
    (
        "outlierDetection.splitExternalLocalOriginErrors",
        "local-origin errors are counted with the rest",
    ),
    (
        "outlierDetection.consecutiveLocalOriginFailures",
        "local-origin errors are counted with the rest",
    ),
    (
        "outlierDetection.outlierDetectionHttpErrorCodes",
        "5xx responses are what counts as errors",
    ),
    (
        "outlierDetection.failurePercentageThreshold",
        "failure-percentage ejection is not implemented",
    ),
    (
        "outlierDetection.consecutiveErrors",
        "deprecated and not implemented; use consecutive5xxErrors",
    ),
    (
        "tls.insecureSkipVerify",
        "the server certificate is always verified",
    ),
    ("tls.caCrl", "certificate revocation lists are not checked"),
    (
        "tls.caCertCredentialName",
        "use credentialName, whose folder may hold ca.crt",
    ),
    (
        "tunnel",
        "HTTP CONNECT tunnelling to the upstream is not implemented",
    ),
    (
        "proxyProtocol",
        "sending the PROXY protocol upstream is not implemented",
    ),
    (
        "retryBudget",
        "retry budgets are not implemented; maxRetries bounds retries",
    ),
];

/// Every other kind's unimplemented fields.
const UNIMPLEMENTED: &[Entry] = &[
    row(
        Kind::VirtualService,
        "spec.http[].delegate",
        "delegate VirtualServices are not implemented",
    ),
    row(
        Kind::VirtualService,
        "spec.http[].match[].statPrefix",
        "per-route stat prefixes are not implemented",
    ),
    row(
        Kind::VirtualService,
        "spec.http[].retries.retryRemoteLocalities",
        "retries choose among all localities",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].defaultEndpoint",
        "not used by gateways",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.verifyCertificateSpki",
        "client certificates are checked against caCertificates only",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.verifyCertificateHash",
        "client certificates are checked against caCertificates only",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.subjectAltNames",
        "client certificate SANs are not checked",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.caCertCredentialName",
        "use credentialName, whose folder may hold ca.crt, or <name>-cacert",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.credentialNames",
        "one certificate per server: the first credential is served",
    ),
    row(
        Kind::Gateway,
        "spec.servers[].tls.tlsCertificates",
        "one certificate per server; use credentialName",
    ),
    row(
        Kind::ServiceEntry,
        "spec.resolution=DYNAMIC_DNS",
        "dynamic forward proxying is not implemented; traffic to these hosts is not routed",
    ),
    row(
        Kind::Sidecar,
        "spec.inboundConnectionPool",
        "inbound connection limits are not implemented",
    ),
    row(
        Kind::Sidecar,
        "spec.ingress[].connectionPool",
        "inbound connection limits are not implemented",
    ),
    row(
        Kind::Sidecar,
        "spec.ingress[].tls",
        "inbound listeners terminate mesh mTLS only: a listener with tls is not served",
    ),
    row(
        Kind::Sidecar,
        "spec.outboundTrafficPolicy.egressProxy",
        "unmatched traffic is not sent to an egress proxy",
    ),
    row(
        Kind::AuthorizationPolicy,
        "spec.action=CUSTOM",
        "external authorization is not implemented: requests this policy applies to are denied",
    ),
    row(
        Kind::AuthorizationPolicy,
        "spec.provider",
        "external authorization is not implemented",
    ),
    row(
        Kind::AuthorizationPolicy,
        "spec.targetRef",
        "policies attach by selector; targetRef (waypoints, Gateway API) is not implemented",
    ),
    row(
        Kind::AuthorizationPolicy,
        "spec.targetRefs",
        "policies attach by selector; targetRefs (waypoints, Gateway API) is not implemented",
    ),
    row(
        Kind::RequestAuthentication,
        "spec.targetRef",
        "policies attach by selector; targetRef is not implemented",
    ),
    row(
        Kind::RequestAuthentication,
        "spec.targetRefs",
        "policies attach by selector; targetRefs is not implemented",
    ),
    row(
        Kind::RequestAuthentication,
        "spec.jwtRules[].presence",
        "a request without a token stays unauthenticated; require one with an AuthorizationPolicy",
    ),
    row(
        Kind::ServiceExport,
        "spec.exportedLabels",
        "imported services carry the exporting cluster's labels",
    ),
    row(
        Kind::ServiceExport,
        "spec.exportedAnnotations",
        "imported services carry no extra annotations",
    ),
];

/// The MeshConfig fields Strait acts on; every other field present is reported as ignored.
pub const MESH_CONFIG_HONOURED: &[&str] = &[
    "trustDomain",
    "trustDomainAliases",
    "rootNamespace",
    "outboundTrafficPolicy",
    "enableAutoMtls",
    "localityLbSetting",
    "defaultHttpRetryPolicy",
    "dnsRefreshRate",
    "connectTimeout",
    "pathNormalization",
    "caCertificates",
    "extensionProviders",
    "defaultProviders",
    "enableTracing",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "serviceSettings",
    "accessLogFile",
    "accessLogEncoding",
    "accessLogFormat",
    "defaultConfig",
];

/// The `defaultConfig` (ProxyConfig) fields Strait acts on.
pub const PROXY_CONFIG_HONOURED: &[&str] = &[
    "terminationDrainDuration",
    "drainDuration",
    "concurrency",
    "proxyMetadata",
    "proxyAdminPort",
    "statusPort",
];

/// Every unimplemented field, for documentation and tests.
pub fn unimplemented_fields() -> &'static [Unimplemented] {
    &ROWS
}

/// Reports every unimplemented field present in the object.
pub(crate) fn report(check: &mut Check<'_>) {
    let object = check.object();
    let root = &*object.source.node();
    for row in unimplemented_fields()
        .iter()
        .filter(|r| r.kind == object.kind)
    {
        let value = row.value.as_deref();
        find(root, &row.segments, FieldPath::ROOT, &mut |path, node| {
            if value.is_none_or(|v| node.as_str() == Some(v)) {
                let what = value.map_or_else(String::new, |v| format!(" {v}"));
                check.warning(
                    &path,
                    "not-implemented",
                    format!("not implemented, ignored{what}: {}", row.note),
                );
            }
        });
    }
    if matches!(object.kind, Kind::MeshConfig) {
        honoured_only(
            check,
            root,
            &FieldPath::ROOT,
            MESH_CONFIG_HONOURED,
            "MeshConfig",
        );
        if let Some(proxy) = root.get("defaultConfig") {
            let path = FieldPath::ROOT.field("defaultConfig");
            honoured_only(check, proxy, &path, PROXY_CONFIG_HONOURED, "defaultConfig");
        }
    }
}

fn honoured_only(
    check: &mut Check<'_>,
    node: &Node,
    path: &FieldPath,
    honoured: &[&str],
    what: &str,
) {
    let Value::Map(entries) = &node.value else {
        return;
    };
    for (key, _) in entries {
        let Some(name) = key.scalar_text().map(Cow::into_owned) else {
            continue;
        };
        if !honoured.contains(&&*name) {
            check.warning(
                &path.field(name.clone()),
                "not-implemented",
                format!("not implemented, ignored: Strait does not act on this {what} field"),
            );
        }
    }
}

/// Calls `found` for every node the pattern segments reach from `node`. A segment `name[]`
/// descends into the field and then every list item; `*` into every map value.
fn find(
    node: &Node,
    segments: &'static [String],
    path: FieldPath,
    found: &mut dyn FnMut(FieldPath, &Node),
) {
    let Some((segment, rest)) = segments.split_first() else {
        found(path, node);
        return;
    };
    let (name, each): (&'static str, bool) = match segment.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (segment, false),
    };
    if name == "*" {
        if let Value::Map(entries) = &node.value {
            for (key, value) in entries {
                if let Some(key) = key.scalar_text() {
                    find(value, rest, path.key(&key), found);
                }
            }
        }
        return;
    }
    let Some(child) = node.get(name) else { return };
    let child_path = path.field(name);
    if each {
        if let Value::Seq(items) = &child.value {
            for (i, item) in items.iter().enumerate() {
                find(item, rest, child_path.index(i), found);
            }
        }
    } else {
        find(child, rest, child_path, found);
    }
}
