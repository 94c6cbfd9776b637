//! Load balancing: choosing one endpoint of a cluster for a request, as Envoy does for Istio's
//! DestinationRule `loadBalancer` (round robin, least request, random, ring hash and maglev).
//!
//! Owns the choice only. Which endpoints may be chosen (outlier ejection, panic mode), how many
//! requests each has in flight and how a request's hash key is computed belong to the caller,
//! which builds a `Balancer` for each set of available endpoints and shares it between tasks.
//! Everything a policy can precompute (smooth round-robin schedules, hash rings, maglev tables)
//! is computed when the balancer is built, so that `pick` only reads, apart from one atomic
//! round-robin cursor.

use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::snapshot::{HashPolicy, LbPolicy};

/// A choice among `items` in proportion to their weights, as routes split traffic between
/// clusters: a lone item takes everything whatever its weight; when every weight is zero there
/// is no choice.
pub(crate) fn weighted_choice<T>(items: &[T], weight: impl Fn(&T) -> u32) -> Option<&T> {
    if let [only] = items {
        return Some(only);
    }
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(..total);
    for item in items {
        let share = u64::from(weight(item));
        if point < share {
            return Some(item);
        }
        point -= share;
    }
    items.last()
}

/// Envoy's default `minimum_ring_size` for ring hash.
const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's default `maximum_ring_size`: no ring has more entries, whatever the minimum.
const MAXIMUM_RING_SIZE: u64 = 8_388_608;
/// Envoy's default maglev `table_size` (a prime).
const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65_537;
/// The largest maglev table Envoy accepts (a prime).
const MAXIMUM_MAGLEV_TABLE_SIZE: u64 = 5_000_011;
/// A smooth round-robin schedule (the weights reduced by their gcd, summed) is precomputed only
/// up to this length; longer ones fall back to weighted random.
const MAXIMUM_SCHEDULE_LENGTH: u64 = 10_000;
/// Bounds the work of precomputing a smooth schedule (its length times the members).
const MAXIMUM_SCHEDULE_WORK: u64 = 1 << 24;
/// The most members a balancer takes (tables keep a member's slot in a `u32`; `u32::MAX` marks
/// an empty maglev entry while the table is built).
const MAXIMUM_MEMBERS: usize = (u32::MAX - 1) as usize;
/// Rings are kept within this many entries (768 KiB), unless twice `minimum_ring_size` is more.
const RING_BUDGET: u64 = 65_536;

/// One endpoint the balancer may choose: its index in the cluster's endpoint list, its weight
/// (>= 1; treat 0 as 1), and its address (for consistent hashing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The endpoint's position in the cluster's endpoint list; what `pick` returns.
    pub index: usize,
    /// Relative share of traffic; 0 is read as 1.
    pub weight: u32,
    /// Names the endpoint on hash rings and maglev tables.
    pub address: SocketAddr,
}

/// Chooses among a fixed set of members by one policy. Built once per set of available
/// endpoints; `pick` is called concurrently by every request to the cluster.
///
/// Members are referred to internally by their slot: their position in the `members` given to
/// [`Balancer::new`].
pub(crate) struct Balancer {
    /// Each slot's endpoint index.
    indexes: Vec<usize>,
    /// Each slot's weight (0 read as 1).
    weights: Vec<u64>,
    /// Weighted random choice of a slot: the random policy, least request's two choices, and
    /// consistent hashing without a hash key.
    random: WeightedRandom,
    scheme: Scheme,
}

/// What a policy precomputed.
enum Scheme {
    RoundRobin(RoundRobin),
    Random,
    LeastRequest,
    RingHash(Ring),
    Maglev(MaglevTable),
}

impl Balancer {
    /// Builds a balancer over `members` (the endpoints currently available: not ejected) for
    /// `policy`.
    pub(crate) fn new(policy: &LbPolicy, members: &[Member]) -> Balancer {
        Balancer::build(policy, members, &mut fastrand::Rng::new())
    }

