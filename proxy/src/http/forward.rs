//! Forwarding a routed request to its cluster: choose an endpoint, lease a pooled connection,
//! send with the try's timeout, and retry by the route's policy. Local replies say why when it
//! fails: `UH` no healthy endpoint, `UF` connect failure, `UT` timeout, `UO` overflow, `URX`
//! retries exhausted, `UC` the upstream reset.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::body::{self, Body};
use super::flags::ResponseFlags;
use super::hash_key::{RequestHash, request_hash};
use super::headers;
use super::local_reply::local_reply;
use super::tracked::Exchange;
use super::upstream_body::UpstreamBody;
use crate::runtime::{Active, Downstream, Shared};
use crate::snapshot::{RetryOn, RetryPolicy, Rewrite, Route, StringMatcher, WeightedCluster};
use crate::upstream::cluster::ClusterState;
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::{Lease, PoolError, PoolKey, Wire};

/// Request bodies up to this size are held so a retry can send them again; larger or unsized
/// (streaming) bodies are sent as they come, and retried only when nothing was sent.
const REPLAY_LIMIT: u64 = 1024 * 1024;
/// The cap on one backoff between tries, as a multiple of the base.
const BACKOFF_CAP: u32 = 10;

/// Where a routed request goes.
pub(crate) struct Forward<'a> {
    pub(crate) route: &'a Route,
    pub(crate) cluster: &'a str,
    pub(crate) grpc: bool,
    pub(crate) upgrade: Option<OnUpgrade>,
    pub(crate) downstream: &'a Downstream,
}

/// Takes the downstream side of an HTTP/1.1 protocol upgrade (WebSocket), if asked for.
pub(crate) fn take_upgrade(request: &mut Request<Incoming>) -> Option<OnUpgrade> {
    let version = request.version();
    upgrade_wanted(version, request.headers_mut()).then(|| hyper::upgrade::on(request))
}

/// Whether a request asks for a protocol upgrade the proxy carries: HTTP/1.1 with `Upgrade`
/// named by `Connection`, and not `h2c`. Any other `Upgrade` header is removed so that the
/// upstream never sees it: an upstream that switched to h2c would take every later request on
/// the connection past routing (Envoy strips h2c upgrades too).
fn upgrade_wanted(version: Version, headers: &mut http::HeaderMap) -> bool {
    let tokens = |headers: &http::HeaderMap, name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !headers.contains_key(header::UPGRADE) {
        return false;
    }
    let h2c = tokens(headers, header::UPGRADE, "h2c");
    let wants =
        version == Version::HTTP_11 && !h2c && tokens(headers, header::CONNECTION, "upgrade");
    if !wants {
        headers.remove(header::UPGRADE);
        headers.remove("http2-settings");
    }
    wants
}

/// Picks one of the route's destinations by weight. A single destination gets every request,
/// whatever its weight.
pub(crate) fn choose_cluster(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    crate::upstream::lb::weighted_choice(clusters, |c| c.weight)
}

