//! Istio's standard metrics, with Istio's names and labels, so that Istio's dashboards work:
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
//! `istio_response_bytes`, and the `istio_tcp_*` connection and byte counts.
//!
//! The labels that do not change per request (who reports, the source and destination
//! workload and service) are resolved once per cluster and shared; a request only adds its
//! protocol, response code, gRPC status and response flags.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::http::flags::ResponseFlags;

/// Istio's duration buckets, in milliseconds.
const DURATION_BUCKETS: [f64; 20] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
    f64::INFINITY,
];

/// Istio's size buckets, in bytes.
const SIZE_BUCKETS: [f64; 9] = [
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    f64::INFINITY,
];

/// Istio's destination labels, in its order. Every series carries all of them, `unknown` where
/// the cluster does not say (a request no route matched has no cluster at all).
pub const DESTINATION_LABELS: [&str; 10] = [
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "connection_security_policy",
];

/// The destination labels in Istio's order from what a cluster knows.
fn destination_labels(known: &[(String, String)]) -> Vec<(String, String)> {
    DESTINATION_LABELS
        .iter()
        .map(|name| {
            let value = known
                .iter()
                .find(|(k, _)| k == name)
                .map_or("unknown", |(_, v)| v.as_str());
            ((*name).to_owned(), value.to_owned())
        })
        .collect()
}

/// Labels fixed for a (proxy, cluster) pair, in Istio's order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BaseLabels(pub Vec<(String, String)>);

/// A cluster's base labels and the series made with them so far, so that a request finds its
/// counters and histograms without hashing the whole label set again.
#[derive(Debug)]
pub struct Base {
    labels: Arc<BaseLabels>,
    /// Request series by what varies per request; a handful per cluster.
    requests: Mutex<Vec<(SeriesKey, RequestSeries)>>,
    tcp: std::sync::OnceLock<TcpSeries>,
}

impl Base {
    fn new(labels: BaseLabels) -> Base {
        Base {
            labels: Arc::new(labels),
            requests: Mutex::new(Vec::new()),
            tcp: std::sync::OnceLock::new(),
        }
    }

    pub fn labels(&self) -> &BaseLabels {
        &self.labels
    }
}

/// What varies between the request series of one base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeriesKey {
    protocol: &'static str,
    response_code: u16,
    grpc_status: Option<u16>,
    flags: ResponseFlags,
}

/// The metrics one request updates (handles shared with the registry's families).
#[derive(Clone, Debug)]
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// The metrics one TCP connection updates.
#[derive(Clone, Debug)]
struct TcpSeries {
    opened: Counter,
    closed: Counter,
    sent: Counter,
    received: Counter,
}

impl EncodeLabelSet for BaseLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// A request's labels: the shared base plus what varies per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RequestLabels {
    base: Arc<BaseLabels>,
    protocol: &'static str,
    response_code: u16,
    grpc_status: Option<u16>,
    flags: ResponseFlags,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.base.0.encode(encoder)?;
        let grpc = self
            .grpc_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let dynamic: [(&str, String); 4] = [
            ("request_protocol", self.protocol.to_owned()),
            ("response_code", self.response_code.to_string()),
            ("grpc_response_status", grpc),
            ("response_flags", self.flags.to_string()),
        ];
        dynamic.as_slice().encode(encoder)
    }
}

#[derive(Clone, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Labels identifying this proxy as a reporter (`reporter`, `source_workload`, ...).
    proxy_labels: Vec<(String, String)>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, Buckets>,
    request_bytes: Family<RequestLabels, Histogram, Buckets>,
    response_bytes: Family<RequestLabels, Histogram, Buckets>,
    tcp_opened: Family<BaseLabels, Counter>,
    tcp_closed: Family<BaseLabels, Counter>,
    tcp_sent: Family<BaseLabels, Counter>,
    tcp_received: Family<BaseLabels, Counter>,
    /// Base label sets by cluster (and, for a sidecar's inbound, by the verified caller),
    /// built once.
    bases: Mutex<BTreeMap<String, ClusterBases>>,
}

/// A cluster's base label sets: one for callers without a verified identity, one per mesh
/// caller.
#[derive(Debug, Default)]
struct ClusterBases {
    anonymous: Option<Arc<Base>>,
    by_peer: BTreeMap<String, Arc<Base>>,
}