    /// Builds a balancer, drawing the round-robin starting point from `rng`.
    fn build(policy: &LbPolicy, members: &[Member], rng: &mut fastrand::Rng) -> Balancer {
        let members = members.get(..MAXIMUM_MEMBERS).unwrap_or(members);
        let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight.max(1))).collect();
        let scheme = match policy {
            LbPolicy::RoundRobin => Scheme::RoundRobin(RoundRobin::new(&weights, rng)),
            LbPolicy::Random => Scheme::Random,
            LbPolicy::LeastRequest => Scheme::LeastRequest,
            LbPolicy::ConsistentHash(hash) => match hash.policy {
                HashPolicy::RingHash { minimum_ring_size } => {
                    Scheme::RingHash(Ring::new(members, &weights, minimum_ring_size))
                }
                HashPolicy::Maglev { table_size } => {
                    Scheme::Maglev(MaglevTable::new(members, &weights, table_size))
                }
            },
        };
        Balancer {
            indexes: members.iter().map(|m| m.index).collect(),
            random: WeightedRandom::new(&weights),
            weights,
            scheme,
        }
    }

    /// Picks a member's `index`. `hash` is the request's hash key for consistent-hash policies
    /// (when a consistent-hash policy gets `None`, it picks at random); `active(index)` gives an
    /// endpoint's active requests (for least request). `None` only when there are no members.
    pub(crate) fn pick(&self, hash: Option<u64>, active: &dyn Fn(usize) -> u32) -> Option<usize> {
        self.pick_with(
            &mut fastrand::Rng::with_seed(fastrand::u64(..)),
            hash,
            active,
        )
    }

    /// [`Balancer::pick`] with the randomness drawn from `rng`.
    fn pick_with(
        &self,
        rng: &mut fastrand::Rng,
        hash: Option<u64>,
        active: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        let slot = match (&self.scheme, hash) {
            (Scheme::RoundRobin(round_robin), _) => round_robin.pick(rng, &self.random),
            (Scheme::Random, _) => self.random.pick(rng),
            (Scheme::LeastRequest, _) => self.least_request(rng, active),
            (Scheme::RingHash(ring), Some(hash)) => ring.lookup(hash),
            (Scheme::Maglev(table), Some(hash)) => table.lookup(hash),
            (Scheme::RingHash(_) | Scheme::Maglev(_), None) => self.random.pick(rng),
        }?;
        self.indexes.get(slot).copied()
    }

    /// The number of members.
    pub(crate) fn len(&self) -> usize {
        self.indexes.len()
    }

    /// Envoy's least request with two choices: of two members drawn at random (by weight, with
    /// replacement), the one with fewer active requests per unit of weight wins; on a tie, the
    /// first drawn. Idle endpoints therefore share traffic by weight, and with equal weights
    /// the one with fewer active requests wins.
    fn least_request(
        &self,
        rng: &mut fastrand::Rng,
        active: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        let first = self.random.pick(rng)?;
        if self.len() == 1 {
            return Some(first);
        }
        let second = self.random.pick(rng)?;
        let load = |slot: usize| -> Option<(u128, u128)> {
            let weight = u128::from(*self.weights.get(slot)?);
            let requests = u128::from(active(*self.indexes.get(slot)?));
            Some((weight, requests))
        };
        let (first_weight, first_active) = load(first)?;
        let (second_weight, second_active) = load(second)?;
        // second_active / second_weight < first_active / first_weight, without division.
        if second_active * first_weight < first_active * second_weight {
            Some(second)
        } else {
            Some(first)
        }
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (policy, entries) = match &self.scheme {
            Scheme::RoundRobin(round_robin) => ("round_robin", round_robin.schedule_len()),
            Scheme::Random => ("random", 0),
            Scheme::LeastRequest => ("least_request", 0),
            Scheme::RingHash(ring) => ("ring_hash", ring.hashes.len()),
            Scheme::Maglev(table) => ("maglev", table.table.len()),
        };
        f.debug_struct("Balancer")
            .field("policy", &policy)
            .field("indexes", &self.indexes)
            .field("weights", &self.weights)
            .field("entries", &entries)
            .finish()
    }
}

/// Weighted random choice of a slot, by binary search over cumulative weights.
struct WeightedRandom {
    len: usize,
    /// Running sums of the weights; empty when all weights are equal (a uniform choice).
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    fn new(weights: &[u64]) -> WeightedRandom {
        let cumulative = if all_equal(weights) {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum = sum.saturating_add(w);
                    Some(*sum)
                })
                .collect()
        };
        WeightedRandom {
            len: weights.len(),
            cumulative,
        }
    }

    /// A slot, each with probability proportional to its weight; `None` when there are none.
    fn pick(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let Some(&total) = self.cumulative.last() else {
            return Some(rng.usize(..self.len));
        };
        let point = rng.u64(..total);
        Some(self.cumulative.partition_point(|&sum| sum <= point))
    }
}

/// Whether every weight is the same.
fn all_equal(weights: &[u64]) -> bool {
    weights.windows(2).all(|pair| pair[0] == pair[1])
}

/// Round robin: equal weights rotate strictly; unequal weights follow a precomputed smooth
/// weighted round-robin schedule (nginx's), walked by an atomic cursor that starts at a random
/// point, as Envoy's does, so that proxies do not all start on the same endpoint.
struct RoundRobin {
    order: RoundRobinOrder,
    cursor: AtomicUsize,
}

