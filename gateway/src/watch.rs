//! Noticing configuration changes: the kernel tells (inotify, through the notify crate) when
//! something under the watched paths changes, and a slow poll of the files' fingerprint catches
//! what notifications can miss (a path that did not exist yet, a filesystem that does not
//! report changes, running out of inotify watches).
//!
//! Either way a change is read only once the files have stopped changing for the debounce
//! period, so that a change made of several writes is read whole.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use strait_discovery::source::fingerprint;
use tokio::sync::Notify;

/// Watches paths; `changed` resolves once they have changed and settled.
pub struct ConfigWatch {
    paths: Vec<PathBuf>,
    seen: u64,
    poke: Arc<Notify>,
    poll: tokio::time::Interval,
    debounce: Duration,
    /// Kept alive for its notifications; `None` when the kernel's could not be had.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl ConfigWatch {
    pub fn new(paths: Vec<PathBuf>, poll: Duration, debounce: Duration) -> ConfigWatch {
        let poke = Arc::new(Notify::new());
        let watcher = kernel_watcher(&paths, poke.clone());
        let mut poll = tokio::time::interval(poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ConfigWatch {
            seen: fingerprint(&paths),
            paths,
            poke,
            poll,
            debounce,
            _watcher: watcher,
        }
    }

    /// Waits until the paths have changed since the last change was returned (or since the
    /// watch began) and then stayed still for the debounce period.
    pub async fn changed(&mut self) {
        loop {
            tokio::select! {
                () = self.poke.notified() => {}
                _ = self.poll.tick() => {}
            }
            let mut now = fingerprint(&self.paths);
            if now == self.seen {
                continue;
            }
            loop {
                tokio::time::sleep(self.debounce).await;
                let again = fingerprint(&self.paths);
                if again == now {
                    break;
                }
                now = again;
            }
            self.seen = now;
            return;
        }
    }

    /// Takes the paths as they are now as seen (a reload made for another reason read them).
    pub fn mark_seen(&mut self) {
        self.seen = fingerprint(&self.paths);
    }
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("paths", &self.paths)
            .field("notifications", &self._watcher.is_some())
            .finish_non_exhaustive()
    }
}

/// A kernel watch of every path that exists, recursively; `None` (the poll alone then) when
/// none could be set up.
fn kernel_watcher(paths: &[PathBuf], poke: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            poke.notify_one();
        }
    })
    .map_err(|error| tracing::warn!(%error, "no file notifications; polling only"))
    .ok()?;
    let mut watching = false;
    for path in paths {
        match watcher.watch(path, RecursiveMode::Recursive) {
            Ok(()) => watching = true,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "not watched; polled instead")
            }
        }
    }
    watching.then_some(watcher)
}
