//! Accepting connections and choosing their filter chain, as Envoy does: by the original
//! destination (under capture), then the SNI and ALPN of the TLS ClientHello, read without
//! terminating; then handing the connection to HTTP serving or TCP proxying with TLS terminated
//! if the chain says so.
//!
//! Behind terminated mesh mTLS a chain may carry the application's own TLS (`IstioMutualInnerSni`,
//! an egress gateway's `ISTIO_MUTUAL` TLS server): when its routes choose by SNI or
//! authorization policies read `connection.sni`, the inner ClientHello is peeked the same way (bounded alike) and its SNI is the one routes
//! (`sniHosts`) and policies (`connection.sni`) see, since it names where the application's
//! TLS really goes; the outer SNI only chose the filter chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::server;
use crate::io::Prefixed;
use crate::runtime::{Downstream, Shared};
use crate::snapshot::{Application, FilterChain, Listener, Transport, TransportProtocol};
use crate::tcp::{self, Ending};
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
    let (needs_hello, original_destination) = match shared.active().snapshot.listener(&name) {
        Some(listener) => (needs_client_hello(listener), listener.original_destination),
        None => return,
    };
    let destination = if original_destination {
        match original_dst(&stream, local) {
            Some(destination) => destination,
            None => {
                tracing::debug!(listener = %name, %peer, "no original destination; closing");
                return;
            }
        }
    } else {
        local
    };
    // The ClientHello and, when TLS is terminated here, the rest of the handshake must be done
    // by then: a client that stops half-way must not hold the connection.
    let handshake_deadline = tokio::time::Instant::now() + shared.options.client_hello_timeout;
    let hello = if needs_hello {
        let hello = tokio::time::timeout_at(
            handshake_deadline,
            read_client_hello(&mut stream, &mut read),
        )
        .await;
        match hello {
            Ok(Ok(Parsed::Complete(hello))) => Some(hello),
            Ok(Ok(Parsed::NotTls)) => None,
            Ok(Ok(Parsed::Incomplete)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!(listener = %name, %peer, "no usable TLS ClientHello; closing");
                return;
            }
        }
    } else {
        None
    };
    let sni = hello
        .as_ref()
        .and_then(|h| h.server_name.clone())
        .filter(|s| !s.is_empty());
    let inspected = Inspected {
        destination,
        sni: sni.as_deref(),
        tls: hello.is_some(),
        alpn: hello.as_ref().map_or(&[][..], |h| &h.alpn[..]),
    };
    // Take what the connection needs from the current snapshot and let go of the rest, so that
    // a long-lived connection does not pin old snapshots.
    let (application, server_tls, mesh_terminated, inner_sni) = {
        let active = shared.active();
        let Some(listener) = active.snapshot.listener(&name) else {
            return;
        };
        let Some(chain) = select_chain(listener, &inspected) else {
            tracing::debug!(
                listener = %name, %peer, %destination, sni = ?sni,
                "no filter chain matches; closing"
            );
            return;
        };
        let server_tls = match &chain.transport {
            Transport::Terminate(_) => {
                match active.server_tls.get(&(name.clone(), chain.name.clone())) {
                    Some(config) => Some(config.clone()),
                    None => return,
                }
            }
            Transport::IstioMutual | Transport::IstioMutualInnerSni => {
                match active.server_tls.get(&(name.clone(), chain.name.clone())) {
                    Some(config) => Some(config.clone()),
                    None => return,
                }
            }
            Transport::Plaintext | Transport::Passthrough => None,
        };
        let mesh_terminated = matches!(
            chain.transport,
            Transport::IstioMutual | Transport::IstioMutualInnerSni
        );
        let inner_sni = chain.transport == Transport::IstioMutualInnerSni
            && reads_inner_sni(&chain.application, &active.snapshot.policies);
        (
            chain.application.clone(),
            server_tls,
            mesh_terminated,
            inner_sni,
        )
    };
    let io = Prefixed::new(read.freeze(), stream);
    let route_table = match &application {
        Application::Http { route_table } => route_table.clone(),
        Application::Tcp { .. } | Application::HttpProxy(_) => String::new(),
    };
    let http_proxy = matches!(application, Application::HttpProxy(_));
    let listener = name.clone();
    let terminated = server_tls.is_some();
    let downstream = move |mesh_peer, client_certificate| Downstream {
        peer,
        local,
        original_destination: original_destination.then_some(destination),
        listener,
        route_table,
        tls: terminated,
        sni,
        peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown")),
        mesh_peer,
        client_certificate,
        http_proxy,
    };
    match server_tls {
        // Boxed, as is each way of serving below: a connection's task holds only the state of
        // the way it is served (a plain HTTP connection no TLS session).
        Some(config) => Box::pin(async move {
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
                let mesh_peer = match (mesh_terminated, &shared.options.mesh) {
                    (true, Some(mesh)) => {
                        let certificates = tls.get_ref().1.peer_certificates().unwrap_or_default();
                        match mesh.peer(certificates) {
                            Some(peer) => Some(peer),
                            None => {
                                tracing::debug!(listener = %name, %peer, "mesh mTLS peer without a usable SPIFFE ID; closing");
                                return;
                            }
                        }
                    }
                    _ => None,
                };
                // A client certificate verified by a gateway's MUTUAL or OPTIONAL_MUTUAL server.
                let client_certificate = if mesh_terminated {
                    None
                } else {
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certificates| certificates.first())
                        .and_then(|leaf| strait_certs::client_certificate_xfcc(leaf.as_ref()))
                        .and_then(|element| http::HeaderValue::from_str(&element).ok())
                };
                let mut downstream = downstream(mesh_peer, client_certificate);
                if inner_sni {
                    let mut tls = tls;
                    let timeout = shared.options.client_hello_timeout;
                    let Some((inner_sni, read)) = read_inner_hello(&mut tls, timeout).await else {
                        tracing::debug!(listener = %name, %peer, "no usable inner TLS ClientHello; closing");
                        return;
                    };
                    downstream.sni = inner_sni;
                    let io = Prefixed::new(read, tls);
                    Box::pin(serve(io, application, Arc::new(downstream), shared)).await;
                } else {
                    Box::pin(serve(tls, application, Arc::new(downstream), shared)).await;
                }
        })
        .await,
        None => Box::pin(serve(io, application, Arc::new(downstream(None, None)), shared)).await,
    }
}