enum RoundRobinOrder {
    /// Every weight is equal: slot `cursor % len`.
    Rotation(usize),
    /// The slots in smooth weighted round-robin order, one cycle.
    Schedule(Vec<usize>),
    /// The schedule would be too long: weighted random instead.
    WeightedRandom,
}

impl RoundRobin {
    fn new(weights: &[u64], rng: &mut fastrand::Rng) -> RoundRobin {
        let order = if all_equal(weights) {
            RoundRobinOrder::Rotation(weights.len())
        } else {
            smooth_schedule(weights)
                .map_or(RoundRobinOrder::WeightedRandom, RoundRobinOrder::Schedule)
        };
        let start = match &order {
            RoundRobinOrder::Rotation(len) => rng.usize(..(*len).max(1)),
            RoundRobinOrder::Schedule(schedule) => rng.usize(..schedule.len().max(1)),
            RoundRobinOrder::WeightedRandom => 0,
        };
        RoundRobin {
            order,
            cursor: AtomicUsize::new(start),
        }
    }

    fn pick(&self, rng: &mut fastrand::Rng, random: &WeightedRandom) -> Option<usize> {
        match &self.order {
            RoundRobinOrder::Rotation(len) => self.next().checked_rem(*len),
            RoundRobinOrder::Schedule(schedule) => {
                let position = self.next().checked_rem(schedule.len())?;
                schedule.get(position).copied()
            }
            RoundRobinOrder::WeightedRandom => random.pick(rng),
        }
    }

    /// Advances the cursor. It wraps after `usize::MAX` picks, which at most skews one cycle.
    fn next(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    fn schedule_len(&self) -> usize {
        match &self.order {
            RoundRobinOrder::Rotation(len) => *len,
            RoundRobinOrder::Schedule(schedule) => schedule.len(),
            RoundRobinOrder::WeightedRandom => 0,
        }
    }
}

/// One cycle of nginx's smooth weighted round robin over the weights reduced by their gcd: each
/// step every slot's current weight grows by its weight, the largest (the lowest slot on a tie)
/// is chosen and loses the total. Each slot appears `weight` times, spread out rather than in
/// bursts. `None` when the cycle would be longer than `MAXIMUM_SCHEDULE_LENGTH` or too costly.
fn smooth_schedule(weights: &[u64]) -> Option<Vec<usize>> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total = reduced.iter().copied().fold(0u64, u64::saturating_add);
    let members = u64::try_from(weights.len()).ok()?;
    if total > MAXIMUM_SCHEDULE_LENGTH || total.saturating_mul(members) > MAXIMUM_SCHEDULE_WORK {
        return None;
    }
    let reduced = reduced
        .into_iter()
        .map(i64::try_from)
        .collect::<Result<Vec<i64>, _>>()
        .ok()?;
    let total_signed = i64::try_from(total).ok()?;
    let mut current = vec![0i64; reduced.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).ok()?);
    for _ in 0..total {
        for (value, weight) in current.iter_mut().zip(&reduced) {
            *value += weight;
        }
        let chosen = first_largest(&current);
        if let Some(value) = current.get_mut(chosen) {
            *value -= total_signed;
        }
        schedule.push(chosen);
    }
    Some(schedule)
}

/// The position of the first largest value (0 when empty).
fn first_largest(values: &[i64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, i64::MIN), |(best, largest), (slot, &value)| {
            if value > largest {
                (slot, value)
            } else {
                (best, largest)
            }
        })
        .0
}

/// The greatest common divisor (`gcd(0, n) == n`).
fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Ring hash, ketama style as Envoy builds it: each member has replicas on a ring of 64-bit
/// positions (`stable_hash` of `"<address>_<replica>"`), as many as its weight times a scale;
/// a request goes to the first entry at or after its hash, wrapping around.
///
/// Envoy scales the replicas so that the whole ring has about `minimum_ring_size` entries, which
/// changes every member's replicas whenever a member comes or goes, and so moves keys between
/// members that stayed (about 8-16% of them for 3 to 12 equal endpoints losing one). Here the
/// scale does not depend on which other members are present: each unit of weight (weights
/// divided by their gcd) gets `minimum_ring_size / 2` replicas, so any two members fill a
/// minimum ring (a lone member needs no ring), and removing or adding a member moves only that
/// member's keys. Only rings past `RING_BUDGET` entries (or twice the minimum, if larger) are
/// scaled down, by halving, and never past `MAXIMUM_RING_SIZE`.
struct Ring {
    /// Entry positions, ascending.
    hashes: Vec<u64>,
    /// Each entry's slot.
    slots: Vec<u32>,
}

