//! Strait's state under `--data`, in the two kinds DESIGN.md §State names: authoritative
//! material as files written atomically and owner-only (here: the last-known-good compiled
//! snapshot, [`last_good`]), and rebuildable material in an embedded store behind the small
//! [`Store`] trait (here: DNS answers, in sled, [`sled_store`]).
//!
//! Neither kind is ever reset silently: a store or a file that cannot be read is moved aside
//! under a timestamped name, reported loudly (an error naming the path and what happened), and
//! rebuilt from its sources, so a damaged file never becomes a crash loop.

pub mod last_good;
pub mod sled_store;

pub use last_good::{Available, LastGood, LastGoodFile, Loaded, Summary};
pub use sled_store::{Opened, SledStore};

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The embedded store of rebuildable state. Writes are durable (flushed) when they return.
pub trait Store: Send + Sync + fmt::Debug {
    /// Every DNS answer stored.
    fn dns_answers(&self) -> Result<Vec<StoredAnswer>, StateError>;
    /// Stores (or replaces) the answer for its name, durably.
    fn put_dns_answer(&self, answer: &StoredAnswer) -> Result<(), StateError>;
    /// Forgets a name's answer (it has none any more), durably.
    fn remove_dns_answer(&self, name: &str) -> Result<(), StateError>;
}

/// The last answer a DNS name gave with addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// Lowercase, without the trailing dot.
    pub name: String,
    /// The addresses endpoints are made of (IPv4 ones only when the name had any).
    pub addresses: Vec<IpAddr>,
    /// When the answer came, in milliseconds since the Unix epoch.
    pub resolved_at_ms: u64,
    /// The smallest TTL of its records, in seconds.
    pub ttl_seconds: u64,
}

/// A state operation that failed, with what and where.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the store {path}: {what}")]
    Store { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the Unix epoch as RFC 3339 UTC text.
pub fn format_ms(ms: u64) -> String {
    strait_proxy::telemetry::access_log::format_time(
        UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
}

/// Renames `path` to `PATH.corrupt-UNIXMS` (a free name), keeping it for inspection; returns
/// the new name.
pub(crate) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = now_ms();
    let mut n = 0u32;
    loop {
        let suffix = match n {
            0 => format!("corrupt-{stamp}"),
            n => format!("corrupt-{stamp}-{n}"),
        };
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(&suffix);
        let target = PathBuf::from(name);
        if !target.exists() {
            std::fs::rename(path, &target)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // The rename itself must survive a crash; a failed directory sync only means
                // it might not.
                let _ = strait_certs::fs::sync_dir(parent);
            }
            return Ok(target);
        }
        n += 1;
    }
}

#[cfg(test)]
pub(crate) mod test_dir {
    //! A temporary directory removed on drop.
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    pub struct TestDir(PathBuf);

    impl TestDir {
        pub fn new(name: &str) -> TestDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "strait-state-{name}-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                super::now_ms()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
