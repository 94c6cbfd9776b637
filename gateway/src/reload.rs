//! Reading, compiling and installing the configuration of a proxy role: the [`Reloader`] keeps
//! the objects last read so that a changed DNS answer compiles them again without reading,
//! logs only findings that changed, installs a snapshot only when it differs from the one in
//! force, and falls back to the last-known-good snapshot when the configuration source is
//! unavailable at start (a source that goes away later leaves the snapshot in force).
//!
//! Reading and compiling run on blocking threads, never on a thread that serves traffic: a
//! large configuration takes hundreds of milliseconds to read and compile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use strait_discovery::compile::exports::FederationView;
use strait_discovery::compile::{
    GatewayOptions, RemoteNetworks, SidecarOptions, compile_gateway, compile_sidecar,
};
use strait_discovery::dns_proxy::SharedNames;
use strait_discovery::findings::{Finding, Level};
use strait_discovery::resources::Object;
use strait_discovery::source::DirectorySource;
use strait_discovery::state::Available;
use strait_proxy::Proxy;

use crate::last_good::{LastGoodWriter, ServingStatus, serving_line};

/// What the configuration is compiled for.
#[derive(Clone)]
pub enum Target {
    Gateway(GatewayOptions),
    Sidecar(SidecarOptions),
}

/// Reads, compiles and installs configuration.
pub struct Reloader {
    pub proxy: Arc<Proxy>,
    pub target: Target,
    pub version: u64,
    /// Findings logged last time, so that a reload logs only what changed.
    pub last_findings: Vec<String>,
    /// The objects in force and the findings of reading them, as last read: a changed DNS
    /// answer compiles them again without reading the configuration.
    pub objects: Arc<Vec<Arc<Object>>>,
    pub read_findings: Vec<Finding>,
    /// The names the sidecar's DNS proxy answers, replaced with every compilation.
    pub names: SharedNames,
    /// The east-west gateway's view of the other networks (its trunk ingress reads it).
    pub remote_networks: tokio::sync::watch::Sender<Arc<RemoteNetworks>>,
    /// An east-west gateway's exports and local services (its federation follows them).
    pub federation_view: tokio::sync::watch::Sender<Arc<FederationView>>,
    /// The configuration directory (or files), read on a blocking thread.
    pub source: Arc<Mutex<DirectorySource>>,
    /// The `--config` paths, checked before each read.
    pub config_paths: Vec<PathBuf>,
    /// Whether the last read found the configuration source unavailable (nothing is compiled
    /// until it is back).
    pub source_unavailable: bool,
    /// The last-known-good file found at start, until the first snapshot is installed (only a
    /// proxy that has installed nothing yet falls back to it); its snapshot is decoded only
    /// then.
    pub last_good: Option<Available>,
    pub status: Arc<ServingStatus>,
    pub writer: LastGoodWriter,
}

