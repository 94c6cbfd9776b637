//! Reading configuration objects from files, directories and text.
//!
//! A file may hold many documents (`---`); a document may be a `kind: List`; a directory is read
//! recursively (files ending `.yaml`, `.yml` or `.json`, in name order, hidden entries skipped so
//! that a mounted ConfigMap's `..data` links are not read twice). A document with no `apiVersion`
//! and `kind` is a mesh document: MeshConfig in a file named `mesh.yaml`, MeshNetworks when it
//! holds only `networks`. Every problem becomes a finding; nothing here fails as a whole.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::common::Opaque;
use super::meta::ObjectMeta;
use super::{Kind, Object, Source, Spec, object_ref};
use crate::findings::{Finding, Level};
use crate::yaml::{self, FieldPath, Node, Value};

/// How to read configuration.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The namespace of objects that do not name one (`kubectl apply` uses the current
    /// namespace, usually `default`).
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_owned(),
        }
    }
}

/// What reading produced: the objects of supported kinds, every finding made while reading,
/// and how many objects were read in all (supported or not).
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub findings: Vec<Finding>,
    pub documents: usize,
}

/// Reads every file and directory named.
pub fn load_paths(paths: &[PathBuf], options: &LoadOptions) -> Loaded {
    let mut loaded = Loaded::default();
    let (files, findings) = config_files_of(paths);
    loaded.findings = findings;
    for file in files {
        load_file(&file, options, &mut loaded);
    }
    loaded
}

/// The files `load_paths` reads, in its order: each file named, and the configuration files
/// under each directory named. What cannot be listed is a finding.
pub fn config_files_of(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Finding>) {
    let mut loaded = Loaded::default();
    let mut files = Vec::new();
    for path in paths {
        let shown: Arc<str> = Arc::from(path.display().to_string());
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => files.extend(config_files(path, &shown, &mut loaded)),
            Ok(_) => files.push(path.clone()),
            Err(error) => loaded.findings.push(
                Finding::new(Level::Error, "unreadable", format!("cannot read: {error}"))
                    .in_file(&shown),
            ),
        }
    }
    (files, loaded.findings)
}

/// The configuration files under `dir`, recursively, in name order.
fn config_files(dir: &Path, shown: &Arc<str>, loaded: &mut Loaded) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) => {
                loaded.findings.push(
                    Finding::new(
                        Level::Error,
                        "unreadable",
                        format!("cannot read directory {}: {error}", dir.display()),
                    )
                    .in_file(shown),
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            // A symlinked directory is not followed: it could lead back up the tree.
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) if is_config_file(&name) && path.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

fn is_config_file(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.to_ascii_lowercase().ends_with(ext))
}

fn load_file(path: &Path, options: &LoadOptions, loaded: &mut Loaded) {
    let shown: Arc<str> = Arc::from(path.display().to_string());
    match read_text(path, &shown) {
        Ok(text) => load_text(&shown, &text, options, loaded),
        Err(finding) => loaded.findings.push(*finding),
    }
}

/// The text of a configuration file, shown as `shown` in findings.
pub fn read_text(path: &Path, shown: &Arc<str>) -> Result<String, Box<Finding>> {
    let unreadable = |message: String| {
        Box::new(Finding::new(Level::Error, "unreadable", message).in_file(shown))
    };
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| unreadable("the file is not UTF-8 text".to_owned())),
        Err(error) => Err(unreadable(format!("cannot read: {error}"))),
    }
}

/// Reads every document of `text`, which came from `file`.
pub fn load_text(file: &Arc<str>, text: &str, options: &LoadOptions, loaded: &mut Loaded) {
    match yaml::parse_documents_with_lines(text) {
        Ok(documents) => {
            for (line, node) in documents {
                load_document_at(file, node, (line, Vec::new()), options, loaded);
            }
        }
        Err(error) => loaded.findings.push(
            Finding::new(
                Level::Error,
                "yaml-syntax",
                format!("not valid YAML: {}", error.message),
            )
            .at("", error.position)
            .in_file(file),
        ),
    }
}

