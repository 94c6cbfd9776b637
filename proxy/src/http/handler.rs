//! One HTTP request, from arrival to response: clean the headers, authenticate its token and
//! authorize it, find the virtual host and route, answer CORS preflights, inject faults, then
//! redirect, answer directly, or forward to a cluster (`forward`). Every request ends in telemetry: its response body is wrapped so that
//! the access log line and metrics are written when the response is complete.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::explicit_proxy;
use super::flags::ResponseFlags;
use super::forward::{self, Forward};
use super::headers;
use super::local_reply::{LocalReply, Reason, is_grpc, local_reply};
use super::routing::{RequestFacts, find_route};
use super::tracked::{Exchange, Pending, track_request};
use crate::authn::{self, Authenticated, Refusal};
use crate::authz::{self, Attributes, Protocol};
use crate::runtime::{Active, Downstream, Shared};
use crate::snapshot::{Cors, FaultAbort, Redirect, RedirectPort, Route, RouteAction};

/// Serves one request; never fails (failures are responses).
pub(crate) async fn handle(
    mut request: Request<Incoming>,
    downstream: Arc<Downstream>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let logged = shared.telemetry.access_log.enabled();
    let exchange = Exchange::start(
        &request,
        &downstream,
        Instant::now(),
        SystemTime::now(),
        logged,
    );
    let upgrade = if downstream.http_proxy && request.method() == Method::CONNECT {
        Some(hyper::upgrade::on(&mut request))
    } else {
        forward::take_upgrade(&mut request)
    };
    let (request, received) = track_request(request);
    // Reported even when this future is dropped before the response (the client went away).
    let mut pending = Pending::new(exchange, received, shared.clone());
    let active = shared.active();
    let response = route(
        request,
        upgrade,
        &downstream,
        &active,
        &shared,
        &mut pending.exchange,
    )
    .await;
    Ok(pending.respond(response))
}