/// Whether a connection on an `IstioMutualInnerSni` chain has its inner ClientHello read: when
/// its routes choose by SNI or authorization policies read `connection.sni`. Nothing else waits
/// for the client's first bytes (a protocol whose server speaks first would wait for nothing).
fn reads_inner_sni(application: &Application, policies: &crate::snapshot::Policies) -> bool {
    match application {
        Application::Tcp { routes } => {
            routes.iter().any(|r| !r.server_names.is_empty()) || policies.reads_connection_sni()
        }
        Application::Http { .. } | Application::HttpProxy(_) => false,
    }
}

/// The SNI of the application's own ClientHello behind terminated mesh mTLS (none when the
/// bytes are not TLS, or when nothing arrives in time: a protocol whose server speaks first),
/// and the bytes read to find it, to be replayed upstream. `None` when the connection is
/// unusable (it ends, or its ClientHello is malformed or too large).
async fn read_inner_hello<IO: tokio::io::AsyncRead + Unpin>(
    io: &mut IO,
    timeout: Duration,
) -> Option<(Option<String>, bytes::Bytes)> {
    let mut read = BytesMut::new();
    let hello = tokio::time::timeout(timeout, read_client_hello(io, &mut read)).await;
    let sni = match hello {
        Ok(Ok(Parsed::Complete(hello))) => hello.server_name.filter(|s| !s.is_empty()),
        Ok(Ok(Parsed::NotTls)) | Err(_) => None,
        Ok(Ok(Parsed::Incomplete)) | Ok(Err(_)) => return None,
    };
    Some((sni, read.freeze()))
}