/// Applies a route's rewrite: the matched prefix (or the whole path) is replaced, or a regex's
/// matches; the authority is replaced.
pub(crate) fn rewrite(request: &mut Request<Body>, rewrite: &Rewrite, route: &Route) {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let mut new_path = None;
    if let Some(replacement) = &rewrite.path {
        let matched_prefix = route.matches.iter().find_map(|m| match &m.path {
            Some(StringMatcher::Prefix(prefix)) => {
                let head = path.get(..prefix.len())?;
                let same = if m.ignore_case {
                    head.eq_ignore_ascii_case(prefix)
                } else {
                    head == prefix
                };
                same.then_some(prefix.len())
            }
            _ => None,
        });
        new_path = Some(match matched_prefix {
            Some(len) => format!("{replacement}{}", &path[len..]),
            None => replacement.clone(),
        });
    } else if let Some((pattern, replacement)) = &rewrite.path_regex {
        new_path = Some(
            pattern
                .regex()
                .replace_all(&path, replacement.as_str())
                .into_owned(),
        );
    }
    if let Some(mut new_path) = new_path {
        if !new_path.starts_with('/') {
            new_path.insert(0, '/');
        }
        if let Some(query) = query {
            new_path.push('?');
            new_path.push_str(&query);
        }
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = new_path.parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    if let Some(authority) = &rewrite.authority {
        set_authority(request, authority);
    }
}

fn set_authority(request: &mut Request<Body>, authority: &str) {
    if let Ok(value) = HeaderValue::from_str(authority) {
        request.headers_mut().insert(header::HOST, value);
    }
    if request.uri().authority().is_some() {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = authority.parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

/// The request body, held for replay or streamed once. A streamed body remembers whether
/// reading it from the client failed (a malformed chunk, a client gone mid-body), so that the
/// try it breaks is blamed on the client, not on the endpoint.
enum Payload {
    Held(Bytes),
    Streaming(Option<Body>, Arc<AtomicBool>),
}

impl Payload {
    async fn new(body: Body, replayable: bool) -> Result<Payload, Response<Body>> {
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|size| size <= REPLAY_LIMIT);
        if !(replayable && small) {
            let failed = Arc::new(AtomicBool::new(false));
            let watched = Watched {
                inner: body,
                failed: failed.clone(),
            };
            return Ok(Payload::Streaming(Some(body::boxed(watched)), failed));
        }
        match body.collect().await {
            Ok(collected) => Ok(Payload::Held(collected.to_bytes())),
            Err(error) => Err(local_reply(
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
                format!("reading the request body failed: {error}"),
                false,
            )),
        }
    }

    /// The body for the next try; `None` once a streamed body has been used.
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Held(bytes) => Some(body::full(bytes.clone())),
            Payload::Streaming(body, _) => body.take(),
        }
    }

    /// Gives a streamed body back when a try did not send it.
    fn put_back(&mut self, body: Body) {
        if let Payload::Streaming(slot, _) = self {
            *slot = Some(body);
        }
    }

    fn held(&self) -> Option<&Bytes> {
        match self {
            Payload::Held(bytes) => Some(bytes),
            Payload::Streaming(..) => None,
        }
    }

    /// Whether reading the body from the client failed.
    fn client_failed(&self) -> bool {
        match self {
            Payload::Held(_) => false,
            Payload::Streaming(_, failed) => failed.load(Ordering::Relaxed),
        }
    }
}

