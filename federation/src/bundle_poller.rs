//! Following peers' bundles: which fetched bundle is accepted ([`judge`]), one poll of one peer
//! ([`poll_peer`]), and the poller that keeps every stored peer's bundle current
//! ([`BundlePoller`]).
//!
//! Sequence rules (SPIFFE federation orders bundles by `spiffe_sequence`):
//! - a higher sequence is accepted and stored ([`crate::peer_store::PeerStore::store_bundle`]);
//! - the same sequence with the same roots changes nothing;
//! - the same sequence with other roots, or a lower sequence, is refused and logged, and the
//!   latest bundle stays;
//! - after `strait peer reset-sequence NAME` the next bundle fetched is accepted whatever its
//!   sequence (logged at warn), for a peer that legitimately started its sequence over.
//!
//! Timing: a peer is polled at its latest bundle's `spiffe_refresh_hint` (the default interval
//! when it has none), bounded by [`PollerOptions::min_interval`] and
//! [`PollerOptions::max_interval`]. A failed fetch keeps the last bundle and is retried with
//! exponential backoff from [`PollerOptions::retry_initial`], never later than the normal
//! interval. [`Nudges::nudge`] asks for an early refresh of a trust domain (on an unknown-issuer
//! error from one of its workloads), at most once per [`PollerOptions::nudge_interval`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_certs::{TrustBundle, TrustDomain};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::bundle_fetch::{FetchError, fetch_bundle};
use crate::peer_store::{PeerStore, StoreError, StoredPeer};
use crate::peer_watch::{PeerList, PeerWatch};

/// How often and how patiently peers are polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerOptions {
    /// The shortest interval between polls of one peer, whatever its refresh hint (10 s).
    pub min_interval: Duration,
    /// The longest interval between polls of one peer (1 h).
    pub max_interval: Duration,
    /// The interval when a bundle has no refresh hint (5 min, SPIFFE's suggestion).
    pub default_interval: Duration,
    /// The first retry after a failed fetch; doubled on each further failure (1 s).
    pub retry_initial: Duration,
    /// How long one fetch may take (10 s).
    pub fetch_timeout: Duration,
    /// The least time between two early refreshes of one trust domain (10 s).
    pub nudge_interval: Duration,
    /// How often the peer folder is read again for added and removed peers (5 s).
    pub rescan_interval: Duration,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(10),
            max_interval: Duration::from_secs(3600),
            default_interval: Duration::from_secs(300),
            retry_initial: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(10),
            nudge_interval: Duration::from_secs(10),
            rescan_interval: Duration::from_secs(5),
        }
    }
}

impl PollerOptions {
    /// When to poll again after a fetch: the refresh hint the endpoint served, bounded.
    pub fn interval_for(&self, refresh_hint: Option<Duration>) -> Duration {
        refresh_hint
            .unwrap_or(self.default_interval)
            .clamp(self.min_interval, self.max_interval.max(self.min_interval))
    }

    /// When to retry after `failures` failed fetches in a row (at least one), for a peer whose
    /// latest bundle has `refresh_hint`.
    pub fn retry_after(&self, failures: u32, refresh_hint: Option<Duration>) -> Duration {
        let doubled = self
            .retry_initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
        doubled.min(self.interval_for(refresh_hint))
    }
}

/// Why a fetched bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("sequence {offered} is lower than the latest held, {current}")]
    LowerSequence { offered: u64, current: u64 },
    #[error(
        "sequence {sequence} is the latest held, but with other roots (a bundle's sequence must change whenever its content does)"
    )]
    SameSequenceOtherRoots { sequence: u64 },
}

/// What to do with a fetched bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store it as the latest.
    Accept,
    /// It is the latest already.
    Unchanged,
    /// Keep the latest; say why.
    Refuse(Refusal),
}