impl Metrics {
    /// `proxy_labels` identify the reporter: `reporter` (`source` for a client-side proxy or a
    /// gateway, `destination` for a sidecar's inbound) and the source workload labels.
    pub fn new(proxy_labels: Vec<(String, String)>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(Buckets(&DURATION_BUCKETS));
        let request_bytes = Family::new_with_constructor(Buckets(&SIZE_BUCKETS));
        let response_bytes = Family::new_with_constructor(Buckets(&SIZE_BUCKETS));
        let tcp_opened = Family::<BaseLabels, Counter>::default();
        let tcp_closed = Family::<BaseLabels, Counter>::default();
        let tcp_sent = Family::<BaseLabels, Counter>::default();
        let tcp_received = Family::<BaseLabels, Counter>::default();
        registry.register("istio_requests", "Requests handled", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client over TCP",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client over TCP",
            tcp_received.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            proxy_labels,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            bases: Mutex::new(BTreeMap::new()),
        }
    }

    /// The base labels for requests to `cluster` from `peer` (the caller's verified SPIFFE ID,
    /// if any): this proxy's labels, then the cluster's destination labels; computed once per
    /// cluster and caller. A cluster whose labels say `reporter: destination` (a sidecar's
    /// inbound) reports as the destination: the source labels describe the verified caller
    /// and the destination labels this workload, as Istio's do.
    pub fn base(
        &self,
        cluster: &str,
        peer: Option<&str>,
        destination: impl FnOnce() -> Vec<(String, String)>,
    ) -> Arc<Base> {
        let build = |known: Vec<(String, String)>| {
            let inbound = known
                .iter()
                .any(|(k, v)| k == "reporter" && v == "destination");
            let mut labels = if inbound {
                self.caller_labels(peer)
            } else {
                self.proxy_labels.clone()
            };
            let mut known = known;
            if inbound {
                let policy = if peer.is_some() { "mutual_tls" } else { "none" };
                known.push(("connection_security_policy".to_owned(), policy.to_owned()));
            }
            labels.extend(destination_labels(&known));
            Arc::new(Base::new(BaseLabels(labels)))
        };
        let Ok(mut bases) = self.bases.lock() else {
            return build(destination());
        };
        let cached = bases.get(cluster).and_then(|c| match peer {
            None => c.anonymous.clone(),
            Some(peer) => c.by_peer.get(peer).cloned(),
        });
        if let Some(base) = cached {
            return base;
        }
        let base = build(destination());
        let entry = bases.entry(cluster.to_owned()).or_default();
        match peer {
            None => entry.anonymous = Some(base.clone()),
            Some(peer) => {
                entry.by_peer.insert(peer.to_owned(), base.clone());
            }
        }
        base
    }

    /// The reporter and source labels of a request this proxy received as the destination:
    /// the caller's principal and namespace from its verified SPIFFE ID, the rest unknown
    /// (Istio learns them by exchanging metadata, which Strait does not do).
    fn caller_labels(&self, peer: Option<&str>) -> Vec<(String, String)> {
        let namespace = peer.and_then(|p| p.split("/ns/").nth(1)?.split('/').next());
        self.proxy_labels
            .iter()
            .map(|(name, _)| {
                let value = match name.as_str() {
                    "reporter" => "destination",
                    "source_principal" => peer.unwrap_or("unknown"),
                    "source_workload_namespace" => namespace.unwrap_or("unknown"),
                    _ => "unknown",
                };
                (name.clone(), value.to_owned())
            })
            .collect()
    }