/// Reads one document: an object, a `List` of objects, or a mesh document.
pub fn load_document(file: &Arc<str>, node: Node, options: &LoadOptions, loaded: &mut Loaded) {
    load_document_at(file, node, (0, Vec::new()), options, loaded);
}

/// Reads one document, or one item of a `List`: `at` is the line its document starts on in
/// the file (0 when unknown) and the path of `items` indexes to it.
fn load_document_at(
    file: &Arc<str>,
    node: Node,
    at: (u32, Vec<usize>),
    options: &LoadOptions,
    loaded: &mut Loaded,
) {
    if !matches!(node.value, Value::Map(_)) {
        loaded.documents += 1;
        loaded.findings.push(
            Finding::new(
                Level::Error,
                "not-an-object",
                format!("a document must be an object, found {}", node.type_name()),
            )
            .at("", node.position)
            .in_file(file),
        );
        return;
    }
    let api_version = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .map(str::to_owned);
    let kind_name = node.get("kind").and_then(Node::as_str).map(str::to_owned);

    if let (Some(kind), Some(Value::Seq(_))) = (&kind_name, node.get("items").map(|i| &i.value))
        && (kind == "List" || kind.ends_with("List"))
    {
        load_list(file, node, at, options, loaded);
        return;
    }

    loaded.documents += 1;
    let kind = match (&api_version, &kind_name) {
        (None, None) => match mesh_document_kind(file, &node) {
            Some(kind) => kind,
            None => {
                loaded.findings.push(
                    Finding::new(
                        Level::Error,
                        "missing-kind",
                        "the document has no apiVersion and kind; a file named mesh.yaml holds \
                         MeshConfig, and a document holding only `networks` is MeshNetworks",
                    )
                    .at("", node.position)
                    .in_file(file),
                );
                return;
            }
        },
        (Some(api_version), Some(kind_name)) => match Kind::from_type(api_version, kind_name) {
            Some(kind) => kind,
            None => {
                loaded
                    .findings
                    .push(unsupported(file, &node, api_version, kind_name, options));
                return;
            }
        },
        (None, Some(_)) | (Some(_), None) => {
            let missing = if api_version.is_none() {
                "apiVersion"
            } else {
                "kind"
            };
            loaded.findings.push(
                Finding::new(Level::Error, "required", "Required value")
                    .at(missing, node.position)
                    .in_file(file),
            );
            return;
        }
    };
    let object = read_object(
        file,
        node,
        at,
        kind,
        api_version.unwrap_or_default(),
        options,
        loaded,
    );
    loaded.objects.push(object);
}

fn load_list(
    file: &Arc<str>,
    mut node: Node,
    at: (u32, Vec<usize>),
    options: &LoadOptions,
    loaded: &mut Loaded,
) {
    if let Some(Node {
        value: Value::Seq(items),
        ..
    }) = node.remove("items")
    {
        for (index, item) in items.into_iter().enumerate() {
            let mut path = at.1.clone();
            path.push(index);
            load_document_at(file, item, (at.0, path), options, loaded);
        }
    }
}

/// MeshConfig lives in `mesh.yaml` (Istio's ConfigMap key `mesh`); MeshNetworks is a document
/// holding only `networks` (the key `meshNetworks`).
fn mesh_document_kind(file: &Arc<str>, node: &Node) -> Option<Kind> {
    if let Value::Map(entries) = &node.value {
        let only_networks = !entries.is_empty()
            && entries
                .iter()
                .all(|(k, _)| k.scalar_text().is_some_and(|k| k == "networks"));
        if only_networks {
            return Some(Kind::MeshNetworks);
        }
    }
    let name = Path::new(&**file)
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        name.as_str(),
        "mesh.yaml" | "mesh.yml" | "meshconfig.yaml" | "meshconfig.yml"
    )
    .then_some(Kind::MeshConfig)
}