/// The sequence rules for `offered` against the peer's `current` bundle; `reset` is the
/// operator's override (accept whatever the sequence).
pub fn judge(current: &TrustBundle, offered: &TrustBundle, reset: bool) -> Decision {
    if offered.sequence == current.sequence && offered.roots == current.roots {
        return Decision::Unchanged;
    }
    if reset || offered.sequence > current.sequence {
        return Decision::Accept;
    }
    if offered.sequence == current.sequence {
        Decision::Refuse(Refusal::SameSequenceOtherRoots {
            sequence: offered.sequence,
        })
    } else {
        Decision::Refuse(Refusal::LowerSequence {
            offered: offered.sequence,
            current: current.sequence,
        })
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// A newer bundle (or one taken under a sequence reset) was stored.
    Updated {
        from: u64,
        to: u64,
        roots: usize,
        reset: bool,
    },
    /// The endpoint served the latest bundle.
    Unchanged { sequence: u64 },
    /// The endpoint served a bundle the sequence rules refuse; the latest stays.
    Refused(Refusal),
}

/// Why a poll failed; the latest bundle stays.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fetches one peer's bundle and applies the sequence rules; an accepted bundle is stored
/// before this returns. Returns what happened and the refresh hint the endpoint served (which
/// sets the next poll, whatever was done with the bundle).
pub async fn poll_peer(
    store: &PeerStore,
    stored: &StoredPeer,
    fetch_timeout: Duration,
) -> Result<(PollOutcome, Option<Duration>), PollError> {
    let peer = &stored.peer;
    let current = &stored.latest;
    let offered = fetch_bundle(&peer.bundle_endpoint, current, fetch_timeout).await?;
    let reset = store.sequence_reset_requested(&peer.name);
    let hint = offered.refresh_hint;
    let outcome = match judge(current, &offered, reset) {
        Decision::Accept => {
            store.store_bundle(peer, &offered)?;
            if reset {
                store.clear_sequence_reset(&peer.name)?;
            }
            PollOutcome::Updated {
                from: current.sequence,
                to: offered.sequence,
                roots: offered.roots.len(),
                reset,
            }
        }
        Decision::Unchanged => PollOutcome::Unchanged {
            sequence: current.sequence,
        },
        Decision::Refuse(refusal) => PollOutcome::Refused(refusal),
    };
    Ok((outcome, hint))
}

/// Logs what a poll did, in the words an operator needs.
pub fn log_outcome(peer: &StoredPeer, outcome: &PollOutcome) {
    let name = &peer.peer.name;
    let td = &peer.peer.trust_domain;
    match outcome {
        PollOutcome::Updated {
            from,
            to,
            roots,
            reset: false,
        } => tracing::info!(
            peer = %name, trust_domain = %td, from, to, roots,
            "peer bundle updated"
        ),
        PollOutcome::Updated {
            from,
            to,
            roots,
            reset: true,
        } => tracing::warn!(
            peer = %name, trust_domain = %td, from, to, roots,
            "peer bundle taken under the operator's sequence reset, whatever its sequence"
        ),
        PollOutcome::Unchanged { sequence } => tracing::debug!(
            peer = %name, trust_domain = %td, sequence,
            "peer bundle unchanged"
        ),
        PollOutcome::Refused(refusal) => tracing::warn!(
            peer = %name, trust_domain = %td, latest = peer.latest.sequence,
            "peer bundle refused: {refusal}; keeping the latest"
        ),
    }
}

/// Polls every stored peer once; for `strait federation poll --once`.
pub async fn poll_all_once(
    store: &PeerStore,
    options: &PollerOptions,
) -> Result<Vec<(String, Result<PollOutcome, PollError>)>, StoreError> {
    let mut results = Vec::new();
    for stored in store.list()? {
        let result = poll_peer(store, &stored, options.fetch_timeout).await;
        match &result {
            Ok((outcome, _)) => log_outcome(&stored, outcome),
            Err(error) => tracing::warn!(
                peer = %stored.peer.name, latest = stored.latest.sequence,
                "fetching the peer bundle failed: {error}; keeping the latest"
            ),
        }
        results.push((stored.peer.name, result.map(|(outcome, _)| outcome)));
    }
    Ok(results)
}

/// Early refresh requests per trust domain, rate-limited.
#[derive(Debug, Clone)]
pub struct Nudges {
    interval: Duration,
    domains: Arc<Mutex<HashMap<TrustDomain, NudgeState>>>,
}

#[derive(Debug, Default)]
struct NudgeState {
    last: Option<Instant>,
    notify: Arc<Notify>,
}

impl Nudges {
    /// Nudges allowed at most once per `interval` per trust domain.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            domains: Arc::default(),
        }
    }

    /// Asks for an early refresh of `trust_domain`'s bundle (an unknown-issuer error from one
    /// of its workloads). Returns whether it was taken; one within the interval of the last
    /// taken one is dropped.
    pub fn nudge(&self, trust_domain: &TrustDomain) -> bool {
        self.nudge_at(trust_domain, Instant::now())
    }

    fn nudge_at(&self, trust_domain: &TrustDomain, now: Instant) -> bool {
        let mut domains = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        let state = domains.entry(trust_domain.clone()).or_default();
        if state
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return false;
        }
        state.last = Some(now);
        // A permit is kept when the peer's task is not waiting yet.
        state.notify.notify_one();
        true
    }

    fn notifier(&self, trust_domain: &TrustDomain) -> Arc<Notify> {
        let mut domains = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        domains
            .entry(trust_domain.clone())
            .or_default()
            .notify
            .clone()
    }
}

