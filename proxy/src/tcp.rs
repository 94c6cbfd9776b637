//! Proxying opaque bytes: TCP routes and TLS passthrough. A connection the workload's
//! authorization policies refuse is closed at once, and an open one is closed when a policy
//! change denies it. The route is chosen by SNI (for
//! passthrough) or is the only one; its cluster's balancer picks an endpoint, other endpoints
//! are tried when connecting fails, and the bytes are copied both ways until either side
//! closes. A connection no route or cluster takes (REGISTRY_ONLY's `BlackHoleCluster` among
//! them) is reset, not closed: it was already accepted, and under capture the client's
//! handshake succeeded with the proxy. Each connection ends in an access log line and the
//! `istio_tcp_*` metrics.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::authz::{self, Protocol};
use crate::http::flags::ResponseFlags;
use crate::runtime::{Downstream, Shared};
use crate::snapshot::{Policies, TcpRoute};
use crate::telemetry::access_log::AccessLogEntry;
use crate::upstream::connect::{connect, connect_through};
use crate::upstream::connector::{NETWORK_LABEL, UpstreamTarget};
use crate::upstream::outlier::Outcome;

/// Endpoints tried before a connection is given up.
const CONNECT_ATTEMPTS: usize = 3;

/// How the client's side of a proxied connection is to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Closed the ordinary way.
    Close,
    /// Reset: the connection was refused after it was accepted (no cluster for it, or a
    /// destination REGISTRY_ONLY does not allow), so the client must not mistake it for an
    /// empty answer.
    Reset,
}

/// Proxies one connection by the first route that matches its SNI.
pub(crate) async fn proxy<IO>(
    mut io: IO,
    routes: &[TcpRoute],
    downstream: &Downstream,
    shared: &Arc<Shared>,
) -> Ending
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut entry = AccessLogEntry {
        start_time: Some(SystemTime::now()),
        protocol: "TCP".to_owned(),
        downstream_local_address: Some(downstream.local_address()),
        downstream_remote_address: Some(downstream.peer),
        requested_server_name: downstream.sni.clone().unwrap_or_default(),
        downstream_peer_principal: downstream.peer_principal().unwrap_or_default().to_owned(),
        ..AccessLogEntry::default()
    };
    let active = shared.active();
    let mut flags = ResponseFlags::NONE;
    if let Some(reason) = denied(&active.snapshot.policies, downstream) {
        // L4 authorization: the connection is closed before any byte goes upstream.
        flags |= ResponseFlags::UNAUTHORIZED;
        entry.reason = reason;
        drop(active);
        let _ = io.shutdown().await;
        finish(entry, flags, started, shared, 0, 0);
        return Ending::Close;
    }
    let route = routes
        .iter()
        .find(|r| sni_matches(&r.server_names, downstream.sni.as_deref()));
    let cluster = route
        .and_then(|r| crate::upstream::lb::weighted_choice(&r.clusters, |(_, w)| *w))
        .map(|(name, _)| name.as_str());
    let (Some(route), Some(cluster_name)) = (route, cluster) else {
        flags |= ResponseFlags::NO_ROUTE;
        entry.reason = format!("no TCP route matches server name {:?}", downstream.sni);
        finish(entry, flags, started, shared, 0, 0);
        return Ending::Reset;
    };
    entry.route_name.clone_from(&route.name);
    entry.upstream_cluster = cluster_name.to_owned();
    let Some(cluster) = active.clusters.get(cluster_name).cloned() else {
        flags |= ResponseFlags::NO_CLUSTER_FOUND;
        entry.reason = active.snapshot.missing_cluster_reason(cluster_name);
        finish(entry, flags, started, shared, 0, 0);
        return Ending::Reset;
    };
    let config = cluster.config();
    let tls = active.upstream_tls.get(cluster_name).map(|t| t.0.clone());
    let base = shared
        .telemetry
        .metrics
        .base(cluster_name, downstream.peer_principal(), || {
            config.telemetry.clone()
        });
    shared.telemetry.metrics.tcp_opened(&base);
    let mut tried = Vec::new();
    let mut upstream = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let endpoint = match cluster.pick(None, &tried, downstream.original_destination) {
            Ok(endpoint) => endpoint,
            Err(why) => {
                flags |= ResponseFlags::NO_HEALTHY_UPSTREAM;
                entry.reason = why.reason(&cluster.config());
                break;
            }
        };
        let address = endpoint.endpoint().address;
        if tried.contains(&address) {
            break;
        }
        tried.push(address);
        entry.upstream_host = Some(address);
        let connecting = shared.upstream_connector.as_ref().and_then(|c| {
            c.connect(UpstreamTarget {
                cluster: cluster_name.to_owned(),
                address,
                network: config
                    .endpoints
                    .iter()
                    .find(|e| e.address == address)
                    .and_then(|e| e.labels.get(NETWORK_LABEL).cloned()),
                server_name: match &tls {
                    Some(tls) => Some(tls.server_name.to_str().into_owned()),
                    None => downstream.sni.clone(),
                },
            })
        });
        let connected = match connecting {
            Some(connecting) => {
                connect_through(connecting, address, config.connect_timeout, tls.as_deref()).await
            }
            None => {
                connect(
                    address,
                    config.connect_timeout,
                    config.pool.tcp_keepalive.as_ref(),
                    tls.as_deref(),
                    shared.socket_setup(&config),
                )
                .await
            }
        };
        match connected {
            Ok(stream) => {
                cluster.report(endpoint.endpoint(), Outcome::Success);
                upstream = Some((stream, endpoint));
                break;
            }
            Err(error) => {
                cluster.report(endpoint.endpoint(), Outcome::ConnectFailure);
                flags |= ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
                entry.reason = config.connect_failure(address, &error, error.failure());
            }
        }
    }
    let Some((mut stream, _endpoint)) = upstream else {
        let _ = io.shutdown().await;
        shared.telemetry.metrics.tcp_closed(&base, 0, 0);
        finish(entry, flags, started, shared, 0, 0);
        return Ending::Close;
    };
    if !flags.is_empty() {
        // An earlier endpoint failed but a later one took the connection.
        flags = ResponseFlags::NONE;
        entry.reason.clear();
    }
    drop(active);
    let (received, sent) =
        match copy_while_authorized(&mut io, &mut stream, downstream, shared).await {
            Copied::Done(Ok((from_client, from_upstream))) => (from_client, from_upstream),
            Copied::Done(Err(error)) => {
                flags |= ResponseFlags::UPSTREAM_CONNECTION_TERMINATION;
                entry.reason = format!("the connection ended with an error: {error}");
                (0, 0)
            }
            Copied::Revoked(reason) => {
                flags |= ResponseFlags::UNAUTHORIZED;
                entry.reason = format!("closed by a policy change: {reason}");
                let _ = io.shutdown().await;
                let _ = stream.shutdown().await;
                (0, 0)
            }
        };
    shared.telemetry.metrics.tcp_closed(&base, sent, received);
    finish(entry, flags, started, shared, received, sent);
    Ending::Close
}

