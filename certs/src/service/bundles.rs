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
//!
//! Each snapshot also names the CA certificate that signs now (its SHA-256): when a root
//! rotation switches the signing chain ([`BundlePublisher::set_issuer`]) a new snapshot goes
//! out, and a proxy whose SVID was issued under another chain renews at once
//! (`issuer_changed`). That is the "reissue now" trigger; nothing else asks for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::bundle::{BundleError, TrustBundle, TrustBundleSet};
use crate::service::proto;
use crate::spiffe::{SpiffeIdError, TrustDomain};
use crate::svid::Svid;

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

/// Waits until `issuer` (the hex SHA-256 of the CA certificate that signs now, as the CA
/// says) names a signing chain other than the one `svid` was issued under, and other than
/// `settled` (one a renewal already went to); returns it. An empty value (a CA that does not
/// say) and an SVID without an intermediate in its chain never trigger; a closed channel waits
/// forever.
pub(crate) async fn issuer_changed(
    issuer: &mut watch::Receiver<String>,
    svid: &Svid,
    settled: Option<&str>,
) -> String {
    let Some(own) = svid.issuer_sha256() else {
        return std::future::pending().await;
    };
    let changed = issuer
        .wait_for(|new| !new.is_empty() && *new != own && Some(new.as_str()) != settled)
        .await
        .map(|new| new.clone());
    match changed {
        Ok(new) => new,
        Err(_) => std::future::pending().await,
    }
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
    /// Hex SHA-256 of the CA certificate that signs now.
    issuer: String,
    sequence: u64,
    sender: watch::Sender<Arc<proto::BundleSnapshot>>,
}

#[derive(Debug)]
struct FileState {
    bytes: Vec<u8>,
}

impl BundlePublisher {
    /// A publisher of `own` plus the bundles in `folder` (read now), saying that the CA
    /// certificate with the hex SHA-256 `issuer` signs; snapshot sequence 1.
    pub fn new(own: TrustBundle, issuer: String, folder: &Path) -> Self {
        let (sender, _) = watch::channel(Arc::new(proto::BundleSnapshot::default()));
        let mut publisher = Self {
            own,
            folder: folder.to_path_buf(),
            files: BTreeMap::new(),
            ignored: BTreeMap::new(),
            published: BTreeMap::new(),
            issuer,
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

    /// Says that the CA certificate with the hex SHA-256 `issuer` signs now (a root rotation
    /// switched); publishes when it differs, so that proxies renew onto the new chain.
    pub fn set_issuer(&mut self, issuer: String) -> bool {
        if issuer == self.issuer {
            return false;
        }
        self.issuer = issuer;
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
            issuing_ca_sha256 = %self.issuer,
            "trust bundle snapshot published"
        );
        self.sender.send_replace(Arc::new(proto::BundleSnapshot {
            sequence: self.sequence,
            bundles,
            issuing_ca_sha256: self.issuer.clone(),
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
        let mut publisher =
            BundlePublisher::new(own.trust_bundle(), own.issuer_sha256().to_owned(), &folder);
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
    fn a_new_signing_chain_is_published_and_wakes_svids_issued_under_another() {
        let dir = TestDir::new("publisher-issuer");
        let own = ca(&dir, "cluster.local");
        let next = ca(&dir, "next");
        let mut publisher = BundlePublisher::new(
            own.trust_bundle(),
            own.issuer_sha256().to_owned(),
            &dir.path().join("federated"),
        );
        assert_eq!(publisher.current().issuing_ca_sha256, own.issuer_sha256());
        assert!(!publisher.set_issuer(own.issuer_sha256().to_owned()));
        assert!(publisher.set_issuer("ab".repeat(32)));
        assert_eq!(publisher.current().sequence, 2);
        assert_eq!(publisher.current().issuing_ca_sha256, "ab".repeat(32));

        // An SVID issued under the chain named is left alone; under another one it renews.
        let web = crate::SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let request = crate::CertificateRequest::new(&web).unwrap();
        let issued = own
            .sign_csr(request.csr_der(), &web, std::time::Duration::ZERO)
            .unwrap();
        let svid = request
            .into_svid(issued.chain_der, issued.issued_at)
            .unwrap();
        assert_eq!(svid.issuer_sha256().as_deref(), Some(own.issuer_sha256()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (sender, mut receiver) = watch::channel(own.issuer_sha256().to_owned());
            let wait = std::time::Duration::from_millis(50);
            let same = issuer_changed(&mut receiver, &svid, None);
            assert!(tokio::time::timeout(wait, same).await.is_err());
            sender.send_replace(next.issuer_sha256().to_owned());
            let changed = issuer_changed(&mut receiver, &svid, None);
            assert_eq!(
                tokio::time::timeout(wait, changed).await.unwrap(),
                next.issuer_sha256()
            );
            // Once a renewal went to that chain, it does not trigger again.
            let settled = issuer_changed(&mut receiver, &svid, Some(next.issuer_sha256()));
            assert!(tokio::time::timeout(wait, settled).await.is_err());
            sender.send_replace(String::new());
            let unsaid = issuer_changed(&mut receiver, &svid, None);
            assert!(tokio::time::timeout(wait, unsaid).await.is_err());
        });
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
        let mut publisher =
            BundlePublisher::new(own.trust_bundle(), own.issuer_sha256().to_owned(), &folder);
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
            issuing_ca_sha256: String::new(),
            bundles: vec![entry("cluster.local", &json), entry("cluster.local", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&twice, td),
            Err(SnapshotError::Duplicate { sequence: 4, .. })
        ));
        let missing = proto::BundleSnapshot {
            sequence: 5,
            issuing_ca_sha256: String::new(),
            bundles: vec![entry("west.mesh", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&missing, td),
            Err(SnapshotError::Missing { .. })
        ));
        let garbage = proto::BundleSnapshot {
            sequence: 6,
            issuing_ca_sha256: String::new(),
            bundles: vec![entry("cluster.local", "[]")],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&garbage, td),
            Err(SnapshotError::Bundle { .. })
        ));
        let bad_name = proto::BundleSnapshot {
            sequence: 7,
            issuing_ca_sha256: String::new(),
            bundles: vec![entry("Cluster Local", &json)],
        };
        assert!(matches!(
            bundle_set_from_snapshot(&bad_name, td),
            Err(SnapshotError::BadTrustDomain { .. })
        ));
    }
}
