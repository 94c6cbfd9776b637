//! A gRPC echo service and its client, written by hand from tonic's building blocks
//! (`tonic::server::Grpc`, `tonic::client::Grpc`) and a prost message, with no generated code.
//!
//! The service `strait.test.Echo` answers over h2c on loopback:
//! - `Unary`: one `Echo` back, its text prefixed with the backend's name;
//! - `ServerStream`: `count` messages `TEXT-0`, `TEXT-1`, ...;
//! - `ClientStream`: one message joining every text received with `+`, `count` = how many;
//! - `Bidi`: each message answered as soon as it arrives;
//! - `Fail`: the status NOT_FOUND with the trailer metadata `x-echo-detail: missing`.
//!
//! Every response carries the header metadata `x-echo-backend: NAME`, and every successful
//! response the trailer `x-echo-trailer: NAME` beside `grpc-status`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::codec::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The one message of the service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

impl Echo {
    pub fn new(text: &str, count: u32) -> Echo {
        Echo {
            text: text.to_owned(),
            count,
        }
    }
}

pub const UNARY: &str = "/strait.test.Echo/Unary";
pub const SERVER_STREAM: &str = "/strait.test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/strait.test.Echo/ClientStream";
pub const BIDI: &str = "/strait.test.Echo/Bidi";
pub const FAIL: &str = "/strait.test.Echo/Fail";

type EchoStream = Pin<Box<dyn Stream<Item = Result<Echo, Status>> + Send + 'static>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = Result<T, Status>> + Send>>;

/// The echo service on loopback; stops when dropped.
pub struct GrpcBackend {
    pub name: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    pub async fn start(name: &str) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name_owned: Arc<str> = Arc::from(name);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name_owned.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let name = name.clone();
                        async move { Ok::<_, Infallible>(dispatch(name, request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcBackend {
            name: name.to_owned(),
            addr,
            task,
        }
    }
}

type HttpBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, Status>;

async fn dispatch(name: Arc<str>, request: http::Request<Incoming>) -> http::Response<HttpBody> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Echo, Echo>::default());
    let handler = Handler { name: name.clone() };
    let response = match request.uri().path() {
        UNARY => grpc.unary(Unary(handler), request).await,
        SERVER_STREAM => grpc.server_streaming(ServerStream(handler), request).await,
        CLIENT_STREAM => grpc.client_streaming(ClientStream(handler), request).await,
        BIDI => grpc.streaming(Bidi(handler), request).await,
        FAIL => grpc.unary(Fail, request).await,
        _ => Status::unimplemented("no such method").into_http::<tonic::body::Body>(),
    };
    let trailer = http::HeaderValue::from_str(&name).unwrap();
    response.map(move |body| {
        let trailer = trailer.clone();
        body.map_frame(move |mut frame| {
            if let Some(trailers) = frame.trailers_mut()
                && trailers.get("grpc-status").is_some_and(|s| s == "0")
            {
                trailers.insert("x-echo-trailer", trailer.clone());
            }
            frame
        })
        .boxed_unsync()
    })
}

#[derive(Clone)]
struct Handler {
    name: Arc<str>,
}

impl Handler {
    fn respond<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        response.metadata_mut().insert(
            "x-echo-backend",
            MetadataValue::try_from(&*self.name).unwrap(),
        );
        response
    }
}

struct Unary(Handler);

impl tonic::server::UnaryService<Echo> for Unary {
    type Response = Echo;
    type Future = BoxFuture<Response<Echo>>;

    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let echo = request.into_inner();
            Ok(handler.respond(Echo {
                text: format!("{}: {}", handler.name, echo.text),
                count: echo.count,
            }))
        })
    }
}

struct ServerStream(Handler);

impl tonic::server::ServerStreamingService<Echo> for ServerStream {
    type Response = Echo;
    type ResponseStream = EchoStream;
    type Future = BoxFuture<Response<EchoStream>>;