/// A request body that records whether it ended in an error.
struct Watched {
    inner: Body,
    failed: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &poll {
            self.failed.store(true, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How one try ended.
enum Attempt {
    Response(Response<Body>),
    /// Failed before a response: the flag, the reason, whether the request was not sent at all
    /// (then it is always safe to retry), and what kind of failure for `retryOn`.
    Failed {
        flags: ResponseFlags,
        reason: String,
        unsent: bool,
        kind: Failure,
        status: StatusCode,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Overflow,
    Reset,
    RefusedStream,
    Timeout,
}

/// Sends the request to the route's cluster, retrying as the route says.
pub(crate) async fn forward(
    request: Request<Body>,
    mut target: Forward<'_>,
    active: &Active,
    shared: &Arc<Shared>,
    exchange: &mut Exchange,
) -> Response<Body> {
    let grpc = target.grpc;
    exchange.cluster = target.cluster.to_owned();
    let Some(cluster) = active.clusters.get(target.cluster) else {
        let status = if active.snapshot.blackhole_clusters.contains(target.cluster) {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return local_reply(
            status,
            ResponseFlags::NO_CLUSTER_FOUND,
            active.snapshot.missing_cluster_reason(target.cluster),
            grpc,
        );
    };
    let Some(cluster_request) = cluster.start_request() else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UPSTREAM_OVERFLOW,
            format!(
                "cluster {} is at its maximum of active requests",
                target.cluster
            ),
            grpc,
        );
    };
    let route = target.route;
    let started = Instant::now();
    let deadline = route.timeout.map(|t| started + t);
    let upgrade = target.upgrade.take();
    let work = forward_with_retries(
        request, &target, upgrade, cluster, active, shared, exchange, deadline,
    );
    let response = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(response) => response,
            Err(_) => local_reply(
                StatusCode::GATEWAY_TIMEOUT,
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                format!(
                    "route {} timed out after {:?} waiting for cluster {}",
                    route.name,
                    route.timeout.unwrap_or_default(),
                    target.cluster
                ),
                grpc,
            ),
        },
        None => work.await,
    };
    exchange.upstream_service_time = Some(started.elapsed().as_millis() as u64);
    response.map(|body| UpstreamBody::hold(body, cluster_request))
}

#[allow(clippy::too_many_arguments)]
async fn forward_with_retries(
    request: Request<Body>,
    target: &Forward<'_>,
    mut downstream_upgrade: Option<OnUpgrade>,
    cluster: &Arc<ClusterState>,
    active: &Active,
    shared: &Arc<Shared>,
    exchange: &mut Exchange,
    deadline: Option<Instant>,
) -> Response<Body> {
    let route = target.route;
    let grpc = target.grpc;
    let config = cluster.config();
    let no_retry = RetryPolicy {
        attempts: 0,
        per_try_timeout: None,
        retry_on: RetryOn::default(),
        backoff: Duration::from_millis(25),
    };
    let retry = if downstream_upgrade.is_some() {
        &no_retry
    } else {
        route.retry.as_ref().unwrap_or(&no_retry)
    };
    let (parts, body) = request.into_parts();
    let replayable = retry.attempts > 0 || !route.mirrors.is_empty();
    let mut payload = match Payload::new(body, replayable).await {
        Ok(payload) => payload,
        Err(reply) => return reply,
    };
    if let Some(held) = payload.held() {
        mirror(route, &parts, held, active, shared, target.downstream);
    }
    let RequestHash { hash, set_cookie } = request_hash(
        &config.lb,
        &parts,
        target.downstream.peer,
        target.downstream.local,
    );
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut _retry_guard = None;
    let mut last: Option<Response<Body>> = None;
    // The flags of a failed try awaiting its retry: they describe the answer only if no retry
    // makes it good (as in Envoy, a retried failure leaves no flag).
    let mut failed = ResponseFlags::NONE;
    for attempt in 0..=retry.attempts {
        if attempt > 0 {
            // The previous try is over: only retries in flight count against `maxRetries`.
            _retry_guard = None;
            let Some(guard) = cluster.start_retry() else {
                exchange.note(
                    ResponseFlags::UPSTREAM_OVERFLOW,
                    format!("cluster {} retry budget (maxRetries) is spent", config.name),
                );
                break;
            };
            _retry_guard = Some(guard);
            tokio::time::sleep(backoff(retry.backoff, attempt)).await;
        }
        let endpoint = match cluster.pick(hash, &tried, target.downstream.original_destination) {
            Ok(endpoint) => endpoint,
            Err(why) => {
                let reason = why.reason(&config);
                let flags = if attempt > 0 {
                    ResponseFlags::NO_HEALTHY_UPSTREAM
                        | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
                } else {
                    ResponseFlags::NO_HEALTHY_UPSTREAM
                };
                return local_reply(StatusCode::SERVICE_UNAVAILABLE, flags, reason, grpc);
            }
        };
        let address = endpoint.endpoint().address;
        tried.push(address);
        exchange.upstream_host = Some(address);
        let Some(body) = payload.take() else {
            break;
        };
        let wire = wire_for(
            &config.protocol,
            parts.version,
            downstream_upgrade.is_some(),
        );
        let upstream_request = upstream_request(
            &parts,
            body,
            wire,
            active.upstream_tls.contains_key(&config.name),
        );
        let per_try = retry.per_try_timeout;
        let pool = shared.pools.get(PoolKey {
            address,
            wire,
            tls: active.upstream_tls.get(&config.name).map(|t| t.1.clone()),
            socket: shared.socket_setup(&config),
        });
        let tls = active.upstream_tls.get(&config.name).map(|t| t.0.as_ref());
        let outcome = try_once(
            upstream_request,
            &config,
            &pool,
            &config.pool,
            config.connect_timeout,
            tls,
            per_try,
            deadline,
        )
        .await;
        let (outcome, returned_body) = outcome;
        if let Some(body) = returned_body {
            payload.put_back(body);
        }
        match outcome {
            Attempt::Response(mut response) => {
                let status = response.status();
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u8>().ok());
                cluster.report(endpoint.endpoint(), outcome_of(status));
                let more = attempt < retry.attempts;
                let retriable = retriable_response(&retry.retry_on, status, grpc_status)
                    && payload.held().is_some();
                if more && retriable {
                    exchange.note(
                        ResponseFlags::NONE,
                        format!(
                            "try {} got {} from {address}; retrying",
                            attempt + 1,
                            status.as_u16()
                        ),
                    );
                    last = Some(response);
                    continue;
                }
                if retriable && attempt > 0 {
                    // The answer would be retried if tries remained: Envoy flags it URX.
                    exchange.note(
                        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
                        format!(
                            "retries exhausted: try {} got {} from {address}",
                            attempt + 1,
                            status.as_u16()
                        ),
                    );
                }
                if status == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(downstream_side) = downstream_upgrade.take()
                {
                    let upstream_side = hyper::upgrade::on(&mut response);
                    splice_upgrade(downstream_side, upstream_side, address);
                }
                if let Some(cookie) = &set_cookie {
                    response
                        .headers_mut()
                        .append(header::SET_COOKIE, cookie.clone());
                }
                let response = response.map(|b| UpstreamBody::with_endpoint(b, endpoint));
                return response;
            }
            Attempt::Failed {
                flags,
                reason,
                unsent,
                kind,
                status,
            } => {
                if payload.client_failed() {
                    // The client broke its own request: nothing to hold against the endpoint,
                    // nothing to retry.
                    return local_reply(
                        StatusCode::BAD_REQUEST,
                        ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
                        format!("reading the request body failed; {reason}"),
                        grpc,
                    );
                }
                if matches!(kind, Failure::Connect | Failure::Reset | Failure::Timeout) {
                    cluster.report(endpoint.endpoint(), Outcome::ConnectFailure);
                }
                let more = attempt < retry.attempts;
                let allowed = retriable_failure(&retry.retry_on, kind)
                    || (unsent && kind != Failure::Overflow);
                let can_send = unsent || payload.held().is_some();
                let reason = format!("cluster {}: {reason}", config.name);
                if more && allowed && can_send {
                    exchange.note(ResponseFlags::NONE, reason);
                    failed = flags;
                    continue;
                }
                exchange.note(flags, reason.clone());
                let flags = if attempt > 0 {
                    flags | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
                } else {
                    flags
                };
                return local_reply(status, flags, reason, grpc);
            }
        }
    }
    match last {
        Some(response) => {
            exchange.flags |= ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
            response
        }
        None => local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            exchange.flags | failed | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            if exchange.reason.is_empty() {
                format!("retries to cluster {} exhausted", config.name)
            } else {
                exchange.reason.clone()
            },
            grpc,
        ),
    }
}

