//! The operator's endpoints, on Istio's ports:
//!
//! - admin (localhost only, 15000): `/config_dump` (the live snapshot with its version and the
//!   state of every endpoint), `/stats/prometheus`, `/healthz/ready`, and `POST /logging?level=`
//!   to change the log filter;
//! - metrics (15020): `/stats/prometheus`, Istio's standard metrics;
//! - health (15021): `/healthz/ready`, 200 once configuration is served and until draining starts,
//!   503 otherwise (serving the last-known-good snapshot, or with DNS answers from before the
//!   start, is ready: the body says what is degraded); `/healthz/details` (JSON), what is
//!   served and why, and what is degraded.
//!
//! These are small HTTP/1.1 servers of their own, apart from the proxy's listeners.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strait_proxy::Proxy;

use crate::last_good::ServingStatus;
use tokio::net::TcpListener;

/// Changes the program's log filter (`POST /logging?level=debug`).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the endpoints report on.
pub struct AdminState {
    pub proxy: Arc<Proxy>,
    /// True once a configuration is served, false again when draining starts.
    pub ready: AtomicBool,
    pub set_log_level: SetLogLevel,
    /// What is served and why (the proxy roles).
    pub status: Option<Arc<ServingStatus>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// Which endpoints a server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    Admin,
    Metrics,
    Health,
}

/// Binds `address` and serves `endpoints` on it until the process ends.
pub async fn start(
    endpoints: Endpoints,
    address: SocketAddr,
    state: Arc<AdminState>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the {endpoints:?} endpoints on {address}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(endpoints, &request, &state)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond(
    endpoints: Endpoints,
    request: &Request<Incoming>,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (endpoints, request.method(), path) {
        (Endpoints::Admin | Endpoints::Health, &Method::GET, "/healthz/ready") => {
            let mut body = match state.ready.load(Ordering::Relaxed) {
                true => "ready\n".to_owned(),
                false => "not ready\n".to_owned(),
            };
            if let Some(details) = state.status.as_ref().map(|s| s.details()) {
                for line in details.reason.iter().chain(&details.degraded) {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            match state.ready.load(Ordering::Relaxed) {
                true => reply(StatusCode::OK, "text/plain", body),
                false => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body),
            }
        }
        (Endpoints::Admin | Endpoints::Health, &Method::GET, "/healthz/details") => {
            let mut details = serde_json::json!({"ready": state.ready.load(Ordering::Relaxed)});
            if let Some(status) = &state.status
                && let (Some(map), Ok(serde_json::Value::Object(more))) = (
                    details.as_object_mut(),
                    serde_json::to_value(status.details()),
                )
            {
                map.extend(more);
            }
            reply(StatusCode::OK, "application/json", details.to_string())
        }
        (Endpoints::Admin | Endpoints::Metrics, &Method::GET, "/stats/prometheus") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.proxy.metrics(),
        ),
        (Endpoints::Admin, &Method::GET, "/config_dump") => {
            let dump = state.proxy.config_dump();
            let text = serde_json::to_string_pretty(&dump).unwrap_or_default();
            reply(StatusCode::OK, "application/json", text)
        }
        (Endpoints::Admin, &Method::POST, "/logging") => {
            let level = request
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("level="));
            match level.map(|level| (state.set_log_level)(level)) {
                Some(Ok(())) => reply(StatusCode::OK, "text/plain", "log level changed\n"),
                Some(Err(error)) => {
                    reply(StatusCode::BAD_REQUEST, "text/plain", format!("{error}\n"))
                }
                None => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "POST /logging?level=FILTER\n",
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