/// The socket under a stream, so that a refused connection can be reset rather than closed.
pub(crate) trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl<IO: Socket> Socket for Prefixed<IO> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().socket()
    }
}

impl<IO: Socket> Socket for tokio_rustls::server::TlsStream<IO> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0.socket()
    }
}

/// Closes the connection with a TCP reset (SO_LINGER 0, then close).
fn reset<IO: Socket>(io: IO) {
    let _ = socket2::SockRef::from(io.socket()).set_linger(Some(Duration::ZERO));
    drop(io);
}

/// The destination the client meant before iptables REDIRECT sent it here; `None` when the
/// connection was not redirected (it arrived at the listener's own address: a loop, or a
/// client that connected to the capture port directly).
fn original_dst(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    (original != local).then_some(original)
}

async fn serve<IO>(
    mut io: IO,
    application: Application,
    downstream: Arc<Downstream>,
    shared: Arc<Shared>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Socket + Unpin + Send + 'static,
{
    match application {
        Application::Http { .. } | Application::HttpProxy(_) => {
            server::serve(io, downstream, shared).await;
        }
        Application::Tcp { routes } => {
            if tcp::proxy(&mut io, &routes, &downstream, &shared).await == Ending::Reset {
                reset(io);
            }
        }
    }
}

/// Whether any chain depends on the ClientHello (TLS, SNI names, transport or ALPN).
fn needs_client_hello(listener: &Listener) -> bool {
    listener.filter_chains.iter().any(|c| {
        !matches!(c.transport, Transport::Plaintext)
            || !c.server_names.is_empty()
            || c.matches.transport_protocol.is_some()
            || !c.matches.application_protocols.is_empty()
    })
}

/// What filter chain selection knows about a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inspected<'a> {
    /// The original destination under capture, else the address accepted on.
    pub(crate) destination: SocketAddr,
    pub(crate) sni: Option<&'a str>,
    /// Whether the connection opened with a TLS ClientHello.
    pub(crate) tls: bool,
    /// The ALPN protocols the ClientHello offered.
    pub(crate) alpn: &'a [String],
}

/// The chain for a connection, narrowed criterion by criterion in Envoy's order: destination
/// port, destination IP, SNI, transport protocol, offered ALPN.
pub(crate) fn select_chain<'l>(
    listener: &'l Listener,
    connection: &Inspected<'_>,
) -> Option<&'l FilterChain> {
    let mut candidates: Vec<&FilterChain> = listener.filter_chains.iter().collect();
    let port = connection.destination.port();
    narrow(&mut candidates, |c| match c.matches.destination_port {
        None => Some(0),
        Some(p) => (p == port).then_some(1),
    });
    let ip = connection.destination.ip();
    narrow(&mut candidates, |c| {
        if c.matches.prefix_ranges.is_empty() {
            return Some(0);
        }
        c.matches
            .prefix_ranges
            .iter()
            .filter(|net| net.contains(&ip))
            .map(|net| u32::from(net.prefix_len()) + 1)
            .max()
    });
    let sni = connection.sni.map(str::to_ascii_lowercase);
    narrow(&mut candidates, |c| {
        server_name_score(&c.server_names, sni.as_deref())
    });
    let tls = if connection.tls {
        TransportProtocol::Tls
    } else {
        TransportProtocol::RawBuffer
    };
    narrow(&mut candidates, |c| match c.matches.transport_protocol {
        None => Some(0),
        Some(t) => (t == tls).then_some(1),
    });
    narrow(&mut candidates, |c| {
        let wanted = &c.matches.application_protocols;
        if wanted.is_empty() {
            return Some(0);
        }
        wanted
            .iter()
            .any(|p| connection.alpn.contains(p))
            .then_some(1)
    });
    candidates.first().copied()
}

