//! The explicit HTTP proxy (Istio's `HTTP_PROXY` egress listener, for applications that set
//! `HTTP_PROXY`): what differs from a listener routed by `Host`.
//!
//! - An absolute-form request (`GET http://reviews:9080/x HTTP/1.1`) is routed by its target:
//!   the port picks the route table, the host the virtual host. It is then handled as any
//!   routed request and leaves in origin form with `Host` set from the target.
//! - `CONNECT host:port` opens a tunnel: the port's tunnel routes, chosen by the host, lead to
//!   a cluster exactly as a TCP listener's routes do (mesh mTLS to a meshed destination), and
//!   the bytes are proxied both ways once the client has its `200`.
//! - A target no imported service declares goes to the named host and port, resolved here,
//!   under ALLOW_ANY (the snapshot's fallbacks lead to an original-destination cluster), and is
//!   404 NR under REGISTRY_ONLY (there are none). A request in origin form is 400.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{self, Body};
use super::flags::ResponseFlags;
use super::local_reply::local_reply;
use super::tracked::Exchange;
use crate::runtime::{Active, Downstream, Shared};
use crate::snapshot::{Application, HttpProxy, TcpRoute};
use crate::tcp;

/// Where a request on an explicit proxy is for: its target's host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Lowercase; an IPv6 literal keeps its brackets (`[::1]`), as in an authority.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    /// Reads an authority (`host`, `host:port`, `[v6]:port`); `default_port` stands for a
    /// missing one.
    pub(crate) fn parse(authority: &str, default_port: u16) -> Result<Target, String> {
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (address, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("unterminated IPv6 literal in {authority:?}"))?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{address:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                other => Some(other.strip_prefix(':').ok_or_else(|| {
                    format!("unexpected {other:?} after the IPv6 literal in {authority:?}")
                })?),
            };
            (&authority[..address.len() + 2], port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || (host.contains(['@', '/', ':']) && !host.starts_with('[')) {
            return Err(format!("no usable host in {authority:?}"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port in {authority:?}"))?,
        };
        Ok(Target {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The first address the host resolves to (an IP literal is its own).
    async fn resolve(&self) -> Result<SocketAddr, String> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut addresses = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|error| format!("resolving {} failed: {error}", self.host))?;
        addresses
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// The target of a request on an explicit proxy: `CONNECT`'s authority, or an absolute-form
/// `http://` URL's; why the request cannot be proxied otherwise.
pub(crate) fn target_of<B>(request: &Request<B>) -> Result<Target, String> {
    let uri = request.uri();
    if request.method() == Method::CONNECT {
        let authority = uri
            .authority()
            .ok_or("CONNECT without a host:port target")?;
        if authority.port_u16().is_none() {
            return Err(format!("CONNECT target {authority} has no port"));
        }
        return Target::parse(authority.as_str(), 443);
    }
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "request target {:?} is not in absolute form (http://host:port/path), which a request to an HTTP proxy must be",
            uri.path_and_query().map_or("", |p| p.as_str())
        ));
    };
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        return Err(format!(
            "{uri}: only http:// targets are forwarded; HTTPS goes through a CONNECT tunnel"
        ));
    }
    Target::parse(authority.as_str(), 80)
}

/// The explicit proxy of the connection's listener in the snapshot being served.
pub(crate) fn settings<'a>(active: &'a Active, listener: &str) -> Option<&'a HttpProxy> {
    active
        .snapshot
        .listener(listener)?
        .filter_chains
        .iter()
        .find_map(|chain| match &chain.application {
            Application::HttpProxy(proxy) => Some(proxy),
            _ => None,
        })
}

/// The route table an absolute-form request to `target` is routed by, or why there is none.
pub(crate) fn route_table<'a>(
    proxy: &'a HttpProxy,
    target: &Target,
    listener: &str,
) -> Result<&'a str, String> {
    proxy
        .route_tables
        .get(&target.port)
        .or(proxy.default_route_table.as_ref())
        .map(String::as_str)
        .ok_or_else(|| not_imported(target, listener))
}

