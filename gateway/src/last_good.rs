//! Last-known-good for the proxy roles: what is opened at start (the store of DNS answers, the
//! last-known-good snapshot file), how the DNS cache starts from them, the file kept current
//! after every install, and the account of what is served and why that the log and the health
//! details give.
//!
//! At start, before any configuration is read: the store is opened (a damaged one is moved
//! aside and rebuilt, see `strait_discovery::state`), the last-good file's summary is read, and
//! the DNS cache starts from the stored answers and the file's DNS-resolved endpoints, the
//! newer of the two where they differ. `run` then reads the configuration, and decodes and
//! serves the file's snapshot (and its DNS proxy names) only when the source is unavailable or
//! compiles to nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use strait_discovery::dns::DnsCache;
use strait_discovery::dns_proxy::NameTable;
use strait_discovery::state::{Available, LastGood, LastGoodFile, SledStore, Store, format_ms};
use strait_proxy::snapshot::Snapshot;
use tokio::sync::watch;

/// What was found under `--data` at start.
#[derive(Debug)]
pub struct Restored {
    pub store: Option<Arc<dyn Store>>,
    pub last_good: Option<Available>,
    pub file: LastGoodFile,
    /// What was damaged or missing (each already logged as an error).
    pub problems: Vec<String>,
}

impl Restored {
    /// Opens the store (`DATA/store`) and loads the last-known-good file for `role`.
    pub fn open(data: &Path, role: &str) -> Restored {
        let mut problems = Vec::new();
        let store: Option<Arc<dyn Store>> = match SledStore::open(&data.join("store")) {
            Ok(opened) => {
                problems.extend(opened.rebuilt);
                Some(Arc::new(opened.store))
            }
            Err(error) => {
                let problem = format!("{error}; DNS answers are not kept across restarts");
                tracing::error!("{problem}");
                problems.push(problem);
                None
            }
        };
        let file = LastGoodFile::in_data_dir(data);
        let loaded = file.load(role);
        problems.extend(loaded.problem);
        Restored {
            store,
            last_good: loaded.last_good,
            file,
            problems,
        }
    }

    /// The DNS cache: for each name the newer of the stored answer and the last-good
    /// snapshot's DNS-resolved endpoints.
    pub fn dns_cache(&self) -> DnsCache {
        let cache = match &self.store {
            Some(store) => DnsCache::with_store(store.clone()),
            None => DnsCache::default(),
        };
        if let Some(last_good) = &self.last_good {
            for (name, addresses) in &last_good.summary.dns_answers {
                cache.seed(
                    name,
                    addresses.clone(),
                    last_good.summary.compiled_at_ms,
                    "the last-known-good snapshot",
                );
            }
        }
        cache
    }
}

/// What the proxy serves, and what is degraded, for the log and the health details.
#[derive(Debug)]
pub struct ServingStatus {
    state: Mutex<StatusState>,
    dns: DnsCache,
}

#[derive(Debug, Default)]
struct StatusState {
    /// Why the last-known-good snapshot is served instead of the configuration, when it is.
    last_good: Option<String>,
    problems: Vec<String>,
    /// The version and time of the last snapshot written to the last-good file.
    written: Option<(u64, u64)>,
    /// The peers whose imports are stale, with what is said about each.
    stale_imports: BTreeMap<String, String>,
}

/// The health details (`/healthz/details`).
#[derive(Debug, Serialize)]
pub struct Details {
    /// `configuration` or `last-known-good`.
    pub serving: &'static str,
    /// Why the last-known-good snapshot is served; empty when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was found damaged at start, and DNS answers no lookup has confirmed yet.
    pub degraded: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_written: Option<Written>,
}

/// The last snapshot written to the last-good file.
#[derive(Debug, Serialize)]
pub struct Written {
    pub version: u64,
    pub at: String,
}

impl ServingStatus {
    pub fn new(problems: Vec<String>, dns: DnsCache) -> ServingStatus {
        ServingStatus {
            state: Mutex::new(StatusState {
                problems,
                ..StatusState::default()
            }),
            dns,
        }
    }

    /// Something found damaged after the start (already logged), for the health details.
    pub fn degraded(&self, problem: String) {
        if let Ok(mut state) = self.state.lock() {
            state.problems.push(problem);
        }
    }

    /// The configuration is served.
    pub fn serving_configuration(&self) {
        if let Ok(mut state) = self.state.lock()
            && state.last_good.take().is_some()
        {
            tracing::warn!(
                "the configuration is served again, instead of the last-known-good snapshot"
            );
        }
    }

