//! AuthorizationPolicies and PeerAuthentications to the `Policies` of one workload or gateway.
//!
//! Scope, as in Istio: the root namespace's policies (MeshConfig `rootNamespace`) apply
//! mesh-wide, a namespace's to its own workloads, and `selector.matchLabels` narrows either.
//! `targetRef(s)` are not supported (the policy is left out, with a warning). Principals and
//! trust domains written with `cluster.local` (or the local trust domain, or an alias) are
//! expanded to the local trust domain and every alias. Part of a rule that cannot be compiled
//! fails closed: an ALLOW rule is dropped (it allows nothing), a DENY or CUSTOM rule matches
//! everything; both are reported.
//!
//! PeerAuthentication: workload (selector) over namespace over mesh, each level's UNSET
//! inheriting from the level above, PERMISSIVE at the top; among several at one level the
//! oldest by creation time, else the first by namespace/name (validation reports the conflict).
//! Port-level modes name the workload's own ports.
//!
//! RequestAuthentication: see `jwt`.

mod jwt;

use std::collections::BTreeMap;

use strait_proxy::snapshot::{
    Attribute, AuthorizationPolicy as CompiledPolicy, Clause, FieldMatch, MtlsMode as Mode,
    PathNormalization, PeerAuthentication as CompiledPeerAuthentication, Policies, PolicyError,
    Rule as CompiledRule,
};

use crate::findings::Finding;
use crate::resources::common::WorkloadSelector;
use crate::resources::mesh_config::{MeshConfig, NormalizationType};
use crate::resources::security::{
    AuthorizationAction, AuthorizationPolicy, Condition, MtlsMode, PeerAuthentication, Rule, is_set,
};
use crate::resources::{Object, Spec};
use crate::validation::check::Check;
use crate::yaml::FieldPath;

/// Istio's default root namespace.
const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
/// What `cluster.local` in a policy stands for: the local trust domain.
const LOCAL_TRUST_DOMAIN: &str = "cluster.local";
/// The annotation that makes a policy log instead of enforce.
const DRY_RUN: &str = "istio.io/dry-run";

/// The workload (or gateway) whose policies are compiled.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The mesh settings policies depend on.
struct Mesh {
    root_namespace: String,
    /// The local trust domain first, then its aliases.
    trust_domains: Vec<String>,
    path_normalization: PathNormalization,
}

impl Mesh {
    fn from(objects: &[&Object]) -> Mesh {
        let config: Option<&MeshConfig> = objects.iter().find_map(|o| match &o.spec {
            Spec::MeshConfig(mesh) => Some(&**mesh),
            _ => None,
        });
        let local = config
            .and_then(|m| m.trust_domain.clone())
            .filter(|td| !td.is_empty())
            .unwrap_or_else(|| LOCAL_TRUST_DOMAIN.to_owned());
        let mut trust_domains = vec![local];
        for alias in config.iter().flat_map(|m| &m.trust_domain_aliases) {
            if !trust_domains.contains(alias) {
                trust_domains.push(alias.clone());
            }
        }
        let normalization = config
            .and_then(|m| m.path_normalization.as_ref())
            .and_then(|p| p.normalization);
        Mesh {
            root_namespace: config
                .and_then(|m| m.root_namespace.clone())
                .unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_owned()),
            trust_domains,
            path_normalization: match normalization {
                Some(NormalizationType::None) => PathNormalization::None,
                Some(NormalizationType::MergeSlashes) => PathNormalization::MergeSlashes,
                Some(NormalizationType::DecodeAndMergeSlashes) => {
                    PathNormalization::DecodeAndMergeSlashes
                }
                Some(NormalizationType::Default | NormalizationType::Base) | None => {
                    PathNormalization::Base
                }
            },
        }
    }

    /// `value` with its trust domain expanded: a local one (`cluster.local`, the mesh's own, or
    /// an alias) becomes every local one.
    fn expand(&self, value: &str, whole: bool) -> Vec<String> {
        let (domain, rest) = if whole {
            (value, "")
        } else {
            match value.find('/') {
                Some(slash) => value.split_at(slash),
                None => return vec![value.to_owned()],
            }
        };
        let local = domain == LOCAL_TRUST_DOMAIN || self.trust_domains.iter().any(|d| d == domain);
        if !local {
            return vec![value.to_owned()];
        }
        self.trust_domains
            .iter()
            .map(|d| format!("{d}{rest}"))
            .collect()
    }
}

