//! Pooled HTTP connections to endpoints.
//!
//! A pool is keyed by everything that makes two connections interchangeable: the address, the
//! protocol, and the TLS settings (SNI, expected names, client certificate), never by address
//! alone: every remote service shares a gateway's `:15443`, and egress hosts differ only by
//! SNI. HTTP/1.1 connections serve one request at a time and go back to the pool when the
//! response body ends; HTTP/2 connections are shared, and another is opened when one carries
//! `MAX_STREAMS_PER_CONNECTION` requests.
//!
//! A connection that has carried `maxRequestsPerConnection` requests is closed once they are
//! done, and one idle for longer than the cluster's `idleTimeout` is closed by a task that
//! runs while the pool has idle connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use super::connect::{ConnectError, SocketSetup, TlsOrigination, connect};
use crate::http::body::Body;
use crate::snapshot::ConnectFailure;
use crate::snapshot::PoolLimits;

/// Requests one HTTP/2 connection carries before another is opened.
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The wire protocol of a pooled connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Wire {
    Http1,
    Http2,
}

/// What makes pooled connections interchangeable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) address: SocketAddr,
    pub(crate) wire: Wire,
    /// The TLS settings' identity (SNI, CA, names, client certificate), if TLS is originated.
    pub(crate) tls: Option<String>,
    pub(crate) socket: SocketSetup,
}

/// Every pool of the proxy.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub(crate) fn get(&self, key: PoolKey) -> Arc<Pool> {
        let Ok(mut pools) = self.pools.lock() else {
            return Arc::new(Pool::new(key));
        };
        pools
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Pool::new(key)))
            .clone()
    }
}

/// Why no connection was leased.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
    #[error("the connection pool for {0} is full: {1} pending requests")]
    Overflow(SocketAddr, u32),
}

impl PoolError {
    /// What kind of failure this was (see [`ConnectError::failure`]).
    pub(crate) fn failure(&self) -> ConnectFailure {
        match self {
            PoolError::Connect(error) => error.failure(),
            PoolError::Handshake(..) | PoolError::Overflow(..) => ConnectFailure::Other,
        }
    }
}

/// The connections to one endpoint with one set of settings.
#[derive(Debug)]
pub(crate) struct Pool {
    key: PoolKey,
    state: Mutex<PoolState>,
    /// Woken when a connection comes back or closes.
    released: Notify,
    /// Open connections (counted until the connection task ends).
    open: Arc<AtomicU32>,
    pending: AtomicU32,
    /// HTTP/2 connections being established: requests wait for one rather than each opening
    /// its own, since one connection carries many streams.
    connecting: AtomicU32,
    /// Wakes the task closing idle connections when one expires before it planned to wake.
    reschedule: Notify,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<IdleConnection>,
    shared: Vec<SharedConnection>,
    /// When the task closing idle connections wakes next; `None` when no such task runs.
    next_close: Option<Instant>,
}

/// What decides a connection's life after a request: `maxRequestsPerConnection` and
/// `idleTimeout`, from the cluster that opened it.
#[derive(Clone, Copy, Debug)]
struct Lifetime {
    max_requests: Option<u32>,
    idle_timeout: Option<Duration>,
}