fn unsupported(
    file: &Arc<str>,
    node: &Node,
    api_version: &str,
    kind_name: &str,
    options: &LoadOptions,
) -> Finding {
    let meta = node.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or_default();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .unwrap_or(&options.default_namespace);
    let mut message = format!("kind not supported: {api_version} {kind_name} is ignored");
    if let Some(known) = Kind::ALL.iter().find(|k| k.as_str() == kind_name)
        && let Some((group, versions)) = known.api()
    {
        let versions: Vec<String> = versions.iter().map(|v| format!("{group}/{v}")).collect();
        message.push_str(&format!(
            " (Strait reads {kind_name} as {})",
            versions.join(", ")
        ));
    }
    Finding::new(Level::Warning, "kind-not-supported", message)
        .at("", node.position)
        .in_file(file)
        .about(&object_ref(kind_name, namespace, name))
}

/// An object envelope: the Kubernetes fields around a `spec`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Envelope<S> {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<ObjectMeta>,
    spec: Option<S>,
    status: Opaque,
}

fn read_object(
    file: &Arc<str>,
    node: Node,
    at: (u32, Vec<usize>),
    kind: Kind,
    api_version: String,
    options: &LoadOptions,
    loaded: &mut Loaded,
) -> Object {
    let mut findings = Vec::new();
    let (meta, spec, has_spec) = match kind {
        Kind::Gateway => envelope(&node, &mut findings, Spec::Gateway),
        Kind::VirtualService => envelope(&node, &mut findings, Spec::VirtualService),
        Kind::DestinationRule => envelope(&node, &mut findings, Spec::DestinationRule),
        Kind::ServiceEntry => envelope(&node, &mut findings, Spec::ServiceEntry),
        Kind::WorkloadEntry => envelope(&node, &mut findings, Spec::WorkloadEntry),
        Kind::Sidecar => envelope(&node, &mut findings, Spec::Sidecar),
        Kind::PeerAuthentication => envelope(&node, &mut findings, Spec::PeerAuthentication),
        Kind::AuthorizationPolicy => envelope(&node, &mut findings, Spec::AuthorizationPolicy),
        Kind::RequestAuthentication => envelope(&node, &mut findings, Spec::RequestAuthentication),
        Kind::ServiceExport => envelope(&node, &mut findings, Spec::ServiceExport),
        Kind::MeshConfig => {
            let mesh = yaml::from_node(&node, FieldPath::ROOT, &mut findings);
            (
                ObjectMeta::default(),
                Spec::MeshConfig(Box::new(mesh)),
                true,
            )
        }
        Kind::MeshNetworks => {
            let networks = yaml::from_node(&node, FieldPath::ROOT, &mut findings);
            (ObjectMeta::default(), Spec::MeshNetworks(networks), true)
        }
    };
    if kind.requires_spec() && !has_spec {
        findings.push(
            Finding::new(Level::Error, "required", "Required value").at("spec", node.position),
        );
    }
    let namespace = match kind {
        Kind::MeshConfig | Kind::MeshNetworks => String::new(),
        _ => meta
            .namespace
            .clone()
            .unwrap_or_else(|| options.default_namespace.clone()),
    };
    let object = Object {
        kind,
        api_version,
        meta,
        namespace,
        spec,
        source: Source::new(file.clone(), node, at.0, at.1),
    };
    let about = object.object_ref();
    loaded
        .findings
        .extend(findings.into_iter().map(|f| f.in_file(file).about(&about)));
    object
}

/// Reads the envelope of an object whose spec is `S`, wrapping the spec with `wrap`.
fn envelope<S: DeserializeOwned + Default>(
    node: &Node,
    findings: &mut Vec<Finding>,
    wrap: fn(S) -> Spec,
) -> (ObjectMeta, Spec, bool) {
    let envelope: Envelope<S> = yaml::from_node(node, FieldPath::ROOT, findings);
    let has_spec = envelope.spec.is_some();
    (
        envelope.metadata.unwrap_or_default(),
        wrap(envelope.spec.unwrap_or_default()),
        has_spec,
    )
}
