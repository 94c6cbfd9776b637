//! A backend that keeps every request it receives (method, path, authority, headers), for tests
//! that must see requests whose responses nobody reads, such as mirrored copies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the recorder saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// With the query.
    pub path: String,
    /// `:authority` for HTTP/2, `Host` for HTTP/1.
    pub authority: String,
    /// Lowercase names; repeated values joined by `,`.
    pub headers: BTreeMap<String, String>,
}

/// A recording backend on loopback answering every request with `status`; stops when dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(status: u16) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let _ = body.collect().await;
                            let mut headers: BTreeMap<String, String> = BTreeMap::new();
                            for (name, value) in &parts.headers {
                                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                                headers
                                    .entry(name.as_str().to_owned())
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
                                .or_else(|| headers.get("host").cloned())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Recorded {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_owned(),
                                authority,
                                headers,
                            });
                            let mut response =
                                Response::new(Full::new(Bytes::from_static(b"recorded")));
                            *response.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (up to `timeout`) and returns what arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
