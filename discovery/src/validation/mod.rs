//! Validation with Istio's rules.
//!
//! Findings about an object's own fields are errors (Istio would reject the object) or, for
//! fields Strait does not implement, warnings (`support`). Findings about how objects relate to
//! each other (`analysis`: a missing subset, a dangling gateway, conflicting hosts, duplicates)
//! are warnings, because a directory may hold alternatives.

mod analysis;
pub(crate) mod check;
mod destination_rule;
mod gateway;
mod mesh;
mod rules;
mod security;
mod service_entry;
mod sidecar;
pub mod support;
mod virtual_service;

use std::collections::BTreeMap;

use check::Check;

use crate::findings::Finding;
use crate::resources::{Kind, Object, Spec};
use crate::yaml::FieldPath;

/// What validation needs to know beyond the objects.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// The suffix short host names resolve under (`reviews` -> `reviews.NS.svc.SUFFIX`).
    pub domain_suffix: String,
    /// Labels of the gateway proxies that will run (`strait run --labels`), so that a Gateway
    /// selecting them is not reported as selecting nothing.
    pub gateway_labels: Vec<BTreeMap<String, String>>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            domain_suffix: "cluster.local".to_owned(),
            gateway_labels: Vec::new(),
        }
    }
}

/// Validates every object on its own and then how they relate.
pub fn validate(objects: &[Object], options: &ValidateOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    for object in objects {
        validate_object(object, &mut findings);
    }
    let objects: Vec<&Object> = objects.iter().collect();
    analyze(&objects, options, &mut findings);
    findings
}

/// How objects relate to each other (warnings only): what `validate` checks after each object
/// on its own.
pub fn analyze(objects: &[&Object], options: &ValidateOptions, findings: &mut Vec<Finding>) {
    analysis::analyze(objects, options, findings);
}

/// One object's own fields: errors for what Istio rejects, warnings for what Strait ignores.
pub fn validate_object(object: &Object, findings: &mut Vec<Finding>) {
    let mut check = Check::new(object, findings);
    metadata(&mut check);
    let spec = FieldPath::ROOT.field("spec");
    if object.kind.requires_spec() && object.source.node().get("spec").is_none() {
        // Reported by the loader ("spec: Required value"); there is nothing more to check.
        return;
    }
    match &object.spec {
        Spec::Gateway(gateway) => gateway::validate(&mut check, &spec, gateway),
        Spec::VirtualService(vs) => virtual_service::validate(&mut check, &spec, vs),
        Spec::DestinationRule(dr) => destination_rule::validate(&mut check, &spec, dr),
        Spec::ServiceEntry(se) => service_entry::validate_service_entry(&mut check, &spec, se),
        Spec::WorkloadEntry(we) => service_entry::validate_workload_entry(&mut check, &spec, we),
        Spec::Sidecar(sidecar) => sidecar::validate(&mut check, &spec, sidecar),
        Spec::PeerAuthentication(pa) => {
            security::validate_peer_authentication(&mut check, &spec, pa)
        }
        Spec::AuthorizationPolicy(ap) => {
            security::validate_authorization_policy(&mut check, &spec, ap)
        }
        Spec::RequestAuthentication(ra) => {
            security::validate_request_authentication(&mut check, &spec, ra)
        }
        Spec::ServiceExport(_) => {}
        Spec::MeshConfig(mesh) => mesh::validate_mesh_config(&mut check, mesh),
        Spec::MeshNetworks(networks) => mesh::validate_mesh_networks(&mut check, networks),
    }
    support::report(&mut check);
}

/// Kubernetes metadata: a name and namespace Kubernetes would accept, and the annotations Istio
/// reserves.
fn metadata(check: &mut Check<'_>) {
    let object = check.object();
    if matches!(object.kind, Kind::MeshConfig | Kind::MeshNetworks) {
        return;
    }
    let meta = FieldPath::ROOT.field("metadata");
    match object.meta.name.as_deref() {
        None if object.meta.generate_name.is_none() => check.required(&meta.field("name")),
        None => {}
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(rules::is_dns1123_label)
                && !name.bytes().any(|b| b.is_ascii_uppercase());
            if !valid {
                check.error(
                    &meta.field("name"),
                    "invalid-value",
                    format!(
                        "Invalid value: {name:?}: a name must be lowercase letters, digits, '-' and \
                         '.', starting and ending with a letter or digit"
                    ),
                );
            }
        }
    }
    if let Some(namespace) = &object.meta.namespace
        && (!rules::is_dns1123_label(namespace)
            || namespace.bytes().any(|b| b.is_ascii_uppercase()))
    {
        check.error(
            &meta.field("namespace"),
            "invalid-value",
            format!("Invalid value: {namespace:?}: a namespace must be a lowercase DNS-1123 label"),
        );
    }
    let annotations = meta.field("annotations");
    for (key, value) in &object.meta.annotations {
        let at = annotations.key(key);
        match key.as_str() {
            "istio.io/dry-run" => match &object.spec {
                Spec::AuthorizationPolicy(policy) => {
                    use crate::resources::security::AuthorizationAction as A;
                    if !matches!(policy.action.unwrap_or_default(), A::Allow | A::Deny) {
                        check.error(
                            &at,
                            "unsupported-value",
                            "istio.io/dry-run only supports the ALLOW and DENY actions",
                        );
                    } else if !matches!(
                        value.as_str(),
                        "1" | "t"
                            | "T"
                            | "TRUE"
                            | "true"
                            | "True"
                            | "0"
                            | "f"
                            | "F"
                            | "FALSE"
                            | "false"
                            | "False"
                    ) {
                        check.error(
                            &at,
                            "invalid-value",
                            format!("istio.io/dry-run must be true or false, not {value:?}"),
                        );
                    }
                }
                _ => check.error(
                    &at,
                    "unsupported-value",
                    "istio.io/dry-run is only supported on AuthorizationPolicy",
                ),
            },
            "internal.istio.io/webhook-always-reject"
            | "internal.istio.io/parent-namespace"
            | "internal.istio.io/parents" => check.error(
                &at,
                "unsupported-value",
                format!("{key} is reserved for Istio and may not be set by users"),
            ),
            _ => {}
        }
    }
}

/// Everything `strait validate` reports about a set of files.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects read, of supported kinds or not.
    pub objects: usize,
    /// Findings in file and position order.
    pub findings: Vec<Finding>,
}

/// Reads and validates configuration files and directories.
pub fn validate_paths(
    paths: &[std::path::PathBuf],
    load: &crate::resources::LoadOptions,
    options: &ValidateOptions,
) -> Report {
    let loaded = crate::resources::load_paths(paths, load);
    let mut findings = loaded.findings;
    findings.extend(validate(&loaded.objects, options));
    findings.sort_by(|a, b| {
        (a.file.as_deref(), a.position, a.level).cmp(&(b.file.as_deref(), b.position, b.level))
    });
    Report {
        objects: loaded.documents,
        findings,
    }
}
