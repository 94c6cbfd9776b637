//! networking.istio.io ServiceEntry and WorkloadEntry: services and workloads declared outside
//! Kubernetes (external APIs, VMs, and outside Kubernetes the mesh's own workloads).

use std::collections::BTreeMap;

use super::common::{LabelSelector, Port};

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceEntry {
    pub hosts: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub ports: Vec<Port>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Option<Vec<WorkloadEntry>>,
    pub workload_selector: Option<LabelSelector>,
    pub export_to: Vec<String>,
    pub subject_alt_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the original destination address.
    #[default]
    None,
    Static,
    /// Every address of the answer is an endpoint (Envoy STRICT_DNS).
    Dns,
    /// The first address of the latest answer per new connection (Envoy LOGICAL_DNS).
    DnsRoundRobin,
    DynamicDns,
}

/// One workload: a WorkloadEntry's spec, or an entry of `ServiceEntry.endpoints`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// An IP, a DNS name, or `unix://` path; optional when `network` says where it lives.
    pub address: Option<String>,
    /// Service port name -> endpoint port.
    pub ports: Option<BTreeMap<String, u32>>,
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    /// `region/zone/subzone`, any depth.
    pub locality: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}