/// Why a target is refused under REGISTRY_ONLY.
pub(crate) fn not_imported(target: &Target, listener: &str) -> String {
    format!(
        "{} is not a service that HTTP proxy listener {listener} imports, and outboundTrafficPolicy is REGISTRY_ONLY",
        target.authority()
    )
}

/// The connection's downstream with the resolved target as its original destination, for a
/// cluster that connects to the original destination (ALLOW_ANY's passthrough).
pub(crate) async fn towards(
    target: &Target,
    downstream: &Downstream,
) -> Result<Downstream, String> {
    let address = target.resolve().await?;
    if address == downstream.local
        || (address.port() == downstream.local.port() && address.ip().is_loopback())
    {
        return Err(format!(
            "{} is this proxy's own listener {}: refused as a loop",
            target.authority(),
            downstream.listener
        ));
    }
    Ok(Downstream {
        peer: downstream.peer,
        local: downstream.local,
        original_destination: Some(address),
        listener: downstream.listener.clone(),
        route_table: downstream.route_table.clone(),
        tls: downstream.tls,
        sni: None,
        peer_ip: downstream.peer_ip.clone(),
        mesh_peer: downstream.mesh_peer.clone(),
        client_certificate: downstream.client_certificate.clone(),
        http_proxy: true,
    })
}

/// The tunnel route for `target`: the first of its port's routes whose names hold the host,
/// else the listener's fallback.
fn tunnel_route<'a>(proxy: &'a HttpProxy, target: &Target) -> Option<&'a TcpRoute> {
    proxy
        .tunnels
        .get(&target.port)
        .and_then(|routes| {
            routes
                .iter()
                .find(|r| tcp::sni_matches(&r.server_names, Some(&target.host)))
        })
        .or(proxy.default_tunnel.as_ref())
}

/// Whether `target` is a service's HTTP port on this proxy: absolute-form requests reach it,
/// tunnels do not (that would take HTTP past routing and its mesh protocol).
fn is_http_service(active: &Active, proxy: &HttpProxy, target: &Target) -> bool {
    proxy
        .route_tables
        .get(&target.port)
        .and_then(|name| active.routers.get(name))
        .and_then(|router| router.virtual_host(&target.host))
        .is_some_and(|host| !host.domains.iter().any(|d| d == "*"))
}