    /// Forgets cached label sets (a new snapshot may change a cluster's destination labels).
    pub fn reset_bases(&self) {
        if let Ok(mut bases) = self.bases.lock() {
            bases.clear();
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_request(
        &self,
        base: &Base,
        protocol: &'static str,
        response_code: u16,
        grpc_status: Option<u16>,
        flags: ResponseFlags,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let key = SeriesKey {
            protocol,
            response_code,
            grpc_status,
            flags,
        };
        let series = self.request_series(base, key);
        series.requests.inc();
        series.duration.observe(duration.as_secs_f64() * 1000.0);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }

    /// The series of `base` for `key`, made (in the registry's families) the first time.
    fn request_series(&self, base: &Base, key: SeriesKey) -> RequestSeries {
        let Ok(mut known) = base.requests.lock() else {
            return self.make_request_series(base, key);
        };
        if let Some((_, series)) = known.iter().find(|(k, _)| *k == key) {
            return series.clone();
        }
        let series = self.make_request_series(base, key);
        known.push((key, series.clone()));
        series
    }

    fn make_request_series(&self, base: &Base, key: SeriesKey) -> RequestSeries {
        let labels = RequestLabels {
            base: base.labels.clone(),
            protocol: key.protocol,
            response_code: key.response_code,
            grpc_status: key.grpc_status,
            flags: key.flags,
        };
        RequestSeries {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        }
    }

    fn tcp_series<'b>(&self, base: &'b Base) -> &'b TcpSeries {
        base.tcp.get_or_init(|| TcpSeries {
            opened: self.tcp_opened.get_or_create(base.labels.as_ref()).clone(),
            closed: self.tcp_closed.get_or_create(base.labels.as_ref()).clone(),
            sent: self.tcp_sent.get_or_create(base.labels.as_ref()).clone(),
            received: self
                .tcp_received
                .get_or_create(base.labels.as_ref())
                .clone(),
        })
    }

    pub(crate) fn tcp_opened(&self, base: &Base) {
        self.tcp_series(base).opened.inc();
    }

    pub(crate) fn tcp_closed(&self, base: &Base, sent: u64, received: u64) {
        let series = self.tcp_series(base);
        series.closed.inc();
        series.sent.inc_by(sent);
        series.received.inc_by(received);
    }

    /// Exposes a counter kept elsewhere (DNS lookups that failed, ...) with the proxy's
    /// metrics; `name` gets the `_total` suffix.
    pub fn register_counter(&self, name: &str, help: &str, counter: Counter) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, counter);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_labels() -> Vec<(String, String)> {
        [
            ("reporter", "source"),
            ("source_workload", "httpbin"),
            ("source_workload_namespace", "default"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/httpbin",
            ),
            ("source_app", "httpbin"),
            ("source_version", "unknown"),
            ("source_cluster", "unknown"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn label<'b>(base: &'b Base, name: &str) -> &'b str {
        base.labels()
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    #[test]
    fn inbound_series_describe_the_verified_caller_and_this_workload() {
        let metrics = Metrics::new(proxy_labels());
        let inbound = || {
            vec![
                ("reporter".to_owned(), "destination".to_owned()),
                ("destination_workload".to_owned(), "httpbin".to_owned()),
            ]
        };
        let sleep = "spiffe://cluster.local/ns/apps/sa/sleep";
        let from_sleep = metrics.base("inbound|8080||", Some(sleep), inbound);
        assert_eq!(label(&from_sleep, "reporter"), "destination");
        assert_eq!(label(&from_sleep, "source_principal"), sleep);
        assert_eq!(label(&from_sleep, "source_workload_namespace"), "apps");
        assert_eq!(label(&from_sleep, "source_workload"), "unknown");
        assert_eq!(label(&from_sleep, "destination_workload"), "httpbin");
        assert_eq!(
            label(&from_sleep, "connection_security_policy"),
            "mutual_tls"
        );
        // A plaintext caller is another series, and so is another caller.
        let plaintext = metrics.base("inbound|8080||", None, inbound);
        assert_eq!(label(&plaintext, "source_principal"), "unknown");
        assert_eq!(label(&plaintext, "connection_security_policy"), "none");
        let other = metrics.base(
            "inbound|8080||",
            Some("spiffe://cluster.local/ns/b/sa/x"),
            inbound,
        );
        assert!(!Arc::ptr_eq(&from_sleep, &other));
        assert!(Arc::ptr_eq(
            &from_sleep,
            &metrics.base("inbound|8080||", Some(sleep), inbound)
        ));
    }

    #[test]
    fn outbound_series_keep_this_proxy_as_the_source() {
        let metrics = Metrics::new(proxy_labels());
        let base = metrics.base("outbound|80||a.example.com", None, || {
            vec![("destination_service".to_owned(), "a.example.com".to_owned())]
        });
        assert_eq!(label(&base, "reporter"), "source");
        assert_eq!(label(&base, "source_workload"), "httpbin");
        assert_eq!(label(&base, "destination_service"), "a.example.com");
        assert_eq!(label(&base, "connection_security_policy"), "unknown");
    }
}