impl Reloader {
    /// Reads the configuration, then compiles and installs it.
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        if let Some(why) = unavailable(&self.config_paths) {
            let why = format!("the configuration source is unavailable ({why})");
            if self.version > 0 {
                // What is in force stays; nothing is compiled until the source is back.
                self.source_unavailable = true;
                self.status.serving_last_good(format!(
                    "{why}; the snapshot in force (version {}) stays until it is back",
                    self.version
                ));
                return Ok(());
            }
            if self.install_last_good(&why).await? {
                self.source_unavailable = true;
                return Ok(());
            }
            tracing::error!("{why}, and there is no last-known-good snapshot to serve");
        }
        self.source_unavailable = false;
        let source = self.source.clone();
        let revision = tokio::task::spawn_blocking(move || {
            // A read that panicked left nothing half-done that the next read relies on.
            let mut source = source
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            source.read()
        })
        .await
        .context("reading the configuration failed; the configuration in force stays")?;
        for object in &revision.kept {
            tracing::warn!(object = %object, "rejected; its last good version stays in force");
        }
        for object in &revision.rejected {
            tracing::error!(object = %object, "rejected");
        }
        self.objects = Arc::new(revision.objects);
        self.read_findings = revision.findings;
        self.recompile().await
    }

    /// Compiles the configuration last read (with the latest DNS answers) and installs it when
    /// it differs from the snapshot in force.
    pub async fn recompile(&mut self) -> anyhow::Result<()> {
        if self.source_unavailable {
            return Ok(());
        }
        let version = self.version + 1;
        let compiled_at_ms = strait_discovery::state::now_ms();
        let (objects, target) = (self.objects.clone(), self.target.clone());
        let current = self.proxy.snapshot();
        // Compiled, and compared with the snapshot in force, on a blocking thread; the new
        // snapshot carries the version in force until it is known to differ.
        let (compiled, unchanged) = tokio::task::spawn_blocking(move || {
            let mut compiled = match &target {
                Target::Gateway(options) => compile_gateway(&objects, options, version),
                Target::Sidecar(options) => compile_sidecar(&objects, options, version),
            };
            compiled.snapshot.version = current.version;
            let unchanged = current.version > 0 && *current == compiled.snapshot;
            (compiled, unchanged)
        })
        .await
        .context("compiling the configuration failed; the configuration in force stays")?;
        if *self.names.load_full() != compiled.names {
            tracing::info!(names = compiled.names.len(), "DNS proxy names updated");
            self.names.store(Arc::new(compiled.names));
        }
        let (remote, federation) = (compiled.remote_networks, compiled.federation);
        self.remote_networks
            .send_if_modified(|current| replace_if_changed(current, remote));
        self.federation_view
            .send_if_modified(|current| replace_if_changed(current, federation));
        let findings: Vec<&Finding> = self
            .read_findings
            .iter()
            .chain(&compiled.findings)
            .filter(|f| f.level != Level::Info)
            .collect();
        let lines: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        if lines != self.last_findings {
            for (finding, line) in findings.iter().zip(&lines) {
                match finding.level {
                    Level::Error => tracing::error!("{line}"),
                    _ => tracing::warn!("{line}"),
                }
            }
            self.last_findings = lines;
        }
        if self.version == 0 && compiled.snapshot.listeners.is_empty() {
            let why = "the configuration compiles to no listeners";
            if self.install_last_good(why).await? {
                return Ok(());
            }
        }
        let mut snapshot = compiled.snapshot;
        if unchanged {
            tracing::debug!("configuration unchanged");
            self.status.serving_configuration();
            return Ok(());
        }
        snapshot.version = self.version + 1;
        let (listeners, routes, clusters) = (
            snapshot.listeners.len(),
            snapshot.route_tables.len(),
            snapshot.clusters.len(),
        );
        self.proxy
            .install(snapshot)
            .await
            .context("the new configuration was not installed; the previous one stays live")?;
        self.version += 1;
        self.last_good = None;
        self.status.serving_configuration();
        self.writer.offer(
            self.proxy.snapshot(),
            self.names.load_full(),
            compiled_at_ms,
        );
        tracing::info!(
            version = self.version,
            listeners,
            routes,
            clusters,
            "configuration installed"
        );
        Ok(())
    }
}

impl Reloader {
    /// Installs the last-known-good snapshot found at start, because of `why`; false when
    /// there is none. It binds the listeners it was served with.
    async fn install_last_good(&mut self, why: &str) -> anyhow::Result<bool> {
        let Some(available) = self.last_good.take() else {
            return Ok(false);
        };
        let last_good = match available.read() {
            Ok(last_good) => last_good,
            Err(problem) => {
                // Moved aside and logged already.
                self.status.degraded(problem);
                return Ok(false);
            }
        };
        let line = serving_line(&last_good, why);
        let mut snapshot = last_good.snapshot;
        snapshot.version = self.version + 1;
        self.proxy
            .install(snapshot)
            .await
            .context("the last-known-good snapshot could not be installed")?;
        self.version += 1;
        self.names.store(Arc::new(last_good.names));
        self.status.serving_last_good(line);
        Ok(true)
    }
}

/// Why the configuration cannot be read at all: a `--config` path that is missing or
/// unreadable.
fn unavailable(paths: &[PathBuf]) -> Option<String> {
    paths.iter().find_map(|path| {
        let readable = |path: &Path| match std::fs::metadata(path)?.is_dir() {
            true => std::fs::read_dir(path).map(drop),
            false => std::fs::File::open(path).map(drop),
        };
        readable(path)
            .err()
            .map(|error| format!("{}: {error}", path.display()))
    })
}

/// Replaces `current` with `next` when they differ, saying whether it did.
fn replace_if_changed<T: PartialEq>(current: &mut Arc<T>, next: T) -> bool {
    let changed = **current != next;
    if changed {
        *current = Arc::new(next);
    }
    changed
}