impl Lifetime {
    fn of(limits: &PoolLimits) -> Lifetime {
        Lifetime {
            max_requests: limits.max_requests_per_connection,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Whether a connection that carried `requests` may carry another.
    fn allows(&self, requests: u32) -> bool {
        self.max_requests.is_none_or(|max| requests < max)
    }
}

/// An HTTP/1.1 connection waiting in the pool.
#[derive(Debug)]
struct IdleConnection {
    sender: http1::SendRequest<Body>,
    since: Instant,
    requests: u32,
    lifetime: Lifetime,
}

impl IdleConnection {
    fn expires(&self) -> Option<Instant> {
        self.lifetime.idle_timeout.map(|t| self.since + t)
    }
}

/// An HTTP/2 connection and the requests it carries.
#[derive(Debug, Clone)]
struct SharedConnection {
    sender: http2::SendRequest<Body>,
    streams: Arc<Streams>,
    lifetime: Lifetime,
}

impl SharedConnection {
    /// Whether the connection may take another request now.
    fn available(&self) -> bool {
        self.streams.active.load(Ordering::Acquire) < MAX_STREAMS_PER_CONNECTION
            && self
                .lifetime
                .allows(self.streams.opened.load(Ordering::Acquire))
    }

    /// Whether the connection has carried all it may and has nothing in flight.
    fn spent(&self) -> bool {
        !self
            .lifetime
            .allows(self.streams.opened.load(Ordering::Acquire))
            && self.streams.active.load(Ordering::Acquire) == 0
    }

    /// When the connection, idle since its last request ended, is to be closed.
    fn expires(&self) -> Option<Instant> {
        if self.streams.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.streams.idle_since.lock().map(|s| *s).ok()?;
        self.lifetime.idle_timeout.map(|t| since + t)
    }
}

/// The requests of an HTTP/2 connection.
#[derive(Debug)]
struct Streams {
    /// In flight now.
    active: AtomicU32,
    /// Carried so far.
    opened: AtomicU32,
    /// When the last request in flight ended.
    idle_since: Mutex<Instant>,
}

impl Streams {
    fn start(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.opened.fetch_add(1, Ordering::AcqRel);
    }
}

/// A connection leased for one request.
#[derive(Debug)]
pub(crate) enum Lease {
    /// Goes back to the pool with `release` once the response has been read.
    Http1(Http1Lease),
    Http2(http2::SendRequest<Body>, StreamGuard),
}

/// An HTTP/1.1 connection out of its pool for one request.
#[derive(Debug)]
pub(crate) struct Http1Lease {
    pub(crate) sender: http1::SendRequest<Body>,
    /// Requests the connection has carried, this one included.
    requests: u32,
    lifetime: Lifetime,
    pool: Arc<Pool>,
}

impl Http1Lease {
    /// Puts the connection back once it can take another request, or closes it when it has
    /// carried `maxRequestsPerConnection`.
    pub(crate) fn release(self) {
        let Http1Lease {
            mut sender,
            requests,
            lifetime,
            pool,
        } = self;
        if !lifetime.allows(requests) {
            drop(sender);
            return;
        }
        if sender.is_ready() {
            pool.put_back(sender, requests, lifetime);
            return;
        }
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_back(sender, requests, lifetime);
            } else {
                pool.released.notify_one();
            }
        });
    }
}

/// Counts a request on an HTTP/2 connection until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    streams: Arc<Streams>,
    lifetime: Lifetime,
    pool: std::sync::Weak<Pool>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.streams.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = Instant::now();
            if let Ok(mut since) = self.streams.idle_since.lock() {
                *since = now;
            }
            let Some(pool) = self.pool.upgrade() else {
                return;
            };
            if !self
                .lifetime
                .allows(self.streams.opened.load(Ordering::Acquire))
            {
                // It has carried `maxRequestsPerConnection`: close it now.
                if let Ok(mut state) = pool.state.lock() {
                    state.shared.retain(|c| !c.spent());
                }
            } else if let Some(timeout) = self.lifetime.idle_timeout {
                pool.close_idle_at(now + timeout);
            }
        }
    }
}

impl Pool {
    fn new(key: PoolKey) -> Pool {
        Pool {
            key,
            state: Mutex::new(PoolState::default()),
            released: Notify::new(),
            open: Arc::new(AtomicU32::new(0)),
            pending: AtomicU32::new(0),
            connecting: AtomicU32::new(0),
            reschedule: Notify::new(),
        }
    }

    pub(crate) fn key(&self) -> &PoolKey {
        &self.key
    }

