//! A cluster's live state, kept outside the snapshot so that a reload does not reset it: its
//! endpoints with their active requests and outlier state, their priority tiers with each
//! tier's share of the traffic and a balancer over the endpoints of each that may take traffic,
//! and the cluster-wide request and retry counts that circuit breaking limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::lb::{Balancer, Member};
use super::outlier::{self, Outcome, OutlierState};
use super::priority::{TierHealth, choose_tier, priority_load};
use crate::snapshot::Cluster;

/// One endpoint's live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) address: SocketAddr,
    weight: u32,
    active: AtomicU32,
    outlier: Mutex<OutlierState>,
}

impl EndpointState {
    fn new(address: SocketAddr, weight: u32) -> EndpointState {
        EndpointState {
            address,
            weight,
            active: AtomicU32::new(0),
            outlier: Mutex::new(OutlierState::default()),
        }
    }

    pub(crate) fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    fn is_ejected(&self) -> bool {
        self.outlier.lock().map(|o| o.is_ejected()).unwrap_or(false)
    }
}

/// Counts a request as active on an endpoint until dropped (least request reads it).
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<EndpointState>);

impl ActiveRequest {
    pub(crate) fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints a request may go to now: their tiers, each tier's share of the traffic and a
/// balancer over each tier.
#[derive(Debug)]
struct Members {
    /// Every endpoint of the cluster, in configuration order.
    all: Vec<Arc<EndpointState>>,
    /// The tiers in priority order (the distinct `priority` values, lowest first).
    tiers: Vec<Tier>,
    /// Each tier's percent of the traffic (`upstream::priority`).
    load: Vec<u32>,
}

/// One priority tier of a cluster.
#[derive(Debug)]
struct Tier {
    priority: u32,
    /// Over the tier's endpoints not ejected (or all of them in panic mode).
    balancer: Balancer,
}

/// Live state of one cluster.
#[derive(Debug)]
pub(crate) struct ClusterState {
    config: ArcSwap<Cluster>,
    members: ArcSwap<Members>,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
    /// Serialises rebuilds of `members` (reloads and ejections).
    rebuild: Mutex<()>,
    /// Whether a task sweeps ejections (it runs while the cluster has outlier detection).
    sweeping: AtomicBool,
}

/// Why no endpoint could be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoEndpoint {
    /// The cluster has no endpoints at all.
    Empty,
    /// Every endpoint is ejected.
    AllEjected,
    /// The cluster forwards to the original destination (PASSTHROUGH) and the connection has
    /// none: it was not captured.
    NoOriginalDestination,
}

impl NoEndpoint {
    /// Why, for the access log.
    pub(crate) fn reason(self, config: &Cluster) -> String {
        let cluster = &config.name;
        match self {
            NoEndpoint::Empty => match &config.empty_reason {
                Some(why) => {
                    format!("no healthy upstream: cluster {cluster} has no endpoints: {why}")
                }
                None => format!("no healthy upstream: cluster {cluster} has no endpoints"),
            },
            NoEndpoint::AllEjected => format!(
                "no healthy upstream: every endpoint of cluster {cluster} is ejected by outlier detection"
            ),
            NoEndpoint::NoOriginalDestination => format!(
                "cluster {cluster} forwards to the original destination, and this connection was not redirected to the proxy"
            ),
        }
    }
}

impl ClusterState {
    pub(crate) fn new(config: Arc<Cluster>) -> Arc<ClusterState> {
        let all: Vec<Arc<EndpointState>> = config
            .endpoints
            .iter()
            .map(|e| Arc::new(EndpointState::new(e.address, e.weight.max(1))))
            .collect();
        let members = build_members(&config, all);
        let state = Arc::new(ClusterState {
            config: ArcSwap::new(config.clone()),
            members: ArcSwap::new(Arc::new(members)),
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            rebuild: Mutex::new(()),
            sweeping: AtomicBool::new(false),
        });
        state.sweep_while_detecting();
        state
    }

    pub(crate) fn config(&self) -> Arc<Cluster> {
        self.config.load_full()
    }