/// Keeps the bundle of every peer under a data directory current, one task per peer; peers
/// added or removed are picked up as the [`PeerWatch`] followed publishes them.
#[derive(Debug)]
pub struct BundlePoller {
    store: PeerStore,
    options: PollerOptions,
    nudges: Nudges,
}

impl BundlePoller {
    pub fn new(store: PeerStore, options: PollerOptions) -> Self {
        let nudges = Nudges::new(options.nudge_interval);
        Self {
            store,
            options,
            nudges,
        }
    }

    /// The handle that asks for early refreshes.
    pub fn nudges(&self) -> Nudges {
        self.nudges.clone()
    }

    /// Polls until `shutdown` completes, reading the peer folder every
    /// [`PollerOptions::rescan_interval`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let watch = PeerWatch::start(self.store.clone(), self.options.rescan_interval);
        self.follow(watch.subscribe(), shutdown).await;
    }

    /// Polls the peers `peers` publishes (a [`PeerWatch`] shared with whatever else follows
    /// them) until `shutdown` completes: a task per peer, started when it appears and stopped
    /// when it goes.
    pub async fn follow(
        self,
        mut peers: watch::Receiver<PeerList>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut tasks: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
        tokio::pin!(shutdown);
        loop {
            let names: Vec<String> = peers
                .borrow_and_update()
                .iter()
                .map(|p| p.peer.name.clone())
                .collect();
            tasks.retain(|name, task| {
                let keep = names.contains(name);
                if !keep {
                    tracing::info!(peer = %name, "peer removed; no longer polled");
                    task.abort();
                }
                keep
            });
            for name in names {
                tasks.entry(name.clone()).or_insert_with(|| {
                    tracing::info!(peer = %name, "polling the peer's bundle endpoint");
                    tokio::spawn(follow_peer(
                        self.store.clone(),
                        name,
                        self.options.clone(),
                        self.nudges.clone(),
                    ))
                });
            }
            tokio::select! {
                () = &mut shutdown => break,
                changed = peers.changed() => {
                    if changed.is_err() {
                        // The watch stopped: keep polling the peers known until shutdown.
                        shutdown.as_mut().await;
                        break;
                    }
                }
            }
        }
        for task in tasks.values() {
            task.abort();
        }
    }
}

/// One peer's loop: poll, wait for the next interval (or a nudge), again.
async fn follow_peer(store: PeerStore, name: String, options: PollerOptions, nudges: Nudges) {
    let mut failures = 0u32;
    loop {
        let (wait, trust_domain) = match store.get(&name) {
            Ok(stored) => {
                let wait = match poll_peer(&store, &stored, options.fetch_timeout).await {
                    Ok((outcome, hint)) => {
                        failures = 0;
                        log_outcome(&stored, &outcome);
                        options.interval_for(hint)
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let wait = options.retry_after(failures, stored.latest.refresh_hint);
                        tracing::warn!(
                            peer = %name, latest = stored.latest.sequence, failures,
                            "fetching the peer bundle failed: {error}; keeping the latest, retrying in {wait:?}"
                        );
                        wait
                    }
                };
                (wait, Some(stored.peer.trust_domain))
            }
            Err(StoreError::NoSuchPeer(_)) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = options
                    .retry_initial
                    .saturating_mul(failures.min(60))
                    .min(options.max_interval);
                tracing::warn!(peer = %name, "reading the peer failed: {error}; retrying in {wait:?}");
                (wait, None)
            }
        };
        match trust_domain.map(|td| nudges.notifier(&td)) {
            Some(notify) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = notify.notified() => {
                        tracing::info!(peer = %name, "early refresh of the peer bundle");
                    }
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests;
