//! What a sidecar sees, as Istio's SidecarScope decides it: the Sidecar resource that applies
//! to the workload, the hosts its egress listeners import, its outbound traffic policy, and
//! which ServiceEntries, VirtualServices and DestinationRules are exported to the workload's
//! namespace (`exportTo`, else MeshConfig's `default*ExportTo`).
//!
//! The Sidecar that applies: one whose `workloadSelector` selects the workload in its own
//! namespace, else the namespace's Sidecar without a selector, else the root namespace's
//! (MeshConfig `rootNamespace`) Sidecar without a selector. Among several at one level the
//! oldest by creation time applies, else the first by namespace/name (`validate` reports the
//! conflict), as for PeerAuthentication.
//!
//! Egress hosts are `namespace/dnsName`: the namespace is that of the object declaring the
//! service (`*` any, `.` the workload's own, `~` none), and the name may be a wildcard.

use std::collections::BTreeMap;

use crate::hosts;
use crate::resources::mesh_config::MeshConfig;
use crate::resources::sidecar::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficMode, Sidecar,
};
use crate::resources::{Object, Spec};

/// Istio's default root namespace.
const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// One `namespace/dnsName` entry of an egress listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EgressHost {
    /// `None`: `~`, no namespace; `Some("*")`: any namespace.
    namespace: Option<String>,
    /// Lowercase; may be a wildcard (`*`, `*.example.com`).
    host: String,
}

impl EgressHost {
    /// Parses `namespace/dnsName` written in a Sidecar that applies to a workload in
    /// `workload_namespace`; `None` for an entry validation rejects.
    pub(crate) fn parse(entry: &str, workload_namespace: &str) -> Option<EgressHost> {
        let (namespace, host) = entry.split_once('/')?;
        let namespace = match namespace {
            "~" => None,
            "." => Some(workload_namespace.to_owned()),
            "" => return None,
            other => Some(other.to_owned()),
        };
        Some(EgressHost {
            namespace,
            host: host.to_ascii_lowercase(),
        })
    }

    /// Whether this entry imports `host` declared (or configured) in `namespace`.
    pub(crate) fn imports(&self, namespace: &str, host: &str) -> bool {
        let namespace_matches = self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns == "*" || ns == namespace);
        namespace_matches && hosts::within(host, &self.host)
    }
}

/// An egress listener of the applying Sidecar, its hosts parsed.
#[derive(Debug)]
pub(crate) struct EgressScope<'a> {
    pub(crate) index: usize,
    pub(crate) listener: &'a IstioEgressListener,
    pub(crate) hosts: Vec<EgressHost>,
}

impl EgressScope<'_> {
    /// Whether the listener imports `host` declared in `namespace`.
    pub(crate) fn imports(&self, namespace: &str, host: &str) -> bool {
        self.hosts.iter().any(|h| h.imports(namespace, host))
    }

    /// The listener's port number, when it has one.
    pub(crate) fn port(&self) -> Option<u32> {
        self.listener
            .port
            .as_ref()
            .and_then(|p| p.number)
            .filter(|n| *n > 0)
    }
}

/// The Sidecar resource applying to one workload, and the mesh's export defaults.
#[derive(Debug)]
pub(crate) struct SidecarScope<'a> {
    /// The applying Sidecar, if any.
    pub(crate) sidecar: Option<(&'a Object, &'a Sidecar)>,
    /// The workload's namespace.
    namespace: String,
    /// Whether the workload's traffic is captured (iptables) when a listener says `DEFAULT`.
    captured: bool,
    egress: Vec<EgressScope<'a>>,
    default_service_export_to: Vec<String>,
    default_virtual_service_export_to: Vec<String>,
    default_destination_rule_export_to: Vec<String>,
}

