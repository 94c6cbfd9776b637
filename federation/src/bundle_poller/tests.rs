use super::*;
use crate::test_support::{TestDir, ca, td};

fn bundles(dir: &TestDir) -> (TrustBundle, TrustBundle) {
    let first = ca(dir, "west", "west.mesh").trust_bundle();
    let other = ca(dir, "west-next", "west.mesh").trust_bundle();
    let mut rotated = first.clone();
    rotated.roots.extend(other.roots);
    (first, rotated)
}

#[test]
fn a_higher_sequence_is_accepted_and_a_lower_one_refused() {
    let dir = TestDir::new("judge");
    let (mut current, mut offered) = bundles(&dir);
    current.sequence = 4;
    offered.sequence = 5;
    assert_eq!(judge(&current, &offered, false), Decision::Accept);
    offered.sequence = 3;
    assert_eq!(
        judge(&current, &offered, false),
        Decision::Refuse(Refusal::LowerSequence {
            offered: 3,
            current: 4
        })
    );
    // Lower is refused even with the same roots: sequences only go up.
    let mut older = current.clone();
    older.sequence = 2;
    assert!(matches!(
        judge(&current, &older, false),
        Decision::Refuse(Refusal::LowerSequence { .. })
    ));
}

#[test]
fn the_same_sequence_is_a_no_op_with_the_same_roots_and_refused_with_others() {
    let dir = TestDir::new("judge-same");
    let (current, mut offered) = bundles(&dir);
    offered.sequence = current.sequence;
    assert_eq!(
        judge(&current, &offered, false),
        Decision::Refuse(Refusal::SameSequenceOtherRoots {
            sequence: current.sequence
        })
    );
    let mut same = current.clone();
    same.refresh_hint = Some(Duration::from_secs(1));
    assert_eq!(judge(&current, &same, false), Decision::Unchanged);
}

#[test]
fn the_operator_override_accepts_any_sequence_once() {
    let dir = TestDir::new("judge-reset");
    let (mut current, mut offered) = bundles(&dir);
    current.sequence = 40;
    offered.sequence = 1;
    assert_eq!(judge(&current, &offered, true), Decision::Accept);
    // Nothing to take when nothing changed.
    assert_eq!(judge(&current, &current, true), Decision::Unchanged);
}

#[test]
fn polls_follow_the_refresh_hint_within_bounds_and_retries_back_off() {
    let options = PollerOptions {
        min_interval: Duration::from_secs(2),
        max_interval: Duration::from_secs(60),
        default_interval: Duration::from_secs(30),
        retry_initial: Duration::from_secs(1),
        ..PollerOptions::default()
    };
    let secs = |s: u64| Some(Duration::from_secs(s));
    assert_eq!(options.interval_for(secs(5)), Duration::from_secs(5));
    assert_eq!(options.interval_for(secs(0)), Duration::from_secs(2));
    assert_eq!(options.interval_for(secs(86400)), Duration::from_secs(60));
    assert_eq!(options.interval_for(None), Duration::from_secs(30));
    let retries: Vec<u64> = (1..=7)
        .map(|n| options.retry_after(n, None).as_secs())
        .collect();
    assert_eq!(retries, [1, 2, 4, 8, 16, 30, 30]);
}

#[test]
fn nudges_are_rate_limited_per_trust_domain() {
    let nudges = Nudges::new(Duration::from_secs(10));
    let (west, east) = (td("west.mesh"), td("east.mesh"));
    let start = Instant::now();
    assert!(nudges.nudge_at(&west, start));
    assert!(!nudges.nudge_at(&west, start + Duration::from_secs(3)));
    assert!(!nudges.nudge_at(&west, start + Duration::from_millis(9999)));
    // Another trust domain has its own budget.
    assert!(nudges.nudge_at(&east, start + Duration::from_secs(3)));
    assert!(nudges.nudge_at(&west, start + Duration::from_secs(10)));
    assert!(!nudges.nudge_at(&west, start + Duration::from_secs(15)));
}

#[tokio::test]
async fn a_nudge_wakes_the_peer_even_before_it_waits() {
    let nudges = Nudges::new(Duration::from_secs(10));
    let west = td("west.mesh");
    assert!(nudges.nudge(&west));
    // The permit is kept until the peer's loop waits on it.
    nudges.notifier(&west).notified().await;
}
