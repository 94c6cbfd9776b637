//! The last-known-good compiled snapshot: `DATA/last-good/snapshot.json`, written atomically
//! (temporary file, fsync, rename, fsync of the directory) and owner-only, because it carries
//! the private keys of the TLS it serves. It is what a restart serves when the configuration
//! source is unavailable (with the names the sidecar's DNS proxy answered with it), and where
//! DNS answers the store lost come back from.
//!
//! A file that does not read back is moved aside (`snapshot.json.corrupt-UNIXMS`) and reported
//! loudly; the process carries on without it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strait_certs::fs::{PRIVATE_FILE_MODE, create_private_dir, write_atomic};
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

/// The file as loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub last_good: Option<LastGood>,
    /// "the last-known-good snapshot PATH could not be read (WHY); it was moved to PATH2".
    pub problem: Option<String>,
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
        let bytes = state_file::to_json(&record).map_err(|e| error(format!("encode: {e}")))?;
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(|e| error(e.to_string()))?;
        }
        write_atomic(&self.path, &bytes, PRIVATE_FILE_MODE).map_err(|e| error(e.to_string()))?;
        Ok(written_at_ms)
    }

    /// Reads the file: none when there is none; a file that does not read back as a snapshot
    /// for `role` is moved aside and reported (an error in the log, and in `problem`).
    pub fn load(&self, role: &str) -> Loaded {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::default(),
            Err(e) => return self.unusable(format!("it cannot be read: {e}"), false),
        };
        let last_good: LastGood = match state_file::from_json(&bytes) {
            Ok(last_good) => last_good,
            Err(e) => return self.unusable(format!("it does not decode: {e}"), true),
        };
        if last_good.format != FORMAT {
            return self.unusable(
                format!("it is of format {}, not {FORMAT}", last_good.format),
                true,
            );
        }
        if last_good.role != role {
            let problem = format!(
                "the last-known-good snapshot {} is for role {}, not {role}; it is not used",
                self.path.display(),
                last_good.role
            );
            tracing::error!("{problem}");
            return Loaded {
                last_good: None,
                problem: Some(problem),
            };
        }
        Loaded {
            last_good: Some(last_good),
            problem: None,
        }
    }

    fn unusable(&self, why: String, move_it: bool) -> Loaded {
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
        Loaded {
            last_good: None,
            problem: Some(problem),
        }
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
