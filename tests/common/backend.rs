//! Real HTTP backends for end-to-end tests: hyper servers speaking HTTP/1.1 and HTTP/2 (h2c
//! with prior knowledge, or h2 by ALPN over TLS) on loopback, that answer with who they are and
//! what they received, and whose behaviour a test can change while they run.
//!
//! Every answer carries `x-backend: NAME` and a JSON body: `backend`, `method`, `path` (with the
//! query), `version`, `authority`, `headers` (lowercase names; repeated values joined by `,`)
//! and `body_bytes`. A request may ask for a behaviour with headers: `x-test-status: 503`,
//! `x-test-delay-ms: 200`, `x-test-body-bytes: 100000` (a body of that size). The backend's
//! `status` and `delay` override every request while set.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What a running backend shares with the test.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Requests being handled now.
    pub active: AtomicUsize,
    /// When non-zero, every request is answered with this status.
    pub status: AtomicU16,
    /// Milliseconds every request waits before it is answered.
    pub delay_ms: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// The tasks serving accepted connections (`kill` ends them).
    connection_tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A backend on loopback; stops when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// A plaintext backend (HTTP/1.1 and h2c) on a free port.
    pub async fn start(name: &str) -> Backend {
        Backend::serve(name, "127.0.0.1:0".parse().unwrap(), None).await
    }

    /// A plaintext backend on a given address (to restart one on the same port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        Backend::serve(name, addr, None).await
    }

    /// A TLS backend (h2 and http/1.1 by ALPN) presenting `config`'s certificate.
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Backend {
        Backend::serve(
            name,
            "127.0.0.1:0".parse().unwrap(),
            Some(TlsAcceptor::from(config)),
        )
        .await
    }

    async fn serve(name: &str, addr: SocketAddr, tls: Option<TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        let name_owned = name.to_owned();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let (name, state, tls) = (name_owned.clone(), shared.clone(), tls.clone());
                let served = tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (name, state) = (name.clone(), state.clone());
                        async move { Ok::<_, Infallible>(answer(&name, &state, request).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
                if let Ok(mut tasks) = shared.connection_tasks.lock() {
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(served.abort_handle());
                }
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            state,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Answers every request with `status` (0 restores normal answers).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops accepting and closes the listener.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Stops like a process that died: closes the listener and every connection it accepted
    /// (a peer's pooled connections see them close).
    pub fn kill(&self) {
        self.task.abort();
        if let Ok(mut tasks) = self.state.connection_tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    state: &BackendState,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    state.active.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut delay = state.delay_ms.load(Ordering::Relaxed);
    if let Some(ms) = header("x-test-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        delay = delay.max(ms);
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut status = state.status.load(Ordering::Relaxed);
    if status == 0 {
        status = header("x-test-status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(key.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| header("host"))
        .unwrap_or_default();
    let echo = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "authority": authority,
        "headers": headers,
        "body_bytes": body.len(),
    });
    let payload = match header("x-test-body-bytes").and_then(|v| v.parse::<usize>().ok()) {
        Some(size) => Bytes::from(vec![b'x'; size]),
        None => Bytes::from(echo.to_string()),
    };
    let mut response = Response::new(Full::new(payload));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert("x-backend", name.parse().unwrap());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    state.active.fetch_sub(1, Ordering::Relaxed);
    state.requests.fetch_add(1, Ordering::Relaxed);
    response
}
