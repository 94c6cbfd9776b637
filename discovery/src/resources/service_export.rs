//! multicluster.x-k8s.io ServiceExport: marks the service of the same name and namespace as
//! exported to peer clusters (the alternative to the `strait.io/export: "true"` label).

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceExport {
    /// Labels to put on the imported service in the importing clusters.
    pub exported_labels: BTreeMap<String, String>,
    /// Annotations to put on the imported service in the importing clusters.
    pub exported_annotations: BTreeMap<String, String>,
}
