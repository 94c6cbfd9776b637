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

use std::borrow::Cow;
use std::sync::Arc;

pub use kind::Kind;
pub use load::{
    LoadOptions, Loaded, config_files_of, load_document, load_paths, load_text, read_text,
};

use crate::findings::ObjectRef;
use crate::yaml::{Node, Position, Value};

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
///
/// The tree is large (several times the text it was read from), so once an object is validated
/// its holder may trade it for the document's text (`Source::keep_text_only`): a finding found
/// later reads that one document again to learn its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub file: Arc<str>,
    /// Where the object starts.
    pub position: Position,
    tree: Tree,
    /// The line the object's document starts on in the file (0: unknown), and the path of
    /// `items` indexes to the object when the document is a `List`.
    document: (u32, Vec<usize>),
}

#[derive(Clone, Debug, PartialEq)]
enum Tree {
    Parsed(Node),
    /// The whole file's text; the document is parsed again from it when needed.
    Text(Arc<str>),
}

impl Source {
    /// An object's source whose document starts on `line` of `file` (0 when unknown), at
    /// `items` within it when the document is a `List`.
    pub fn new(file: Arc<str>, node: Node, line: u32, items: Vec<usize>) -> Source {
        Source {
            file,
            position: node.position,
            tree: Tree::Parsed(node),
            document: (line, items),
        }
    }

    /// The object's node tree: the one read, or the document read again from its text.
    pub fn node(&self) -> Cow<'_, Node> {
        match &self.tree {
            Tree::Parsed(node) => Cow::Borrowed(node),
            Tree::Text(text) => Cow::Owned(self.parse_again(text).unwrap_or(Node {
                value: Value::Null,
                position: self.position,
            })),
        }
    }

    fn parse_again(&self, text: &str) -> Option<Node> {
        let (line, items) = &self.document;
        let mut node = crate::yaml::parse_document_at(text, *line)?;
        for &index in items {
            let mut items = match node.remove("items")?.value {
                Value::Seq(items) => items,
                _ => return None,
            };
            if index >= items.len() {
                return None;
            }
            node = items.swap_remove(index);
        }
        Some(node)
    }

    /// Drops the node tree and keeps `text`, the whole text of the file the object was read
    /// from (shared by its objects). Nothing changes when the document's place is unknown.
    pub fn keep_text_only(&mut self, text: &Arc<str>) {
        if self.document.0 != 0 {
            self.tree = Tree::Text(text.clone());
        }
    }
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

/// Test configuration: each `(file, text)` loaded in order; none may have a finding.
#[cfg(test)]
pub(crate) fn load_clean(files: &[(&str, &str)]) -> Loaded {
    let mut loaded = Loaded::default();
    for (file, text) in files {
        load_text(
            &Arc::from(*file),
            text,
            &LoadOptions::default(),
            &mut loaded,
        );
    }
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    loaded
}