/// Answers `CONNECT target`: `200` and a tunnel through the target's route, or a refusal.
pub(crate) async fn connect(
    target: &Target,
    upgrade: Option<OnUpgrade>,
    downstream: &Downstream,
    active: &Active,
    shared: &Arc<Shared>,
    exchange: &mut Exchange,
) -> Response<Body> {
    let refuse = |status, flags, reason: String| local_reply(status, flags, reason, false);
    let Some(proxy) = settings(active, &downstream.listener) else {
        return refuse(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            format!("listener {} is not an HTTP proxy", downstream.listener),
        );
    };
    if is_http_service(active, proxy, target) {
        return refuse(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            format!(
                "{} is an HTTP service port: send requests to it in absolute form (http://{}/...) rather than through CONNECT",
                target.authority(),
                target.authority()
            ),
        );
    }
    let Some(route) = tunnel_route(proxy, target) else {
        return refuse(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            not_imported(target, &downstream.listener),
        );
    };
    exchange.route_name.clone_from(&route.name);
    if let [(cluster, _)] = route.clusters.as_slice() {
        exchange.cluster.clone_from(cluster);
    }
    let to_original_destination = route.clusters.iter().any(|(name, _)| {
        active
            .clusters
            .get(name)
            .is_some_and(|c| c.config().original_destination)
    });
    let tunnel = if to_original_destination {
        match towards(target, downstream).await {
            Ok(tunnel) => tunnel,
            Err(reason) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::DNS_RESOLUTION_FAILED,
                    reason,
                );
            }
        }
    } else {
        Downstream {
            original_destination: None,
            sni: None,
            listener: downstream.listener.clone(),
            route_table: String::new(),
            peer_ip: downstream.peer_ip.clone(),
            mesh_peer: downstream.mesh_peer.clone(),
            client_certificate: downstream.client_certificate.clone(),
            ..*downstream
        }
    };
    let Some(upgrade) = upgrade else {
        return refuse(
            StatusCode::BAD_REQUEST,
            ResponseFlags::INVALID_REQUEST,
            "this connection cannot carry a CONNECT tunnel".to_owned(),
        );
    };
    // The route was chosen by the target's host: the tunnel takes it whatever its names.
    let route = TcpRoute {
        server_names: Vec::new(),
        ..route.clone()
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        match upgrade.await {
            // A tunnel is not a socket of its own: a refusal closes it.
            Ok(upgraded) => {
                tcp::proxy(TokioIo::new(upgraded), &[route], &tunnel, &shared).await;
            }
            Err(error) => tracing::debug!(%error, "a CONNECT tunnel was not taken up"),
        }
    });
    Response::new(body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(authority: &str) -> Result<Target, String> {
        Target::parse(authority, 80)
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn authorities_give_a_lowercase_host_and_a_port_defaulting_to_the_scheme_s() {
        assert_eq!(
            parse("Reviews.Default.svc.cluster.local:9080"),
            Ok(target("reviews.default.svc.cluster.local", 9080))
        );
        assert_eq!(parse("API.example.com"), Ok(target("api.example.com", 80)));
        assert_eq!(parse("example.com:"), Ok(target("example.com", 80)));
        assert_eq!(
            Target::parse("example.com", 443),
            Ok(target("example.com", 443))
        );
        assert_eq!(parse("[::1]:8080"), Ok(target("[::1]", 8080)));
        assert_eq!(parse("[FE80::1]"), Ok(target("[fe80::1]", 80)));
        assert_eq!(parse("10.0.0.1:9000"), Ok(target("10.0.0.1", 9000)));
        for bad in [
            "",
            ":80",
            "[::1",
            "[::1]x",
            "[nope]:80",
            "a:b",
            "a:0",
            "a:70000",
            "user@a:80",
            "::1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(target("[::1]", 80).authority(), "[::1]:80");
    }

    fn request(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn targets_come_from_absolute_urls_and_connect_authorities_only() {
        assert_eq!(
            target_of(&request("GET", "http://HTTPBIN.default:8000/hello")),
            Ok(target("httpbin.default", 8000))
        );
        assert_eq!(
            target_of(&request("GET", "http://example.com/")),
            Ok(target("example.com", 80))
        );
        assert_eq!(
            target_of(&request("CONNECT", "api.example.com:443")),
            Ok(target("api.example.com", 443))
        );
        let origin = target_of(&request("GET", "/hello")).unwrap_err();
        assert!(origin.contains("not in absolute form"), "{origin}");
        let https = target_of(&request("GET", "https://example.com/")).unwrap_err();
        assert!(https.contains("CONNECT"), "{https}");
    }

    #[test]
    fn tunnels_are_chosen_by_port_then_host_then_the_fallback() {
        let route = |name: &str, names: &[&str]| TcpRoute {
            name: name.to_owned(),
            server_names: names.iter().map(|n| (*n).to_owned()).collect(),
            clusters: vec![(name.to_owned(), 100)],
        };
        let mut proxy = HttpProxy::default();
        proxy.tunnels.insert(
            9000,
            vec![
                route("echo", &["echo.default.svc.cluster.local", "echo"]),
                route("db", &["db.default.svc.cluster.local"]),
            ],
        );
        let name = |t: &Target, p: &HttpProxy| tunnel_route(p, t).map(|r| r.name.clone());
        assert_eq!(name(&target("echo", 9000), &proxy).as_deref(), Some("echo"));
        assert_eq!(
            name(&target("db.default.svc.cluster.local", 9000), &proxy).as_deref(),
            Some("db")
        );
        assert_eq!(name(&target("other", 9000), &proxy), None);
        assert_eq!(name(&target("echo", 9001), &proxy), None);
        proxy.default_tunnel = Some(route("PassthroughCluster", &[]));
        assert_eq!(
            name(&target("other", 9000), &proxy).as_deref(),
            Some("PassthroughCluster")
        );
    }
}
