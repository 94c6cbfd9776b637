//! What every end-to-end test needs: the `strait` binary Cargo built for the tests, a scratch
//! directory that cleans up after itself, and a way to run a command and keep its output.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod bridge;
pub mod client;
pub mod control;
pub mod dnsmasq;
pub mod eastwest;
pub mod gateway;
pub mod grpc;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod pki;
pub mod raw;
pub mod recorder;
pub mod router;
pub mod tcp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `strait` binary under test.
pub fn strait() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strait"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Istio corpus beside the repository, if present. Under CI its absence is a failure;
/// elsewhere the caller skips and says so.
pub fn corpus() -> Option<PathBuf> {
    let dir = repo().join("../shared/corpus/istio");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the Istio corpus is missing at {} and CI is set",
        dir.display()
    );
    eprintln!("SKIPPED: the Istio corpus is not at {}", dir.display());
    None
}

/// Serializes tests that measure loss or timing-sensitive behaviour within one test binary
/// (under cargo-nextest, tests named `exclusive_*` also run alone across binaries).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A command's exit code and output, as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the command runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("strait-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