    /// A connection ready to carry a request: an idle or shared one, else a new one within
    /// `limits`, waiting for one to come back when the pool is full.
    pub(crate) async fn lease(
        self: &Arc<Self>,
        limits: &PoolLimits,
        connect_timeout: Duration,
        tls: Option<&TlsOrigination>,
    ) -> Result<Lease, PoolError> {
        loop {
            if let Some(lease) = self.reuse(limits) {
                return Ok(lease);
            }
            if self.key.wire == Wire::Http2 && self.connecting.load(Ordering::Acquire) > 0 {
                let released = self.released.notified();
                if !self.reuse_possible() && self.connecting.load(Ordering::Acquire) > 0 {
                    released.await;
                }
                continue;
            }
            let max = limits.max_connections.unwrap_or(u32::MAX);
            let reserved = self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok();
            if reserved {
                return self.open_connection(limits, connect_timeout, tls).await;
            }
            let pending = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
            let _pending = PendingGuard(&self.pending);
            if pending > limits.max_pending_requests.unwrap_or(u32::MAX) {
                return Err(PoolError::Overflow(self.key.address, pending - 1));
            }
            // Wait for a connection to come back or close, then look again.
            let released = self.released.notified();
            if self.reuse_possible() {
                continue;
            }
            released.await;
        }
    }