async fn route(
    mut request: Request<Body>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    downstream: &Downstream,
    active: &Active,
    shared: &Arc<Shared>,
    exchange: &mut Exchange,
) -> Response<Body> {
    let grpc = is_grpc(request.headers());
    // An explicit proxy routes by the request's target: its port picks the route table.
    let mut route_table = downstream.route_table.as_str();
    let target = if downstream.http_proxy {
        let target = match explicit_proxy::target_of(&request) {
            Ok(target) => target,
            Err(problem) => {
                exchange.authority = authority_of(&request);
                return local_reply(
                    StatusCode::BAD_REQUEST,
                    ResponseFlags::INVALID_REQUEST,
                    problem,
                    grpc,
                );
            }
        };
        exchange.authority = target.authority();
        if request.method() == Method::CONNECT {
            return explicit_proxy::connect(&target, upgrade, downstream, active, shared, exchange)
                .await;
        }
        let table = explicit_proxy::settings(active, &downstream.listener)
            .ok_or_else(|| format!("listener {} is not an HTTP proxy", downstream.listener))
            .and_then(|proxy| explicit_proxy::route_table(proxy, &target, &downstream.listener));
        match table {
            Ok(table) => route_table = table,
            Err(reason) => {
                return local_reply(StatusCode::NOT_FOUND, ResponseFlags::NO_ROUTE, reason, grpc);
            }
        }
        Some(target)
    } else {
        None
    };
    let Some(router) = active.routers.get(route_table) else {
        return local_reply(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            format!("route table {route_table} is not configured"),
            grpc,
        );
    };

    let headers = request.headers_mut();
    headers::remove_internal(headers, downstream.mesh_peer.is_some());
    if let Some(peer) = &downstream.mesh_peer {
        headers::append_client_cert(headers, &peer.xfcc);
    } else if let Some(element) = &downstream.client_certificate {
        // Envoy's SANITIZE_SET at gateways: what the client sent was removed; this is set.
        headers.insert("x-forwarded-client-cert", element.clone());
    }
    exchange.request_id = headers::ensure_request_id(headers);
    headers::set_forwarded(
        headers,
        &downstream.peer_ip,
        downstream.scheme(),
        shared.options.trusted_hops,
    );

    let authority = authority_of(&request);
    exchange.authority.clone_from(&authority);
    if let Some(problem) = malformed_request(&request, &authority) {
        return local_reply(
            StatusCode::BAD_REQUEST,
            ResponseFlags::INVALID_REQUEST,
            problem,
            grpc,
        );
    }
    let authenticated = match authn::authenticate(&active.jwt_rules, &mut request).await {
        Ok(authenticated) => authenticated,
        Err(refusal) => return token_refused(&request, &authority, downstream, refusal, grpc),
    };
    if let Some(denied) = authorize(
        &request,
        &authority,
        authenticated.as_ref(),
        downstream,
        active,
        shared,
        grpc,
    ) {
        return denied;
    }
    let Some(host) = router.virtual_host(&authority) else {
        let reason = match &target {
            Some(target) => explicit_proxy::not_imported(target, &downstream.listener),
            None => format!(
                "no virtual host for authority {authority:?} on {}",
                downstream.listener
            ),
        };
        return local_reply(StatusCode::NOT_FOUND, ResponseFlags::NO_ROUTE, reason, grpc);
    };
    if host.require_tls && !downstream.tls {
        return https_redirect(&request, &authority);
    }
    let (parts, body) = request.into_parts();
    let facts = RequestFacts {
        parts: &parts,
        authority: &authority,
        scheme: downstream.scheme(),
        // A VirtualService's `port` match is the target's port on an explicit proxy.
        port: target.as_ref().map_or(downstream.local.port(), |t| t.port),
    };
    let Some(route) = find_route(host, &facts) else {
        return local_reply(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            format!(
                "no route matched {} {} in virtual host {}",
                parts.method,
                parts.uri.path(),
                host.name
            ),
            grpc,
        );
    };
    exchange.route_name.clone_from(&route.name);
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let mut request = Request::from_parts(parts, body);

    if let Some(cors) = &route.cors
        && let Some(preflight) = cors_preflight(cors, &request)
    {
        return preflight;
    }
    // The destination is chosen with the route, so that a fault's access log line names the
    // cluster the request would have gone to, as Envoy's does.
    let choice = match &route.action {
        RouteAction::Forward { clusters, .. } => forward::choose_cluster(clusters),
        RouteAction::Redirect(_) | RouteAction::DirectResponse(_) => None,
    };
    if let Some(choice) = choice {
        exchange.cluster.clone_from(&choice.cluster);
    }
    if let Some(reply) = inject_fault(route, grpc, exchange).await {
        return reply;
    }
    let mut response = match &route.action {
        RouteAction::Redirect(redirect) => {
            redirect_reply(redirect, &request, &authority, downstream)
        }
        RouteAction::DirectResponse(direct) => {
            let body = direct.body.clone().map_or_else(body::empty, body::full);
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
            response
        }
        RouteAction::Forward { rewrite, .. } => {
            let Some(choice) = choice else {
                return local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::NO_CLUSTER_FOUND,
                    format!("route {} has no destination with weight", route.name),
                    grpc,
                );
            };
            // As in Envoy, a destination's edits come first and the route's after them, so
            // the route's win where both set a header.
            headers::apply(&choice.request_headers, request.headers_mut());
            headers::apply(&route.request_headers, request.headers_mut());
            if let Some(rewrite) = rewrite {
                forward::rewrite(&mut request, rewrite, route);
            }
            // ALLOW_ANY on an explicit proxy: the original destination is the named target.
            let to_original_destination = active
                .clusters
                .get(&choice.cluster)
                .is_some_and(|c| c.config().original_destination);
            let passthrough = match &target {
                Some(target) if to_original_destination => {
                    match explicit_proxy::towards(target, downstream).await {
                        Ok(passthrough) => Some(passthrough),
                        Err(reason) => {
                            return local_reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                ResponseFlags::DNS_RESOLUTION_FAILED,
                                reason,
                                grpc,
                            );
                        }
                    }
                }
                _ => None,
            };
            let downstream = passthrough.as_ref().unwrap_or(downstream);
            let target = Forward {
                route,
                cluster: &choice.cluster,
                grpc,
                upgrade,
                downstream,
            };
            let mut response = forward::forward(request, target, active, shared, exchange).await;
            headers::apply(&choice.response_headers, response.headers_mut());
            response
        }
    };
    if response.extensions().get::<LocalReply>().is_none() {
        headers::apply(&route.response_headers, response.headers_mut());
    }
    if let (Some(cors), Some(origin)) = (&route.cors, origin) {
        cors_response_headers(cors, &origin, response.headers_mut());
    }
    response
}

