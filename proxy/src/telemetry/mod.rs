//! Telemetry: Istio's standard metrics and the access log, fed by every request and TCP
//! connection when it ends.

pub mod access_log;
pub mod metrics;

use std::time::Duration;

use access_log::AccessLog;
use metrics::Metrics;

use crate::http::flags::ResponseFlags;

/// The access log and metrics of one proxy.
#[derive(Debug)]
pub struct Telemetry {
    pub access_log: AccessLog,
    pub metrics: Metrics,
}

impl Telemetry {
    pub fn new(access_log: AccessLog, metrics: Metrics) -> Telemetry {
        Telemetry {
            access_log,
            metrics,
        }
    }

    /// Counts a finished request in the metrics. `destination` gives the cluster's destination
    /// labels the first time the cluster is seen.
    pub(crate) fn record_request(
        &self,
        outcome: &RequestOutcome<'_>,
        destination: impl FnOnce() -> Vec<(String, String)>,
    ) {
        let base = self
            .metrics
            .base(outcome.cluster, outcome.peer, destination);
        let protocol = if outcome.grpc_status.is_some() {
            "grpc"
        } else {
            "http"
        };
        self.metrics.record_request(
            &base,
            protocol,
            outcome.response_code,
            outcome.grpc_status,
            outcome.flags,
            outcome.duration,
            outcome.bytes_received,
            outcome.bytes_sent,
        );
    }
}

/// What the metrics record of a finished request.
#[derive(Debug)]
pub(crate) struct RequestOutcome<'a> {
    /// The upstream cluster, empty when there was none.
    pub(crate) cluster: &'a str,
    /// The caller's verified SPIFFE ID (mesh mTLS).
    pub(crate) peer: Option<&'a str>,
    pub(crate) response_code: u16,
    pub(crate) flags: ResponseFlags,
    pub(crate) grpc_status: Option<u16>,
    pub(crate) duration: Duration,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
}
