//! What telemetry needs to know about an exchange, gathered as the request goes through, and the
//! body wrappers that count bytes and report the exchange when the response has been sent (or
//! the client went away).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::body::{self, Body, BoxError};
use super::flags::ResponseFlags;
use super::local_reply::LocalReply;
use crate::runtime::{Downstream, Shared};
use crate::telemetry::RequestOutcome;
use crate::telemetry::access_log::AccessLogEntry;

/// One request/response exchange, as telemetry reports it.
#[derive(Debug)]
pub(crate) struct Exchange {
    started: Instant,
    start_time: SystemTime,
    method: String,
    path: String,
    protocol: &'static str,
    user_agent: String,
    forwarded_for: String,
    downstream_local: SocketAddr,
    downstream_remote: SocketAddr,
    server_name: String,
    peer_principal: String,
    pub(crate) authority: String,
    pub(crate) request_id: String,
    pub(crate) route_name: String,
    pub(crate) cluster: String,
    pub(crate) upstream_host: Option<SocketAddr>,
    pub(crate) upstream_service_time: Option<u64>,
    pub(crate) flags: ResponseFlags,
    pub(crate) reason: String,
}

impl Exchange {
    /// The exchange of `request`. What only the access log reads (method, path, user agent,
    /// forwarded-for, SNI) is copied only when `logged`.
    pub(crate) fn start(
        request: &Request<Incoming>,
        downstream: &Downstream,
        started: Instant,
        start_time: SystemTime,
        logged: bool,
    ) -> Exchange {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let copy = |text: &dyn Fn() -> String| if logged { text() } else { String::new() };
        Exchange {
            started,
            start_time,
            method: copy(&|| request.method().to_string()),
            path: copy(&|| {
                request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
            }),
            protocol: protocol_name(request.version()),
            user_agent: copy(&|| header("user-agent")),
            forwarded_for: copy(&|| header("x-forwarded-for")),
            downstream_local: downstream.local_address(),
            downstream_remote: downstream.peer,
            server_name: copy(&|| downstream.sni.clone().unwrap_or_default()),
            peer_principal: downstream.peer_principal().unwrap_or_default().to_owned(),
            authority: String::new(),
            request_id: String::new(),
            route_name: String::new(),
            cluster: String::new(),
            upstream_host: None,
            upstream_service_time: None,
            flags: ResponseFlags::NONE,
            reason: String::new(),
        }
    }

    /// Records a failure that did not end the exchange (a retried try, say).
    pub(crate) fn note(&mut self, flags: ResponseFlags, reason: String) {
        self.flags |= flags;
        self.reason = reason;
    }

    /// Moves the exchange out, leaving one with the same start and addresses and nothing else
    /// (empty strings do not allocate).
    fn take(&mut self) -> Exchange {
        let blank = Exchange {
            started: self.started,
            start_time: self.start_time,
            method: String::new(),
            path: String::new(),
            protocol: self.protocol,
            user_agent: String::new(),
            forwarded_for: String::new(),
            downstream_local: self.downstream_local,
            downstream_remote: self.downstream_remote,
            server_name: String::new(),
            peer_principal: String::new(),
            authority: String::new(),
            request_id: String::new(),
            route_name: String::new(),
            cluster: String::new(),
            upstream_host: None,
            upstream_service_time: None,
            flags: ResponseFlags::NONE,
            reason: String::new(),
        };
        std::mem::replace(self, blank)
    }
}

/// An exchange whose response is not made yet. The server drops the request's handler when the
/// client goes away first (during an injected delay, or while the upstream takes its time);
/// the exchange is then reported as Envoy reports it: response code 0 and DC, with what
/// routing had found (route, cluster, flags such as DI).
pub(crate) struct Pending {
    pub(crate) exchange: Exchange,
    received: Arc<AtomicU64>,
    shared: Arc<Shared>,
    answered: bool,
}

