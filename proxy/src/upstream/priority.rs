//! Priority levels, as Envoy computes them: how a cluster's traffic is split between its tiers
//! of endpoints (priority 0 the most preferred) from how healthy each tier is.
//!
//! A tier's health is its share of endpoints not ejected times the overprovisioning factor
//! (1.4), capped at 100%: a tier keeps all the traffic while at least 1/1.4 (about 72%) of it is
//! healthy, and spills the rest to the next tier as it loses more, getting it back as its
//! endpoints return. When the tiers' health adds up to less than 100%, it is scaled up so that
//! all the traffic still goes somewhere. Below the panic threshold (`minHealthPercent`) a tier
//! uses all its endpoints; when the tiers together are below it, the traffic is split by tier
//! size and every endpoint is used (Envoy's total panic).

/// Envoy's default overprovisioning factor (1.4), in percent.
pub(crate) const OVERPROVISIONING_FACTOR: u64 = 140;

/// One tier's endpoint counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TierHealth {
    /// Endpoints not ejected.
    pub healthy: usize,
    pub total: usize,
}

/// How the traffic is split between tiers: each tier's percent (they add up to 100, or are all
/// zero when no endpoint may be used), and whether each tier uses all its endpoints (panic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PriorityLoad {
    pub load: Vec<u32>,
    pub panic: Vec<bool>,
}

/// A tier's health in percent: its healthy share times the overprovisioning factor, at most 100.
fn health(tier: TierHealth) -> u64 {
    if tier.total == 0 {
        return 0;
    }
    let healthy = tier.healthy.min(tier.total) as u64;
    (healthy * OVERPROVISIONING_FACTOR / tier.total as u64).min(100)
}

/// Splits the traffic between `tiers` (in priority order) for a panic threshold of
/// `panic_threshold` percent (0 disables panic).
pub(crate) fn priority_load(tiers: &[TierHealth], panic_threshold: u32) -> PriorityLoad {
    let threshold = u64::from(panic_threshold.min(100));
    let health: Vec<u64> = tiers.iter().map(|t| health(*t)).collect();
    let total_health = health.iter().sum::<u64>().min(100);
    if threshold > 0 && total_health < threshold {
        return total_panic(tiers);
    }
    let mut load = vec![0u32; tiers.len()];
    if total_health == 0 {
        return PriorityLoad {
            panic: vec![false; tiers.len()],
            load,
        };
    }
    let mut remaining = 100u64;
    for (slot, &h) in load.iter_mut().zip(&health) {
        let share = (h * 100 / total_health).min(remaining);
        *slot = share as u32;
        remaining -= share;
    }
    // Rounding leaves a little over: it goes to the first tier with health.
    if remaining > 0
        && let Some(first) = health.iter().position(|&h| h > 0)
        && let Some(slot) = load.get_mut(first)
    {
        *slot += remaining as u32;
    }
    let panic = tiers
        .iter()
        .map(|t| t.total > 0 && (t.healthy as u64) * 100 < (t.total as u64) * threshold)
        .collect();
    PriorityLoad { load, panic }
}

/// Every tier in panic, the traffic split by the number of endpoints in each.
fn total_panic(tiers: &[TierHealth]) -> PriorityLoad {
    let total: u64 = tiers.iter().map(|t| t.total as u64).sum();
    let mut load = vec![0u32; tiers.len()];
    if total > 0 {
        let mut remaining = 100u64;
        for (slot, tier) in load.iter_mut().zip(tiers) {
            let share = (tier.total as u64 * 100)
                .checked_div(total)
                .unwrap_or(0)
                .min(remaining);
            *slot = share as u32;
            remaining -= share;
        }
        if remaining > 0
            && let Some(first) = tiers.iter().position(|t| t.total > 0)
            && let Some(slot) = load.get_mut(first)
        {
            *slot += remaining as u32;
        }
    }
    PriorityLoad {
        load,
        panic: vec![true; tiers.len()],
    }
}

