//! The last-known-good compiled snapshot: `DATA/last-good/snapshot.json`, written atomically
//! (temporary file, fsync, rename, fsync of the directory) and owner-only, because it carries
//! the private keys of the TLS it serves. It is what a restart serves when the configuration
//! source is unavailable (with the names the sidecar's DNS proxy answered with it), and where
//! DNS answers the store lost come back from.
//!
//! At start only what the start needs is read ([`Summary`]: who wrote the file, when, and the
//! DNS answers its endpoints came from); the snapshot itself, as large as the configuration it
//! was compiled from, is decoded only when it is to be served ([`Available::read`]), so that a
//! proxy whose configuration is there never holds a second copy of it.
//!
//! A file that does not read back is moved aside (`snapshot.json.corrupt-UNIXMS`) and reported
//! loudly; the process carries on without it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strait_certs::fs::{PRIVATE_FILE_MODE, create_private_dir, write_atomic_with};
use strait_proxy::snapshot::{Snapshot, state_file};

use super::{StateError, move_aside};
use crate::dns_proxy::NameTable;

/// The file's format; a file of another format is not read.
const FORMAT: u32 = 1;

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastGood {
    pub format: u32,
    /// The role the snapshot was compiled for (`ingress`, `sidecar`): another role's snapshot
    /// is never served.
    pub role: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
    /// When it was compiled: its DNS-resolved endpoints are the answers known then.
    pub compiled_at_ms: u64,
    /// The names the sidecar's DNS proxy answered with it (none for gateways).
    #[serde(default)]
    pub names: NameTable,
    pub snapshot: Snapshot,
}

/// The last-known-good file of a data directory.
#[derive(Clone, Debug)]
pub struct LastGoodFile {
    path: PathBuf,
}

/// The file as found at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub last_good: Option<Available>,
    /// "the last-known-good snapshot PATH could not be read (WHY); it was moved to PATH2".
    pub problem: Option<String>,
}

/// What a start needs to know of the file without decoding its snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The snapshot's version.
    pub version: u64,
    pub written_at_ms: u64,
    pub compiled_at_ms: u64,
    /// The addresses each DNS name gave the snapshot's endpoints (answers known at
    /// `compiled_at_ms`).
    pub dns_answers: BTreeMap<String, Vec<IpAddr>>,
}

/// A last-known-good file for this role, found readable at start; [`Available::read`] decodes
/// its snapshot when it is to be served.
#[derive(Debug)]
pub struct Available {
    file: LastGoodFile,
    role: String,
    pub summary: Summary,
}

impl Available {
    /// The whole file. One that no longer reads back (changed or damaged since the start) is
    /// moved aside; the error says so.
    pub fn read(self) -> Result<LastGood, String> {
        let bytes = std::fs::read(&self.file.path)
            .map_err(|e| self.file.unusable(format!("it cannot be read: {e}"), false))?;
        self.file.decode::<LastGood>(&bytes, &self.role)
    }
}

/// The parts of the file a [`Summary`] is made of; serde skips the rest without building it.
#[derive(Deserialize)]
struct SummaryView {
    format: u32,
    role: String,
    written_at_ms: u64,
    compiled_at_ms: u64,
    snapshot: SnapshotView,
}

#[derive(Deserialize)]
struct SnapshotView {
    version: u64,
    clusters: BTreeMap<String, ClusterView>,
}

#[derive(Deserialize)]
struct ClusterView {
    endpoints: Vec<EndpointView>,
}

#[derive(Deserialize)]
struct EndpointView {
    address: SocketAddr,
    #[serde(default)]
    dns_name: Option<String>,
}

/// The header every decoding of the file checks.
trait Header {
    fn format(&self) -> u32;
    fn role(&self) -> &str;
}

impl Header for LastGood {
    fn format(&self) -> u32 {
        self.format
    }
    fn role(&self) -> &str {
        &self.role
    }
}

impl Header for SummaryView {
    fn format(&self) -> u32 {
        self.format
    }
    fn role(&self) -> &str {
        &self.role
    }
}