    fn reuse_possible(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| !s.idle.is_empty() || s.shared.iter().any(SharedConnection::available))
    }

    fn reuse(self: &Arc<Self>, limits: &PoolLimits) -> Option<Lease> {
        let mut state = self.state.lock().ok()?;
        match self.key.wire {
            Wire::Http1 => {
                while let Some(idle) = state.idle.pop() {
                    let expired = limits
                        .idle_timeout
                        .is_some_and(|t| idle.since.elapsed() >= t);
                    if idle.sender.is_ready() && !expired {
                        return Some(Lease::Http1(Http1Lease {
                            sender: idle.sender,
                            requests: idle.requests.saturating_add(1),
                            lifetime: Lifetime::of(limits),
                            pool: self.clone(),
                        }));
                    }
                }
                None
            }
            Wire::Http2 => {
                state.shared.retain(|c| !c.sender.is_closed() && !c.spent());
                let connection = state
                    .shared
                    .iter()
                    .filter(|c| c.available())
                    .min_by_key(|c| c.streams.active.load(Ordering::Acquire))?;
                connection.streams.start();
                Some(Lease::Http2(
                    connection.sender.clone(),
                    StreamGuard {
                        streams: connection.streams.clone(),
                        lifetime: connection.lifetime,
                        pool: Arc::downgrade(self),
                    },
                ))
            }
        }
    }

    /// Makes an HTTP/1.1 connection ready for another request available to the next lease.
    fn put_back(
        self: &Arc<Self>,
        sender: http1::SendRequest<Body>,
        requests: u32,
        lifetime: Lifetime,
    ) {
        let now = Instant::now();
        if let Ok(mut state) = self.state.lock() {
            state.idle.push(IdleConnection {
                sender,
                since: now,
                requests,
                lifetime,
            });
        }
        self.released.notify_one();
        if let Some(timeout) = lifetime.idle_timeout {
            self.close_idle_at(now + timeout);
        }
    }

    /// Makes sure a connection that came idle is closed at `expires` if still idle then: by
    /// the task that closes this pool's idle connections, started when none runs and woken
    /// when it would wake later.
    fn close_idle_at(self: &Arc<Self>, expires: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match state.next_close {
            Some(planned) if planned <= expires => {}
            Some(_) => {
                state.next_close = Some(expires);
                self.reschedule.notify_one();
            }
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                state.next_close = Some(expires);
                let pool = self.clone();
                runtime.spawn(async move {
                    while let Some(next) = pool.close_idle(Instant::now()) {
                        tokio::select! {
                            () = tokio::time::sleep_until(next.into()) => {}
                            () = pool.reschedule.notified() => {}
                        }
                    }
                });
            }
        }
    }

    /// Closes the connections idle past their timeout (by dropping the pool's handles to
    /// them) and returns when the next one expires; `None` ends the task that calls this.
    fn close_idle(&self, now: Instant) -> Option<Instant> {
        let Ok(mut state) = self.state.lock() else {
            return None;
        };
        state
            .idle
            .retain(|c| c.expires().is_none_or(|at| at > now) && !c.sender.is_closed());
        state.shared.retain(|c| {
            !c.sender.is_closed() && !c.spent() && c.expires().is_none_or(|at| at > now)
        });
        let next = state
            .idle
            .iter()
            .filter_map(IdleConnection::expires)
            .chain(state.shared.iter().filter_map(SharedConnection::expires))
            .min();
        // Under the lock, so that a connection coming idle after this starts a new task.
        state.next_close = next;
        next
    }

    async fn open_connection(
        self: &Arc<Self>,
        limits: &PoolLimits,
        connect_timeout: Duration,
        tls: Option<&TlsOrigination>,
    ) -> Result<Lease, PoolError> {
        // The slot reserved in `open` is released when the connection task ends, or here on
        // failure.
        let slot = OpenSlot {
            open: self.open.clone(),
            pool: Arc::downgrade(self),
        };
        let _connecting = (self.key.wire == Wire::Http2).then(|| Connecting::new(self));
        let address = self.key.address;
        let stream = connect(
            address,
            connect_timeout,
            limits.tcp_keepalive.as_ref(),
            tls,
            self.key.socket,
        )
        .await?;
        let wire = match stream.alpn() {
            Some(b"h2") => Wire::Http2,
            Some(_) => Wire::Http1,
            None => self.key.wire,
        };
        let io = TokioIo::new(stream);
        match wire {
            Wire::Http1 => {
                let (sender, connection) = http1::Builder::new()
                    .handshake::<_, Body>(io)
                    .await
                    .map_err(|e| PoolError::Handshake(address, e))?;
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(error) = connection.with_upgrades().await {
                        tracing::debug!(%address, %error, "upstream HTTP/1.1 connection ended");
                    }
                });
                Ok(Lease::Http1(Http1Lease {
                    sender,
                    requests: 1,
                    lifetime: Lifetime::of(limits),
                    pool: self.clone(),
                }))
            }
            Wire::Http2 => {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .handshake::<_, Body>(io)
                    .await
                    .map_err(|e| PoolError::Handshake(address, e))?;
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(error) = connection.await {
                        tracing::debug!(%address, %error, "upstream HTTP/2 connection ended");
                    }
                });
                let streams = Arc::new(Streams {
                    active: AtomicU32::new(1),
                    opened: AtomicU32::new(1),
                    idle_since: Mutex::new(Instant::now()),
                });
                if let Ok(mut state) = self.state.lock() {
                    state.shared.push(SharedConnection {
                        sender: sender.clone(),
                        streams: streams.clone(),
                        lifetime: Lifetime::of(limits),
                    });
                }
                Ok(Lease::Http2(
                    sender,
                    StreamGuard {
                        streams,
                        lifetime: Lifetime::of(limits),
                        pool: Arc::downgrade(self),
                    },
                ))
            }
        }
    }
}

/// Counts an HTTP/2 connection as being established; when it is done (or failed), requests
/// waiting for it look again.
struct Connecting<'a>(&'a Pool);

impl<'a> Connecting<'a> {
    fn new(pool: &'a Pool) -> Connecting<'a> {
        pool.connecting.fetch_add(1, Ordering::AcqRel);
        Connecting(pool)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in the pool's count; freed when the connection ends.
struct OpenSlot {
    open: Arc<AtomicU32>,
    pool: std::sync::Weak<Pool>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(pool) = self.pool.upgrade() {
            pool.released.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_requests_per_connection_bounds_what_a_connection_carries() {
        let once = Lifetime::of(&PoolLimits {
            max_requests_per_connection: Some(1),
            ..PoolLimits::default()
        });
        assert!(!once.allows(1), "1 disables keep-alive");
        let three = Lifetime {
            max_requests: Some(3),
            idle_timeout: None,
        };
        assert!(three.allows(2) && !three.allows(3));
        assert!(Lifetime::of(&PoolLimits::default()).allows(u32::MAX - 1));
    }
}