/// The policies that apply to `workload`. Problems are reported in `findings`.
pub fn compile(
    objects: &[&Object],
    workload: Workload<'_>,
    findings: &mut Vec<Finding>,
) -> Policies {
    let mesh = Mesh::from(objects);
    let mut policies = Policies {
        path_normalization: mesh.path_normalization,
        peer_authentication: peer_authentication(objects, workload, &mesh, findings),
        jwt_rules: jwt::compile(objects, workload, &mesh, findings),
        ..Policies::default()
    };
    let mut selected: Vec<(&Object, &AuthorizationPolicy)> = objects
        .iter()
        .filter_map(|object| match &object.spec {
            Spec::AuthorizationPolicy(policy) => Some((*object, policy)),
            _ => None,
        })
        .filter(|(object, policy)| applies(object, &policy.selector, workload, &mesh))
        .collect();
    selected.sort_by(|(a, _), (b, _)| (&a.namespace, a.name()).cmp(&(&b.namespace, b.name())));
    for (object, policy) in selected {
        let mut check = Check::new(object, findings);
        if policy.target_ref.is_some() || policy.target_refs.as_ref().is_some_and(|t| !t.is_empty())
        {
            let field = if policy.target_ref.is_some() {
                "targetRef"
            } else {
                "targetRefs"
            };
            check.warning(
                &FieldPath::ROOT.field("spec").field(field),
                "not-supported",
                format!("{field} is not supported: this policy is not applied (use selector)"),
            );
            continue;
        }
        if object
            .meta
            .annotations
            .get(DRY_RUN)
            .is_some_and(|v| v == "true")
        {
            check.warning(
                &FieldPath::ROOT.field("metadata").field("annotations"),
                "not-supported",
                "dry-run policies are not evaluated: this policy is not applied",
            );
            continue;
        }
        let action = policy.action.unwrap_or_default();
        let compiled = CompiledPolicy {
            name: format!("{}/{}", object.namespace, object.name()),
            rules: rules(&mut check, policy, action, &mesh),
        };
        match action {
            AuthorizationAction::Allow => policies.allow.push(compiled),
            AuthorizationAction::Deny => policies.deny.push(compiled),
            AuthorizationAction::Audit => policies.audit.push(compiled),
            AuthorizationAction::Custom => policies.custom.push(compiled),
        }
    }
    policies
}

/// Whether a policy in `object`'s namespace with `selector` applies to `workload`.
fn applies(
    object: &Object,
    selector: &Option<WorkloadSelector>,
    workload: Workload<'_>,
    mesh: &Mesh,
) -> bool {
    (object.namespace == workload.namespace || object.namespace == mesh.root_namespace)
        && selects(selector, workload.labels)
}

