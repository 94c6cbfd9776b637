//! Pooled HTTP connections to endpoints.
//!
//! A pool is keyed by everything that makes two connections interchangeable: the address, the
//! protocol, and the TLS settings (SNI, expected names, client certificate), never by address
//! alone: every remote service shares a gateway's `:15443`, and egress hosts differ only by
//! SNI. HTTP/1.1 connections serve one request at a time and go back to the pool when the
//! response body ends; HTTP/2 connections are shared, and another is opened when one carries
//! `MAX_STREAMS_PER_CONNECTION` requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use super::connect::{ConnectError, TlsOrigination, connect};
use crate::http::body::Body;
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
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<(http1::SendRequest<Body>, Instant)>,
    shared: Vec<SharedConnection>,
}

/// An HTTP/2 connection and the requests it carries.
#[derive(Debug, Clone)]
struct SharedConnection {
    sender: http2::SendRequest<Body>,
    streams: Arc<AtomicU32>,
}

/// A connection leased for one request.
#[derive(Debug)]
pub(crate) enum Lease {
    /// Goes back to the pool with `release` once the response has been read.
    Http1(http1::SendRequest<Body>, Arc<Pool>),
    Http2(http2::SendRequest<Body>, StreamGuard),
}

/// Counts a request on an HTTP/2 connection until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<AtomicU32>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        self.state.lock().is_ok_and(|s| {
            !s.idle.is_empty()
                || s.shared
                    .iter()
                    .any(|c| c.streams.load(Ordering::Acquire) < MAX_STREAMS_PER_CONNECTION)
        })
    }

    fn reuse(self: &Arc<Self>, limits: &PoolLimits) -> Option<Lease> {
        let mut state = self.state.lock().ok()?;
        match self.key.wire {
            Wire::Http1 => {
                while let Some((sender, since)) = state.idle.pop() {
                    let expired = limits.idle_timeout.is_some_and(|t| since.elapsed() >= t);
                    if sender.is_ready() && !expired {
                        return Some(Lease::Http1(sender, self.clone()));
                    }
                }
                None
            }
            Wire::Http2 => {
                state.shared.retain(|c| !c.sender.is_closed());
                let connection = state
                    .shared
                    .iter()
                    .filter(|c| c.streams.load(Ordering::Acquire) < MAX_STREAMS_PER_CONNECTION)
                    .min_by_key(|c| c.streams.load(Ordering::Acquire))?;
                connection.streams.fetch_add(1, Ordering::AcqRel);
                Some(Lease::Http2(
                    connection.sender.clone(),
                    StreamGuard(connection.streams.clone()),
                ))
            }
        }
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
        let address = self.key.address;
        let stream = connect(address, connect_timeout, limits.tcp_keepalive.as_ref(), tls).await?;
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
                Ok(Lease::Http1(sender, self.clone()))
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
                let streams = Arc::new(AtomicU32::new(1));
                if let Ok(mut state) = self.state.lock() {
                    state.shared.push(SharedConnection {
                        sender: sender.clone(),
                        streams: streams.clone(),
                    });
                }
                Ok(Lease::Http2(sender, StreamGuard(streams)))
            }
        }
    }

    /// Puts an HTTP/1.1 connection back once it can take another request.
    pub(crate) fn release(self: Arc<Self>, mut sender: http1::SendRequest<Body>) {
        tokio::spawn(async move {
            if sender.ready().await.is_ok()
                && let Ok(mut state) = self.state.lock()
            {
                state.idle.push((sender, Instant::now()));
            }
            self.released.notify_one();
        });
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
