//! Remote key sets (`jwksUri`), live state kept outside snapshots and keyed by URI: each is
//! fetched in the background when a snapshot first names it, refreshed periodically (Istio's
//! 20 minutes by default), retried with backoff while it fails, and dropped when no snapshot
//! names it any more. A refresh that fails keeps the last good keys. Requests never fetch:
//! they read the current keys, waiting (up to the rule's timeout) only for the first fetch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::fetch::fetch;
use super::verify::KeySet;

/// Istio's default JWKS refresh interval (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// The first retry after a failed fetch; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a remote key set stands.
#[derive(Clone, Debug)]
pub(crate) enum JwksState {
    /// The first fetch has not finished.
    Fetching,
    Ready(Arc<KeySet>),
    /// No fetch has succeeded yet; the last error.
    Failed(String),
}

/// One remote key set and the task that keeps it fresh.
#[derive(Debug)]
pub(crate) struct RemoteJwks {
    pub(crate) uri: String,
    state: watch::Sender<JwksState>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl RemoteJwks {
    /// The current keys; while the first fetch runs, waits for it up to `wait`.
    pub(crate) async fn keys(&self, wait: Duration) -> Result<Arc<KeySet>, String> {
        let mut state = self.state.subscribe();
        let settled =
            tokio::time::timeout(wait, state.wait_for(|s| !matches!(s, JwksState::Fetching))).await;
        let current = match settled {
            Ok(Ok(state)) => state.clone(),
            _ => self.state.borrow().clone(),
        };
        match current {
            JwksState::Ready(keys) => Ok(keys),
            JwksState::Failed(why) => {
                Err(format!("JWKS from {} is not available: {why}", self.uri))
            }
            JwksState::Fetching => Err(format!(
                "JWKS from {} has not been fetched yet (waited {wait:?})",
                self.uri
            )),
        }
    }
}

/// Every remote key set the installed snapshots name.
#[derive(Debug)]
pub(crate) struct JwksStore {
    remotes: Mutex<HashMap<String, Arc<RemoteJwks>>>,
    refresh: Duration,
    /// `SO_MARK` for the fetches, as for every connection the proxy makes.
    mark: Option<u32>,
}

impl JwksStore {
    pub(crate) fn new(refresh: Duration, mark: Option<u32>) -> JwksStore {
        JwksStore {
            remotes: Mutex::new(HashMap::new()),
            refresh: refresh.max(Duration::from_millis(100)),
            mark,
        }
    }

    /// The key sets for `uris`: kept where already known, started where new; the others
    /// are forgotten (their refresh stops once no snapshot holds them).
    pub(crate) fn sync(&self, uris: &HashSet<String>) -> HashMap<String, Arc<RemoteJwks>> {
        let Ok(mut remotes) = self.remotes.lock() else {
            return HashMap::new();
        };
        remotes.retain(|uri, _| uris.contains(uri));
        for uri in uris {
            if !remotes.contains_key(uri) {
                remotes.insert(uri.clone(), self.start(uri));
            }
        }
        remotes.clone()
    }

    fn start(&self, uri: &str) -> Arc<RemoteJwks> {
        let remote = Arc::new(RemoteJwks {
            uri: uri.to_owned(),
            state: watch::channel(JwksState::Fetching).0,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(keep_fresh(
            Arc::downgrade(&remote),
            uri.to_owned(),
            self.refresh,
            self.mark,
        ));
        if let Ok(mut slot) = remote.task.lock() {
            *slot = Some(task.abort_handle());
        }
        remote
    }
}

/// Fetches `uri` now and then every `refresh`, retrying failures sooner, until the key set is
/// dropped.
async fn keep_fresh(remote: Weak<RemoteJwks>, uri: String, refresh: Duration, mark: Option<u32>) {
    let mut retry = FIRST_RETRY.min(refresh);
    loop {
        let outcome = match fetch(&uri, FETCH_TIMEOUT, mark).await {
            Ok(text) => KeySet::parse(&text).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let Some(remote) = remote.upgrade() else {
            return;
        };
        let wait = match outcome {
            Ok(keys) => {
                tracing::debug!(%uri, keys = keys.len(), "JWKS fetched");
                remote.state.send_replace(JwksState::Ready(Arc::new(keys)));
                retry = FIRST_RETRY.min(refresh);
                refresh
            }
            Err(why) => {
                let kept = matches!(*remote.state.borrow(), JwksState::Ready(_));
                if kept {
                    tracing::warn!(%uri, %why, "JWKS refresh failed; the last keys stay in use");
                } else {
                    tracing::warn!(%uri, %why, "JWKS fetch failed");
                    remote.state.send_replace(JwksState::Failed(why));
                }
                let wait = retry;
                retry = (retry * 2).min(refresh);
                wait
            }
        };
        drop(remote);
        tokio::time::sleep(wait).await;
    }
}
