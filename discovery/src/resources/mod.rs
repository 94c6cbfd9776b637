//! Istio's configuration as Rust types, and reading it from YAML files and directories.
//!
//! Every field of the supported APIs is declared, including the ones Strait does not act on yet,
//! so that a misspelt field is an error while an unimplemented one is a warning
//! (`crate::validation::support`). Field names are Istio's camelCase JSON names.

pub mod common;
pub mod destination_rule;
pub mod gateway;
mod kind;
mod load;
pub mod mesh_config;
pub mod meta;
pub mod security;
pub mod service_entry;
pub mod service_export;
pub mod sidecar;
pub mod virtual_service;

use std::sync::Arc;

pub use kind::Kind;
pub use load::{LoadOptions, Loaded, load_document, load_paths, load_text};

use crate::findings::ObjectRef;
use crate::yaml::Node;

/// The typed body of an object: its `spec`, or the whole document for the mesh documents.
/// The larger specs are boxed so that a list of objects stays compact.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Gateway(gateway::Gateway),
    VirtualService(Box<virtual_service::VirtualService>),
    DestinationRule(Box<destination_rule::DestinationRule>),
    ServiceEntry(Box<service_entry::ServiceEntry>),
    WorkloadEntry(service_entry::WorkloadEntry),
    Sidecar(Box<sidecar::Sidecar>),
    PeerAuthentication(security::PeerAuthentication),
    AuthorizationPolicy(security::AuthorizationPolicy),
    RequestAuthentication(security::RequestAuthentication),
    ServiceExport(service_export::ServiceExport),
    MeshConfig(Box<mesh_config::MeshConfig>),
    MeshNetworks(mesh_config::MeshNetworks),
}

/// Where an object was read from: the file and the document's node tree, which gives every
/// finding its line and column.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub file: Arc<str>,
    pub node: Node,
}

/// One configuration object.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub kind: Kind,
    pub api_version: String,
    pub meta: meta::ObjectMeta,
    /// The effective namespace: `metadata.namespace`, else the default the loader was given.
    pub namespace: String,
    pub spec: Spec,
    pub source: Source,
}

impl Object {
    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    /// `Kind namespace/name`, as findings name the object.
    pub fn object_ref(&self) -> ObjectRef {
        object_ref(self.kind.as_str(), &self.namespace, self.name())
    }
}

fn object_ref(kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}
