//! DNS resolution of ServiceEntry hosts: the latest answer per name, kept in a [`DnsCache`]
//! that compilation reads without ever waiting on the network, and refreshed by a resolver task
//! (`resolver`) at the record TTL floored by MeshConfig `dnsRefreshRate`.
//!
//! Last-known-good: a failed lookup (timeout, SERVFAIL) keeps the last answer; a name that
//! answers NXDOMAIN keeps its last answer for a grace period, then has none, with the reason.
//! With a [`Store`], every changed answer is stored (durably, before compilation can read it)
//! and the cache starts from the stored answers, so a restart while DNS is unreachable still
//! has endpoints; names the store lacks can be seeded from the last-known-good snapshot.

mod marked;
mod resolver;

pub use resolver::{DnsError, DnsOptions, run_resolver};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_proxy::telemetry::metrics::Counter;
use tokio::sync::Notify;

use crate::state::{Store, StoredAnswer, now_ms};

/// Istio's default `dnsRefreshRate`.
pub const DEFAULT_REFRESH_RATE: Duration = Duration::from_secs(60);

/// The latest answer for one name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    /// The addresses endpoints are made of (IPv4 only when the name has any).
    pub(crate) addresses: Vec<IpAddr>,
    /// When the name is looked up again.
    pub(crate) refresh_at: Instant,
    /// Since when the name answers NXDOMAIN (or no address at all), while it does.
    pub(crate) missing_since: Option<Instant>,
    /// Why the name has no addresses, when it has none.
    pub(crate) empty_reason: Option<String>,
    /// Where the addresses came from when no lookup has answered since the process started
    /// ("the store", "the last-known-good snapshot").
    pub(crate) restored: Option<Restored>,
}

/// An answer restored at start, before any lookup.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Restored {
    pub(crate) source: String,
    /// When its source last knew it to be current, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
}

/// What one lookup of a name gave.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Addresses, with the smallest TTL of their records.
    Resolved {
        addresses: Vec<IpAddr>,
        ttl: Duration,
    },
    /// NXDOMAIN, or neither an A nor an AAAA record.
    Missing(String),
    /// The lookup did not get an answer (timeout, SERVFAIL, no server reachable).
    Failed(String),
}

/// How often names are looked up and how long NXDOMAIN is tolerated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Timing {
    /// The least time between two lookups of a name (`dnsRefreshRate`).
    pub(crate) floor: Duration,
    /// How long a name that resolved before may answer NXDOMAIN before it has no addresses.
    pub(crate) nxdomain_grace: Duration,
}

/// The addresses endpoints are made of: IPv6 addresses are left out when the name also has
/// IPv4 ones, so that an IPv4-only host never gets endpoints that always fail.
pub(crate) fn prefer_ipv4(addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    if addresses.iter().any(IpAddr::is_ipv4) {
        addresses.into_iter().filter(IpAddr::is_ipv4).collect()
    } else {
        addresses
    }
}

/// When a name is looked up next: at its TTL, but never sooner than the floor.
pub(crate) fn refresh_after(ttl: Duration, floor: Duration) -> Duration {
    ttl.max(floor)
}

/// The answer after `outcome`, given the previous one.
pub(crate) fn next_answer(
    name: &str,
    previous: Option<&Answer>,
    outcome: Outcome,
    now: Instant,
    timing: Timing,
) -> Answer {
    match outcome {
        Outcome::Resolved { addresses, ttl } => Answer {
            addresses: prefer_ipv4(addresses),
            refresh_at: now + refresh_after(ttl, timing.floor),
            missing_since: None,
            empty_reason: None,
            restored: None,
        },
        Outcome::Failed(error) => match previous {
            // The last good answer stays; the name is tried again after the floor.
            Some(previous) => Answer {
                refresh_at: now + timing.floor,
                ..previous.clone()
            },
            None => Answer {
                addresses: Vec::new(),
                refresh_at: now + timing.floor,
                missing_since: None,
                empty_reason: Some(format!("waiting for DNS: resolving {name} failed: {error}")),
                restored: None,
            },
        },
        Outcome::Missing(why) => {
            let had_addresses = previous.is_some_and(|p| !p.addresses.is_empty());
            let since = previous.and_then(|p| p.missing_since).unwrap_or(now);
            let missing_for = now.saturating_duration_since(since);
            if had_addresses && missing_for < timing.nxdomain_grace {
                // Within the grace period: the last answer stays; look again at the floor, or
                // when the grace ends if that is sooner.
                let left = timing.nxdomain_grace - missing_for;
                let previous = previous.cloned().unwrap_or_else(|| empty(now));
                Answer {
                    refresh_at: now + timing.floor.min(left),
                    missing_since: Some(since),
                    ..previous
                }
            } else {
                let reason =
                    match had_addresses || previous.is_some_and(|p| p.missing_since.is_some()) {
                        true => format!(
                            "DNS name {name}: {why} for {}s, longer than the NXDOMAIN grace of {}s",
                            missing_for.as_secs(),
                            timing.nxdomain_grace.as_secs()
                        ),
                        false => format!("DNS name {name}: {why}"),
                    };
                Answer {
                    addresses: Vec::new(),
                    refresh_at: now + timing.floor,
                    missing_since: Some(since),
                    empty_reason: Some(reason),
                    restored: None,
                }
            }
        }
    }
}