impl Ring {
    fn new(members: &[Member], weights: &[u64], minimum_ring_size: u64) -> Ring {
        let replicas = ring_replicas(weights, minimum_ring_size);
        let size = replicas.iter().copied().fold(0, u64::saturating_add);
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut key = String::new();
        for ((slot, member), &count) in (0u32..).zip(members).zip(&replicas) {
            key.clear();
            let _ = write!(key, "{}_", member.address);
            let prefix = key.len();
            for replica in 0..count {
                key.truncate(prefix);
                let _ = write!(key, "{replica}");
                entries.push((stable_hash(key.as_bytes()), slot));
            }
        }
        let address = |slot: u32| {
            usize::try_from(slot)
                .ok()
                .and_then(|s| members.get(s))
                .map(|m| m.address)
        };
        entries.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| address(a.1).cmp(&address(b.1)))
                .then_with(|| a.1.cmp(&b.1))
        });
        Ring {
            hashes: entries.iter().map(|e| e.0).collect(),
            slots: entries.iter().map(|e| e.1).collect(),
        }
    }

    /// The slot of the first entry at or after `hash`, wrapping around.
    fn lookup(&self, hash: u64) -> Option<usize> {
        let position = self.hashes.partition_point(|&h| h < hash);
        let position = if position == self.hashes.len() {
            0
        } else {
            position
        };
        usize::try_from(*self.slots.get(position)?).ok()
    }
}

/// Each member's replicas on the ring: `minimum_ring_size / 2` (0 meaning Envoy's default of
/// 1024) per unit of weight, the weights divided by their gcd, halved (rounding up, so at least
/// one) as often as needed to stay within `RING_BUDGET` entries, or twice the minimum if that is
/// larger, and within `MAXIMUM_RING_SIZE`.
fn ring_replicas(weights: &[u64], minimum_ring_size: u64) -> Vec<u64> {
    let minimum = match minimum_ring_size {
        0 => DEFAULT_MINIMUM_RING_SIZE,
        size => size.min(MAXIMUM_RING_SIZE),
    };
    let per_unit = u128::from(minimum.div_ceil(2));
    let budget = RING_BUDGET
        .max(minimum.saturating_mul(2))
        .min(MAXIMUM_RING_SIZE);
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let units: Vec<u128> = weights
        .iter()
        .map(|&w| u128::from(w / divisor) * per_unit)
        .collect();
    let mut halvings = 0;
    loop {
        let replicas: Vec<u64> = units
            .iter()
            .map(|&u| u64::try_from(u.div_ceil(1 << halvings)).unwrap_or(u64::MAX))
            .collect();
        let size = replicas.iter().copied().fold(0, u64::saturating_add);
        // Past 64 halvings every member has one replica: the ring cannot shrink further.
        if size <= budget || halvings >= 64 {
            return replicas;
        }
        halvings += 1;
    }
}

/// Maglev, from Google's paper as Envoy builds it: a lookup table of prime size `M` in which
/// each member claims entries in the order of its own permutation (`offset = h1 % M`,
/// `skip = h2 % (M - 1) + 1`, the `j`th preference `(offset + j * skip) % M`), one per round,
/// members with less weight than the heaviest skipping rounds in proportion; a request goes to
/// `table[hash % M]`. Members claim in address order, so the table does not depend on the order
/// they are given in.
struct MaglevTable {
    table: Vec<u32>,
}

/// One member's progress through its permutation while the table is filled.
struct MaglevEntry {
    slot: u32,
    weight: u128,
    /// The next table position the member prefers.
    next: usize,
    skip: usize,
    /// The member claims again once `round * weight` reaches this.
    target: u128,
}

impl MaglevTable {
    fn new(members: &[Member], weights: &[u64], table_size: u64) -> MaglevTable {
        let size = maglev_table_size(table_size, members.len());
        let Ok(size) = usize::try_from(size) else {
            return MaglevTable { table: Vec::new() };
        };
        let mut entries: Vec<(SocketAddr, MaglevEntry)> = (0u32..)
            .zip(members)
            .zip(weights)
            .map(|((slot, member), &weight)| {
                (member.address, maglev_entry(member, slot, weight, size))
            })
            .collect();
        entries.sort_by_key(|(address, entry)| (*address, entry.slot));
        let mut entries: Vec<MaglevEntry> = entries.into_iter().map(|(_, entry)| entry).collect();
        let heaviest = entries.iter().map(|e| e.weight).max().unwrap_or(1);
        let mut table = vec![u32::MAX; size];
        let mut filled = 0;
        let mut round: u128 = 1;
        while filled < size && !entries.is_empty() {
            for entry in &mut entries {
                if filled >= size {
                    break;
                }
                if round * entry.weight < entry.target {
                    continue;
                }
                entry.target += heaviest;
                if claim(&mut table, entry) {
                    filled += 1;
                }
            }
            round += 1;
        }
        MaglevTable { table }
    }

