//! The kinds Strait reads, with the API groups and versions Istio serves them under.

use std::fmt;

/// A configuration kind Strait understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    ServiceExport,
    /// `mesh.yaml`: Istio's MeshConfig, a document with no `apiVersion` or `kind`.
    MeshConfig,
    /// MeshNetworks: a document `networks: {...}`, as Istio keeps it beside MeshConfig.
    MeshNetworks,
}

const NETWORKING: &str = "networking.istio.io";
const SECURITY: &str = "security.istio.io";
const MULTICLUSTER: &str = "multicluster.x-k8s.io";

impl Kind {
    /// Every kind, in the order listings use.
    pub const ALL: [Kind; 12] = [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::ServiceExport,
        Kind::MeshConfig,
        Kind::MeshNetworks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::ServiceExport => "ServiceExport",
            Kind::MeshConfig => "MeshConfig",
            Kind::MeshNetworks => "MeshNetworks",
        }
    }

    /// The API group and the versions it is served under; `None` for the mesh documents,
    /// which carry no `apiVersion`.
    pub fn api(self) -> Option<(&'static str, &'static [&'static str])> {
        const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
        const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
        match self {
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar => Some((NETWORKING, NETWORKING_VERSIONS)),
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                Some((SECURITY, SECURITY_VERSIONS))
            }
            Kind::ServiceExport => Some((MULTICLUSTER, &["v1alpha1"])),
            Kind::MeshConfig | Kind::MeshNetworks => None,
        }
    }

    /// The kind named by `apiVersion` and `kind`, when Strait reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/')?;
        Kind::ALL.into_iter().find(|k| {
            k.as_str() == kind
                && k.api()
                    .is_some_and(|(g, versions)| g == group && versions.contains(&version))
        })
    }

    /// Whether the schema requires `spec` (Kubernetes rejects the object without one).
    pub fn requires_spec(self) -> bool {
        matches!(self, Kind::ServiceEntry | Kind::WorkloadEntry)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_known() {
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let api = format!("networking.istio.io/{version}");
            assert_eq!(
                Kind::from_type(&api, "VirtualService"),
                Some(Kind::VirtualService)
            );
        }
        assert_eq!(
            Kind::from_type("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Some(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::from_type("multicluster.x-k8s.io/v1alpha1", "ServiceExport"),
            Some(Kind::ServiceExport)
        );
    }

    #[test]
    fn other_groups_versions_and_kinds_are_not_read() {
        assert_eq!(
            Kind::from_type("security.istio.io/v1alpha3", "AuthorizationPolicy"),
            None
        );
        assert_eq!(
            Kind::from_type("networking.istio.io/v1", "EnvoyFilter"),
            None
        );
        assert_eq!(
            Kind::from_type("gateway.networking.k8s.io/v1", "Gateway"),
            None
        );
        assert_eq!(Kind::from_type("v1", "Service"), None);
        assert_eq!(
            Kind::from_type("networking.istio.io/v1", "MeshConfig"),
            None
        );
    }
}