    /// Takes a new configuration for the cluster, keeping the live state of endpoints whose
    /// address stays. Without outlier detection, no endpoint stays ejected.
    pub(crate) fn update(self: &Arc<Self>, config: Arc<Cluster>) {
        let _guard = self.rebuild.lock();
        let previous = self.members.load();
        let all: Vec<Arc<EndpointState>> = config
            .endpoints
            .iter()
            .map(|e| {
                previous
                    .all
                    .iter()
                    .find(|p| p.address == e.address && p.weight == e.weight.max(1))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(e.address, e.weight.max(1))))
            })
            .collect();
        if config.outlier.is_none() {
            for endpoint in &all {
                if let Ok(mut state) = endpoint.outlier.lock() {
                    *state = OutlierState::default();
                }
            }
        }
        let members = build_members(&config, all);
        self.config.store(config);
        self.members.store(Arc::new(members));
        self.sweep_while_detecting();
    }

    /// Starts the task that ends ejections every `interval`, unless it runs already or the
    /// cluster has no outlier detection. The task reads the interval anew each time and ends
    /// when outlier detection is gone or the cluster is dropped.
    fn sweep_while_detecting(self: &Arc<Self>) {
        if self.config.load().outlier.is_none() || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let cluster = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let interval = {
                    let Some(state) = cluster.upgrade() else {
                        return;
                    };
                    match state.config.load().outlier.as_ref().map(|o| o.interval) {
                        Some(interval) => interval,
                        None => {
                            state.sweeping.store(false, Ordering::Release);
                            // Detection may have come back before the flag was cleared.
                            if state.config.load().outlier.is_none()
                                || state.sweeping.swap(true, Ordering::AcqRel)
                            {
                                return;
                            }
                            continue;
                        }
                    }
                };
                tokio::time::sleep(interval.max(std::time::Duration::from_millis(1))).await;
                let Some(state) = cluster.upgrade() else {
                    return;
                };
                state.sweep();
            }
        });
    }

    /// Rebuilds the balancer after ejections changed; the caller holds `rebuild`.
    fn rebuild_members_locked(&self) {
        let config = self.config.load_full();
        let all = self.members.load().all.clone();
        self.members.store(Arc::new(build_members(&config, all)));
    }

    /// Chooses an endpoint, skipping `exclude` (the endpoints earlier tries went to) when
    /// another is available. A cluster that forwards to the original destination (Envoy's
    /// ORIGINAL_DST, Istio's PassthroughCluster) answers with `original_destination`, outside
    /// the balancer and outlier detection.
    pub(crate) fn pick(
        &self,
        hash: Option<u64>,
        exclude: &[SocketAddr],
        original_destination: Option<SocketAddr>,
    ) -> Result<ActiveRequest, NoEndpoint> {
        if self.config.load().original_destination {
            let address = original_destination.ok_or(NoEndpoint::NoOriginalDestination)?;
            let endpoint = Arc::new(EndpointState::new(address, 1));
            endpoint.active.fetch_add(1, Ordering::Relaxed);
            return Ok(ActiveRequest(endpoint));
        }
        let members = self.members.load();
        if members.all.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let active = |i: usize| members.all.get(i).map_or(0, |e| e.active_requests());
        let mut chosen = None;
        for attempt in 0..3u64 {
            let hash = hash.map(|h| h.wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            // As Envoy, a hash key picks the tier too, so that a key stays on one endpoint.
            let point = match hash {
                Some(hash) => (hash % 100) as u32,
                None => fastrand::u32(..100),
            };
            let Some(tier) = choose_tier(&members.load, point).and_then(|t| members.tiers.get(t))
            else {
                break;
            };
            let Some(index) = tier.balancer.pick(hash, &active) else {
                break;
            };
            let endpoint = members.all.get(index);
            chosen = endpoint.cloned();
            if endpoint.is_some_and(|e| !exclude.contains(&e.address)) {
                break;
            }
        }
        let endpoint = chosen.ok_or(NoEndpoint::AllEjected)?;
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        Ok(ActiveRequest(endpoint))
    }

    /// Records how a request to `endpoint` ended, ejecting it when it crossed a threshold and the
    /// cluster may lose another endpoint.
    pub(crate) fn report(&self, endpoint: &EndpointState, outcome: Outcome) {
        let config = self.config.load();
        let Some(detection) = &config.outlier else {
            return;
        };
        let crossed = match endpoint.outlier.lock() {
            Ok(mut state) => state.record(outcome, detection),
            Err(_) => false,
        };
        if !crossed {
            return;
        }
        // Ejection decisions are taken one at a time, so that two endpoints failing together
        // cannot both take the last allowed ejection.
        let Ok(_guard) = self.rebuild.lock() else {
            return;
        };
        let members = self.members.load();
        let ejected = members.all.iter().filter(|e| e.is_ejected()).count();
        if ejected >= outlier::max_ejected(members.all.len(), detection) {
            return;
        }
        match endpoint.outlier.lock() {
            Ok(mut state) if !state.is_ejected() => state.eject(Instant::now(), detection),
            _ => return,
        }
        tracing::info!(
            cluster = %config.name,
            endpoint = %endpoint.address,
            "outlier detection ejected an endpoint"
        );
        self.rebuild_members_locked();
    }

    /// Ends ejections that have run their course.
    fn sweep(&self) {
        let now = Instant::now();
        let members = self.members.load();
        let mut returned = false;
        for endpoint in &members.all {
            if let Ok(mut state) = endpoint.outlier.lock() {
                returned |= state.sweep(now);
            }
        }
        if returned && let Ok(_guard) = self.rebuild.lock() {
            self.rebuild_members_locked();
        }
    }

    /// Counts an active request against `max_requests`; `None` when the cluster is full.
    pub(crate) fn start_request(self: &Arc<Self>) -> Option<ClusterRequest> {
        let limit = self.config.load().pool.max_requests.unwrap_or(u32::MAX);
        acquire(&self.active_requests, limit).then(|| ClusterRequest {
            cluster: self.clone(),
            retry: false,
        })
    }

    /// Counts a retry against `max_retries`; `None` when the budget is spent.
    pub(crate) fn start_retry(self: &Arc<Self>) -> Option<ClusterRequest> {
        let limit = self.config.load().pool.max_retries.unwrap_or(u32::MAX);
        acquire(&self.active_retries, limit).then(|| ClusterRequest {
            cluster: self.clone(),
            retry: true,
        })
    }

    /// Endpoints and whether each is ejected, for `proxy-config endpoints`.
    pub(crate) fn endpoint_health(&self) -> Vec<(SocketAddr, bool, u32)> {
        self.members
            .load()
            .all
            .iter()
            .map(|e| (e.address, !e.is_ejected(), e.active_requests()))
            .collect()
    }

    /// Each tier's priority and percent of the traffic now, for `/config_dump`.
    pub(crate) fn priority_load(&self) -> Vec<(u32, u32)> {
        let members = self.members.load();
        members
            .tiers
            .iter()
            .zip(&members.load)
            .map(|(tier, &load)| (tier.priority, load))
            .collect()
    }
}