/// Checks the request against the workload's authorization policies (before routing, as
/// Envoy's RBAC filter does); a denial is 403 `RBAC: access denied`, with the deciding policy
/// in the access log.
fn authorize(
    request: &Request<Body>,
    authority: &str,
    authenticated: Option<&Authenticated>,
    downstream: &Downstream,
    active: &Active,
    shared: &Shared,
    grpc: bool,
) -> Option<Response<Body>> {
    let policies = &active.snapshot.policies;
    if !policies.has_authorization() {
        return None;
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let attributes = Attributes {
        remote_ip: headers::original_client(
            request.headers(),
            downstream.peer.ip(),
            shared.options.trusted_hops,
        ),
        host: Some(authority),
        method: Some(request.method().as_str()),
        path: Some(path),
        headers: Some(request.headers()),
        request_principal: authenticated.map(|a| a.principal.as_str()),
        request_audiences: authenticated.map_or(&[], |a| a.audiences.as_slice()),
        request_presenter: authenticated.and_then(|a| a.presenter.as_deref()),
        request_claims: authenticated.map_or(&[], |a| a.claims.as_slice()),
        ..downstream.attributes(Protocol::Http)
    };
    let decision = authz::evaluate(policies, &attributes);
    if decision.allowed {
        return None;
    }
    Some(local_reply(
        StatusCode::FORBIDDEN,
        ResponseFlags::UNAUTHORIZED,
        decision.reason,
        grpc,
    ))
}

/// A request whose token failed verification: 401 `Jwt verification fails` with a
/// `www-authenticate` challenge naming the request's URL (as Envoy's JWT filter answers); the
/// reason goes to the access log.
fn token_refused(
    request: &Request<Body>,
    authority: &str,
    downstream: &Downstream,
    refusal: Refusal,
    grpc: bool,
) -> Response<Body> {
    let mut response = local_reply(
        StatusCode::UNAUTHORIZED,
        ResponseFlags::UNAUTHENTICATED,
        refusal.0,
        grpc,
    );
    let realm = format!(
        "Bearer realm=\"{}://{}{}\", error=\"invalid_token\"",
        downstream.scheme(),
        authority,
        request.uri().path()
    );
    if let Ok(value) = HeaderValue::from_str(&realm) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The request's authority: `:authority` for HTTP/2, `Host` for HTTP/1.
fn authority_of(request: &Request<Body>) -> String {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Why the request is malformed, if it is, in what the HTTP/1 parser lets through (RFC 9112
/// sections 3.2 and 3.3, RFC 9110 sections 4.2 and 7.2): a request-target in a form its method
/// does not allow (authority-form is for CONNECT, asterisk-form for OPTIONS) or with a scheme
/// other than http or https; no `Host` in an HTTP/1.1 request, or more than one; an authority
/// with userinfo or a port that is not a number below 65536.
fn malformed_request<B>(request: &Request<B>, authority: &str) -> Option<String> {
    let uri = request.uri();
    if let Some(scheme) = uri.scheme_str()
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Some(format!(
            "unsupported scheme {scheme:?} in the request target"
        ));
    }
    if uri.scheme().is_none() && uri.authority().is_some() && request.method() != Method::CONNECT {
        return Some(format!(
            "authority-form target in a {} request",
            request.method()
        ));
    }
    if uri.path() == "*" && request.method() != Method::OPTIONS {
        return Some(format!(
            "asterisk-form target in a {} request",
            request.method()
        ));
    }
    match request.headers().get_all(header::HOST).iter().count() {
        0 if request.version() == Version::HTTP_11 && uri.authority().is_none() => {
            return Some("no Host header".to_owned());
        }
        0 | 1 => {}
        _ => return Some("more than one Host header".to_owned()),
    }
    if authority.contains('@') {
        return Some(format!("userinfo in authority {authority:?}"));
    }
    let port = match authority.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => authority.rsplit_once(':').map(|(_, port)| port),
    };
    match port {
        Some(port) if !port.is_empty() && port.parse::<u16>().is_err() => {
            Some(format!("invalid port in authority {authority:?}"))
        }
        _ => None,
    }
}

/// `httpsRedirect`: the same URL over HTTPS, 301.
fn https_redirect(request: &Request<Body>, authority: &str) -> Response<Body> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let host = super::routing::host_of(authority);
    let location = format!("https://{host}{path}");
    redirect_response(
        StatusCode::MOVED_PERMANENTLY,
        &location,
        "https redirect required by the server",
    )
}

fn redirect_reply(
    redirect: &Redirect,
    request: &Request<Body>,
    authority: &str,
    downstream: &Downstream,
) -> Response<Body> {
    let scheme = redirect.scheme.as_deref().unwrap_or(downstream.scheme());
    let host = redirect.authority.as_deref().map_or_else(
        || super::routing::host_of(authority).to_owned(),
        |a| super::routing::host_of(a).to_owned(),
    );
    let original_port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let port = match redirect.port {
        RedirectPort::Keep => redirect
            .authority
            .as_deref()
            .and_then(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
            .or(original_port),
        RedirectPort::Port(port) => Some(port),
        RedirectPort::FromProtocolDefault => None,
        RedirectPort::FromRequest => Some(downstream.local.port()),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = match port {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host,
    };
    let path = redirect_path(redirect.path.as_deref(), request.uri());
    let location = format!("{scheme}://{authority}{path}");
    let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    redirect_response(status, &location, "redirected by the route")
}

/// The path (and query) a redirect points to: the request's own, or the route's `uri`, which
/// keeps the request's query unless it carries one itself (Envoy's `path_redirect`).
fn redirect_path(replacement: Option<&str>, uri: &http::Uri) -> String {
    let original = uri.path_and_query().map_or("/", |p| p.as_str());
    match (replacement, uri.query()) {
        (None, _) => original.to_owned(),
        (Some(path), Some(query)) if !path.contains('?') => format!("{path}?{query}"),
        (Some(path), _) => path.to_owned(),
    }
}

fn redirect_response(status: StatusCode, location: &str, reason: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.extensions_mut().insert(LocalReply(Reason {
        flags: ResponseFlags::NONE,
        text: reason.to_owned(),
    }));
    response
}

/// Delays and aborts, each applied to its percentage of requests. An omitted percentage
/// affects no request (as in Istio).
async fn inject_fault(
    route: &Route,
    grpc: bool,
    exchange: &mut Exchange,
) -> Option<Response<Body>> {
    let fault = route.fault.as_ref()?;
    if let Some(delay) = &fault.delay
        && chance(delay.percentage)
    {
        exchange.flags |= ResponseFlags::DELAY_INJECTED;
        tokio::time::sleep(delay.delay).await;
    }
    let abort = fault.abort.as_ref()?;
    let (status, percentage, grpc_status) = match abort {
        FaultAbort::Http { status, percentage } => (*status, *percentage, None),
        FaultAbort::Grpc { status, percentage } => (200, *percentage, Some(*status)),
    };
    if !chance(percentage) {
        return None;
    }
    let reason = format!("fault injected by route {}", route.name);
    if let Some(code) = grpc_status {
        let mut response = local_reply(StatusCode::OK, ResponseFlags::FAULT_INJECTED, reason, true);
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(u16::from(code)));
        return Some(response);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(local_reply(
        status,
        ResponseFlags::FAULT_INJECTED,
        reason,
        grpc,
    ))
}

/// True for `percentage` percent of calls.
fn chance(percentage: f64) -> bool {
    percentage >= 100.0 || (percentage > 0.0 && fastrand::f64() * 100.0 < percentage)
}

fn origin_allowed(cors: &Cors, origin: &str) -> bool {
    cors.allow_origins.iter().any(|m| m.matches(origin))
}

/// Answers a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from
/// an allowed origin; other preflights go on to the upstream (Istio's default) unless the
/// policy says otherwise.
fn cors_preflight(cors: &Cors, request: &Request<Body>) -> Option<Response<Body>> {
    if request.method() != http::Method::OPTIONS {
        return None;
    }
    let origin = request.headers().get(header::ORIGIN)?.to_str().ok()?;
    request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    if !origin_allowed(cors, origin) {
        return (!cors.forward_unmatched_preflights).then(|| {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::OK;
            response
        });
    }
    let mut response = Response::new(body::empty());
    let headers = response.headers_mut();
    insert(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if !cors.allow_methods.is_empty() {
        insert(
            headers,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &cors.allow_methods.join(","),
        );
    }
    if !cors.allow_headers.is_empty() {
        insert(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &cors.allow_headers.join(","),
        );
    }
    if let Some(max_age) = cors.max_age {
        insert(
            headers,
            header::ACCESS_CONTROL_MAX_AGE,
            &max_age.as_secs().to_string(),
        );
    }
    if cors.allow_credentials {
        insert(headers, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    response.extensions_mut().insert(LocalReply(Reason {
        flags: ResponseFlags::NONE,
        text: "CORS preflight answered by the route's policy".to_owned(),
    }));
    Some(response)
}

/// CORS headers on an actual (non-preflight) response to an allowed origin.
fn cors_response_headers(cors: &Cors, origin: &HeaderValue, headers: &mut http::HeaderMap) {
    let Ok(origin) = origin.to_str() else { return };
    if !origin_allowed(cors, origin) {
        return;
    }
    insert(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if !cors.expose_headers.is_empty() {
        insert(
            headers,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &cors.expose_headers.join(","),
        );
    }
    if cors.allow_credentials {
        insert(headers, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

fn insert(headers: &mut http::HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_requests_are_found() {
        let request = |method: &str, uri: &str, version: Version, hosts: &[&str]| {
            let mut builder = Request::builder().method(method).uri(uri).version(version);
            for host in hosts {
                builder = builder.header(header::HOST, *host);
            }
            builder.body(()).unwrap()
        };
        let check = |method: &str, uri: &str, hosts: &[&str], authority: &str| {
            malformed_request(&request(method, uri, Version::HTTP_11, hosts), authority)
        };
        let a = &["a"];
        assert_eq!(check("GET", "/a", a, "a"), None);
        assert_eq!(check("GET", "/a", a, "web.example.com:8080"), None);
        assert_eq!(check("GET", "/a", a, "[::1]:8080"), None);
        assert_eq!(check("GET", "/a", a, "[::1]"), None);
        assert_eq!(check("GET", "/a", a, "a:"), None);
        assert_eq!(check("GET", "HTTPS://a/", &[], "a"), None);
        assert_eq!(check("OPTIONS", "*", a, "a"), None);
        assert_eq!(check("CONNECT", "a:443", a, "a:443"), None);
        let http10 = request("GET", "/", Version::HTTP_10, &[]);
        assert_eq!(malformed_request(&http10, ""), None);
        assert!(check("GET", "://a/", a, "a").is_some());
        assert!(check("GET", "ftp://a/", a, "a").is_some());
        assert!(check("GET", "a:80", a, "a:80").is_some());
        assert!(check("GET", "*", a, "a").is_some());
        assert!(check("GET", "/", &[], "").is_some());
        assert!(check("GET", "/", &["a", "b"], "a").is_some());
        assert!(check("GET", "/a", a, "user@a").is_some());
        assert!(check("GET", "/a", a, "a:8o").is_some());
        assert!(check("GET", "/a", a, "a:65536").is_some());
        assert!(check("GET", "/a", a, "[::1]:x").is_some());
    }

    #[test]
    fn a_redirect_uri_keeps_the_query_unless_it_has_its_own() {
        let uri: http::Uri = "/old?bar=1".parse().unwrap();
        assert_eq!(redirect_path(None, &uri), "/old?bar=1");
        assert_eq!(redirect_path(Some("/new"), &uri), "/new?bar=1");
        assert_eq!(redirect_path(Some("/new?foo=1"), &uri), "/new?foo=1");
        let bare: http::Uri = "/old".parse().unwrap();
        assert_eq!(redirect_path(Some("/new"), &bare), "/new");
    }
}
