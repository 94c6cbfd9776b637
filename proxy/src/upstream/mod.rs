//! Upstream: the live state of clusters and their endpoints, load balancing, outlier detection,
//! and pooled connections to endpoints.

pub(crate) mod cluster;
pub(crate) mod connect;
pub(crate) mod lb;
pub(crate) mod outlier;
pub(crate) mod pool;