fn selects(selector: &Option<WorkloadSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn has_selector(selector: &Option<WorkloadSelector>) -> bool {
    selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(|l| !l.is_empty())
}

fn rules(
    check: &mut Check<'_>,
    policy: &AuthorizationPolicy,
    action: AuthorizationAction,
    mesh: &Mesh,
) -> Vec<CompiledRule> {
    let path = FieldPath::ROOT.field("spec").field("rules");
    let namespace = check.object().namespace.clone();
    let mut compiled = Vec::new();
    for (i, rule) in policy.rules.iter().flatten().enumerate() {
        match compile_rule(rule, &namespace, mesh) {
            Ok(rule) => compiled.push(rule),
            Err((at, error)) => {
                let at = at.resolve(&path.index(i));
                if action == AuthorizationAction::Allow || action == AuthorizationAction::Audit {
                    check.warning(
                        &at,
                        "not-supported",
                        format!("{error}: this rule is ignored (it matches nothing)"),
                    );
                } else {
                    check.warning(
                        &at,
                        "not-supported",
                        format!("{error}: this rule matches every request (fails closed)"),
                    );
                    compiled.push(CompiledRule::default());
                }
            }
        }
    }
    compiled
}

/// Where in a rule something went wrong.
enum At {
    Source(usize, &'static str),
    Operation(usize, &'static str),
    When(usize),
}

impl At {
    fn resolve(&self, rule: &FieldPath) -> FieldPath {
        match self {
            At::Source(j, field) => rule.field("from").index(*j).field("source").field(*field),
            At::Operation(j, field) => rule.field("to").index(*j).field("operation").field(*field),
            At::When(j) => rule.field("when").index(*j).field("key"),
        }
    }
}

fn compile_rule(
    rule: &Rule,
    namespace: &str,
    mesh: &Mesh,
) -> Result<CompiledRule, (At, PolicyError)> {
    let mut compiled = CompiledRule::default();
    for (j, from) in rule.from.iter().enumerate() {
        let mut clause = Clause::default();
        if let Some(source) = &from.source {
            let fields = [
                (
                    "principals",
                    "notPrincipals",
                    Attribute::SourcePrincipal,
                    &source.principals,
                    &source.not_principals,
                ),
                (
                    "requestPrincipals",
                    "notRequestPrincipals",
                    Attribute::RequestPrincipal,
                    &source.request_principals,
                    &source.not_request_principals,
                ),
                (
                    "namespaces",
                    "notNamespaces",
                    Attribute::SourceNamespace,
                    &source.namespaces,
                    &source.not_namespaces,
                ),
                (
                    "serviceAccounts",
                    "notServiceAccounts",
                    Attribute::SourceServiceAccount,
                    &source.service_accounts,
                    &source.not_service_accounts,
                ),
                (
                    "ipBlocks",
                    "notIpBlocks",
                    Attribute::SourceIp,
                    &source.ip_blocks,
                    &source.not_ip_blocks,
                ),
                (
                    "remoteIpBlocks",
                    "notRemoteIpBlocks",
                    Attribute::RemoteIp,
                    &source.remote_ip_blocks,
                    &source.not_remote_ip_blocks,
                ),
                (
                    "trustDomains",
                    "notTrustDomains",
                    Attribute::SourceTrustDomain,
                    &source.trust_domains,
                    &source.not_trust_domains,
                ),
            ];
            for (name, not_name, attribute, values, not_values) in fields {
                for (field, list, negated) in [(name, values, false), (not_name, not_values, true)]
                {
                    if !is_set(list) {
                        continue;
                    }
                    let values = values_for(&attribute, list.iter().flatten(), namespace, mesh);
                    let field_match = FieldMatch::parse(attribute.clone(), &values, negated)
                        .map_err(|e| (At::Source(j, field), e))?;
                    clause.fields.push(field_match);
                }
            }
        }
        compiled.from.push(clause);
    }
    for (j, to) in rule.to.iter().enumerate() {
        let mut clause = Clause::default();
        if let Some(operation) = &to.operation {
            let fields = [
                (
                    "hosts",
                    "notHosts",
                    Attribute::Host,
                    &operation.hosts,
                    &operation.not_hosts,
                ),
                (
                    "ports",
                    "notPorts",
                    Attribute::DestinationPort,
                    &operation.ports,
                    &operation.not_ports,
                ),
                (
                    "methods",
                    "notMethods",
                    Attribute::Method,
                    &operation.methods,
                    &operation.not_methods,
                ),
                (
                    "paths",
                    "notPaths",
                    Attribute::Path,
                    &operation.paths,
                    &operation.not_paths,
                ),
            ];
            for (name, not_name, attribute, values, not_values) in fields {
                for (field, list, negated) in [(name, values, false), (not_name, not_values, true)]
                {
                    if !is_set(list) {
                        continue;
                    }
                    let values: Vec<String> = list.iter().flatten().cloned().collect();
                    let field_match = FieldMatch::parse(attribute.clone(), &values, negated)
                        .map_err(|e| (At::Operation(j, field), e))?;
                    clause.fields.push(field_match);
                }
            }
        }
        compiled.to.push(clause);
    }
    for (j, condition) in rule.when.iter().enumerate() {
        compiled
            .when
            .extend(condition_fields(condition, namespace, mesh).map_err(|e| (At::When(j), e))?);
    }
    Ok(compiled)
}

fn condition_fields(
    condition: &Condition,
    namespace: &str,
    mesh: &Mesh,
) -> Result<Vec<FieldMatch>, PolicyError> {
    let key = condition.key.as_deref().unwrap_or_default();
    let attribute = Attribute::from_condition_key(key)?;
    let mut fields = Vec::new();
    for (list, negated) in [(&condition.values, false), (&condition.not_values, true)] {
        if !is_set(list) {
            continue;
        }
        let values = values_for(&attribute, list.iter().flatten(), namespace, mesh);
        fields.push(FieldMatch::parse(attribute.clone(), &values, negated)?);
    }
    Ok(fields)
}

/// Values as the matcher needs them: principals and trust domains with local trust domains
/// expanded, service accounts qualified by the policy's namespace.
fn values_for<'v>(
    attribute: &Attribute,
    values: impl Iterator<Item = &'v String>,
    namespace: &str,
    mesh: &Mesh,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        let expanded = match attribute {
            Attribute::SourcePrincipal => {
                mesh.expand(value.strip_prefix("spiffe://").unwrap_or(value), false)
            }
            Attribute::SourceTrustDomain => mesh.expand(value, true),
            Attribute::SourceServiceAccount if !value.contains('/') => {
                vec![format!("{namespace}/{value}")]
            }
            _ => vec![value.clone()],
        };
        for value in expanded {
            if !out.contains(&value) {
                out.push(value);
            }
        }
    }
    out
}

/// The PeerAuthentication of `workload`: mesh, then namespace, then workload level.
fn peer_authentication(
    objects: &[&Object],
    workload: Workload<'_>,
    mesh: &Mesh,
    findings: &mut Vec<Finding>,
) -> CompiledPeerAuthentication {
    let all: Vec<(&Object, &PeerAuthentication)> = objects
        .iter()
        .filter_map(|object| match &object.spec {
            Spec::PeerAuthentication(pa) => Some((*object, pa)),
            _ => None,
        })
        .collect();
    let mesh_level = oldest(
        all.iter()
            .filter(|(o, pa)| o.namespace == mesh.root_namespace && !has_selector(&pa.selector)),
    );
    let namespace_level = oldest(all.iter().filter(|(o, pa)| {
        o.namespace == workload.namespace
            && o.namespace != mesh.root_namespace
            && !has_selector(&pa.selector)
    }));
    let workload_level = oldest(all.iter().filter(|(o, pa)| {
        o.namespace == workload.namespace
            && has_selector(&pa.selector)
            && selects(&pa.selector, workload.labels)
    }));
    let mut resolved = CompiledPeerAuthentication::default();
    for (object, pa) in [mesh_level, namespace_level, workload_level]
        .into_iter()
        .flatten()
    {
        resolved
            .sources
            .push(format!("{}/{}", object.namespace, object.name()));
        if let Some(mode) = mode(pa.mtls.as_ref().and_then(|m| m.mode)) {
            resolved.mode = mode;
        }
    }
    if let Some((object, pa)) = workload_level {
        let mut check = Check::new(object, findings);
        let path = FieldPath::ROOT.field("spec").field("portLevelMtls");
        for (port, setting) in pa.port_level_mtls.iter().flatten() {
            let Ok(number) = port.parse::<u16>() else {
                check.warning(
                    &path.key(port),
                    "not-served",
                    format!("port {port:?} is not a port number: this setting is ignored"),
                );
                continue;
            };
            // UNSET inherits the workload's own mode.
            let mode = mode(setting.mode).unwrap_or(resolved.mode);
            resolved.ports.insert(number, mode);
        }
    }
    resolved
}

fn mode(mode: Option<MtlsMode>) -> Option<Mode> {
    match mode? {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(Mode::Disable),
        MtlsMode::Permissive => Some(Mode::Permissive),
        MtlsMode::Strict => Some(Mode::Strict),
    }
}

/// The one policy (or Sidecar) of several at a level that applies: the oldest when every one
/// has a distinct creation time, else the first by namespace/name (`validate` reports such
/// conflicts).
pub(super) fn oldest<'a, 'b, T: 'a>(
    candidates: impl Iterator<Item = &'b (&'a Object, &'a T)>,
) -> Option<(&'a Object, &'a T)>
where
    'a: 'b,
{
    let mut candidates: Vec<(&Object, &T)> = candidates.copied().collect();
    candidates.sort_by(|(a, _), (b, _)| (&a.namespace, a.name()).cmp(&(&b.namespace, b.name())));
    let times: Vec<Option<&String>> = candidates
        .iter()
        .map(|(o, _)| o.meta.creation_timestamp.as_ref())
        .collect();
    let mut distinct: Vec<&String> = times.iter().flatten().copied().collect();
    distinct.sort();
    distinct.dedup();
    if times.iter().all(Option::is_some) && distinct.len() == candidates.len() {
        // RFC 3339 times in UTC order as text.
        return candidates
            .into_iter()
            .min_by(|(a, _), (b, _)| a.meta.creation_timestamp.cmp(&b.meta.creation_timestamp));
    }
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests;