/// Keeps the candidates with the best score; `None` drops a candidate.
fn narrow(candidates: &mut Vec<&FilterChain>, score: impl Fn(&FilterChain) -> Option<u32>) {
    let scored: Vec<(Option<u32>, &FilterChain)> =
        candidates.iter().map(|c| (score(c), *c)).collect();
    let Some(best) = scored.iter().filter_map(|(s, _)| *s).max() else {
        candidates.clear();
        return;
    };
    *candidates = scored
        .into_iter()
        .filter(|(s, _)| *s == Some(best))
        .map(|(_, c)| c)
        .collect();
}

/// How well a chain's SNI names match: exact beats the longest wildcard beats no names.
fn server_name_score(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|name| {
            if name.eq_ignore_ascii_case(sni) {
                return Some(u32::MAX);
            }
            let suffix = name.strip_prefix('*')?;
            (sni.len() > suffix.len() && sni.ends_with(&suffix.to_ascii_lowercase()))
                .then(|| u32::try_from(suffix.len()).unwrap_or(u32::MAX - 1) + 1)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ChainMatch;

    /// Behind mesh mTLS: the application's ClientHello gives the SNI, and every byte read is
    /// kept for the upstream; other bytes, or none in time, give no SNI; a connection that ends
    /// inside a ClientHello is unusable.
    #[tokio::test(start_paused = true)]
    async fn the_inner_client_hello_names_the_sni_and_nothing_read_is_lost() {
        use tokio::io::AsyncWriteExt;
        let timeout = std::time::Duration::from_secs(5);
        let hello =
            crate::tls::client_hello::tests::rustls_client_hello("api.payments.example", &[]);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&hello).await.unwrap();
        let (sni, read) = read_inner_hello(&mut server, timeout).await.unwrap();
        assert_eq!(sni.as_deref(), Some("api.payments.example"));
        assert_eq!(&read[..], &hello[..]);

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"EHLO mail\r\n").await.unwrap();
        let (sni, read) = read_inner_hello(&mut server, timeout).await.unwrap();
        assert_eq!((sni, &read[..]), (None, &b"EHLO mail\r\n"[..]));

        // The server speaks first: nothing arrives, and after the timeout there is no SNI.
        let (_client, mut server) = tokio::io::duplex(1024);
        let (sni, read) = read_inner_hello(&mut server, timeout).await.unwrap();
        assert_eq!((sni, read.len()), (None, 0));

        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&hello[..hello.len() / 2]).await.unwrap();
        drop(client);
        assert!(read_inner_hello(&mut server, timeout).await.is_none());
    }

    fn chain(name: &str, server_names: &[&str], matches: ChainMatch) -> FilterChain {
        FilterChain {
            name: name.to_owned(),
            server_names: server_names.iter().map(|s| (*s).to_owned()).collect(),
            matches,
            transport: Transport::Plaintext,
            application: Application::Tcp { routes: Vec::new() },
        }
    }

    fn listener(chains: Vec<FilterChain>) -> Listener {
        Listener {
            name: "virtualOutbound".to_owned(),
            address: SocketAddr::from(([0, 0, 0, 0], 15001)),
            original_destination: true,
            filter_chains: chains,
        }
    }

    fn pick<'l>(
        listener: &'l Listener,
        destination: &str,
        sni: Option<&str>,
        alpn: &[&str],
    ) -> Option<&'l str> {
        let alpn: Vec<String> = alpn.iter().map(|s| (*s).to_owned()).collect();
        let inspected = Inspected {
            destination: destination.parse().unwrap(),
            sni,
            tls: sni.is_some() || !alpn.is_empty(),
            alpn: &alpn,
        };
        select_chain(listener, &inspected).map(|c| c.name.as_str())
    }

    #[test]
    fn destination_port_then_longest_prefix_then_the_catch_all() {
        let listener = listener(vec![
            chain("any", &[], ChainMatch::default()),
            chain(
                "port 9080",
                &[],
                ChainMatch {
                    destination_port: Some(9080),
                    ..ChainMatch::default()
                },
            ),
            chain(
                "10.0.0.0/8:9080",
                &[],
                ChainMatch {
                    destination_port: Some(9080),
                    prefix_ranges: vec!["10.0.0.0/8".parse().unwrap()],
                    ..ChainMatch::default()
                },
            ),
            chain(
                "10.1.2.3/32:9080",
                &[],
                ChainMatch {
                    destination_port: Some(9080),
                    prefix_ranges: vec!["10.1.2.3/32".parse().unwrap()],
                    ..ChainMatch::default()
                },
            ),
        ]);
        assert_eq!(
            pick(&listener, "10.1.2.3:9080", None, &[]),
            Some("10.1.2.3/32:9080")
        );
        assert_eq!(
            pick(&listener, "10.9.9.9:9080", None, &[]),
            Some("10.0.0.0/8:9080")
        );
        assert_eq!(
            pick(&listener, "192.168.1.1:9080", None, &[]),
            Some("port 9080")
        );
        // A chain naming the port is never chosen for another port, however specific its IP.
        assert_eq!(pick(&listener, "10.1.2.3:80", None, &[]), Some("any"));
    }

    #[test]
    fn a_named_criterion_that_does_not_match_drops_the_chain() {
        let listener = listener(vec![chain(
            "only 9080",
            &[],
            ChainMatch {
                destination_port: Some(9080),
                ..ChainMatch::default()
            },
        )]);
        assert_eq!(pick(&listener, "10.0.0.1:80", None, &[]), None);
    }

    #[test]
    fn server_names_exact_before_the_longest_wildcard_before_none() {
        let listener = listener(vec![
            chain("none", &[], ChainMatch::default()),
            chain("wide", &["*.example.com"], ChainMatch::default()),
            chain("narrow", &["*.api.example.com"], ChainMatch::default()),
            chain("exact", &["v1.api.example.com"], ChainMatch::default()),
        ]);
        let at = "10.0.0.1:443";
        assert_eq!(
            pick(&listener, at, Some("v1.api.example.com"), &[]),
            Some("exact")
        );
        assert_eq!(
            pick(&listener, at, Some("V2.API.example.com"), &[]),
            Some("narrow")
        );
        assert_eq!(
            pick(&listener, at, Some("www.example.com"), &[]),
            Some("wide")
        );
        assert_eq!(pick(&listener, at, Some("example.com"), &[]), Some("none"));
        assert_eq!(pick(&listener, at, None, &[]), Some("none"));
    }

    /// Istio's inbound chains: mesh mTLS by the `istio*` ALPN the client offered, an
    /// application's own TLS, and plaintext.
    #[test]
    fn transport_protocol_and_offered_alpn_tell_istio_mtls_from_the_rest() {
        let istio_alpn = ["istio-peer-exchange", "istio-h2", "istio-http/1.1", "istio"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let listener = listener(vec![
            chain(
                "mtls",
                &[],
                ChainMatch {
                    transport_protocol: Some(TransportProtocol::Tls),
                    application_protocols: istio_alpn,
                    ..ChainMatch::default()
                },
            ),
            chain(
                "app tls",
                &[],
                ChainMatch {
                    transport_protocol: Some(TransportProtocol::Tls),
                    ..ChainMatch::default()
                },
            ),
            chain(
                "plaintext",
                &[],
                ChainMatch {
                    transport_protocol: Some(TransportProtocol::RawBuffer),
                    ..ChainMatch::default()
                },
            ),
        ]);
        let at = "10.0.0.2:8080";
        assert_eq!(
            pick(&listener, at, Some("x"), &["istio-h2", "istio", "h2"]),
            Some("mtls")
        );
        assert_eq!(
            pick(&listener, at, Some("x"), &["istio-peer-exchange", "istio"]),
            Some("mtls")
        );
        assert_eq!(
            pick(&listener, at, Some("x"), &["h2", "http/1.1"]),
            Some("app tls")
        );
        assert_eq!(pick(&listener, at, Some("x"), &[]), Some("app tls"));
        assert_eq!(pick(&listener, at, None, &[]), Some("plaintext"));
    }
}
