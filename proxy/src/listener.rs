//! Accepting connections and choosing their filter chain: by the SNI of the TLS ClientHello
//! (exact names before wildcards, then the chain with no names), read without terminating, then
//! handing the connection to HTTP serving or TCP proxying with TLS terminated if the chain says
//! so.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::server;
use crate::io::Prefixed;
use crate::runtime::{Downstream, Shared};
use crate::snapshot::{Application, FilterChain, Listener, Transport};
use crate::tcp;
use crate::tls::client_hello::{Parsed, read_client_hello};

/// Accepts connections until `stop` turns true; connections already accepted carry on.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(handle(stream, name.clone(), shared.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(listener = %name, %error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn handle(stream: TcpStream, name: String, shared: Arc<Shared>) {
    let _open = shared.connection_opened();
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let mut stream = stream;
    let mut read = BytesMut::new();
    let needs_hello = match shared.active().snapshot.listener(&name) {
        Some(listener) => needs_client_hello(listener),
        None => return,
    };
    // The ClientHello and, when TLS is terminated here, the rest of the handshake must be done
    // by then: a client that stops half-way must not hold the connection.
    let handshake_deadline = tokio::time::Instant::now() + shared.options.client_hello_timeout;
    let sni = if needs_hello {
        let hello = tokio::time::timeout_at(
            handshake_deadline,
            read_client_hello(&mut stream, &mut read),
        )
        .await;
        match hello {
            Ok(Ok(Parsed::Complete(hello))) => Some(hello.server_name.unwrap_or_default()),
            Ok(Ok(Parsed::NotTls)) => None,
            Ok(Ok(Parsed::Incomplete)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!(listener = %name, %peer, "no usable TLS ClientHello; closing");
                return;
            }
        }
    } else {
        None
    };
    // Take what the connection needs from the current snapshot and let go of the rest, so that
    // a long-lived connection does not pin old snapshots.
    let (application, server_tls) = {
        let active = shared.active();
        let Some(listener) = active.snapshot.listener(&name) else {
            return;
        };
        let Some(chain) = select_chain(listener, sni.as_deref()) else {
            tracing::debug!(listener = %name, %peer, sni = ?sni, "no filter chain matches; closing");
            return;
        };
        let server_tls = match &chain.transport {
            Transport::Terminate(_) => {
                match active.server_tls.get(&(name.clone(), chain.name.clone())) {
                    Some(config) => Some(config.clone()),
                    None => return,
                }
            }
            Transport::Plaintext | Transport::Passthrough => None,
        };
        (chain.application.clone(), server_tls)
    };
    let io = Prefixed::new(read.freeze(), stream);
    let route_table = match &application {
        Application::Http { route_table } => route_table.clone(),
        Application::Tcp { .. } => String::new(),
    };
    let downstream = Arc::new(Downstream {
        peer,
        local,
        listener: name.clone(),
        route_table,
        tls: server_tls.is_some(),
        sni: sni.filter(|s| !s.is_empty()),
        peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown")),
    });
    match server_tls {
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(io);
            let tls = match tokio::time::timeout_at(handshake_deadline, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(listener = %name, %peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = %name, %peer, "TLS handshake timed out");
                    return;
                }
            };
            serve(tls, application, downstream, shared).await;
        }
        None => serve(io, application, downstream, shared).await,
    }
}

async fn serve<IO>(
    io: IO,
    application: Application,
    downstream: Arc<Downstream>,
    shared: Arc<Shared>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match application {
        Application::Http { .. } => server::serve(io, downstream, shared).await,
        Application::Tcp { routes } => tcp::proxy(io, &routes, &downstream, &shared).await,
    }
}

/// Whether any chain depends on the ClientHello (TLS, or SNI names).
fn needs_client_hello(listener: &Listener) -> bool {
    listener
        .filter_chains
        .iter()
        .any(|c| !matches!(c.transport, Transport::Plaintext) || !c.server_names.is_empty())
}

/// The chain for a connection: by SNI (exact, then the longest wildcard), else the chain without
/// names. `None` SNI means the connection is not TLS (or sent no SNI).
pub(crate) fn select_chain<'l>(
    listener: &'l Listener,
    sni: Option<&str>,
) -> Option<&'l FilterChain> {
    if let Some(sni) = sni.filter(|s| !s.is_empty()) {
        let sni = sni.to_ascii_lowercase();
        let exact = listener
            .filter_chains
            .iter()
            .find(|c| c.server_names.iter().any(|n| n.eq_ignore_ascii_case(&sni)));
        if exact.is_some() {
            return exact;
        }
        let wildcard = listener
            .filter_chains
            .iter()
            .flat_map(|c| c.server_names.iter().map(move |n| (n, c)))
            .filter_map(|(name, chain)| {
                let suffix = name.strip_prefix('*')?;
                (sni.len() > suffix.len() && sni.ends_with(&suffix.to_ascii_lowercase()))
                    .then_some((suffix.len(), chain))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, chain)| chain);
        if wildcard.is_some() {
            return wildcard;
        }
    }
    listener
        .filter_chains
        .iter()
        .find(|c| c.server_names.is_empty())
}