    fn call(&mut self, request: Request<Echo>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let echo = request.into_inner();
            let text = echo.text;
            let stream = futures_util::stream::iter(
                (0..echo.count).map(move |i| Ok(Echo::new(&format!("{text}-{i}"), i))),
            );
            Ok(handler.respond(Box::pin(stream) as EchoStream))
        })
    }
}

struct ClientStream(Handler);

impl tonic::server::ClientStreamingService<Echo> for ClientStream {
    type Response = Echo;
    type Future = BoxFuture<Response<Echo>>;

    fn call(&mut self, request: Request<Streaming<Echo>>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut texts = Vec::new();
            while let Some(echo) = stream.message().await? {
                texts.push(echo.text);
            }
            Ok(handler.respond(Echo {
                count: texts.len() as u32,
                text: texts.join("+"),
            }))
        })
    }
}

struct Bidi(Handler);

impl tonic::server::StreamingService<Echo> for Bidi {
    type Response = Echo;
    type ResponseStream = EchoStream;
    type Future = BoxFuture<Response<EchoStream>>;

    fn call(&mut self, request: Request<Streaming<Echo>>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let name = handler.name.clone();
            let replies = futures_util::stream::unfold(
                (request.into_inner(), name),
                |(mut stream, name)| async move {
                    match stream.message().await {
                        Ok(Some(echo)) => Some((
                            Ok(Echo {
                                text: format!("{name}: {}", echo.text),
                                count: echo.count,
                            }),
                            (stream, name),
                        )),
                        Ok(None) => None,
                        Err(status) => Some((Err(status), (stream, name))),
                    }
                },
            );
            Ok(handler.respond(Box::pin(replies) as EchoStream))
        })
    }
}

struct Fail;

impl tonic::server::UnaryService<Echo> for Fail {
    type Response = Echo;
    type Future = BoxFuture<Response<Echo>>;

    fn call(&mut self, _request: Request<Echo>) -> Self::Future {
        Box::pin(async move {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("x-echo-detail", MetadataValue::from_static("missing"));
            Err(Status::with_metadata(
                tonic::Code::NotFound,
                "no such echo",
                metadata,
            ))
        })
    }
}

/// A client of the echo service through `addr`, sending `authority` as `:authority`.
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    pub async fn connect(addr: SocketAddr, authority: &str) -> EchoClient {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin(format!("http://{authority}").parse().unwrap())
            .connect()
            .await
            .unwrap();
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))
    }

    /// A unary call to any method path (to reach methods the service does not have).
    pub async fn unary_at(&mut self, path: &str, echo: Echo) -> Result<Response<Echo>, Status> {
        self.ready().await?;
        let path = PathAndQuery::try_from(path.to_owned()).unwrap();
        self.grpc
            .unary(
                Request::new(echo),
                path,
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }

    pub async fn unary(&mut self, echo: Echo) -> Result<Response<Echo>, Status> {
        self.unary_at(UNARY, echo).await
    }

    pub async fn server_stream(&mut self, echo: Echo) -> Result<Response<Streaming<Echo>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(
                Request::new(echo),
                PathAndQuery::from_static(SERVER_STREAM),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }

    pub async fn client_stream<S>(&mut self, messages: S) -> Result<Response<Echo>, Status>
    where
        S: Stream<Item = Echo> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .client_streaming(
                Request::new(messages),
                PathAndQuery::from_static(CLIENT_STREAM),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }

    pub async fn bidi<S>(&mut self, messages: S) -> Result<Response<Streaming<Echo>>, Status>
    where
        S: Stream<Item = Echo> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .streaming(
                Request::new(messages),
                PathAndQuery::from_static(BIDI),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }
}

/// A stream of messages fed from a channel, for calls whose next message depends on a reply.
pub fn channel_stream(
    receiver: tokio::sync::mpsc::Receiver<Echo>,
) -> impl Stream<Item = Echo> + Send + 'static {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|echo| (echo, receiver))
    })
}
