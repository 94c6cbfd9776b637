//! Service import: what an east-west gateway makes of the export sets its peers stream.
//!
//! Each peer's latest set is kept in `DATA/import-state/PEER.json` with the time it was
//! received (written atomically, owner-only; a small file per peer, rewritten only when a set
//! arrives, is all this needs, and unlike the sled cache it is readable by hand). From it the
//! gateway writes `DATA/imports/PEER.yaml` (atomically), Istio YAML that the importing
//! cluster's sidecars and gateways add to their `--config`:
//!
//! - a ServiceEntry per imported host (MESH_INTERNAL, STATIC, the peer's ports), selecting
//!   its WorkloadEntries by the label `strait.io/imported-service`, unless the gateway's own
//!   configuration declares the host already (namespace sameness): then only WorkloadEntries
//!   are written, in that ServiceEntry's namespace and with its `workloadSelector` labels,
//!   so that the local service gets the peer's endpoints beside its own. A local
//!   ServiceEntry that lists its endpoints inline cannot be extended; that is logged.
//! - a WorkloadEntry per (labels, locality, SPIFFE ID) group, on the peer's network, at the
//!   peer's east-west address, with the group's count as its `weight`, its labels (and
//!   `security.istio.io/tlsMode: istio`), locality, service account and the
//!   `strait.io/trust-domain` annotation: the split-horizon compile replaces it by the peer
//!   network's gateways (MeshNetworks), weighted by the count, and expects the SPIFFE ID.
//!
//! A set replaces the previous one whole (a service the peer stopped exporting disappears);
//! silence never removes anything: after `stale_after` without a set (keepalives count) the
//! import is marked stale (a log line and the `strait.io/import-stale: "true"` annotation on
//! every generated object) and stays as it was. Removing the peer ends its import
//! ([`Importer::forget`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strait_certs::SpiffeId;
use strait_certs::fs::{PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, write_atomic};
#[cfg(test)]
use strait_discovery::compile::exports::ExportedService;
use strait_discovery::compile::exports::{EndpointGroup, LocalService};

use crate::export::ExportSet;

/// The label that selects an imported service's WorkloadEntries when the import writes its
/// ServiceEntry.
pub const IMPORTED_SERVICE_LABEL: &str = "strait.io/imported-service";
/// The label naming the peer a generated object comes from.
pub const IMPORTED_FROM_LABEL: &str = "strait.io/imported-from";
/// The annotation marking a stale import.
pub const STALE_ANNOTATION: &str = "strait.io/import-stale";
/// The annotation carrying the version of the peer's set.
pub const VERSION_ANNOTATION: &str = "strait.io/import-version";
/// The annotation naming the trust domain of a WorkloadEntry's SPIFFE ID.
const TRUST_DOMAIN_ANNOTATION: &str = "strait.io/trust-domain";
/// The label that makes callers use mesh mTLS (all imported endpoints are meshed: the peer's
/// gateway passes through only mesh mTLS).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Why an import could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Fs(#[from] strait_certs::fs::FsError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an import state ({source})")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which peer an import is from and where its endpoints are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerImport {
    /// The Peer document's name (the generated file's name).
    pub peer: String,
    /// The peer's network.
    pub network: String,
    /// The host of the peer's east-west address: the generated WorkloadEntries' address.
    pub address: String,
}

/// A peer's latest set and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    pub set: ExportSet,
    pub received_at_ms: u64,
}

/// One peer's import: its state, its generated file, and whether it is stale.
#[derive(Debug)]
pub struct Importer {
    import: PeerImport,
    state_path: PathBuf,
    output_path: PathBuf,
    stale_after: Duration,
    state: Option<ImportState>,
    local: BTreeMap<String, LocalService>,
    stale: bool,
    /// What was last written to the output file (it is rewritten only when this changes).
    written: Option<String>,
    /// When the state file was last written: an unchanged set (a keepalive) rewrites it only
    /// every quarter of `stale_after`, enough for a restart to judge staleness.
    persisted_at_ms: Option<u64>,
    /// The peer was removed: nothing more is written.
    forgotten: bool,
}

impl Importer {
    /// The import of `import.peer` under the data directory `data`, with the state a previous
    /// run kept (a state that cannot be read is reported and the import starts empty).
    pub fn open(data: &Path, import: PeerImport, stale_after: Duration) -> Importer {
        let state_path = data
            .join("import-state")
            .join(format!("{}.json", import.peer));
        let output_path = imports_dir(data).join(format!("{}.yaml", import.peer));
        let state = match read_state(&state_path) {
            Ok(state) => state,
            Err(error) => {
                tracing::error!(peer = %import.peer, "{error}; the peer's import starts empty");
                None
            }
        };
        Importer {
            import,
            state_path,
            output_path,
            stale_after,
            state,
            local: BTreeMap::new(),
            stale: false,
            written: None,
            persisted_at_ms: None,
            forgotten: false,
        }
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.import.peer
    }