fn splice_upgrade(downstream: OnUpgrade, upstream: OnUpgrade, address: SocketAddr) {
    tokio::spawn(async move {
        let (Ok(downstream), Ok(upstream)) = (downstream.await, upstream.await) else {
            tracing::debug!(%address, "a protocol upgrade did not complete");
            return;
        };
        let mut downstream = hyper_util::rt::TokioIo::new(downstream);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
            tracing::debug!(%address, %error, "upgraded connection ended");
        }
    });
}

/// The wire protocol towards the endpoint.
fn wire_for(
    protocol: &crate::snapshot::UpstreamProtocol,
    downstream: Version,
    upgrade: bool,
) -> Wire {
    use crate::snapshot::UpstreamProtocol;
    if upgrade {
        return Wire::Http1;
    }
    match protocol {
        UpstreamProtocol::Http1 => Wire::Http1,
        UpstreamProtocol::Http2 => Wire::Http2,
        UpstreamProtocol::Downstream if downstream == Version::HTTP_2 => Wire::Http2,
        UpstreamProtocol::Downstream => Wire::Http1,
    }
}

/// The request as the endpoint receives it: hop-by-hop headers removed, and the URI in the form
/// the wire protocol wants (origin form and `Host` for HTTP/1.1, scheme and authority for
/// HTTP/2).
fn upstream_request(parts: &Parts, body: Body, wire: Wire, tls: bool) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.headers_mut() = parts.headers.clone();
    let upgrade = parts.headers.contains_key(header::UPGRADE) && wire == Wire::Http1;
    headers::remove_hop_by_hop(request.headers_mut(), upgrade);
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    match wire {
        Wire::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            // An absolute-form target (or an HTTP/2 request) names the authority in the URI;
            // HTTP/1.1 carries it in Host.
            if let Some(authority) = parts.uri.authority()
                && let Ok(host) = HeaderValue::from_str(authority.as_str())
            {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        Wire::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            uri.scheme = Some(if tls {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            });
            uri.authority = parts.uri.authority().cloned().or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|v| http::uri::Authority::try_from(v.as_bytes()).ok())
            });
            request.headers_mut().remove(header::HOST);
        }
    }
    *request.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    request
}