    /// The slot at `table[hash % M]`.
    fn lookup(&self, hash: u64) -> Option<usize> {
        let position = reduce(hash, self.table.len())?;
        usize::try_from(*self.table.get(position)?).ok()
    }
}

/// A member's permutation: where it starts and how far it steps.
fn maglev_entry(member: &Member, slot: u32, weight: u64, size: usize) -> MaglevEntry {
    let address = member.address.to_string();
    let offset = stable_hash(address.as_bytes());
    let skip = stable_hash(format!("{address}_skip").as_bytes());
    MaglevEntry {
        slot,
        weight: u128::from(weight),
        next: reduce(offset, size).unwrap_or(0),
        skip: reduce(skip, size.saturating_sub(1)).map_or(1, |s| s + 1),
        target: 0,
    }
}

/// Gives `entry` the next free table position of its permutation; `false` when none is free
/// (only when the table is full: with a prime size every permutation visits every position).
fn claim(table: &mut [u32], entry: &mut MaglevEntry) -> bool {
    for _ in 0..table.len() {
        let position = entry.next;
        entry.next = (entry.next + entry.skip) % table.len();
        if let Some(cell) = table.get_mut(position)
            && *cell == u32::MAX
        {
            *cell = entry.slot;
            return true;
        }
    }
    false
}

/// `hash % modulus`; `None` when the modulus is 0.
fn reduce(hash: u64, modulus: usize) -> Option<usize> {
    let modulus = u64::try_from(modulus).ok().filter(|&m| m > 0)?;
    usize::try_from(hash % modulus).ok()
}

/// The table size to use: the requested one (at most Envoy's largest), or the default when it
/// is 0 or smaller than the number of members; a size that is not prime is rounded up to the
/// next prime, since only a prime size makes every member's permutation visit every position.
fn maglev_table_size(requested: u64, members: usize) -> u64 {
    let members = u64::try_from(members).unwrap_or(u64::MAX);
    let size = if requested == 0 || requested < members {
        DEFAULT_MAGLEV_TABLE_SIZE
    } else {
        requested.min(MAXIMUM_MAGLEV_TABLE_SIZE)
    };
    (size..)
        .find(|&n| is_prime(n))
        .unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE)
}

/// Trial division; table sizes are at most a few million.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    (2u64..)
        .take_while(|d| d.saturating_mul(*d) <= n)
        .all(|d| !n.is_multiple_of(d))
}

/// A stable 64-bit hash of bytes, the same in every process and release: FNV-1a 64 followed by
/// the splitmix64 finaliser (its mixing step, without the golden-ratio increment). Used for
/// request hash keys and endpoint positions on rings.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    splitmix64_finalise(fnv)
}

