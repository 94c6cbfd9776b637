//! Upstream: the live state of clusters and their endpoints, load balancing (within and across
//! priority tiers), outlier detection,
//! pooled connections to endpoints, and the hook for other transports to endpoints (`connector`).

pub(crate) mod cluster;
pub(crate) mod connect;
pub mod connector;
pub(crate) mod lb;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod priority;