/// One try: lease a connection, send, and wait for the response headers within the try's time.
#[allow(clippy::too_many_arguments)]
async fn try_once(
    request: Request<Body>,
    cluster: &crate::snapshot::Cluster,
    pool: &Arc<crate::upstream::pool::Pool>,
    limits: &crate::snapshot::PoolLimits,
    connect_timeout: Duration,
    tls: Option<&crate::upstream::connect::TlsOrigination>,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
) -> (Attempt, Option<Body>) {
    let address = pool.key().address;
    let lease = match pool.lease(limits, connect_timeout, tls).await {
        Ok(lease) => lease,
        Err(PoolError::Overflow(_, pending)) => {
            let (_, body) = request.into_parts();
            return (
                Attempt::Failed {
                    flags: ResponseFlags::UPSTREAM_OVERFLOW,
                    reason: format!(
                        "connection pool to {address} is full ({pending} requests pending)"
                    ),
                    unsent: true,
                    kind: Failure::Overflow,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                Some(body),
            );
        }
        Err(error) => {
            let (_, body) = request.into_parts();
            return (
                Attempt::Failed {
                    flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                    reason: cluster.connect_failure(address, &error, error.failure()),
                    unsent: true,
                    kind: Failure::Connect,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                Some(body),
            );
        }
    };
    let limit = match (per_try, deadline) {
        (Some(per_try), Some(deadline)) => {
            Some(per_try.min(deadline.saturating_duration_since(Instant::now())))
        }
        (Some(per_try), None) => Some(per_try),
        (None, _) => None,
    };
    let send = send(lease, request);
    let result = match limit {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(result) => result,
            Err(_) => {
                return (
                    Attempt::Failed {
                        flags: ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                        reason: format!(
                            "upstream {address} did not respond within the try timeout {limit:?}"
                        ),
                        unsent: false,
                        kind: Failure::Timeout,
                        status: StatusCode::GATEWAY_TIMEOUT,
                    },
                    None,
                );
            }
        },
        None => send.await,
    };
    match result {
        Ok(response) => (Attempt::Response(response), None),
        Err(SendFailure { error, unsent }) => {
            let refused = is_refused_stream(&error);
            let (body, unsent) = match unsent {
                Some(request) => (Some(request.into_body()), true),
                None => (None, refused),
            };
            (
                Attempt::Failed {
                    flags: ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                    reason: format!("upstream {address} reset the request: {error}"),
                    unsent,
                    kind: if refused {
                        Failure::RefusedStream
                    } else {
                        Failure::Reset
                    },
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                body,
            )
        }
    }
}

struct SendFailure {
    error: hyper::Error,
    /// The request, when hyper never sent it.
    unsent: Option<Request<Body>>,
}

async fn send(lease: Lease, request: Request<Body>) -> Result<Response<Body>, SendFailure> {
    match lease {
        Lease::Http1(mut lease) => match lease.sender.try_send_request(request).await {
            Ok(response) => Ok(response.map(|b| UpstreamBody::pooled(b, lease))),
            Err(mut error) => Err(SendFailure {
                unsent: error.take_message(),
                error: error.into_error(),
            }),
        },
        Lease::Http2(mut sender, streams) => match sender.try_send_request(request).await {
            Ok(response) => Ok(response.map(|b| UpstreamBody::streamed(b, streams))),
            Err(mut error) => Err(SendFailure {
                unsent: error.take_message(),
                error: error.into_error(),
            }),
        },
    }
}

fn is_refused_stream(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = current.source();
    }
    false
}

fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        502..=504 => Outcome::ServerError { gateway: true },
        500..=599 => Outcome::ServerError { gateway: false },
        _ => Outcome::Success,
    }
}

