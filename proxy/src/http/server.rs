//! Serving one HTTP connection: HTTP/1.1 or HTTP/2 (by ALPN, or the HTTP/2 preface for h2c
//! with prior knowledge), with protocol upgrades, header limits, and a graceful close when the
//! proxy drains (`Connection: close` on HTTP/1.1, GOAWAY on HTTP/2).
//!
//! A connection that does not send its first request's headers within the header read timeout
//! is closed (hyper times HTTP/1.1 headers itself, but not the bytes that tell HTTP/1.1 from
//! the HTTP/2 preface, nor HTTP/2 at all), and an HTTP/2 client that does not answer PINGs is
//! let go, whatever it stopped reading for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::handler;
use crate::runtime::{Downstream, Shared};

/// HTTP/2 streams one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves requests on `io` until the client closes it or the proxy drains.
pub(crate) async fn serve<IO>(io: IO, downstream: Arc<Downstream>, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = shared.draining.subscribe();
    // A connection that arrives while draining is served one request, then asked to go.
    let draining_at_start = *draining.borrow();
    let served = Arc::new(tokio::sync::Notify::new());
    let options = shared.options.clone();
    let peer = downstream.peer;
    let started = Arc::new(AtomicBool::new(false));
    let service = service_fn({
        let served = served.clone();
        let started = started.clone();
        move |request| {
            started.store(true, Ordering::Relaxed);
            let served = served.clone();
            // Boxed: the request's future is large, and hyper moves what the service returns.
            let answer = Box::pin(handler::handle(request, downstream.clone(), shared.clone()));
            async move {
                let response = answer.await;
                served.notify_one();
                response
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(!draining_at_start)
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(options.max_header_list_bytes)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(options.http2_keepalive_interval)
        .keep_alive_timeout(options.http2_keepalive_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let first_request = tokio::time::sleep(options.header_read_timeout);
    tokio::pin!(first_request);
    let mut awaiting_first = true;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "downstream HTTP connection ended");
                }
                return;
            }
            () = &mut first_request, if awaiting_first => {
                awaiting_first = false;
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request within the header read timeout; closing");
                    return;
                }
            }
            // A connection that arrived while draining is asked to go after its first answer.
            () = served.notified(), if draining_at_start => break,
            changed = draining.changed(), if !draining_at_start => {
                if changed.is_err() || *draining.borrow() {
                    break;
                }
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    // Keep serving until the connection finishes.
    if let Err(error) = connection.as_mut().await {
        tracing::debug!(%peer, %error, "downstream HTTP connection ended while draining");
    }
}
