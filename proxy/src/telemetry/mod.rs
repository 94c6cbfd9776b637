//! Telemetry: Istio's standard metrics and the access log, fed by every request and TCP
//! connection when it ends.

pub mod access_log;
pub mod metrics;

use std::time::Duration;

use access_log::{AccessLog, AccessLogEntry};
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

    /// Counts a finished request in the metrics.
    pub(crate) fn record_request(
        &self,
        destination: impl FnOnce() -> Vec<(String, String)>,
        entry: &AccessLogEntry,
        flags: ResponseFlags,
        grpc_status: Option<u16>,
        duration: Duration,
    ) {
        let base = self.metrics.base(&entry.upstream_cluster, destination);
        let protocol = if grpc_status.is_some() {
            "grpc"
        } else {
            "http"
        };
        self.metrics.record_request(
            base,
            protocol,
            entry.response_code,
            grpc_status,
            flags,
            duration,
            entry.bytes_received,
            entry.bytes_sent,
        );
    }
}
