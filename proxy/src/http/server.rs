//! Serving one HTTP connection: HTTP/1.1 or HTTP/2 (by ALPN, or the HTTP/2 preface for h2c
//! with prior knowledge), with protocol upgrades, header limits, and a graceful close when the
//! proxy drains (`Connection: close` on HTTP/1.1, GOAWAY on HTTP/2).

use std::sync::Arc;

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
    let service = service_fn({
        let served = served.clone();
        move |request| {
            let served = served.clone();
            let answer = handler::handle(request, downstream.clone(), shared.clone());
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
        .max_local_error_reset_streams(Some(256));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    if draining_at_start {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "downstream HTTP connection ended");
                }
                return;
            }
            () = served.notified() => {}
        }
        connection.as_mut().graceful_shutdown();
        if let Err(error) = connection.as_mut().await {
            tracing::debug!(%peer, %error, "downstream HTTP connection ended while draining");
        }
        return;
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "downstream HTTP connection ended");
                }
                return;
            }
            changed = draining.changed() => {
                if changed.is_err() || *draining.borrow() {
                    connection.as_mut().graceful_shutdown();
                    // Keep serving until the connection finishes.
                    if let Err(error) = connection.as_mut().await {
                        tracing::debug!(%peer, %error, "downstream HTTP connection ended while draining");
                    }
                    return;
                }
            }
        }
    }
}