/// Whether a response is retried by Envoy's `retryOn` conditions.
fn retriable_response(retry_on: &RetryOn, status: StatusCode, grpc_status: Option<u8>) -> bool {
    let code = status.as_u16();
    (retry_on.server_error && status.is_server_error())
        || (retry_on.gateway_error && matches!(code, 502..=504))
        || (retry_on.retriable_4xx && code == 409)
        || retry_on.status_codes.contains(&code)
        || grpc_status.is_some_and(|s| s != 0 && retry_on.grpc_statuses.contains(&s))
}

/// Whether a failure before any response is retried.
fn retriable_failure(retry_on: &RetryOn, failure: Failure) -> bool {
    match failure {
        Failure::Connect => {
            retry_on.connect_failure || retry_on.server_error || retry_on.gateway_error
        }
        Failure::Reset => retry_on.reset || retry_on.server_error || retry_on.gateway_error,
        Failure::RefusedStream => {
            retry_on.refused_stream || retry_on.reset || retry_on.server_error
        }
        Failure::Timeout => retry_on.reset || retry_on.server_error || retry_on.gateway_error,
        Failure::Overflow => false,
    }
}

/// Exponential backoff with full jitter: up to `base * 2^(try-1)`, capped at ten times the base.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(10);
    let ceiling = base.saturating_mul(factor.min(BACKOFF_CAP));
    ceiling.mul_f64(fastrand::f64())
}