fn empty(now: Instant) -> Answer {
    Answer {
        addresses: Vec::new(),
        refresh_at: now,
        missing_since: None,
        empty_reason: None,
        restored: None,
    }
}

/// The latest DNS answers, shared by compilation (which reads them and says which names it
/// needs) and the resolver task (which keeps them fresh). Cloning shares the same cache.
#[derive(Clone, Debug, Default)]
pub struct DnsCache {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when an answer's addresses (or reason) changed.
    changed: Notify,
    /// Signalled when compilation asked for a name the cache had not been asked for.
    wanted: Notify,
    /// Lookups that failed (timeout, SERVFAIL, unreachable server).
    failures: Counter,
    /// Where changed answers are kept across restarts.
    store: Option<Arc<dyn Store>>,
}

#[derive(Debug, Default)]
struct State {
    answers: HashMap<String, Answer>,
    /// Every name the last compilation asked for (and those asked outside one).
    wanted: BTreeSet<String>,
    /// The names the compilation under way has asked for.
    asked: Option<BTreeSet<String>>,
    /// MeshConfig `dnsRefreshRate`, as the last compilation read it.
    mesh_refresh_rate: Option<Duration>,
}

/// The addresses of a name as compilation sees them.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    Addresses(Vec<IpAddr>),
    /// No addresses, and why (not resolved yet, NXDOMAIN past its grace).
    Empty(String),
}