/// How copying ended.
enum Copied {
    Done(std::io::Result<(u64, u64)>),
    /// A new snapshot's policies deny the connection (why); the byte counts are not known.
    Revoked(String),
}

/// Copies both ways until either side closes, checking the connection again whenever the
/// policies change: one they now deny is cut.
async fn copy_while_authorized<A, B>(
    io: &mut A,
    upstream: &mut B,
    downstream: &Downstream,
    shared: &Shared,
) -> Copied
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut changes = shared.policy_changes.subscribe();
    let copy = tokio::io::copy_bidirectional(io, upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            result = &mut copy => return Copied::Done(result),
            changed = changes.changed() => {
                if changed.is_err() {
                    return Copied::Done((&mut copy).await);
                }
                let policies = shared.active().snapshot.policies.clone();
                if let Some(reason) = denied(&policies, downstream) {
                    return Copied::Revoked(reason);
                }
            }
        }
    }
}

/// Why the workload's authorization policies refuse the connection, if they do.
fn denied(policies: &Policies, downstream: &Downstream) -> Option<String> {
    if !policies.has_authorization() {
        return None;
    }
    let attributes = downstream.attributes(Protocol::Tcp);
    let decision = authz::evaluate(policies, &attributes);
    (!decision.allowed).then_some(decision.reason)
}

fn finish(
    mut entry: AccessLogEntry,
    flags: ResponseFlags,
    started: Instant,
    shared: &Shared,
    received: u64,
    sent: u64,
) {
    entry.response_flags = flags.to_string();
    entry.bytes_received = received;
    entry.bytes_sent = sent;
    entry.duration_ms = started.elapsed().as_millis() as u64;
    shared.telemetry.access_log.log(entry);
}

pub(crate) fn sni_matches(names: &[String], sni: Option<&str>) -> bool {
    if names.is_empty() {
        return true;
    }
    let Some(sni) = sni else { return false };
    names.iter().any(|name| match name.strip_prefix('*') {
        Some(suffix) => {
            sni.len() > suffix.len()
                && sni
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        }
        None => name.eq_ignore_ascii_case(sni),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_match_exactly_or_by_wildcard() {
        let names = vec!["api.example.com".to_owned(), "*.internal".to_owned()];
        assert!(sni_matches(&names, Some("API.example.com")));
        assert!(sni_matches(&names, Some("db.internal")));
        assert!(!sni_matches(&names, Some("internal")));
        assert!(!sni_matches(&names, None));
        assert!(sni_matches(&[], None));
    }
}
