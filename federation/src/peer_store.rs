//! Peers and their latest bundles as authoritative files under `--data` (DESIGN.md §State):
//!
//! | file | content |
//! |---|---|
//! | `peers/NAME.yaml` | the Peer document as applied |
//! | `peers/NAME.bundle.json` | the peer's latest accepted bundle (SPIFFE bundle JSON with its sequence) |
//! | `peers/NAME.reset-sequence` | present after `strait peer reset-sequence`: the next fetched bundle is accepted whatever its sequence |
//! | `ca/federated/TRUST_DOMAIN.json` | the same latest bundle, where the CA service streams it to sidecars |
//!
//! Every file is written atomically (temporary file, fsync, rename) and owner-only, in owner-only
//! directories. Under `https_spiffe` the latest bundle authenticates the next fetch, so it cannot
//! be rebuilt from anything else: it lives in a file, never in a cache.
//!
//! [`PeerStore::store_bundle`] is the one write path of a peer's bundle: the peer's own file
//! first (authoritative), then the CA's federated copy.

use std::path::{Path, PathBuf};

use strait_certs::fs::{self, FsError, PRIVATE_FILE_MODE};
use strait_certs::{BundleError, TrustBundle, TrustDomain};

use crate::peer::{Peer, PeerError, parse_peer};

/// The folder of peers under `--data`.
pub const PEERS_DIR: &str = "peers";
/// The folder under `--data` whose bundles the CA service streams.
pub const FEDERATED_DIR: &str = "ca/federated";

/// What went wrong reading or writing the peer store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("{path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("{path}: the stored bundle is unusable: {reason}")]
    BadBundle { path: PathBuf, reason: String },
    #[error("writing the bundle of {trust_domain}: {source}")]
    Encode {
        trust_domain: TrustDomain,
        #[source]
        source: BundleError,
    },
    #[error("no peer named {0}")]
    NoSuchPeer(String),
    #[error(
        "peer {name} has trust domain {trust_domain}, the local trust domain: a cluster does not peer with itself"
    )]
    LocalTrustDomain {
        name: String,
        trust_domain: TrustDomain,
    },
    #[error("peer {name}: trust domain {trust_domain} already belongs to peer {other}")]
    TrustDomainTaken {
        name: String,
        trust_domain: TrustDomain,
        other: String,
    },
}

/// A stored peer and its latest bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeer {
    pub peer: Peer,
    pub latest: TrustBundle,
}

/// What applying a peer did with its first-contact bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new peer; its bundle is the document's.
    Created,
    /// An existing peer; the document's bundle replaced the stored one (newer, or forced).
    UpdatedBundle,
    /// An existing peer; the stored bundle (sequence given) is at least as new and stays.
    KeptLatest(u64),
}

/// The peers under one data directory.
#[derive(Debug, Clone)]
pub struct PeerStore {
    data: PathBuf,
}