/// splitmix64's output mix: spreads FNV's weak low-order and high-order bits over all 64.
fn splitmix64_finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ConsistentHash, HashKey};

    /// Members with `weights`, endpoint `i` at 10.0.x.y:8080.
    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Member {
                index,
                weight,
                address: SocketAddr::from((
                    [
                        10,
                        0,
                        u8::try_from(index / 250).unwrap(),
                        u8::try_from(index % 250 + 1).unwrap(),
                    ],
                    8080,
                )),
            })
            .collect()
    }

    fn consistent(policy: HashPolicy) -> LbPolicy {
        LbPolicy::ConsistentHash(ConsistentHash {
            key: HashKey::SourceIp,
            policy,
        })
    }

    fn ring_hash(minimum_ring_size: u64) -> LbPolicy {
        consistent(HashPolicy::RingHash { minimum_ring_size })
    }

    fn maglev(table_size: u64) -> LbPolicy {
        consistent(HashPolicy::Maglev { table_size })
    }

    fn build(policy: &LbPolicy, members: &[Member], seed: u64) -> Balancer {
        Balancer::build(policy, members, &mut fastrand::Rng::with_seed(seed))
    }

    fn idle(_: usize) -> u32 {
        0
    }

    /// `count` picks with a seeded generator.
    fn picks(
        balancer: &Balancer,
        seed: u64,
        count: usize,
        active: &dyn Fn(usize) -> u32,
    ) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..count)
            .map(|_| balancer.pick_with(&mut rng, None, active).unwrap())
            .collect()
    }

    /// The share of `picks` that went to each of `n` endpoints.
    fn shares(picks: &[usize], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &p in picks {
            counts[p] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / picks.len() as f64)
            .collect()
    }

    /// 10,000 distinct request hash keys.
    fn keys() -> Vec<u64> {
        (0..10_000)
            .map(|i| stable_hash(format!("request-{i}").as_bytes()))
            .collect()
    }

    fn map_keys(balancer: &Balancer, keys: &[u64]) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(0);
        keys.iter()
            .map(|&k| balancer.pick_with(&mut rng, Some(k), &idle).unwrap())
            .collect()
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn balancer_is_shared_across_tasks() {
        assert_send_sync::<Balancer>();
    }

    #[test]
    fn round_robin_rotates_equal_weights() {
        let members = members(&[1, 1, 1]);
        for seed in 0..5 {
            let balancer = build(&LbPolicy::RoundRobin, &members, seed);
            let picks = picks(&balancer, 0, 30, &idle);
            for window in picks.windows(3) {
                let mut window = window.to_vec();
                window.sort_unstable();
                assert_eq!(window, [0, 1, 2], "seed {seed}: {picks:?}");
            }
        }
    }

    #[test]
    fn round_robin_shares_follow_weights_exactly() {
        for seed in 0..5 {
            let balancer = build(&LbPolicy::RoundRobin, &members(&[1, 2, 7]), seed);
            let picks = picks(&balancer, 0, 10_000, &idle);
            assert_eq!(shares(&picks, 3), [0.1, 0.2, 0.7], "seed {seed}");
        }
    }

    /// The longest run of `endpoint` in `picks`.
    fn longest_run(picks: &[usize], endpoint: usize) -> usize {
        picks
            .split(|&p| p != endpoint)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn round_robin_interleaves_weights() {
        let balancer = build(&LbPolicy::RoundRobin, &members(&[1, 2, 7]), 3);
        let picks = picks(&balancer, 0, 10_000, &idle);
        // 7 of 10 with 3 others between them cannot do better than runs of 3.
        assert_eq!(longest_run(&picks, 2), 3);
        assert_eq!(longest_run(&picks, 1), 1);
        for window in picks.windows(10) {
            let counts: Vec<usize> = (0..3)
                .map(|e| window.iter().filter(|&&p| p == e).count())
                .collect();
            assert_eq!(counts, [1, 2, 7], "{window:?}");
        }
    }

    #[test]
    fn round_robin_is_smooth_in_every_window() {
        // In any run of k consecutive picks, an endpoint of weight w (of total W) gets within
        // 1.5 picks of k * w / W; a bursty schedule would be off by up to w * (W - w) / W.
        for weights in [
            &[1u32, 2, 7][..],
            &[5, 1, 1],
            &[3, 3, 1, 1],
            &[100, 1],
            &[1, 2, 3, 4, 5],
            &[7, 11, 13],
        ] {
            let balancer = build(&LbPolicy::RoundRobin, &members(weights), 0);
            let total: u32 = weights.iter().sum();
            let cycle = usize::try_from(total).unwrap();
            let picks = picks(&balancer, 0, 3 * cycle, &idle);
            let mut worst = 0f64;
            for k in 1..=cycle {
                for window in picks.windows(k) {
                    for (endpoint, &weight) in weights.iter().enumerate() {
                        let count = window.iter().filter(|&&p| p == endpoint).count() as f64;
                        let ideal = k as f64 * f64::from(weight) / f64::from(total);
                        worst = worst.max((count - ideal).abs());
                    }
                }
            }
            assert!(worst < 1.5, "{weights:?}: off by {worst}");
        }
    }

    #[test]
    fn round_robin_reduces_weights_by_their_gcd() {
        let reduced = build(&LbPolicy::RoundRobin, &members(&[1, 2, 7]), 1);
        let scaled = build(&LbPolicy::RoundRobin, &members(&[20, 40, 140]), 1);
        assert!(format!("{scaled:?}").contains("entries: 10"), "{scaled:?}");
        assert_eq!(
            picks(&reduced, 0, 100, &idle),
            picks(&scaled, 0, 100, &idle)
        );
    }

    #[test]
    fn round_robin_falls_back_to_weighted_random_for_long_schedules() {
        let balancer = build(&LbPolicy::RoundRobin, &members(&[9_999, 2]), 0);
        assert!(
            format!("{balancer:?}").contains("entries: 0"),
            "{balancer:?}"
        );
        let picks = picks(&balancer, 1, 10_000, &idle);
        assert!(shares(&picks, 2)[0] > 0.99);
    }

    #[test]
    fn round_robin_cursor_is_shared_between_threads() {
        let balancer = build(&LbPolicy::RoundRobin, &members(&[1, 1, 1, 1]), 0);
        let counts: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|seed| {
                    scope.spawn({
                        let balancer = &balancer;
                        move || picks(balancer, seed, 2_500, &idle)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let all: Vec<usize> = counts.into_iter().flatten().collect();
        assert_eq!(shares(&all, 4), [0.25; 4]);
    }

    #[test]
    fn random_follows_weights() {
        let balancer = build(&LbPolicy::Random, &members(&[1, 3]), 0);
        let share = shares(&picks(&balancer, 42, 100_000, &idle), 2)[0];
        assert!((share - 0.25).abs() < 0.01, "{share}");
        let uniform = build(&LbPolicy::Random, &members(&[1, 1, 1, 1]), 0);
        for share in shares(&picks(&uniform, 42, 100_000, &idle), 4) {
            assert!((share - 0.25).abs() < 0.01, "{share}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let balancer = build(&LbPolicy::LeastRequest, &members(&[1, 1, 1]), 0);
        let active = |index: usize| if index == 1 { 0 } else { 10 };
        let share = shares(&picks(&balancer, 7, 10_000, &active), 3)[1];
        // Endpoint 1 wins unless neither of two draws (with replacement) is it: 1 - (2/3)^2.
        let expected = 5.0 / 9.0;
        assert!((share - expected).abs() < 0.02, "{share}");
    }

    #[test]
    fn least_request_is_uniform_when_loads_are_equal() {
        let balancer = build(&LbPolicy::LeastRequest, &members(&[1, 1, 1]), 0);
        for share in shares(&picks(&balancer, 7, 10_000, &|_| 4), 3) {
            assert!((share - 1.0 / 3.0).abs() < 0.02, "{share}");
        }
    }

    #[test]
    fn least_request_weighs_active_requests_by_weight() {
        let balancer = build(&LbPolicy::LeastRequest, &members(&[1, 3]), 0);
        // 0 active per weight beats 5 / 3: endpoint 0 wins unless both draws (weighted 1:3) are 1.
        let busy = |index: usize| if index == 1 { 5 } else { 0 };
        let share = shares(&picks(&balancer, 7, 10_000, &busy), 2)[0];
        assert!((share - 7.0 / 16.0).abs() < 0.02, "{share}");
        // Idle, every draw ties and the first wins: traffic follows the weights.
        let share = shares(&picks(&balancer, 7, 10_000, &idle), 2)[0];
        assert!((share - 1.0 / 4.0).abs() < 0.02, "{share}");
    }

    #[test]
    fn least_request_with_one_member_returns_it() {
        let balancer = build(&LbPolicy::LeastRequest, &members(&[4]), 0);
        assert!(picks(&balancer, 0, 100, &|_| 1_000).iter().all(|&p| p == 0));
    }

    /// Every endpoint's share of `keys` over 5 equal endpoints, and what happens to the keys when
    /// each endpoint in turn is removed and added back: the largest share of keys that were not
    /// on the removed endpoint but moved anyway.
    fn consistency(policy: &LbPolicy) -> (Vec<f64>, f64) {
        let keys = keys();
        let all = members(&[1; 5]);
        let before = map_keys(&build(policy, &all, 0), &keys);
        let mut worst = 0f64;
        for removed in 0..5 {
            let rest: Vec<Member> = all.iter().copied().filter(|m| m.index != removed).collect();
            let after = map_keys(&build(policy, &rest, 1), &keys);
            let mut stayed = 0;
            let mut moved = 0;
            for (&b, &a) in before.iter().zip(&after) {
                if b == removed {
                    assert_ne!(a, removed);
                } else {
                    stayed += 1;
                    moved += usize::from(a != b);
                }
            }
            worst = worst.max(moved as f64 / stayed as f64);
            // Adding it back, in another order, restores the original mapping exactly.
            let mut back = rest.clone();
            back.insert(0, all[removed]);
            back.reverse();
            assert_eq!(map_keys(&build(policy, &back, 2), &keys), before);
        }
        (shares(&before, 5), worst)
    }

    #[test]
    fn ring_hash_is_consistent() {
        let (shares, moved) = consistency(&ring_hash(1024));
        for share in &shares {
            assert!((0.15..0.25).contains(share), "{shares:?}");
        }
        assert!(moved < 0.03, "{moved}");
    }

    #[test]
    fn maglev_is_consistent() {
        let (shares, moved) = consistency(&maglev(65_537));
        for share in &shares {
            assert!((0.15..0.25).contains(share), "{shares:?}");
        }
        assert!(moved < 0.05, "{moved}");
    }

    #[test]
    fn consistent_hash_follows_weights() {
        for policy in [ring_hash(1024), maglev(65_537)] {
            let balancer = build(&policy, &members(&[1, 3]), 0);
            let share = shares(&map_keys(&balancer, &keys()), 2)[0];
            assert!((share - 0.25).abs() < 0.05, "{policy:?}: {share}");
        }
    }

    #[test]
    fn consistent_hash_maps_a_key_to_one_endpoint() {
        for policy in [ring_hash(1024), maglev(65_537)] {
            let balancer = build(&policy, &members(&[1; 5]), 0);
            let mut rng = fastrand::Rng::with_seed(9);
            for key in keys().into_iter().take(100) {
                let first = balancer.pick_with(&mut rng, Some(key), &idle);
                for _ in 0..10 {
                    assert_eq!(balancer.pick_with(&mut rng, Some(key), &idle), first);
                }
            }
        }
    }

    #[test]
    fn consistent_hash_without_a_key_picks_at_random() {
        for policy in [ring_hash(1024), maglev(65_537)] {
            let balancer = build(&policy, &members(&[1, 1]), 0);
            let share = shares(&picks(&balancer, 5, 10_000, &idle), 2)[0];
            assert!((share - 0.5).abs() < 0.03, "{policy:?}: {share}");
        }
    }

    #[test]
    fn ring_hash_moves_no_other_keys_when_a_member_goes() {
        let keys = keys();
        for n in 2..=17 {
            let all = members(&vec![1; n]);
            let before = map_keys(&build(&ring_hash(1024), &all, 0), &keys);
            let after = map_keys(&build(&ring_hash(1024), &all[..n - 1], 0), &keys);
            for (&b, &a) in before.iter().zip(&after) {
                assert!(b == n - 1 || a == b, "{n} endpoints");
            }
        }
    }

    #[test]
    fn ring_gives_each_unit_of_weight_half_the_minimum() {
        let size = |weights: &[u64], minimum| ring_replicas(weights, minimum).iter().sum::<u64>();
        assert_eq!(ring_replicas(&[1; 5], 1024), [512; 5]);
        assert_eq!(ring_replicas(&[1; 5], 0), [512; 5]);
        assert_eq!(ring_replicas(&[1, 3], 1024), [512, 1536]);
        assert_eq!(ring_replicas(&[1_000, 3_000], 1024), [512, 1536]);
        assert_eq!(ring_replicas(&[7], 1024), [512]);
        assert_eq!(ring_replicas(&[1; 2], 1025), [513; 2]);
        // Past the budget, replicas are halved.
        assert_eq!(size(&[1; 128], 1024), 65_536);
        assert_eq!(size(&[1; 129], 1024), 129 * 256);
        let skewed = ring_replicas(&[u64::from(u32::MAX), 1, 2], 1024);
        assert!(skewed.iter().sum::<u64>() <= RING_BUDGET, "{skewed:?}");
        assert_eq!(&skewed[1..], [1, 1]);
        // A large minimum may exceed the budget, but not Envoy's maximum ring size.
        assert_eq!(size(&[1; 5], 100_000), 125_000);
        assert_eq!(size(&[1; 5], 1 << 40), 5 << 20);
        let ring = Ring::new(&members(&[1, 1, 1]), &[1, 1, 1], 16);
        assert_eq!(ring.hashes.len(), 24);
        assert!(ring.hashes.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn maglev_table_size_is_prime_and_bounded() {
        assert_eq!(maglev_table_size(0, 5), 65_537);
        assert_eq!(maglev_table_size(3, 5), 65_537);
        assert_eq!(maglev_table_size(7, 3), 7);
        assert_eq!(maglev_table_size(100, 5), 101);
        assert_eq!(maglev_table_size(1, 1), 2);
        assert_eq!(maglev_table_size(u64::MAX, 5), 5_000_011);
        let balancer = build(&maglev(101), &members(&[1, 2, 3]), 0);
        let Scheme::Maglev(table) = &balancer.scheme else {
            panic!("{balancer:?}");
        };
        assert_eq!(table.table.len(), 101);
        let counts: Vec<usize> = (0..3)
            .map(|s| table.table.iter().filter(|&&t| t == s).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 101);
        assert!(counts[2] > counts[1] && counts[1] > counts[0], "{counts:?}");
    }

    #[test]
    fn no_members_no_pick_one_member_always_it() {
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
            ring_hash(1024),
            maglev(65_537),
        ];
        let one = [Member {
            index: 7,
            weight: 0,
            address: SocketAddr::from(([10, 0, 0, 1], 80)),
        }];
        for policy in &policies {
            let empty = Balancer::new(policy, &[]);
            assert_eq!(empty.len(), 0);
            assert_eq!(empty.pick(None, &idle), None, "{policy:?}");
            assert_eq!(empty.pick(Some(1), &idle), None, "{policy:?}");
            let single = Balancer::new(policy, &one);
            assert_eq!(single.len(), 1);
            for key in keys().into_iter().take(50) {
                assert_eq!(single.pick(Some(key), &|_| 3), Some(7), "{policy:?}");
                assert_eq!(single.pick(None, &idle), Some(7), "{policy:?}");
            }
        }
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Computed once (and by an independent implementation); these must never change, or every
        // consistent-hash mapping moves on upgrade.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"10.0.0.1:8080_0"), 0x4d56_1d3a_12b2_bde9);
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
}