    /// Whether the import is stale, and the version of the set it holds.
    pub fn status(&self) -> (bool, Option<u64>) {
        (self.stale, self.state.as_ref().map(|s| s.set.version))
    }

    /// How long the import may go without a set before it is stale.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// A set arrived at `now_ms`: it replaces the previous one.
    pub fn received(&mut self, set: ExportSet, now_ms: u64) -> Result<(), ImportError> {
        if self.forgotten {
            return Ok(());
        }
        // A restarted peer sends its unchanged services under a new version.
        let changed = self.state.as_ref().is_none_or(|s| {
            (&s.set.services, &s.set.network, &s.set.trust_domain)
                != (&set.services, &set.network, &set.trust_domain)
        });
        if changed {
            tracing::info!(
                peer = %self.import.peer,
                version = set.version,
                services = set.services.len(),
                "the peer's exports changed"
            );
        }
        self.state = Some(ImportState {
            set,
            received_at_ms: now_ms,
        });
        let quarter = u64::try_from(self.stale_after.as_millis() / 4).unwrap_or(u64::MAX);
        let due = self
            .persisted_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= quarter);
        if changed || due {
            let encoded = serde_json::to_vec(&self.state).map_err(|source| ImportError::Parse {
                path: self.state_path.clone(),
                source,
            })?;
            write_atomic(&self.state_path_checked()?, &encoded, PRIVATE_FILE_MODE)?;
            self.persisted_at_ms = Some(now_ms);
        }
        self.refresh(now_ms)
    }

    /// The local configuration's services changed.
    pub fn set_local(
        &mut self,
        local: BTreeMap<String, LocalService>,
        now_ms: u64,
    ) -> Result<(), ImportError> {
        self.local = local;
        self.refresh(now_ms)
    }

    /// Marks the import stale when nothing arrived for `stale_after`, and writes the file
    /// when what it should say changed.
    pub fn refresh(&mut self, now_ms: u64) -> Result<(), ImportError> {
        if self.forgotten {
            return Ok(());
        }
        let Some(state) = &self.state else {
            return Ok(());
        };
        let silent = Duration::from_millis(now_ms.saturating_sub(state.received_at_ms));
        let stale = silent >= self.stale_after;
        if stale != self.stale {
            if stale {
                tracing::warn!(
                    peer = %self.import.peer,
                    version = state.set.version,
                    "the peer's exports are stale: nothing received for {silent:?}; they stay as last received"
                );
            } else {
                tracing::info!(peer = %self.import.peer, "the peer's exports are current again");
            }
            self.stale = stale;
        }
        let yaml = import_yaml(&self.import, &state.set, &self.local, stale);
        if self.written.as_deref() != Some(yaml.as_str())
            && std::fs::read_to_string(&self.output_path).ok().as_deref() != Some(yaml.as_str())
        {
            let dir = self.output_path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(|source| ImportError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
            write_atomic(&self.output_path, yaml.as_bytes(), PUBLIC_FILE_MODE)?;
        }
        self.written = Some(yaml);
        Ok(())
    }

    /// Ends the import of a peer that was removed: its generated file and its state go (a
    /// removed peer's trust domain is no longer trusted, so its endpoints could not be
    /// reached anyway). Nothing is written for it afterwards, whatever arrives.
    pub fn forget(&mut self) -> Result<(), ImportError> {
        self.forgotten = true;
        self.state = None;
        self.written = None;
        for path in [&self.output_path, &self.state_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ImportError::Remove {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The state file's path, its directory made.
    fn state_path_checked(&self) -> Result<PathBuf, ImportError> {
        if let Some(dir) = self.state_path.parent() {
            strait_certs::fs::create_private_dir(dir)?;
        }
        Ok(self.state_path.clone())
    }
}

/// `DATA/imports`: the generated files, one per peer.
pub fn imports_dir(data: &Path) -> PathBuf {
    data.join("imports")
}

fn read_state(path: &Path) -> Result<Option<ImportState>, ImportError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ImportError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| ImportError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// The Istio YAML of `set` imported from `import`, given the local services `local`: JSON
/// documents (JSON is YAML) separated by `---`, in a stable order.
pub fn import_yaml(
    import: &PeerImport,
    set: &ExportSet,
    local: &BTreeMap<String, LocalService>,
    stale: bool,
) -> String {
    let mut documents = vec![format!(
        "# Imported from peer {} (network {}), version {}{}. Generated; do not edit.",
        import.peer,
        import.network,
        set.version,
        if stale { ", STALE" } else { "" }
    )];
    for service in &set.services {
        let Some(slug) = object_name(&service.host) else {
            tracing::warn!(peer = %import.peer, host = %service.host, "an imported host that is not a DNS name is left out");
            continue;
        };
        let base = format!("imported-{}-{slug}", import.peer);
        let (namespace, selector) = match local.get(&service.host) {
            Some(LocalService {
                namespace,
                selector: Some(selector),
            }) => (namespace.clone(), selector.clone()),
            Some(LocalService {
                selector: None,
                namespace,
            }) => {
                tracing::warn!(
                    peer = %import.peer,
                    host = %service.host,
                    "the local ServiceEntry of the host (namespace {namespace}) lists its endpoints inline: the peer's endpoints cannot be added to it"
                );
                continue;
            }
            None => {
                let selector =
                    BTreeMap::from([(IMPORTED_SERVICE_LABEL.to_owned(), label_value(&slug))]);
                documents.push(document(&json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "ServiceEntry",
                    "metadata": metadata(import, set, stale, base.clone(), &service.namespace, &[]),
                    "spec": {
                        "hosts": [service.host],
                        "location": "MESH_INTERNAL",
                        "resolution": "STATIC",
                        "ports": service.ports.iter().map(|p| {
                            let mut port = json!({"number": p.number, "name": p.name});
                            if !p.protocol.is_empty() {
                                port["protocol"] = json!(p.protocol);
                            }
                            port
                        }).collect::<Vec<Value>>(),
                        "workloadSelector": {"labels": selector},
                    },
                })));
                (service.namespace.clone(), selector)
            }
        };
        for (index, group) in service.endpoints.iter().enumerate() {
            let trust_domain = SpiffeId::parse(&group.spiffe_id)
                .map(|id| id.trust_domain_name().to_owned())
                .unwrap_or_else(|_| set.trust_domain.clone());
            let metadata = metadata(
                import,
                set,
                stale,
                format!("{base}-{index}"),
                &namespace,
                &[(TRUST_DOMAIN_ANNOTATION, &trust_domain)],
            );
            documents.push(document(&workload_entry(
                import, set, group, metadata, &selector,
            )));
        }
    }
    documents.join("\n---\n") + "\n"
}

/// The metadata of a generated object: its name and namespace, the peer's label, the set's
/// version, the stale mark and `extra` annotations.
fn metadata(
    import: &PeerImport,
    set: &ExportSet,
    stale: bool,
    name: String,
    namespace: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        VERSION_ANNOTATION.to_owned(),
        json!(set.version.to_string()),
    );
    if stale {
        annotations.insert(STALE_ANNOTATION.to_owned(), json!("true"));
    }
    for (key, value) in extra {
        annotations.insert((*key).to_owned(), json!(value));
    }
    json!({
        "name": name,
        "namespace": namespace,
        "labels": {IMPORTED_FROM_LABEL: import.peer},
        "annotations": annotations,
    })
}