/// The tier a request goes to: `point` (0..100) falls into one tier's share. `None` when every
/// share is zero.
pub(crate) fn choose_tier(load: &[u32], point: u32) -> Option<usize> {
    let mut sum = 0u32;
    for (tier, &share) in load.iter().enumerate() {
        sum += share;
        if point < sum {
            return Some(tier);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(counts: &[(usize, usize)]) -> Vec<TierHealth> {
        counts
            .iter()
            .map(|&(healthy, total)| TierHealth { healthy, total })
            .collect()
    }

    fn load(counts: &[(usize, usize)]) -> Vec<u32> {
        priority_load(&tiers(counts), 0).load
    }

    #[test]
    fn two_tiers_follow_envoys_table() {
        // Envoy's documented examples, per 100 endpoints in P0 and a healthy P1.
        assert_eq!(load(&[(100, 100), (100, 100)]), [100, 0]);
        assert_eq!(load(&[(72, 100), (100, 100)]), [100, 0]);
        assert_eq!(load(&[(71, 100), (100, 100)]), [99, 1]);
        assert_eq!(load(&[(50, 100), (100, 100)]), [70, 30]);
        assert_eq!(load(&[(25, 100), (100, 100)]), [35, 65]);
        assert_eq!(load(&[(0, 100), (100, 100)]), [0, 100]);
    }

    #[test]
    fn three_tiers_spill_in_order() {
        assert_eq!(
            load(&[(0, 100), (50, 100), (100, 100)]),
            [0, 70, 30],
            "P1's unhealthy share spills to P2"
        );
        assert_eq!(load(&[(20, 100), (20, 100), (100, 100)]), [28, 28, 44]);
        assert_eq!(load(&[(0, 2), (0, 2), (1, 1)]), [0, 0, 100]);
    }

    #[test]
    fn health_below_100_in_total_is_scaled_up() {
        // 20% healthy each: 28% + 28% of health, normalized to 56%: half and half.
        assert_eq!(load(&[(20, 100), (20, 100)]), [50, 50]);
        // One of three left in P0 (46%), nothing in P1: P0 takes everything.
        assert_eq!(load(&[(1, 3), (0, 3)]), [100, 0]);
    }

    #[test]
    fn one_tier_takes_everything_while_any_endpoint_is_healthy() {
        assert_eq!(load(&[(3, 3)]), [100]);
        assert_eq!(load(&[(1, 3)]), [100]);
        assert_eq!(load(&[(0, 3)]), [0], "nothing healthy: no tier");
    }

    #[test]
    fn empty_tiers_take_nothing() {
        assert_eq!(load(&[(0, 0), (2, 2)]), [0, 100]);
        assert_eq!(load(&[]), Vec::<u32>::new());
    }

    #[test]
    fn panic_threshold_per_tier_and_in_total() {
        // P0 at 40% healthy with a 50% threshold: in panic (all its endpoints), and its 56%
        // health keeps 56% of the traffic.
        let split = priority_load(&tiers(&[(40, 100), (100, 100)]), 50);
        assert_eq!(split.load, [56, 44]);
        assert_eq!(split.panic, [true, false]);
        // Both tiers nearly gone: 14% + 14% < 50%, total panic, split by size.
        let split = priority_load(&tiers(&[(1, 10), (3, 30)]), 50);
        assert_eq!(split.load, [25, 75]);
        assert_eq!(split.panic, [true, true]);
        // Nothing healthy and a threshold: every endpoint is used rather than none.
        let split = priority_load(&tiers(&[(0, 2), (0, 2)]), 50);
        assert_eq!(split.load, [50, 50]);
        // No threshold (Istio's default minHealthPercent 0): never panic.
        let split = priority_load(&tiers(&[(0, 2), (0, 2)]), 0);
        assert_eq!(split.load, [0, 0]);
        assert_eq!(split.panic, [false, false]);
    }

    #[test]
    fn loads_always_add_up_to_100() {
        for p0 in 0..=7 {
            for p1 in 0..=3 {
                for p2 in 0..=5 {
                    let counts = [(p0, 7), (p1, 3), (p2, 5)];
                    let split = load(&counts);
                    let sum: u32 = split.iter().sum();
                    if p0 + p1 + p2 == 0 {
                        assert_eq!(sum, 0);
                    } else {
                        assert_eq!(sum, 100, "{counts:?}: {split:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_point_falls_in_one_tier() {
        assert_eq!(choose_tier(&[70, 30], 0), Some(0));
        assert_eq!(choose_tier(&[70, 30], 69), Some(0));
        assert_eq!(choose_tier(&[70, 30], 70), Some(1));
        assert_eq!(choose_tier(&[70, 30], 99), Some(1));
        assert_eq!(choose_tier(&[0, 100], 0), Some(1));
        assert_eq!(choose_tier(&[0, 0], 5), None);
    }
}
