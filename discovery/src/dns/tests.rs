//! The arithmetic of answers: TTL floors, NXDOMAIN grace, last-known-good and the IPv4 rule.

use super::*;

const TIMING: Timing = Timing {
    floor: Duration::from_secs(60),
    nxdomain_grace: Duration::from_secs(300),
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn resolved(addresses: &[&str], ttl: u64) -> Outcome {
    Outcome::Resolved {
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ttl: Duration::from_secs(ttl),
    }
}

#[test]
fn ipv6_is_left_out_when_the_name_has_ipv4() {
    let both = vec![ip("fd00::1"), ip("10.0.0.1"), ip("10.0.0.2")];
    assert_eq!(prefer_ipv4(both), vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    let only_v6 = vec![ip("fd00::1"), ip("fd00::2")];
    assert_eq!(prefer_ipv4(only_v6.clone()), only_v6);
}

#[test]
fn refresh_is_at_the_ttl_floored_by_the_refresh_rate() {
    let floor = Duration::from_secs(60);
    assert_eq!(refresh_after(Duration::from_secs(5), floor), floor);
    assert_eq!(
        refresh_after(Duration::from_secs(300), floor),
        Duration::from_secs(300)
    );
    let now = Instant::now();
    let answer = next_answer("a.test", None, resolved(&["10.0.0.1"], 120), now, TIMING);
    assert_eq!(answer.refresh_at, now + Duration::from_secs(120));
    assert_eq!(answer.addresses, vec![ip("10.0.0.1")]);
}

#[test]
fn a_failed_lookup_keeps_the_last_answer() {
    let now = Instant::now();
    let good = next_answer("a.test", None, resolved(&["10.0.0.1"], 10), now, TIMING);
    let later = now + Duration::from_secs(61);
    let after = next_answer(
        "a.test",
        Some(&good),
        Outcome::Failed("timed out".into()),
        later,
        TIMING,
    );
    assert_eq!(after.addresses, vec![ip("10.0.0.1")]);
    assert_eq!(after.refresh_at, later + TIMING.floor);
    // Never resolved: no addresses, and the reason says it is waiting.
    let first = next_answer(
        "b.test",
        None,
        Outcome::Failed("SERVFAIL".into()),
        now,
        TIMING,
    );
    assert!(first.addresses.is_empty());
    assert!(first.empty_reason.unwrap().starts_with("waiting for DNS"));
}

#[test]
fn nxdomain_keeps_the_last_answer_for_the_grace_then_empties() {
    let t0 = Instant::now();
    let good = next_answer("a.test", None, resolved(&["10.0.0.1"], 10), t0, TIMING);
    let nx = || Outcome::Missing("NXDOMAIN".into());
    let t1 = t0 + Duration::from_secs(60);
    let within = next_answer("a.test", Some(&good), nx(), t1, TIMING);
    assert_eq!(within.addresses, vec![ip("10.0.0.1")]);
    assert_eq!(within.missing_since, Some(t1));
    // Looked at again when the grace ends if that is before the floor.
    let t2 = t1 + Duration::from_secs(280);
    let late = next_answer("a.test", Some(&within), nx(), t2, TIMING);
    assert_eq!(late.addresses, vec![ip("10.0.0.1")]);
    assert_eq!(late.refresh_at, t1 + TIMING.nxdomain_grace);
    let t3 = t1 + TIMING.nxdomain_grace;
    let gone = next_answer("a.test", Some(&late), nx(), t3, TIMING);
    assert!(gone.addresses.is_empty());
    let reason = gone.empty_reason.clone().unwrap();
    assert!(
        reason.contains("NXDOMAIN") && reason.contains("grace"),
        "{reason}"
    );
    // An answer again ends it.
    let back = next_answer(
        "a.test",
        Some(&gone),
        resolved(&["10.0.0.2"], 10),
        t3,
        TIMING,
    );
    assert_eq!(back.addresses, vec![ip("10.0.0.2")]);
    assert_eq!(back.missing_since, None);
}

#[test]
fn nxdomain_for_a_name_never_resolved_has_no_addresses_at_once() {
    let now = Instant::now();
    let answer = next_answer(
        "a.test",
        None,
        Outcome::Missing("NXDOMAIN".into()),
        now,
        TIMING,
    );
    assert!(answer.addresses.is_empty());
    assert!(answer.empty_reason.unwrap().contains("NXDOMAIN"));
}

#[test]
fn the_cache_answers_waiting_until_resolved_and_signals_changes() {
    let cache = DnsCache::default();
    let Resolved::Empty(why) = cache.resolve("Svc.Example.") else {
        panic!("resolved before any lookup");
    };
    assert!(why.starts_with("waiting for DNS"), "{why}");
    let now = Instant::now();
    let (due, _) = cache.due(now);
    assert_eq!(due, vec!["svc.example".to_owned()]);
    cache.record("svc.example", resolved(&["10.0.0.7"], 30), now, TIMING);
    assert_eq!(
        cache.resolve("svc.example"),
        Resolved::Addresses(vec![ip("10.0.0.7")])
    );
    let (due, next) = cache.due(now);
    assert!(due.is_empty());
    assert_eq!(next, Some(now + TIMING.floor));
    // A compilation that no longer asks for the name: it is not looked up any more.
    cache.begin_compile();
    cache.end_compile();
    assert_eq!(cache.due(now + TIMING.floor), (Vec::new(), None));
    cache.resolve("svc.example");
    cache.record("svc.example", resolved(&["10.0.0.7"], 30), now, TIMING);
    cache.record(
        "svc.example",
        Outcome::Failed("timeout".into()),
        now,
        TIMING,
    );
    assert_eq!(cache.failures().get(), 1);
    assert_eq!(
        cache.resolve("svc.example"),
        Resolved::Addresses(vec![ip("10.0.0.7")])
    );
}

#[test]
fn changed_answers_are_stored_and_a_new_cache_starts_from_them() {
    use crate::state::{SledStore, Store, test_dir::TestDir};
    let dir = TestDir::new("dns-store");
    let path = dir.path().join("store");
    let now = Instant::now();
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&path).unwrap().store);
        let cache = DnsCache::with_store(store.clone());
        cache.resolve("a.example");
        cache.resolve("gone.example");
        cache.record("a.example", resolved(&["10.0.0.1"], 30), now, TIMING);
        cache.record("a.example", resolved(&["10.0.0.2"], 30), now, TIMING);
        // A failure keeps the answer, in the cache and in the store.
        cache.record("a.example", Outcome::Failed("timeout".into()), now, TIMING);
        cache.record("gone.example", resolved(&["10.0.0.9"], 30), now, TIMING);
        // NXDOMAIN past its grace: the name has no answer any more, stored or not.
        let later = now + TIMING.nxdomain_grace + Duration::from_secs(1);
        cache.record(
            "gone.example",
            Outcome::Missing("NXDOMAIN".into()),
            now,
            TIMING,
        );
        cache.record(
            "gone.example",
            Outcome::Missing("NXDOMAIN".into()),
            later,
            TIMING,
        );
        let names: Vec<String> = store
            .dns_answers()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, vec!["a.example".to_owned()]);
        assert!(cache.restored().is_empty());
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&path).unwrap().store);
    let cache = DnsCache::with_store(store);
    assert_eq!(
        cache.resolve("a.example"),
        Resolved::Addresses(vec![ip("10.0.0.2")])
    );
    assert_eq!(
        cache.restored(),
        vec![("a.example".to_owned(), "the store".to_owned())]
    );
    // Restored answers are looked up again at once; a failure keeps them, restored.
    let (due, _) = cache.due(Instant::now());
    assert_eq!(due, vec!["a.example".to_owned()]);
    cache.record(
        "a.example",
        Outcome::Failed("unreachable".into()),
        Instant::now(),
        TIMING,
    );
    assert_eq!(cache.restored().len(), 1);
    // A restored answer gives way only to a newer restored one.
    let stored_at = cache.inner.state.lock().unwrap().answers["a.example"]
        .restored
        .as_ref()
        .unwrap()
        .at_ms;
    assert!(!cache.seed(
        "a.example",
        vec![ip("10.9.9.9")],
        stored_at,
        "the last-known-good snapshot"
    ));
    assert!(cache.seed(
        "a.example",
        vec![ip("10.0.0.3")],
        stored_at + 1,
        "the last-known-good snapshot"
    ));
    assert_eq!(
        cache.resolve("a.example"),
        Resolved::Addresses(vec![ip("10.0.0.3")])
    );
    assert!(cache.seed(
        "b.example",
        vec![ip("10.0.0.5")],
        0,
        "the last-known-good snapshot"
    ));
    // An answer confirms it: no longer restored, and no restored answer overrides it.
    cache.record(
        "a.example",
        resolved(&["10.0.0.2"], 30),
        Instant::now(),
        TIMING,
    );
    assert!(!cache.seed(
        "a.example",
        vec![ip("10.9.9.9")],
        u64::MAX,
        "the last-known-good snapshot"
    ));
    assert_eq!(
        cache.restored(),
        vec![(
            "b.example".to_owned(),
            "the last-known-good snapshot".to_owned()
        )]
    );
}