/// The WorkloadEntry of one endpoint group: on the peer's network, at the peer's east-west
/// address, weighted by the group's count.
fn workload_entry(
    import: &PeerImport,
    set: &ExportSet,
    group: &EndpointGroup,
    metadata: Value,
    selector: &BTreeMap<String, String>,
) -> Value {
    let mut labels = group.labels.clone();
    labels.extend(selector.clone());
    labels.insert(TLS_MODE_LABEL.to_owned(), "istio".to_owned());
    let network = if set.network.is_empty() {
        &import.network
    } else {
        &set.network
    };
    let mut spec = json!({
        "address": import.address,
        "network": network,
        "weight": group.count.max(1),
        "labels": labels,
    });
    if !group.locality.is_empty() {
        spec["locality"] = json!(group.locality);
    }
    if let Some(account) = SpiffeId::parse(&group.spiffe_id)
        .ok()
        .and_then(|id| id.service_account().map(str::to_owned))
    {
        spec["serviceAccount"] = json!(account);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": metadata,
        "spec": spec,
    })
}

fn document(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A host as part of an object name (`reviews-default-svc-cluster-local`), or `None` when
/// it is not a DNS name.
fn object_name(host: &str) -> Option<String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    ok.then(|| host.replace('.', "-").trim_matches('-').to_owned())
}

/// A label value (at most 63 characters) naming `slug`: the slug itself when it fits, else its
/// head and a hash of the whole.
fn label_value(slug: &str) -> String {
    if slug.len() <= 63 {
        return slug.to_owned();
    }
    let hash = slug.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}-{hash:016x}", slug[..46].trim_end_matches('-'))
}

#[cfg(test)]
mod tests;