impl SummaryView {
    fn summary(self) -> Summary {
        let mut dns_answers: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for endpoint in self
            .snapshot
            .clusters
            .into_values()
            .flat_map(|c| c.endpoints)
        {
            if let Some(name) = endpoint.dns_name {
                let addresses = dns_answers.entry(name).or_default();
                if !addresses.contains(&endpoint.address.ip()) {
                    addresses.push(endpoint.address.ip());
                }
            }
        }
        Summary {
            version: self.snapshot.version,
            written_at_ms: self.written_at_ms,
            compiled_at_ms: self.compiled_at_ms,
            dns_answers,
        }
    }
}

impl LastGoodFile {
    /// `DATA/last-good/snapshot.json`.
    pub fn in_data_dir(data: &Path) -> LastGoodFile {
        LastGoodFile {
            path: data.join("last-good").join("snapshot.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `snapshot` and the DNS proxy's `names`, compiled at `compiled_at_ms`, as the last
    /// known good ones for `role`; returns when it was written.
    pub fn write(
        &self,
        role: &str,
        snapshot: &Snapshot,
        names: &NameTable,
        compiled_at_ms: u64,
    ) -> Result<u64, StateError> {
        let error = |what: String| StateError::File {
            path: self.path.clone(),
            what,
        };
        let written_at_ms = super::now_ms();
        let record = LastGoodRef {
            format: FORMAT,
            role,
            written_at_ms,
            compiled_at_ms,
            names,
            snapshot,
        };
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(|e| error(e.to_string()))?;
        }
        // Streamed: the file is as large as the configuration.
        write_atomic_with(&self.path, PRIVATE_FILE_MODE, |out| {
            state_file::to_json_writer(out, &record)
        })
        .map_err(|e| error(e.to_string()))?;
        Ok(written_at_ms)
    }

    /// Reads the file's [`Summary`]: none when there is none; a file that does not read back
    /// for `role` is moved aside and reported (an error in the log, and in `problem`).
    pub fn load(&self, role: &str) -> Loaded {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::default(),
            Err(e) => {
                return Loaded {
                    last_good: None,
                    problem: Some(self.unusable(format!("it cannot be read: {e}"), false)),
                };
            }
        };
        match self.decode::<SummaryView>(&bytes, role) {
            Ok(view) => Loaded {
                last_good: Some(Available {
                    file: self.clone(),
                    role: role.to_owned(),
                    summary: view.summary(),
                }),
                problem: None,
            },
            Err(problem) => Loaded {
                last_good: None,
                problem: Some(problem),
            },
        }
    }

    /// `bytes` as `T`, checked to be of this format and for `role`; what is wrong otherwise
    /// (logged; a file that does not decode is moved aside).
    fn decode<T: DeserializeOwned + Header>(&self, bytes: &[u8], role: &str) -> Result<T, String> {
        let decoded: T = state_file::from_json(bytes)
            .map_err(|e| self.unusable(format!("it does not decode: {e}"), true))?;
        if decoded.format() != FORMAT {
            let why = format!("it is of format {}, not {FORMAT}", decoded.format());
            return Err(self.unusable(why, true));
        }
        if decoded.role() != role {
            let problem = format!(
                "the last-known-good snapshot {} is for role {}, not {role}; it is not used",
                self.path.display(),
                decoded.role()
            );
            tracing::error!("{problem}");
            return Err(problem);
        }
        Ok(decoded)
    }

    /// Says (in the log, and in what it returns) why the file is not used, after moving it
    /// aside when `move_it`.
    fn unusable(&self, why: String, move_it: bool) -> String {
        let problem = match move_it.then(|| move_aside(&self.path)) {
            Some(Ok(moved)) => format!(
                "the last-known-good snapshot {} could not be used ({why}); it was moved to {}",
                self.path.display(),
                moved.display()
            ),
            Some(Err(e)) => format!(
                "the last-known-good snapshot {} could not be used ({why}); moving it aside failed: {e}",
                self.path.display()
            ),
            None => format!(
                "the last-known-good snapshot {} could not be used ({why})",
                self.path.display()
            ),
        };
        tracing::error!("{problem}");
        problem
    }
}

/// [`LastGood`] by reference, for writing without a copy.
#[derive(Serialize)]
struct LastGoodRef<'a> {
    format: u32,
    role: &'a str,
    written_at_ms: u64,
    compiled_at_ms: u64,
    names: &'a NameTable,
    snapshot: &'a Snapshot,
}

#[cfg(test)]
#[path = "last_good_tests.rs"]
mod tests;