impl Pending {
    pub(crate) fn new(exchange: Exchange, received: Arc<AtomicU64>, shared: Arc<Shared>) -> Self {
        Pending {
            exchange,
            received,
            shared,
            answered: false,
        }
    }

    /// The response is made: it reports the exchange once it has been sent.
    pub(crate) fn respond(mut self, response: Response<Body>) -> Response<Body> {
        self.answered = true;
        let exchange = self.exchange.take();
        track_response(
            response,
            exchange,
            self.received.clone(),
            self.shared.clone(),
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.exchange.reason.is_empty() {
            "the client went away before the response was made"
                .clone_into(&mut self.exchange.reason);
        }
        let finish = Finish {
            exchange: self.exchange.take(),
            received: self.received.clone(),
            status: 0,
            grpc_status: None,
            shared: self.shared.clone(),
        };
        finish.report(0, false, None);
    }
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// Counts the bytes of a request body as they are read.
pub(crate) fn track_request(request: Request<Incoming>) -> (Request<Body>, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let request = request.map(move |incoming| {
        body::boxed(Counted {
            inner: incoming,
            counter,
        })
    });
    (request, received)
}

struct Counted<B> {
    inner: B,
    counter: Arc<AtomicU64>,
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps the response body so that the exchange is reported once the response is complete.
fn track_response(
    response: Response<Body>,
    mut exchange: Exchange,
    received: Arc<AtomicU64>,
    shared: Arc<Shared>,
) -> Response<Body> {
    if let Some(LocalReply(reason)) = response.extensions().get::<LocalReply>() {
        exchange.flags |= reason.flags;
        exchange.reason.clone_from(&reason.text);
    }
    let status = response.status().as_u16();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    response.map(|inner| {
        body::boxed(Tracked {
            inner,
            sent: 0,
            finish: Some(Finish {
                exchange,
                received,
                status,
                grpc_status,
                shared,
            }),
        })
    })
}

struct Tracked {
    inner: Body,
    sent: u64,
    finish: Option<Finish>,
}

struct Finish {
    exchange: Exchange,
    received: Arc<AtomicU64>,
    status: u16,
    grpc_status: Option<u16>,
    shared: Arc<Shared>,
}

impl Finish {
    fn report(mut self, sent: u64, complete: bool, trailer_grpc_status: Option<u16>) {
        if !complete {
            self.exchange.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            if self.exchange.reason.is_empty() {
                "the client closed the connection before the response was complete"
                    .clone_into(&mut self.exchange.reason);
            }
        }
        let exchange = self.exchange;
        let duration = exchange.started.elapsed();
        let bytes_received = self.received.load(Ordering::Relaxed);
        let shared = &self.shared;
        let outcome = RequestOutcome {
            cluster: &exchange.cluster,
            peer: Some(exchange.peer_principal.as_str()).filter(|p| !p.is_empty()),
            response_code: self.status,
            flags: exchange.flags,
            grpc_status: self.grpc_status.or(trailer_grpc_status),
            duration,
            bytes_received,
            bytes_sent: sent,
        };
        shared.telemetry.record_request(&outcome, || {
            shared
                .active()
                .clusters
                .get(&exchange.cluster)
                .map(|c| c.config().telemetry.clone())
                .unwrap_or_default()
        });
        if !shared.telemetry.access_log.enabled() {
            return;
        }
        shared.telemetry.access_log.log(AccessLogEntry {
            start_time: Some(exchange.start_time),
            method: exchange.method,
            path: exchange.path,
            protocol: exchange.protocol.to_owned(),
            response_code: self.status,
            response_flags: exchange.flags.to_string(),
            reason: exchange.reason,
            bytes_received,
            bytes_sent: sent,
            duration_ms: duration.as_millis() as u64,
            upstream_service_time: exchange.upstream_service_time,
            x_forwarded_for: exchange.forwarded_for,
            user_agent: exchange.user_agent,
            request_id: exchange.request_id,
            authority: exchange.authority,
            upstream_host: exchange.upstream_host,
            upstream_cluster: exchange.cluster,
            downstream_local_address: Some(exchange.downstream_local),
            downstream_remote_address: Some(exchange.downstream_remote),
            requested_server_name: exchange.server_name,
            downstream_peer_principal: exchange.peer_principal,
            route_name: exchange.route_name,
        });
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    let status = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    if let Some(finish) = self.finish.take() {
                        let sent = self.sent;
                        finish.report(sent, true, status);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(finish) = self.finish.take() {
                    let sent = self.sent;
                    finish.report(sent, true, None);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut finish) = self.finish.take() {
                    finish.exchange.flags |= ResponseFlags::UPSTREAM_CONNECTION_TERMINATION;
                    "the upstream response body ended in an error"
                        .clone_into(&mut finish.exchange.reason);
                    let sent = self.sent;
                    finish.report(sent, true, None);
                }
            }
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // An empty body that was never polled still completed.
            let complete = self.inner.is_end_stream();
            finish.report(self.sent, complete, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::BodyExt;

    use super::*;
    use crate::runtime::ProxyOptions;
    use crate::telemetry::Telemetry;
    use crate::telemetry::access_log::AccessLog;
    use crate::telemetry::metrics::Metrics;

    fn shared() -> Arc<Shared> {
        let telemetry = Telemetry::new(AccessLog::disabled(), Metrics::new(Vec::new()));
        Arc::new(Shared::new(telemetry, ProxyOptions::default(), None))
    }

    fn exchange(cluster: &str, flags: ResponseFlags) -> Exchange {
        let address = SocketAddr::from(([10, 0, 0, 1], 15001));
        let mut exchange = Exchange {
            started: Instant::now(),
            start_time: SystemTime::now(),
            method: "GET".into(),
            path: "/ratings/0".into(),
            protocol: "HTTP/1.1",
            user_agent: String::new(),
            forwarded_for: String::new(),
            downstream_local: address,
            downstream_remote: address,
            server_name: String::new(),
            peer_principal: String::new(),
            authority: "ratings".into(),
            request_id: String::new(),
            route_name: "default".into(),
            cluster: String::new(),
            upstream_host: None,
            upstream_service_time: None,
            flags: ResponseFlags::NONE,
            reason: String::new(),
        };
        exchange.cluster = cluster.to_owned();
        exchange.flags = flags;
        exchange
    }

    /// The `istio_requests_total` samples, one per line.
    fn requests(shared: &Shared) -> Vec<String> {
        shared
            .telemetry
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn an_exchange_dropped_before_its_response_is_reported_with_code_0_and_dc() {
        let shared = shared();
        let mut pending = Pending::new(
            exchange("outbound|9080|v1|ratings", ResponseFlags::NONE),
            Arc::new(AtomicU64::new(0)),
            shared.clone(),
        );
        // Routing got as far as an injected delay, then the client went away.
        pending.exchange.flags |= ResponseFlags::DELAY_INJECTED;
        drop(pending);
        let requests = requests(&shared);
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].contains("response_code=\"0\""), "{requests:?}");
        assert!(
            requests[0].contains("response_flags=\"DC,DI\""),
            "{requests:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_exchange_is_reported_once_with_its_status() {
        let shared = shared();
        let pending = Pending::new(
            exchange("outbound|9080|v1|ratings", ResponseFlags::NONE),
            Arc::new(AtomicU64::new(0)),
            shared.clone(),
        );
        let response = pending.respond(Response::new(body::full("stars")));
        assert!(requests(&shared).is_empty(), "reported before it was sent");
        let sent = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"stars");
        let requests = requests(&shared);
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(
            requests[0].contains("response_code=\"200\""),
            "{requests:?}"
        );
        assert!(requests[0].contains("response_flags=\"-\""), "{requests:?}");
    }
}
