//! The benchmarks' backend: as little work per request as a server can do, so that what a
//! benchmark measures is the proxy in front of it.
//!
//! - `--http ADDR`: HTTP/1.1 and h2c on one port (told apart by the HTTP/2 preface). Every
//!   request is answered `200` with a small fixed body, except gRPC requests (`content-type:
//!   application/grpc...`), which get one empty message and the trailer `grpc-status: 0`, as a
//!   unary gRPC call does.
//! - `--tls ADDR --cert FILE --key FILE`: the same over TLS (ALPN `h2`, `http/1.1`).
//! - `--sink ADDR`: TCP; reads everything and discards it.
//! - `--echo ADDR`: TCP; writes back everything it reads.
//!
//! One thread (a current-thread runtime) unless `--threads` says otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(name = "bench-backend", about = "A fast backend for benchmarks")]
struct Args {
    /// Serve HTTP/1.1 and h2c here.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Serve HTTPS here (needs --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    tls: Option<SocketAddr>,
    /// The certificate chain (PEM) for --tls.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The private key (PEM) for --tls.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A TCP sink: read and discard.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// A TCP echo server.
    #[arg(long)]
    echo: Option<SocketAddr>,
    /// The size of the response body, in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Runtime threads; 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let body = Bytes::from(body(args.body_bytes));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.http {
        let listener = TcpListener::bind(addr).await?;
        tasks.spawn(accept_http(listener, None, body.clone()));
    }
    if let (Some(addr), Some(cert), Some(key)) = (args.tls, &args.cert, &args.key) {
        let listener = TcpListener::bind(addr).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(cert, key)?);
        tasks.spawn(accept_http(listener, Some(acceptor), body.clone()));
    }
    if let Some(addr) = args.sink {
        let listener = TcpListener::bind(addr).await?;
        tasks.spawn(accept_tcp(listener, false));
    }
    if let Some(addr) = args.echo {
        let listener = TcpListener::bind(addr).await?;
        tasks.spawn(accept_tcp(listener, true));
    }
    if tasks.is_empty() {
        return Err("nothing to serve: give --http, --tls, --sink or --echo".into());
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A printable body of `len` bytes ending in a newline.
fn body(len: usize) -> Vec<u8> {
    let mut body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    if let Some(last) = body.last_mut() {
        *last = b'\n';
    }
    body
}

fn tls_config(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_http(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        match &tls {
            None => {
                tokio::spawn(serve_http(stream, body));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_http(stream, body).await;
                    }
                });
            }
        }
    }
}

async fn serve_http<S>(stream: S, body: Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(answer(request, body).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1024);
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type GrpcBody = http_body_util::combinators::WithTrailers<
    Full<Bytes>,
    std::future::Ready<Option<Result<HeaderMap, Infallible>>>,
>;

async fn answer(
    request: Request<Incoming>,
    body: Bytes,
) -> Response<Either<Full<Bytes>, GrpcBody>> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        let mut response = Response::new(Either::Left(Full::new(body)));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return response;
    }
    // A unary call: read the request message, answer one empty message and the status.
    let _ = request.into_body().collect().await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let message = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut response = Response::new(Either::Right(message));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

async fn accept_tcp(listener: TcpListener, echo: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_tcp(stream, echo));
    }
}

async fn serve_tcp(mut stream: TcpStream, echo: bool) {
    if echo {
        let (mut reader, mut writer) = stream.split();
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        return;
    }
    let mut buffer = vec![0u8; 256 * 1024];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}