/// Sends copies of a request to the route's mirrors: best effort, never waited for, and with
/// `-shadow` appended to the host.
fn mirror(
    route: &Route,
    parts: &Parts,
    body: &Bytes,
    active: &Active,
    shared: &Arc<Shared>,
    downstream: &Downstream,
) {
    for mirror in &route.mirrors {
        if !(mirror.percentage >= 100.0 || fastrand::f64() * 100.0 < mirror.percentage) {
            continue;
        }
        let Some(cluster) = active.clusters.get(&mirror.cluster).cloned() else {
            continue;
        };
        let hash = request_hash(
            &cluster.config().lb,
            parts,
            downstream.peer,
            downstream.local,
        );
        let Ok(endpoint) = cluster.pick(hash.hash, &[], downstream.original_destination) else {
            continue;
        };
        let config = cluster.config();
        let mut request = upstream_request(parts, body::full(body.clone()), Wire::Http1, false);
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| {
                let (name, port) = h.rsplit_once(':').map_or((h, None), |(n, p)| (n, Some(p)));
                match port {
                    Some(port) => format!("{name}-shadow:{port}"),
                    None => format!("{name}-shadow"),
                }
            });
        if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            request.headers_mut().insert(header::HOST, host);
        }
        let pool = shared.pools.get(PoolKey {
            address: endpoint.endpoint().address,
            wire: Wire::Http1,
            tls: None,
            socket: shared.socket_setup(&config),
        });
        tokio::spawn(async move {
            let _endpoint = endpoint;
            let Ok(lease) = pool.lease(&config.pool, config.connect_timeout, None).await else {
                return;
            };
            if let Ok(response) = send(lease, request).await {
                let _ = response.into_body().collect().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::HeaderOps;

    #[tokio::test]
    async fn a_streamed_body_that_fails_is_the_clients_failure() {
        let chunks: Vec<Result<http_body::Frame<Bytes>, body::BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"hello"))),
            Err("invalid chunk size".into()),
        ];
        let broken = body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )));
        let mut payload = Payload::new(broken, false).await.ok().unwrap();
        assert!(!payload.client_failed());
        let sent = payload.take().unwrap();
        assert!(sent.collect().await.is_err());
        assert!(payload.client_failed());

        let mut fine = Payload::new(body::full("hello"), false).await.ok().unwrap();
        let sent = fine.take().unwrap();
        assert!(sent.collect().await.is_ok());
        assert!(!fine.client_failed());
    }

    fn weighted(name: &str, weight: u32) -> WeightedCluster {
        WeightedCluster {
            cluster: name.to_owned(),
            weight,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }
    }

    #[test]
    fn only_upgrades_the_proxy_carries_reach_the_upstream() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_static(value));
            }
            map
        };
        let mut websocket = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(upgrade_wanted(Version::HTTP_11, &mut websocket));
        assert_eq!(websocket["upgrade"], "websocket");

        let mut h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        assert!(!upgrade_wanted(Version::HTTP_11, &mut h2c));
        assert!(!h2c.contains_key("upgrade") && !h2c.contains_key("http2-settings"));

        let mut unnamed = headers(&[("upgrade", "websocket")]);
        assert!(!upgrade_wanted(Version::HTTP_11, &mut unnamed));
        assert!(!unnamed.contains_key("upgrade"));

        let mut old = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(!upgrade_wanted(Version::HTTP_10, &mut old));

        let mut plain = headers(&[("connection", "keep-alive")]);
        assert!(!upgrade_wanted(Version::HTTP_11, &mut plain));
        assert_eq!(plain["connection"], "keep-alive");
    }

    #[test]
    fn weights_split_traffic() {
        let clusters = vec![weighted("a", 80), weighted("b", 20)];
        let a = (0..10_000)
            .filter(|_| choose_cluster(&clusters).map(|c| c.cluster.as_str()) == Some("a"))
            .count();
        assert!((7_700..=8_300).contains(&a), "{a}");
        assert_eq!(
            choose_cluster(&[weighted("only", 0)]).unwrap().cluster,
            "only"
        );
        assert!(choose_cluster(&[weighted("a", 0), weighted("b", 0)]).is_none());
    }

    #[test]
    fn retry_conditions() {
        let on = RetryOn {
            gateway_error: true,
            status_codes: vec![409],
            grpc_statuses: vec![14],
            ..RetryOn::default()
        };
        assert!(retriable_response(&on, StatusCode::BAD_GATEWAY, None));
        assert!(!retriable_response(
            &on,
            StatusCode::INTERNAL_SERVER_ERROR,
            None
        ));
        assert!(retriable_response(&on, StatusCode::CONFLICT, None));
        assert!(retriable_response(&on, StatusCode::OK, Some(14)));
        assert!(!retriable_response(&on, StatusCode::OK, Some(0)));
        let connect = RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        };
        assert!(retriable_failure(&connect, Failure::Connect));
        assert!(!retriable_failure(&connect, Failure::Reset));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(25);
        for attempt in 1..20 {
            assert!(backoff(base, attempt) <= base * BACKOFF_CAP);
        }
    }
}
