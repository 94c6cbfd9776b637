//! The trust bundles the CA publishes on `WatchBundles`, and how a client reads a snapshot.
//!
//! The set is the CA's own bundle plus the federated bundles the operator drops in a folder as
//! SPIFFE bundle documents named `TRUST_DOMAIN.json`. [`BundlePublisher::refresh`] reads the
//! folder again (the server calls it every second): a file that cannot be read or parsed, whose
//! name is not a trust domain, or that names the CA's own trust domain is logged once and
//! ignored, and the last good bundle of that trust domain stays published; a removed file
//! removes its trust domain. Each change publishes a whole new snapshot with the next sequence.
//!
//! A client turns a snapshot into a [`TrustBundleSet`] with [`bundle_set_from_snapshot`]: one
//! bundle per trust domain (a snapshot naming one twice is refused, never merged), and the
//! trust domain the client depends on must be present.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::bundle::{BundleError, TrustBundle, TrustBundleSet};
use crate::service::proto;
use crate::spiffe::{SpiffeIdError, TrustDomain};

/// The extension of a federated bundle file.
pub const FEDERATED_EXTENSION: &str = "json";

/// Why a client refused a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {sequence}: {name:?} is not a trust domain: {source}")]
    BadTrustDomain {
        sequence: u64,
        name: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("snapshot {sequence}: trust domain {trust_domain} appears twice")]
    Duplicate {
        sequence: u64,
        trust_domain: TrustDomain,
    },
    #[error("snapshot {sequence}: the bundle of {trust_domain}: {source}")]
    Bundle {
        sequence: u64,
        trust_domain: TrustDomain,
        #[source]
        source: BundleError,
    },
    #[error("snapshot {sequence} has no bundle for {trust_domain}, the trust domain of the CA")]
    Missing {
        sequence: u64,
        trust_domain: TrustDomain,
    },
}

/// Reads a snapshot into a set, refusing it whole if anything in it is wrong or if it lacks
/// `required` (a CA never publishes a set without its own trust domain; such a snapshot would
/// leave the proxy trusting nobody).
pub fn bundle_set_from_snapshot(
    snapshot: &proto::BundleSnapshot,
    required: &TrustDomain,
) -> Result<TrustBundleSet, SnapshotError> {
    let sequence = snapshot.sequence;
    let mut set = TrustBundleSet::new();
    for entry in &snapshot.bundles {
        let trust_domain = TrustDomain::new(&entry.trust_domain).map_err(|source| {
            SnapshotError::BadTrustDomain {
                sequence,
                name: entry.trust_domain.clone(),
                source,
            }
        })?;
        if set.get(&trust_domain).is_some() {
            return Err(SnapshotError::Duplicate {
                sequence,
                trust_domain,
            });
        }
        let bundle =
            TrustBundle::from_spiffe_json(trust_domain.clone(), entry.spiffe_json.as_bytes())
                .and_then(|bundle| set.insert(bundle))
                .map_err(|source| SnapshotError::Bundle {
                    sequence,
                    trust_domain: trust_domain.clone(),
                    source,
                });
        bundle?;
    }
    if set.get(required).is_none() {
        return Err(SnapshotError::Missing {
            sequence,
            trust_domain: required.clone(),
        });
    }
    Ok(set)
}

/// The set of bundles the CA serves, published through a watch channel.
#[derive(Debug)]
pub struct BundlePublisher {
    own: TrustBundle,
    folder: PathBuf,
    /// Per file: the bytes last read, and the bundle they gave (if they were good).
    files: BTreeMap<TrustDomain, FileState>,
    /// Files ignored for their name, with the bytes last seen (to log each problem once).
    ignored: BTreeMap<PathBuf, Vec<u8>>,
    /// The federated bundles published: the last good one of each file.
    published: BTreeMap<TrustDomain, TrustBundle>,
    sequence: u64,
    sender: watch::Sender<Arc<proto::BundleSnapshot>>,
}

#[derive(Debug)]
struct FileState {
    bytes: Vec<u8>,
}

impl BundlePublisher {
    /// A publisher of `own` plus the bundles in `folder` (read now); snapshot sequence 1.
    pub fn new(own: TrustBundle, folder: &Path) -> Self {
        let (sender, _) = watch::channel(Arc::new(proto::BundleSnapshot::default()));
        let mut publisher = Self {
            own,
            folder: folder.to_path_buf(),
            files: BTreeMap::new(),
            ignored: BTreeMap::new(),
            published: BTreeMap::new(),
            sequence: 0,
            sender,
        };
        publisher.read_folder();
        publisher.publish();
        publisher
    }