impl PeerStore {
    /// The store of the data directory `data` (nothing is read or made yet).
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
        }
    }

    /// `DATA/peers`.
    pub fn peers_dir(&self) -> PathBuf {
        self.data.join(PEERS_DIR)
    }

    /// `DATA/ca/federated`.
    pub fn federated_dir(&self) -> PathBuf {
        self.data.join(FEDERATED_DIR)
    }

    fn definition_path(&self, name: &str) -> PathBuf {
        self.peers_dir().join(format!("{name}.yaml"))
    }

    /// Where a peer's latest bundle is kept.
    pub fn bundle_path(&self, name: &str) -> PathBuf {
        self.peers_dir().join(format!("{name}.bundle.json"))
    }

    fn reset_path(&self, name: &str) -> PathBuf {
        self.peers_dir().join(format!("{name}.reset-sequence"))
    }

    /// Where the CA service reads a trust domain's federated bundle.
    pub fn federated_path(&self, trust_domain: &TrustDomain) -> PathBuf {
        self.federated_dir().join(format!("{trust_domain}.json"))
    }

    /// Stores `peer` (a new one, or a new definition of one stored). Refused when its trust
    /// domain is `local` or another peer's. The document's bundle becomes the latest unless a
    /// stored one of the same trust domain is at least as new; `force` takes the document's
    /// whatever the sequences (an operator's override after a peer's reset).
    pub fn apply(
        &self,
        peer: &Peer,
        local: &TrustDomain,
        force: bool,
    ) -> Result<Applied, StoreError> {
        if &peer.trust_domain == local {
            return Err(StoreError::LocalTrustDomain {
                name: peer.name.clone(),
                trust_domain: peer.trust_domain.clone(),
            });
        }
        let existing = self.list()?;
        if let Some(other) = existing
            .iter()
            .find(|s| s.peer.trust_domain == peer.trust_domain && s.peer.name != peer.name)
        {
            return Err(StoreError::TrustDomainTaken {
                name: peer.name.clone(),
                trust_domain: peer.trust_domain.clone(),
                other: other.peer.name.clone(),
            });
        }
        let previous = existing.into_iter().find(|s| s.peer.name == peer.name);
        fs::create_private_dir(&self.peers_dir())?;
        let text = peer.to_yaml().map_err(|source| StoreError::Encode {
            trust_domain: peer.trust_domain.clone(),
            source,
        })?;
        let applied = match &previous {
            None => Applied::Created,
            Some(stored) if stored.latest.trust_domain != peer.trust_domain => {
                // The peer now names another trust domain: the old one is no longer trusted.
                remove_if_present(&self.federated_path(&stored.latest.trust_domain))?;
                Applied::UpdatedBundle
            }
            Some(_) if force => Applied::UpdatedBundle,
            Some(stored) if stored.latest.sequence >= peer.trust_bundle.sequence => {
                Applied::KeptLatest(stored.latest.sequence)
            }
            Some(_) => Applied::UpdatedBundle,
        };
        fs::write_atomic(
            &self.definition_path(&peer.name),
            text.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        match applied {
            Applied::KeptLatest(_) => {
                if let Some(stored) = &previous {
                    // Rewrite the CA's copy too, in case it was lost.
                    self.store_bundle(peer, &stored.latest)?;
                }
            }
            Applied::Created | Applied::UpdatedBundle => {
                self.store_bundle(peer, &peer.trust_bundle)?;
            }
        }
        Ok(applied)
    }

    /// Every stored peer with its latest bundle, by name. A peer whose files cannot be read
    /// makes the whole listing fail, naming the file.
    pub fn list(&self) -> Result<Vec<StoredPeer>, StoreError> {
        let dir = self.peers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(FsError {
                    action: "read directory",
                    path: dir,
                    source: e,
                }
                .into());
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".yaml")?;
                (!stem.starts_with('.')).then(|| stem.to_owned())
            })
            .collect();
        names.sort();
        names.iter().map(|name| self.get(name)).collect()
    }

    /// One stored peer with its latest bundle.
    pub fn get(&self, name: &str) -> Result<StoredPeer, StoreError> {
        let path = self.definition_path(name);
        if !path.exists() {
            return Err(StoreError::NoSuchPeer(name.to_owned()));
        }
        let text = fs::read_text(&path)?;
        let peer = parse_peer(&text, &path.display().to_string())?;
        let latest = self.latest_bundle(&peer)?;
        Ok(StoredPeer { peer, latest })
    }

    /// The peer's latest bundle: its bundle file, or the document's bundle when there is none
    /// yet. A bundle file that is not a usable bundle is an error, never silently replaced.
    pub fn latest_bundle(&self, peer: &Peer) -> Result<TrustBundle, StoreError> {
        let path = self.bundle_path(&peer.name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(peer.trust_bundle.clone());
            }
            Err(e) => {
                return Err(FsError {
                    action: "read",
                    path,
                    source: e,
                }
                .into());
            }
        };
        let bundle = TrustBundle::from_spiffe_json(peer.trust_domain.clone(), text.as_bytes())
            .map_err(|source| StoreError::Bundle {
                path: path.clone(),
                source,
            })?;
        crate::peer::check_bundle(&bundle)
            .map_err(|reason| StoreError::BadBundle { path, reason })?;
        Ok(bundle)
    }

    /// Stores `bundle` as the peer's latest: `peers/NAME.bundle.json`, then
    /// `ca/federated/TD.json`. The caller has decided it is acceptable.
    pub fn store_bundle(&self, peer: &Peer, bundle: &TrustBundle) -> Result<(), StoreError> {
        let json = bundle
            .to_spiffe_json()
            .map_err(|source| StoreError::Encode {
                trust_domain: bundle.trust_domain.clone(),
                source,
            })?;
        fs::create_private_dir(&self.peers_dir())?;
        fs::write_atomic(
            &self.bundle_path(&peer.name),
            json.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        fs::create_private_dir(&self.federated_dir())?;
        fs::write_atomic(
            &self.federated_path(&bundle.trust_domain),
            json.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        Ok(())
    }

    /// Removes a peer: its definition, its bundles (the CA stops streaming its trust domain)
    /// and any pending sequence reset.
    pub fn remove(&self, name: &str) -> Result<StoredPeer, StoreError> {
        let stored = self.get(name)?;
        remove_if_present(&self.federated_path(&stored.latest.trust_domain))?;
        remove_if_present(&self.bundle_path(name))?;
        remove_if_present(&self.reset_path(name))?;
        remove_if_present(&self.definition_path(name))?;
        Ok(stored)
    }

    /// Asks that the next bundle fetched for the peer be accepted whatever its sequence (the
    /// operator's override after the peer legitimately reset its bundle sequence).
    pub fn request_sequence_reset(&self, name: &str) -> Result<(), StoreError> {
        self.get(name)?;
        fs::write_atomic(&self.reset_path(name), b"", PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// Whether a sequence reset is pending for the peer.
    pub fn sequence_reset_requested(&self, name: &str) -> bool {
        self.reset_path(name).exists()
    }

    /// Ends a pending sequence reset (once a bundle was accepted under it).
    pub fn clear_sequence_reset(&self, name: &str) -> Result<(), StoreError> {
        remove_if_present(&self.reset_path(name))
    }
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError {
            action: "remove",
            path: path.to_path_buf(),
            source: e,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests;