impl<'a> SidecarScope<'a> {
    pub(crate) fn new(
        objects: &[&'a Object],
        namespace: &str,
        labels: &BTreeMap<String, String>,
        captured: bool,
    ) -> SidecarScope<'a> {
        let mesh: Option<&MeshConfig> = objects.iter().find_map(|o| match &o.spec {
            Spec::MeshConfig(mesh) => Some(&**mesh),
            _ => None,
        });
        let root_namespace = mesh
            .and_then(|m| m.root_namespace.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_owned());
        let sidecar = select(objects, namespace, labels, &root_namespace);
        let egress = sidecar
            .map(|(_, sidecar)| {
                sidecar
                    .egress
                    .iter()
                    .enumerate()
                    .map(|(index, listener)| EgressScope {
                        index,
                        listener,
                        hosts: listener
                            .hosts
                            .iter()
                            .flatten()
                            .filter_map(|h| EgressHost::parse(h, namespace))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        SidecarScope {
            sidecar,
            namespace: namespace.to_owned(),
            captured,
            egress,
            default_service_export_to: mesh
                .map(|m| m.default_service_export_to.clone())
                .unwrap_or_default(),
            default_virtual_service_export_to: mesh
                .map(|m| m.default_virtual_service_export_to.clone())
                .unwrap_or_default(),
            default_destination_rule_export_to: mesh
                .map(|m| m.default_destination_rule_export_to.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether `object` (a ServiceEntry, VirtualService or DestinationRule) is exported to the
    /// workload's namespace; other kinds always are.
    pub(crate) fn exported(&self, object: &Object) -> bool {
        let (own, defaults) = match &object.spec {
            Spec::ServiceEntry(entry) => (&entry.export_to, &self.default_service_export_to),
            Spec::VirtualService(vs) => (&vs.export_to, &self.default_virtual_service_export_to),
            Spec::DestinationRule(rule) => {
                (&rule.export_to, &self.default_destination_rule_export_to)
            }
            _ => return true,
        };
        let list = if own.is_empty() { defaults } else { own };
        list.is_empty()
            || list.iter().any(|entry| match entry.as_str() {
                "*" => true,
                "." => object.namespace == self.namespace,
                "~" => false,
                other => other == self.namespace,
            })
    }

    /// The Sidecar's `outboundTrafficPolicy` mode: `Some(true)` for ALLOW_ANY, `Some(false)`
    /// for REGISTRY_ONLY, `None` when it leaves MeshConfig's in force.
    pub(crate) fn allow_any(&self) -> Option<bool> {
        let (_, sidecar) = self.sidecar?;
        let mode = sidecar.outbound_traffic_policy.as_ref()?.mode?;
        Some(mode == OutboundTrafficMode::AllowAny)
    }

    /// The Sidecar's ingress listeners, with their index; empty without a Sidecar.
    pub(crate) fn ingress(&self) -> Vec<(usize, &'a IstioIngressListener)> {
        self.sidecar
            .map(|(_, s)| s.ingress.iter().enumerate().collect())
            .unwrap_or_default()
    }

    /// The egress listeners with a port that the sidecar binds as real listeners.
    pub(crate) fn bound_egress(&self) -> impl Iterator<Item = &EgressScope<'a>> {
        self.egress
            .iter()
            .filter(|e| e.port().is_some() && self.binds(e.listener.capture_mode))
    }

    /// Whether a listener with `mode` is bound to its own address and port (rather than reached
    /// through capture): `NONE`, or `DEFAULT` on a workload without capture.
    pub(crate) fn binds(&self, mode: Option<CaptureMode>) -> bool {
        match mode.unwrap_or_default() {
            CaptureMode::None => true,
            CaptureMode::Iptables => false,
            CaptureMode::Default => !self.captured,
        }
    }

    /// Whether the captured outbound side routes `host` (declared in `namespace`) on `port`:
    /// a captured egress listener for the port decides, else the listener without a port; a
    /// Sidecar with neither imports nothing on that port; without a Sidecar (or without
    /// egress listeners) everything exported is seen.
    pub(crate) fn captured_imports(&self, namespace: &str, host: &str, port: u32) -> bool {
        if self.egress.is_empty() {
            return true;
        }
        let for_port = self
            .egress
            .iter()
            .find(|e| e.port() == Some(port) && !self.binds(e.listener.capture_mode));
        let catch_all = self.egress.iter().find(|e| e.port().is_none());
        match for_port.or(catch_all) {
            Some(listener) => listener.imports(namespace, host),
            None => false,
        }
    }

    /// Whether any egress listener imports `host` written in `namespace` (the names the DNS
    /// proxy answers); without a Sidecar (or without egress listeners) everything exported is
    /// seen.
    pub(crate) fn imports_any(&self, namespace: &str, host: &str) -> bool {
        self.egress.is_empty() || self.egress.iter().any(|e| e.imports(namespace, host))
    }

    /// Whether any captured egress listener imports `host` written in `namespace` (for
    /// VirtualServices: those no listener imports are not bound to the outbound side).
    pub(crate) fn captured_imports_any(&self, namespace: &str, host: &str) -> bool {
        self.egress.is_empty()
            || self
                .egress
                .iter()
                .filter(|e| e.port().is_none() || !self.binds(e.listener.capture_mode))
                .any(|e| e.imports(namespace, host))
    }
}

/// The Sidecar that applies to a workload in `namespace` with `labels`.
fn select<'a>(
    objects: &[&'a Object],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Option<(&'a Object, &'a Sidecar)> {
    let all: Vec<(&'a Object, &'a Sidecar)> = objects
        .iter()
        .filter_map(|object| match &object.spec {
            Spec::Sidecar(sidecar) => Some((*object, &**sidecar)),
            _ => None,
        })
        .collect();
    let selector = |s: &Sidecar| {
        s.workload_selector
            .as_ref()
            .map(|w| w.labels.clone())
            .filter(|l| !l.is_empty())
    };
    let workload = super::policies::oldest(all.iter().filter(|(o, s)| {
        o.namespace == namespace
            && selector(s)
                .is_some_and(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }));
    let namespace_default = || {
        super::policies::oldest(
            all.iter()
                .filter(|(o, s)| o.namespace == namespace && selector(s).is_none()),
        )
    };
    let mesh_default = || {
        super::policies::oldest(
            all.iter()
                .filter(|(o, s)| o.namespace == root_namespace && selector(s).is_none()),
        )
    };
    workload.or_else(namespace_default).or_else(mesh_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{LoadOptions, Loaded, load_text};
    use std::sync::Arc;

    fn load(yaml: &str) -> Loaded {
        load_with_mesh(yaml, "")
    }

    fn load_with_mesh(yaml: &str, mesh: &str) -> Loaded {
        let mut loaded = Loaded::default();
        for (file, text) in [("test.yaml", yaml), ("mesh.yaml", mesh)] {
            if !text.is_empty() {
                load_text(&Arc::from(file), text, &LoadOptions::default(), &mut loaded);
            }
        }
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        loaded
    }

    fn sidecar(namespace: &str, name: &str, created: Option<&str>, selector: &str) -> String {
        let created = created
            .map(|c| format!(", creationTimestamp: \"{c}\""))
            .unwrap_or_default();
        let selector = if selector.is_empty() {
            String::new()
        } else {
            format!("\n  workloadSelector: {{labels: {{{selector}}}}}")
        };
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {namespace}{created}}}\nspec:{selector}\n  egress: [{{hosts: [\"./{name}.example.com\"]}}]\n"
        )
    }

    fn applying(yaml: &str, labels: &[(&str, &str)]) -> Option<String> {
        applying_with_mesh(yaml, "", labels)
    }

    fn applying_with_mesh(yaml: &str, mesh: &str, labels: &[(&str, &str)]) -> Option<String> {
        let loaded = load_with_mesh(yaml, mesh);
        let objects: Vec<&Object> = loaded
            .objects
            .iter()
            .map(std::borrow::Borrow::borrow)
            .collect();
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SidecarScope::new(&objects, "default", &labels, true)
            .sidecar
            .map(|(o, _)| format!("{}/{}", o.namespace, o.name()))
    }

    #[test]
    fn a_selecting_sidecar_beats_the_namespace_default_which_beats_the_root_namespace() {
        let root = sidecar("istio-system", "mesh", None, "");
        let namespace = sidecar("default", "ns", None, "");
        let workload = sidecar("default", "wl", None, "app: reviews");
        let other_namespace = sidecar("other", "elsewhere", None, "app: reviews");
        let all = format!("{root}{namespace}{workload}{other_namespace}");
        let reviews = [("app", "reviews")];
        assert_eq!(applying(&all, &reviews).as_deref(), Some("default/wl"));
        assert_eq!(
            applying(&all, &[("app", "ratings")]).as_deref(),
            Some("default/ns")
        );
        assert_eq!(
            applying(&format!("{root}{other_namespace}"), &reviews).as_deref(),
            Some("istio-system/mesh")
        );
        assert_eq!(applying(&other_namespace, &reviews), None);
        // A root Sidecar in a MeshConfig-named root namespace.
        let custom = sidecar("mesh-root", "custom", None, "");
        assert_eq!(
            applying_with_mesh(
                &format!("{root}{custom}"),
                "rootNamespace: mesh-root\n",
                &reviews
            )
            .as_deref(),
            Some("mesh-root/custom")
        );
    }

    #[test]
    fn among_equals_the_oldest_applies_else_the_first_by_name() {
        let newer = sidecar("default", "a-newer", Some("2024-05-01T00:00:00Z"), "");
        let older = sidecar("default", "b-older", Some("2023-01-01T00:00:00Z"), "");
        assert_eq!(
            applying(&format!("{newer}{older}"), &[]).as_deref(),
            Some("default/b-older")
        );
        let untimed = sidecar("default", "c-untimed", None, "");
        assert_eq!(
            applying(&format!("{untimed}{newer}{older}"), &[]).as_deref(),
            Some("default/a-newer"),
            "without every creation time, the first by name"
        );
    }

    #[test]
    fn egress_hosts_match_by_namespace_and_wildcard_name() {
        let parse = |e: &str| EgressHost::parse(e, "default").unwrap();
        assert!(parse("./*").imports("default", "reviews.default.svc.cluster.local"));
        assert!(!parse("./*").imports("other", "reviews.other.svc.cluster.local"));
        assert!(parse("*/*").imports("other", "api.example.com"));
        assert!(parse("*/*.example.com").imports("x", "api.example.com"));
        assert!(!parse("*/*.example.com").imports("x", "example.org"));
        assert!(parse("istio-system/*").imports("istio-system", "a.b"));
        assert!(!parse("istio-system/*").imports("default", "a.b"));
        assert!(!parse("~/*").imports("default", "reviews.default.svc.cluster.local"));
        assert!(parse("*/API.example.com").imports("x", "api.example.com"));
        // A wildcard service is not imported by one of its names: that would widen it.
        assert!(!parse("*/api.example.com").imports("x", "*.example.com"));
        assert_eq!(EgressHost::parse("no-slash", "default"), None);
    }

    #[test]
    fn export_to_decides_what_a_namespace_sees_with_mesh_defaults() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec: {hosts: [private.example.com], exportTo: ["."], ports: [{number: 80, name: http}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: other}
spec: {hosts: [shared.example.com], exportTo: [default], ports: [{number: 80, name: http}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: default}
spec: {hosts: [hidden.example.com], exportTo: ["~"], ports: [{number: 80, name: http}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unset, namespace: other}
spec: {hosts: [shared.example.com], http: [{route: [{destination: {host: shared.example.com}}]}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: own, namespace: default}
spec: {host: shared.example.com, exportTo: ["."]}
"#;
        let loaded = load(yaml);
        let objects: Vec<&Object> = loaded
            .objects
            .iter()
            .map(std::borrow::Borrow::borrow)
            .collect();
        let seen = |scope: &SidecarScope<'_>| -> Vec<&str> {
            objects
                .iter()
                .filter(|o| scope.exported(o))
                .map(|o| o.name())
                .collect()
        };
        let default = SidecarScope::new(&objects, "default", &BTreeMap::new(), true);
        assert_eq!(seen(&default), ["shared", "unset", "own"]);
        let other = SidecarScope::new(&objects, "other", &BTreeMap::new(), true);
        assert_eq!(seen(&other), ["private", "unset"]);
        // MeshConfig's default applies to objects that set none.
        let loaded = load_with_mesh(yaml, "defaultVirtualServiceExportTo: [\".\"]\n");
        let objects: Vec<&Object> = loaded
            .objects
            .iter()
            .map(std::borrow::Borrow::borrow)
            .collect();
        let default = SidecarScope::new(&objects, "default", &BTreeMap::new(), true);
        let names: Vec<&str> = objects
            .iter()
            .filter(|o| default.exported(o))
            .map(|o| o.name())
            .collect();
        assert!(!names.contains(&"unset"), "{names:?}");
    }

    #[test]
    fn a_port_s_egress_listener_scopes_that_port_and_the_catch_all_the_rest() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    captureMode: IPTABLES
    hosts: ["*/ratings.other.svc.cluster.local"]
  - port: {number: 3306, protocol: TCP, name: mysql}
    captureMode: NONE
    hosts: ["*/db.other.svc.cluster.local"]
  - hosts: ["./*"]
"#;
        let loaded = load(yaml);
        let objects: Vec<&Object> = loaded
            .objects
            .iter()
            .map(std::borrow::Borrow::borrow)
            .collect();
        let scope = SidecarScope::new(&objects, "default", &BTreeMap::new(), true);
        let ratings = "ratings.other.svc.cluster.local";
        let reviews = "reviews.default.svc.cluster.local";
        assert!(scope.captured_imports("other", ratings, 9080));
        assert!(!scope.captured_imports("default", reviews, 9080));
        assert!(scope.captured_imports("default", reviews, 8080));
        assert!(!scope.captured_imports("other", ratings, 8080));
        // The bound listener does not scope the captured side.
        assert!(!scope.captured_imports("other", "db.other.svc.cluster.local", 3306));
        let bound: Vec<Option<u32>> = scope.bound_egress().map(EgressScope::port).collect();
        assert_eq!(bound, [Some(3306)]);
        // `~/*` alone: nothing is routed.
        let none = yaml.replace("\"./*\"", "\"~/*\"");
        let loaded = load(&none);
        let objects: Vec<&Object> = loaded
            .objects
            .iter()
            .map(std::borrow::Borrow::borrow)
            .collect();
        let scope = SidecarScope::new(&objects, "default", &BTreeMap::new(), true);
        assert!(!scope.captured_imports("default", reviews, 8080));
        assert!(!scope.captured_imports_any("default", reviews));
    }
}