    /// A receiver of the snapshots, starting at the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<proto::BundleSnapshot>> {
        self.sender.subscribe()
    }

    /// The snapshot published now.
    pub fn current(&self) -> Arc<proto::BundleSnapshot> {
        self.sender.borrow().clone()
    }

    /// Reads the folder again; publishes a new snapshot when the set changed. Returns whether
    /// it did.
    pub fn refresh(&mut self) -> bool {
        if self.read_folder() {
            self.publish();
            true
        } else {
            false
        }
    }

    /// The CA's own bundle as published.
    pub fn own(&self) -> &TrustBundle {
        &self.own
    }

    /// Replaces the CA's own bundle (a new root); publishes when it differs.
    pub fn set_own(&mut self, own: TrustBundle) -> bool {
        if own == self.own {
            return false;
        }
        self.own = own;
        self.publish();
        true
    }

    /// Reads every `*.json` file; returns whether the published set changes.
    fn read_folder(&mut self) -> bool {
        let entries = match std::fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let changed = !self.published.is_empty();
                self.files.clear();
                self.published.clear();
                return changed;
            }
            Err(error) => {
                tracing::warn!(
                    folder = %self.folder.display(),
                    "federated bundles: the folder cannot be read ({error}); keeping the last good set"
                );
                return false;
            }
        };
        let mut present = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(FEDERATED_EXTENSION) {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let trust_domain = match TrustDomain::new(stem) {
                Ok(td) => td,
                Err(error) => {
                    self.ignore(&path, &format!("{stem:?} is not a trust domain: {error}"));
                    continue;
                }
            };
            if trust_domain == self.own.trust_domain {
                self.ignore(
                    &path,
                    "it names the CA's own trust domain, whose bundle comes from the CA only",
                );
                continue;
            }
            present.insert(trust_domain, path);
        }

        let mut changed = false;
        // Removed files remove their trust domain.
        let gone: Vec<TrustDomain> = self
            .published
            .keys()
            .filter(|td| !present.contains_key(*td))
            .cloned()
            .collect();
        for td in gone {
            tracing::info!(trust_domain = %td, "federated bundle removed");
            self.published.remove(&td);
            self.files.remove(&td);
            changed = true;
        }
        for (td, path) in present {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(file = %path.display(), "federated bundle unreadable ({error}); keeping the last good one");
                    continue;
                }
            };
            if self.files.get(&td).is_some_and(|f| f.bytes == bytes) {
                continue;
            }
            self.files.insert(
                td.clone(),
                FileState {
                    bytes: bytes.clone(),
                },
            );
            match load_federated(&td, &bytes) {
                Ok(bundle) => {
                    if self.published.get(&td) != Some(&bundle) {
                        tracing::info!(
                            trust_domain = %td,
                            roots = bundle.roots.len(),
                            sequence = bundle.sequence,
                            "federated bundle loaded"
                        );
                        self.published.insert(td, bundle);
                        changed = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        file = %path.display(),
                        "federated bundle refused ({error}); keeping the last good one"
                    );
                }
            }
        }
        changed
    }

    /// Logs why a file is ignored, once per content.
    fn ignore(&mut self, path: &Path, reason: &str) {
        let bytes = std::fs::read(path).unwrap_or_default();
        if self.ignored.get(path) == Some(&bytes) {
            return;
        }
        self.ignored.insert(path.to_path_buf(), bytes);
        tracing::warn!(file = %path.display(), "federated bundle ignored: {reason}");
    }

    fn publish(&mut self) {
        self.sequence += 1;
        let mut bundles = Vec::with_capacity(1 + self.published.len());
        for bundle in std::iter::once(&self.own).chain(self.published.values()) {
            match bundle.to_spiffe_json() {
                Ok(json) => bundles.push(proto::TrustDomainBundle {
                    trust_domain: bundle.trust_domain.to_string(),
                    spiffe_json: json,
                }),
                // Checked when loaded; the CA's own roots are P-256.
                Err(error) => tracing::error!(
                    trust_domain = %bundle.trust_domain,
                    "bundle left out of the snapshot: {error}"
                ),
            }
        }
        tracing::info!(
            sequence = self.sequence,
            trust_domains = bundles.len(),
            "trust bundle snapshot published"
        );
        self.sender.send_replace(Arc::new(proto::BundleSnapshot {
            sequence: self.sequence,
            bundles,
        }));
    }
}

