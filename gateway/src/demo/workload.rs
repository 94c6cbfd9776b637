//! The demo's applications: a small HTTP echo server per workload that says who it is and who
//! called it (the SPIFFE ID its sidecar put last in `X-Forwarded-Client-Cert`), and that calls
//! on through its sidecar's explicit HTTP proxy when asked to (`GET /call/HOST[:PORT]/PATH`).
//! A workload can be stopped and started again, as a crashed and restarted pod would be; its
//! open connections go with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one call through a proxy may take, connection to last byte.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One application: its name, where it listens, and the sidecar proxy it calls out through.
#[derive(Debug)]
pub struct Workload {
    /// `CLUSTER/NAME`, as the console addresses it.
    pub name: String,
    pub listen: SocketAddr,
    /// The sidecar's explicit HTTP proxy; `None` for a workload outside the mesh.
    pub proxy: Option<SocketAddr>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Workload {
    pub fn new(name: &str, listen: SocketAddr, proxy: Option<SocketAddr>) -> Arc<Workload> {
        Arc::new(Workload {
            name: name.to_owned(),
            listen,
            proxy,
            server: Mutex::new(None),
        })
    }

    /// Binds and serves; a running workload stays as it is.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("{}: binding {}", self.name, self.listen))?;
        let workload = self.clone();
        let server = tokio::spawn(async move {
            // Dropped with the task when the workload stops: its connections are aborted too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve_connection(workload.clone(), stream));
                        }
                        Err(error) => {
                            tracing::warn!(workload = %workload.name, "accept: {error}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        if let Some(old) = self.lock().replace(server) {
            old.abort();
        }
        Ok(())
    }

    /// Stops listening and closes every open connection.
    pub fn stop(&self) {
        if let Some(server) = self.lock().take() {
            server.abort();
        }
    }

    pub fn running(&self) -> bool {
        self.lock().as_ref().is_some_and(|s| !s.is_finished())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn serve_connection(workload: Arc<Workload>, stream: TcpStream) {
    let service = service_fn(move |request| {
        let workload = workload.clone();
        async move { Ok::<_, Infallible>(answer(&workload, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What an echo answers: who it is, who called it, and what it called.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub workload: String,
    pub cluster: String,
    pub address: String,
    /// The SPIFFE ID its sidecar verified (the last `X-Forwarded-Client-Cert` element).
    pub caller: Option<String>,
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
}

/// A call on through the sidecar, and what came back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The called side's answer: another echo's, or whatever text a proxy answered with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Echo(Box<Answer>),
    Text(String),
}

/// The workload's answer (for `/call/...`, the called service's status becomes its status).
async fn answer(workload: &Workload, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (cluster, name) = workload
        .name
        .split_once('/')
        .unwrap_or(("", &workload.name));
    let mut answer = Answer {
        workload: name.to_owned(),
        cluster: cluster.to_owned(),
        address: workload.listen.to_string(),
        caller: request
            .headers()
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .and_then(caller_from_xfcc),
        request: format!("{} {path}", request.method()),
        call: None,
    };
    let mut status = StatusCode::OK;
    if let Some(target) = path.strip_prefix("/call/") {
        let (called, call) = call(workload, target).await;
        status = called;
        answer.call = Some(call);
    }
    let text = serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n";
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `HOST[:PORT]/PATH` called through the workload's sidecar; the status to answer with and
/// what to show of the call.
async fn call(workload: &Workload, target: &str) -> (StatusCode, Call) {
    let (authority, rest) = target.split_once('/').unwrap_or((target, ""));
    let url = format!("http://{authority}/{rest}");
    let failed = |status, error: String| {
        let call = Call {
            url: url.clone(),
            status: None,
            answer: None,
            error: Some(error),
        };
        (status, call)
    };
    let Some(proxy) = workload.proxy else {
        return failed(
            StatusCode::BAD_REQUEST,
            "this workload has no sidecar to call through".to_owned(),
        );
    };
    match get(proxy, &url).await {
        Ok((status, body)) => {
            let answer = serde_json::from_slice::<Answer>(&body).map_or_else(
                |_| Reply::Text(String::from_utf8_lossy(&body).trim().to_owned()),
                |echo| Reply::Echo(Box::new(echo)),
            );
            let call = Call {
                url,
                status: Some(status.as_u16()),
                answer: Some(answer),
                error: None,
            };
            (status, call)
        }
        Err(error) => failed(StatusCode::BAD_GATEWAY, format!("{error:#}")),
    }
}

/// The SPIFFE ID of the last element of an `X-Forwarded-Client-Cert` value (the one the
/// receiving sidecar added: the verified peer).
fn caller_from_xfcc(xfcc: &str) -> Option<String> {
    let last = xfcc.rsplit(',').next()?;
    last.split(';')
        .find_map(|pair| pair.strip_prefix("URI="))
        .map(|uri| uri.trim_matches('"').to_owned())
}

/// `GET url` sent to `via` on a new connection: in absolute form (`http://HOST/...`) to a
/// proxy, or in origin form (`/...`) to a server; the status and the body.
pub async fn get(via: SocketAddr, url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    tokio::time::timeout(CALL_TIMEOUT, send(via, Method::GET, url))
        .await
        .with_context(|| format!("GET {url} via {via}: no answer within {CALL_TIMEOUT:?}"))?
}

async fn send(via: SocketAddr, method: Method, url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url:?}"))?;
    let host = match uri.authority() {
        Some(authority) => authority.to_string(),
        None => via.to_string(),
    };
    let stream = TcpStream::connect(via)
        .await
        .with_context(|| format!("connecting to {via}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, host)
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The console's workloads, by `CLUSTER/NAME`.
#[derive(Debug, Default)]
pub struct Workloads(pub Vec<Arc<Workload>>);

impl Workloads {
    fn find(&self, name: &str) -> Option<&Arc<Workload>> {
        self.0.iter().find(|w| w.name == name)
    }

    fn listing(&self) -> String {
        self.0
            .iter()
            .map(|w| {
                let state = if w.running() { "running" } else { "stopped" };
                format!("{:<28} {state:<8} {}\n", w.name, w.listen)
            })
            .collect()
    }
}

/// The console: `GET /` lists the workloads, `POST /workloads/CLUSTER/NAME/stop|start` stops
/// or starts one.
pub async fn serve_console(listener: TcpListener, workloads: Arc<Workloads>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let workloads = workloads.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let workloads = workloads.clone();
                async move { Ok::<_, Infallible>(console(&workloads, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn console(workloads: &Workloads, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let (status, text) = match (request.method(), path) {
        (&Method::GET, "/") => (StatusCode::OK, workloads.listing()),
        (method, _) if path.starts_with("/workloads/") => {
            match console_action(workloads, method, path).await {
                Ok(text) => (StatusCode::OK, text),
                Err((status, error)) => (status, format!("{error:#}\n")),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "GET / or POST /workloads/CLUSTER/NAME/stop|start\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

async fn console_action(
    workloads: &Workloads,
    method: &Method,
    path: &str,
) -> Result<String, (StatusCode, anyhow::Error)> {
    let rest = path.trim_start_matches("/workloads/");
    let Some((name, action)) = rest.rsplit_once('/') else {
        return Err((
            StatusCode::NOT_FOUND,
            anyhow::anyhow!("{path}: POST /workloads/CLUSTER/NAME/stop|start"),
        ));
    };
    let Some(workload) = workloads.find(name) else {
        return Err((
            StatusCode::NOT_FOUND,
            anyhow::anyhow!(
                "no workload {name:?}; there are: {}",
                workloads
                    .0
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if method != Method::POST {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            anyhow::anyhow!("{path}: use POST"),
        ));
    }
    match action {
        "stop" => {
            workload.stop();
            Ok(format!("{name} stopped\n"))
        }
        "start" => workload
            .start()
            .await
            .map(|()| format!("{name} running at {}\n", workload.listen))
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e)),
        other => Err((
            StatusCode::NOT_FOUND,
            anyhow::anyhow!("{other:?}: the actions are stop and start"),
        )),
    }
}

/// The answer of the demo's echo in `body`, checked to be from `workload` in `cluster`.
pub fn answered_by(body: &[u8], cluster: &str, workload: &str) -> anyhow::Result<Answer> {
    let answer: Answer = serde_json::from_slice(body).with_context(|| {
        format!(
            "not an echo's answer: {}",
            String::from_utf8_lossy(body).trim()
        )
    })?;
    if answer.cluster != cluster || answer.workload != workload {
        bail!("answered by {}/{}", answer.cluster, answer.workload);
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_uri_of_the_last_xfcc_element() {
        let xfcc = "By=spiffe://east.mesh/ns/default/sa/frontend;Hash=ab;URI=spiffe://east.mesh/ns/istio-system/sa/istio-ingressgateway,By=spiffe://west.mesh/ns/default/sa/reviews;Hash=cd;Subject=\"\";URI=spiffe://east.mesh/ns/default/sa/frontend";
        assert_eq!(
            caller_from_xfcc(xfcc).as_deref(),
            Some("spiffe://east.mesh/ns/default/sa/frontend")
        );
        assert_eq!(caller_from_xfcc("By=x;Hash=y"), None);
    }

    #[tokio::test]
    async fn a_stopped_workload_refuses_connections_and_starts_again() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let workload = Workload::new("east/echo", listen, None);
        workload.start().await.unwrap();
        let (status, body) = get(listen, &format!("http://{listen}/hello"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let answer = answered_by(&body, "east", "echo").unwrap();
        assert_eq!(answer.request, "GET /hello");
        assert_eq!(answer.caller, None);

        // Without a sidecar there is nothing to call through.
        let (status, body) = get(listen, &format!("http://{listen}/call/x/y"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("no sidecar"));

        workload.stop();
        assert!(!workload.running());
        assert!(get(listen, &format!("http://{listen}/")).await.is_err());
        workload.start().await.unwrap();
        assert!(workload.running());
        assert_eq!(
            get(listen, &format!("http://{listen}/")).await.unwrap().0,
            StatusCode::OK
        );
        workload.stop();
    }
}