    /// The last-known-good snapshot is served, for `reason`; says so in the log once.
    pub fn serving_last_good(&self, reason: String) {
        if let Ok(mut state) = self.state.lock()
            && state.last_good.as_deref() != Some(reason.as_str())
        {
            tracing::error!("{reason}");
            state.last_good = Some(reason);
        }
    }

    /// Says (once, after the first compilation) which DNS answers in use come from before the
    /// start.
    pub fn log_restored_dns(&self) {
        let restored: Vec<String> = self
            .dns
            .restored()
            .into_iter()
            .map(|(name, from)| format!("{name} (from {from})"))
            .collect();
        if !restored.is_empty() {
            tracing::warn!(
                "DNS answers restored for {}: used until a lookup answers",
                restored.join(", ")
            );
        }
    }

    /// Whether the import of `peer` is stale (`Some` says why), for the health details.
    pub fn import_stale(&self, peer: &str, why: Option<String>) {
        if let Ok(mut state) = self.state.lock() {
            match why {
                Some(why) => state.stale_imports.insert(peer.to_owned(), why),
                None => state.stale_imports.remove(peer),
            };
        }
    }

    fn written(&self, version: u64, at_ms: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.written = Some((version, at_ms));
        }
    }

    pub fn details(&self) -> Details {
        let Ok(state) = self.state.lock() else {
            return Details {
                serving: "configuration",
                reason: None,
                degraded: Vec::new(),
                last_good_written: None,
            };
        };
        let mut degraded = state.problems.clone();
        degraded.extend(state.stale_imports.values().cloned());
        degraded.extend(self.dns.restored().into_iter().map(|(name, from)| {
            format!("DNS answer for {name} from {from}: no lookup has answered since the start")
        }));
        Details {
            serving: match state.last_good {
                Some(_) => "last-known-good",
                None => "configuration",
            },
            reason: state.last_good.clone(),
            degraded,
            last_good_written: state.written.map(|(version, at)| Written {
                version,
                at: format_ms(at),
            }),
        }
    }
}

/// "serving last-known-good snapshot version N written at T: WHY".
pub fn serving_line(last_good: &LastGood, why: &str) -> String {
    format!(
        "serving last-known-good snapshot version {} written at {}: {why}",
        last_good.snapshot.version,
        format_ms(last_good.written_at_ms)
    )
}

/// Keeps the last-good file current: each installed snapshot is offered, and a task writes
/// the latest one off the async workers; snapshots offered while a write is under way are
/// coalesced into one write of the newest.
#[derive(Debug)]
pub struct LastGoodWriter {
    latest: watch::Sender<Option<Offered>>,
}

impl LastGoodWriter {
    pub fn start(file: LastGoodFile, role: String, status: Arc<ServingStatus>) -> LastGoodWriter {
        let (latest, mut offered) = watch::channel(None::<Offered>);
        tokio::spawn(async move {
            while offered.changed().await.is_ok() {
                let Some(installed) = offered.borrow_and_update().clone() else {
                    continue;
                };
                let (file, role) = (file.clone(), role.clone());
                let version = installed.snapshot.version;
                let written = tokio::task::spawn_blocking(move || {
                    file.write(
                        &role,
                        &installed.snapshot,
                        &installed.names,
                        installed.compiled_at_ms,
                    )
                })
                .await;
                match written {
                    Ok(Ok(at)) => status.written(version, at),
                    Ok(Err(error)) => tracing::error!(
                        "{error}; the last-known-good snapshot on disk is older than the one served"
                    ),
                    Err(error) => tracing::error!("writing the last-known-good snapshot: {error}"),
                }
            }
        });
        LastGoodWriter { latest }
    }

    /// Offers the snapshot installed and the DNS proxy's names, compiled at `compiled_at_ms`.
    pub fn offer(&self, snapshot: Arc<Snapshot>, names: Arc<NameTable>, compiled_at_ms: u64) {
        let previous = self.latest.send_replace(Some(Offered {
            snapshot,
            names,
            compiled_at_ms,
        }));
        // Often the last reference to the snapshot replaced: a large one takes tens of
        // milliseconds to free, so it is freed on a blocking thread.
        if let Some(previous) = previous {
            tokio::task::spawn_blocking(move || drop(previous));
        }
    }
}

/// What was installed, waiting to be written.
#[derive(Clone, Debug)]
struct Offered {
    snapshot: Arc<Snapshot>,
    names: Arc<NameTable>,
    compiled_at_ms: u64,
}