/// A federated bundle file: a SPIFFE bundle document with at least one root that verifiers can
/// use and that can be published again.
fn load_federated(td: &TrustDomain, bytes: &[u8]) -> Result<TrustBundle, BundleError> {
    let bundle = TrustBundle::from_spiffe_json(td.clone(), bytes)?;
    if bundle.roots.is_empty() {
        return Err(BundleError::MissingKeys);
    }
    TrustBundleSet::new().insert(bundle.clone())?;
    bundle.to_spiffe_json()?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Authority, AuthorityOptions};
    use crate::fs::test_dir::TestDir;

    fn ca(dir: &TestDir, td: &str) -> Authority {
        Authority::init(
            TrustDomain::new(td).unwrap(),
            &dir.path().join(td),
            &AuthorityOptions::default(),
        )
        .unwrap()
    }

    fn names(snapshot: &proto::BundleSnapshot) -> Vec<&str> {
        snapshot
            .bundles
            .iter()
            .map(|b| b.trust_domain.as_str())
            .collect()
    }

    #[test]
    fn snapshot_has_own_bundle_then_federated_ones_with_a_rising_sequence() {
        let dir = TestDir::new("publisher");
        let own = ca(&dir, "cluster.local");
        let peer = ca(&dir, "west.mesh");
        let folder = dir.path().join("federated");
        let mut publisher = BundlePublisher::new(own.trust_bundle(), &folder);
        let first = publisher.current();
        assert_eq!(first.sequence, 1);
        assert_eq!(names(&first), ["cluster.local"]);
        // Nothing changed: nothing published.
        assert!(!publisher.refresh());
        assert_eq!(publisher.current().sequence, 1);

        std::fs::create_dir_all(&folder).unwrap();
        let peer_json = peer.trust_bundle().to_spiffe_json().unwrap();
        std::fs::write(folder.join("west.mesh.json"), &peer_json).unwrap();
        let mut receiver = publisher.subscribe();
        assert!(publisher.refresh());
        assert!(receiver.has_changed().unwrap());
        let second = receiver.borrow_and_update().clone();
        assert_eq!(second.sequence, 2);
        assert_eq!(names(&second), ["cluster.local", "west.mesh"]);

        // A client reads it back, one bundle per trust domain, roots unchanged.
        let set = bundle_set_from_snapshot(&second, own.trust_domain()).unwrap();
        assert_eq!(
            set.get(peer.trust_domain()).unwrap().roots,
            peer.trust_bundle().roots
        );
        assert_eq!(
            set.get(own.trust_domain()).unwrap().roots,
            own.trust_bundle().roots
        );

        // The file removed: the trust domain goes.
        std::fs::remove_file(folder.join("west.mesh.json")).unwrap();
        assert!(publisher.refresh());
        assert_eq!(publisher.current().sequence, 3);
        assert_eq!(names(&publisher.current()), ["cluster.local"]);
    }

    #[test]
    fn bad_files_are_ignored_and_the_last_good_bundle_stays() {
        let dir = TestDir::new("publisher-bad");
        let own = ca(&dir, "cluster.local");
        let peer = ca(&dir, "west.mesh");
        let folder = dir.path().join("federated");
        std::fs::create_dir_all(&folder).unwrap();
        let good = peer.trust_bundle().to_spiffe_json().unwrap();
        std::fs::write(folder.join("west.mesh.json"), &good).unwrap();
        let mut publisher = BundlePublisher::new(own.trust_bundle(), &folder);
        assert_eq!(names(&publisher.current()), ["cluster.local", "west.mesh"]);

        // Broken JSON over a good bundle: the good one stays, nothing is published.
        std::fs::write(folder.join("west.mesh.json"), "{not json").unwrap();
        assert!(!publisher.refresh());
        assert_eq!(publisher.current().sequence, 1);
        // A bad name, a bundle for our own trust domain, a bundle with no roots, other files.
        std::fs::write(folder.join("Not A Domain.json"), &good).unwrap();
        std::fs::write(folder.join("cluster.local.json"), &good).unwrap();
        std::fs::write(folder.join("east.mesh.json"), r#"{"keys": []}"#).unwrap();
        std::fs::write(folder.join("notes.txt"), "hello").unwrap();
        assert!(!publisher.refresh());
        let current = publisher.current();
        assert_eq!(names(&current), ["cluster.local", "west.mesh"]);
        // Our own trust domain's bundle is the CA's, not the file's.
        let set = bundle_set_from_snapshot(&current, own.trust_domain()).unwrap();
        assert_eq!(
            set.get(own.trust_domain()).unwrap().roots,
            own.trust_bundle().roots
        );
    }

    #[test]
    fn client_refuses_snapshots_that_would_merge_or_lose_trust_domains() {
        let dir = TestDir::new("snapshot-client");
        let own = ca(&dir, "cluster.local");
        let json = own.trust_bundle().to_spiffe_json().unwrap();
        let entry = |td: &str, json: &str| proto::TrustDomainBundle {
            trust_domain: td.to_owned(),
            spiffe_json: json.to_owned(),
        };
        let td = own.trust_domain();
        let twice = proto::BundleSnapshot {
            sequence: 4,
            bundles: vec![entry("cluster.local", &json), entry("cluster.local", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&twice, td),
            Err(SnapshotError::Duplicate { sequence: 4, .. })
        ));
        let missing = proto::BundleSnapshot {
            sequence: 5,
            bundles: vec![entry("west.mesh", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&missing, td),
            Err(SnapshotError::Missing { .. })
        ));
        let garbage = proto::BundleSnapshot {
            sequence: 6,
            bundles: vec![entry("cluster.local", "[]")],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&garbage, td),
            Err(SnapshotError::Bundle { .. })
        ));
        let bad_name = proto::BundleSnapshot {
            sequence: 7,
            bundles: vec![entry("Cluster Local", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&bad_name, td),
            Err(SnapshotError::BadTrustDomain { .. })
        ));
    }
}