impl DnsCache {
    /// A cache that stores every changed answer in `store`, starting from the answers stored
    /// there (each looked up again at once).
    pub fn with_store(store: Arc<dyn Store>) -> DnsCache {
        let stored = match store.dns_answers() {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!("{error}; DNS answers start empty");
                Vec::new()
            }
        };
        let cache = DnsCache {
            inner: Arc::new(Shared {
                store: Some(store),
                ..Shared::default()
            }),
        };
        for answer in stored {
            cache.seed(
                &answer.name,
                answer.addresses,
                answer.resolved_at_ms,
                "the store",
            );
        }
        cache
    }

    /// Starts `name` from `addresses` restored from `source`, which knew them to be current at
    /// `at_ms` (milliseconds since the Unix epoch), unless the cache has an answer from a lookup
    /// or a restored one that is at least as recent or the same: among restored answers the
    /// newest wins (a store that lost its latest writes must not win over a newer
    /// last-known-good snapshot). It is looked up again at once. Whether it was seeded.
    pub fn seed(&self, name: &str, addresses: Vec<IpAddr>, at_ms: u64, source: &str) -> bool {
        let name = normalize(name);
        let Ok(mut state) = self.inner.state.lock() else {
            return false;
        };
        let newer = match state.answers.get(&name) {
            None => true,
            Some(answer) => {
                answer.restored.as_ref().is_some_and(|r| r.at_ms < at_ms)
                    && answer.addresses != addresses
            }
        };
        if addresses.is_empty() || !newer {
            return false;
        }
        tracing::info!(name, ?addresses, "DNS answer restored from {source}");
        state.answers.insert(
            name,
            Answer {
                addresses,
                refresh_at: Instant::now(),
                missing_since: None,
                empty_reason: None,
                restored: Some(Restored {
                    source: source.to_owned(),
                    at_ms,
                }),
            },
        );
        true
    }

    /// The names whose addresses no lookup has confirmed since the start, and where they came
    /// from.
    pub fn restored(&self) -> Vec<(String, String)> {
        let Ok(state) = self.inner.state.lock() else {
            return Vec::new();
        };
        let mut restored: Vec<(String, String)> = state
            .answers
            .iter()
            .filter_map(|(name, a)| Some((name.clone(), a.restored.as_ref()?.source.clone())))
            .collect();
        restored.sort();
        restored
    }

    /// The latest addresses of `name` (lowercase, no trailing dot); never waits. The name is
    /// looked up from now on.
    pub fn resolve(&self, name: &str) -> Resolved {
        let name = normalize(name);
        let Ok(mut state) = self.inner.state.lock() else {
            return Resolved::Empty(format!("waiting for DNS: {name} has not been resolved yet"));
        };
        if let Some(asked) = &mut state.asked {
            asked.insert(name.clone());
        }
        if state.wanted.insert(name.clone()) {
            self.inner.wanted.notify_one();
        }
        match state.answers.get(&name) {
            Some(answer) if !answer.addresses.is_empty() => {
                Resolved::Addresses(answer.addresses.clone())
            }
            Some(answer) => {
                Resolved::Empty(answer.empty_reason.clone().unwrap_or_else(|| {
                    format!("waiting for DNS: {name} has not been resolved yet")
                }))
            }
            None => Resolved::Empty(format!("waiting for DNS: {name} has not been resolved yet")),
        }
    }

    /// A compilation starts: the names it asks for are the ones looked up from its end on, and
    /// MeshConfig `dnsRefreshRate` is what it reads.
    pub(crate) fn begin_compile(&self) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.asked = Some(BTreeSet::new());
            state.mesh_refresh_rate = None;
        }
    }

    /// A compilation ended: names it did not ask for are no longer looked up, and their
    /// answers are forgotten.
    pub(crate) fn end_compile(&self) {
        if let Ok(mut state) = self.inner.state.lock()
            && let Some(asked) = state.asked.take()
        {
            state.answers.retain(|name, _| asked.contains(name));
            state.wanted = asked;
        }
    }

    /// Records MeshConfig `dnsRefreshRate` (none: Istio's default).
    pub(crate) fn set_mesh_refresh_rate(&self, rate: Option<Duration>) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.mesh_refresh_rate = rate;
        }
    }

    /// The count of lookups that failed (timeout, SERVFAIL, unreachable server), for the
    /// metrics.
    pub fn failures(&self) -> Counter {
        self.inner.failures.clone()
    }

    /// Waits until an answer changes what compilation would read.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    fn mesh_refresh_rate(&self) -> Option<Duration> {
        self.inner
            .state
            .lock()
            .ok()
            .and_then(|s| s.mesh_refresh_rate)
    }

    /// The wanted names due for a lookup at `now`, and when the next one is due after them.
    fn due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let Ok(state) = self.inner.state.lock() else {
            return (Vec::new(), None);
        };
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for name in &state.wanted {
            match state.answers.get(name) {
                Some(answer) if answer.refresh_at > now => {
                    next = Some(next.map_or(answer.refresh_at, |n| n.min(answer.refresh_at)));
                }
                _ => due.push(name.clone()),
            }
        }
        (due, next)
    }

    /// Stores the outcome of a lookup; signals `changed` when the addresses or reason changed.
    /// With a store, a changed answer is written there (and flushed) first: this blocks, so
    /// the resolver calls it off the async workers.
    pub(crate) fn record(&self, name: &str, outcome: Outcome, now: Instant, timing: Timing) {
        let Ok(mut state) = self.inner.state.lock() else {
            return;
        };
        if let Outcome::Failed(error) = &outcome {
            self.inner.failures.inc();
            tracing::warn!(name, %error, "DNS lookup failed; the last answer stays");
        }
        let ttl = match &outcome {
            Outcome::Resolved { ttl, .. } => Some(*ttl),
            _ => None,
        };
        let previous = state.answers.get(name);
        let answer = next_answer(name, previous, outcome, now, timing);
        let changed = previous.is_none_or(|p| {
            p.addresses != answer.addresses || p.empty_reason != answer.empty_reason
        });
        let confirmed_restored = previous.is_some_and(|p| p.restored.is_some()) && ttl.is_some();
        if let Some(store) = &self.inner.store
            && (changed || confirmed_restored)
        {
            // Only the resolver writes answers, so none changes while the lock is let go.
            drop(state);
            persist(store.as_ref(), name, &answer, ttl);
            let Ok(relocked) = self.inner.state.lock() else {
                return;
            };
            state = relocked;
        }
        if changed {
            match &answer.empty_reason {
                Some(reason) => tracing::warn!(name, %reason, "DNS answer changed: no addresses"),
                None => tracing::info!(name, addresses = ?answer.addresses, "DNS answer changed"),
            }
        }
        state.answers.insert(name.to_owned(), answer);
        drop(state);
        if changed {
            self.inner.changed.notify_one();
        }
    }

    async fn wanted_changed(&self) {
        self.inner.wanted.notified().await;
    }
}

/// Writes a changed answer to the store: its addresses, or (when it has none) that it has none.
fn persist(store: &dyn Store, name: &str, answer: &Answer, ttl: Option<Duration>) {
    let result = match (answer.addresses.is_empty(), ttl) {
        (false, Some(ttl)) => store.put_dns_answer(&StoredAnswer {
            name: name.to_owned(),
            addresses: answer.addresses.clone(),
            resolved_at_ms: now_ms(),
            ttl_seconds: ttl.as_secs(),
        }),
        (true, _) => store.remove_dns_answer(name),
        // Kept from before (a failed lookup, NXDOMAIN within its grace): already stored.
        (false, None) => Ok(()),
    };
    if let Err(error) = result {
        tracing::error!(name, "{error}; the answer is not kept across restarts");
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