fn acquire(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// An active request (or retry) counted against the cluster's limits until dropped.
#[derive(Debug)]
pub(crate) struct ClusterRequest {
    cluster: Arc<ClusterState>,
    retry: bool,
}

impl Drop for ClusterRequest {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.cluster.active_retries
        } else {
            &self.cluster.active_requests
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tiers of the endpoints and a balancer over each: a tier's endpoints not ejected, or all of
/// them when too few are healthy (panic mode); and each tier's share of the traffic. Endpoints
/// and their configuration are in the same order, so an endpoint's priority is its
/// configuration's.
fn build_members(config: &Cluster, all: Vec<Arc<EndpointState>>) -> Members {
    let priority_of = |index: usize| config.endpoints.get(index).map_or(0, |e| e.priority);
    let mut priorities: Vec<u32> = (0..all.len()).map(priority_of).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let member = |(index, e): (usize, &Arc<EndpointState>)| Member {
        index,
        weight: e.weight,
        address: e.address,
    };
    let in_tier = |priority: u32| {
        all.iter()
            .enumerate()
            .filter(move |(index, _)| priority_of(*index) == priority)
    };
    let health: Vec<TierHealth> = priorities
        .iter()
        .map(|&priority| TierHealth {
            healthy: in_tier(priority).filter(|(_, e)| !e.is_ejected()).count(),
            total: in_tier(priority).count(),
        })
        .collect();
    // Without outlier detection nothing is ever ejected, and no tier panics.
    let threshold = config.outlier.as_ref().map_or(0, |o| o.min_health_percent);
    let split = priority_load(&health, threshold);
    let tiers = priorities
        .iter()
        .zip(&split.panic)
        .map(|(&priority, &panic)| {
            let members: Vec<Member> = in_tier(priority)
                .filter(|(_, e)| panic || !e.is_ejected())
                .map(member)
                .collect();
            Tier {
                priority,
                balancer: Balancer::new(&config.lb, &members),
            }
        })
        .collect();
    Members {
        all,
        tiers,
        load: split.load,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::snapshot::{
        Endpoint, LbPolicy, OutlierDetection, PoolLimits, UpstreamProtocol, UpstreamTls,
    };

    fn cluster(outlier: Option<OutlierDetection>) -> Arc<Cluster> {
        let endpoint = |port: u16| Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            locality: None,
            labels: Default::default(),
            dns_name: None,
            network_gateway: None,
            priority: 0,
        };
        Arc::new(Cluster {
            name: "outbound|80||a.example.com".to_owned(),
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            pool: PoolLimits::default(),
            outlier,
            tls: UpstreamTls::Disabled,
            protocol: UpstreamProtocol::Http1,
            endpoints: vec![endpoint(1), endpoint(2)],
            original_destination: false,
            upstream_bind: None,
            telemetry: Vec::new(),
            empty_reason: None,
        })
    }

    fn detection(base_ejection_time: Duration) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 1,
            consecutive_gateway_errors: 0,
            interval: Duration::from_millis(10),
            base_ejection_time,
            max_ejection_percent: 100,
            min_health_percent: 0,
        }
    }

    fn eject_first(state: &ClusterState) -> SocketAddr {
        let members = state.members.load();
        let first = members.all[0].clone();
        state.report(&first, Outcome::ServerError { gateway: false });
        first.address
    }

    fn ejected(state: &ClusterState) -> usize {
        state.endpoint_health().iter().filter(|e| !e.1).count()
    }

    /// Ports 1 and 2 in tier 0, 3 and 4 in tier 1.
    fn tiered(outlier: Option<OutlierDetection>) -> Arc<Cluster> {
        let mut config = (*cluster(outlier)).clone();
        let mut far = config.endpoints.clone();
        for (endpoint, port) in far.iter_mut().zip([3, 4]) {
            endpoint.address.set_port(port);
            endpoint.priority = 1;
        }
        config.endpoints.extend(far);
        Arc::new(config)
    }

    fn picked_ports(state: &ClusterState, count: usize) -> Vec<u16> {
        let mut ports: Vec<u16> = (0..count)
            .map(|_| {
                state
                    .pick(None, &[], None)
                    .unwrap()
                    .endpoint()
                    .address
                    .port()
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    #[tokio::test]
    async fn traffic_stays_in_tier_0_and_fails_over_as_it_loses_health() {
        let state = ClusterState::new(tiered(Some(detection(Duration::from_secs(60)))));
        assert_eq!(picked_ports(&state, 200), [1, 2]);
        assert_eq!(state.priority_load(), [(0, 100), (1, 0)]);
        // One of two left: 70% stays, 30% spills to tier 1.
        eject_first(&state);
        assert_eq!(state.priority_load(), [(0, 70), (1, 30)]);
        assert_eq!(picked_ports(&state, 500), [2, 3, 4]);
        // Tier 0 gone: everything to tier 1.
        let second = state.members.load().all[1].clone();
        state.report(&second, Outcome::ServerError { gateway: false });
        assert_eq!(state.priority_load(), [(0, 0), (1, 100)]);
        assert_eq!(picked_ports(&state, 200), [3, 4]);
        // Removing outlier detection returns them: tier 0 takes everything again.
        state.update(tiered(None));
        assert_eq!(state.priority_load(), [(0, 100), (1, 0)]);
        assert_eq!(picked_ports(&state, 200), [1, 2]);
    }

    #[tokio::test]
    async fn outlier_detection_added_by_an_update_ends_its_ejections() {
        let state = ClusterState::new(cluster(None));
        state.update(cluster(Some(detection(Duration::from_millis(50)))));
        let address = eject_first(&state);
        assert_eq!(ejected(&state), 1);
        for _ in 0..500 {
            if ejected(&state) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ejected(&state), 0, "{address} was never returned");
    }

    #[tokio::test]
    async fn removing_outlier_detection_returns_ejected_endpoints_and_updates_keep_ejections() {
        let state = ClusterState::new(cluster(Some(detection(Duration::from_secs(60)))));
        eject_first(&state);
        let mut longer = (*cluster(Some(detection(Duration::from_secs(60))))).clone();
        longer.connect_timeout = Duration::from_secs(5);
        state.update(Arc::new(longer));
        assert_eq!(ejected(&state), 1, "an update keeps the ejection");
        state.update(cluster(None));
        assert_eq!(ejected(&state), 0);
        assert!(state.pick(None, &[], None).is_ok());
    }
}
