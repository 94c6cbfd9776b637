//! VirtualService routes to the proxy's routes, for one Gateway and server port.
//!
//! A match block that names other gateways (`match.gateways`), another port, or source labels
//! or a namespace the gateway does not have is left out; a route whose blocks are all left out
//! is not served (it does not become a catch-all). Everything else maps one to one: matches,
//! weighted destinations (a lone destination takes all traffic), redirects, direct responses,
//! rewrites (RE2's `\1` becomes `${1}`), header edits, the timeout, retries (Istio's default
//! policy when none is given), faults, mirrors and CORS.

use std::time::Duration;

use base64::Engine as _;
use strait_proxy::snapshot::{
    Cors, DirectResponse, Fault, FaultAbort, FaultDelay, HeaderEdits, HeaderMatch, HeaderOps,
    Mirror, Pattern, QueryMatch, Redirect, RedirectPort, RetryOn, RetryPolicy, Rewrite, Route,
    RouteAction, RouteMatch, StringMatcher, TcpRoute, WeightedCluster,
};

use super::Compiler;
use super::listeners::{Bound, names_gateway};
use crate::resources::Object;
use crate::resources::common::{HeaderOperations, Percent, StringMatch};
use crate::resources::virtual_service::MESH_GATEWAY;
use crate::resources::virtual_service::{
    Destination, HttpMatchRequest, HttpRetry, HttpRoute, RedirectPortSelection, RouteDestination,
    UnmatchedPreflights,
};
use crate::yaml::FieldPath;

/// The conditions of Istio's default retry policy.
const ISTIO_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Envoy's default base interval between retries.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// gRPC status names as `grpcStatus` writes them, by code.
const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Who sends the traffic routes are compiled for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Client<'a> {
    /// A server of this Gateway (an ingress or egress gateway).
    Gateway(&'a Object),
    /// The mesh: a sidecar's outbound traffic (`gateways: [mesh]`, or none).
    Mesh,
}

impl Client<'_> {
    /// Whether `gateways`, written in `namespace`, name this client.
    pub(super) fn named_by(self, namespace: &str, gateways: &[String]) -> bool {
        gateways.iter().any(|reference| match self {
            Client::Gateway(gateway) => names_gateway(namespace, reference, gateway),
            Client::Mesh => reference == MESH_GATEWAY,
        })
    }
}

impl<'a> Compiler<'a> {
    /// The HTTP routes of `bound` as `gateway` serves them on server port `port`.
    pub(super) fn http_routes(
        &mut self,
        bound: &Bound<'a>,
        client: Client<'_>,
        port: u32,
    ) -> Vec<Route> {
        let http = FieldPath::ROOT.field("spec").field("http");
        // Sized exactly: a snapshot holds tens of thousands of these lists.
        let mut routes = Vec::with_capacity(bound.spec.http.len());
        for (index, route) in bound.spec.http.iter().enumerate() {
            let path = http.index(index);
            self.at(bound.object, path.clone());
            let mut matches = Vec::with_capacity(route.matches.len());
            for (m, block) in route.matches.iter().enumerate() {
                if !self.applies(
                    bound.object,
                    &block.gateways,
                    block.port,
                    &block.source_labels,
                    &block.source_namespace,
                    client,
                    port,
                ) {
                    continue;
                }
                self.at(bound.object, path.field("match").index(m));
                if let Some(compiled) = self.route_match(block) {
                    matches.push(compiled);
                }
            }
            if !route.matches.is_empty() && matches.is_empty() {
                continue;
            }
            self.at(bound.object, path.clone());
            let name = route.name.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}[{index}]",
                    bound.object.namespace,
                    bound.object.name()
                )
            });
            if let Some(action) = self.route_action(bound.object, route, &path, port) {
                routes.push(Route {
                    name,
                    matches,
                    action,
                    timeout: route
                        .timeout
                        .as_ref()
                        .and_then(|d| d.value)
                        .filter(|d| !d.is_zero()),
                    retry: self.retry_policy(route.retries.as_deref()),
                    fault: self.fault(route).map(Box::new),
                    request_headers: header_ops(
                        route.headers.as_ref().and_then(|h| h.request.as_ref()),
                    ),
                    response_headers: header_ops(
                        route.headers.as_ref().and_then(|h| h.response.as_ref()),
                    ),
                    mirrors: self.mirrors(bound.object, route),
                    cors: self.cors(route).map(Box::new),
                });
            }
        }
        routes
    }

    /// The `tcp` routes of `bound` for `gateway` on `port`; a route applies when any of its match
    /// blocks does (or it has none).
    pub(super) fn tcp_routes(
        &mut self,
        bound: &Bound<'a>,
        client: Client<'_>,
        port: u32,
    ) -> Vec<TcpRoute> {
        let mut routes = Vec::new();
        for (index, route) in bound.spec.tcp.iter().enumerate() {
            let path = FieldPath::ROOT.field("spec").field("tcp").index(index);
            self.at(bound.object, path.clone());
            let applies = route.matches.is_empty()
                || route.matches.iter().any(|m| {
                    self.applies(
                        bound.object,
                        &m.gateways,
                        m.port,
                        &m.source_labels,
                        &m.source_namespace,
                        client,
                        port,
                    )
                });
            if route
                .matches
                .iter()
                .any(|m| !m.destination_subnets.is_empty() || m.source_subnet.is_some())
            {
                self.problem("destinationSubnets and sourceSubnet are not matched at gateways yet; the route applies without them");
            }
            if applies {
                routes.push(TcpRoute {
                    name: format!(
                        "{}/{}.tcp[{index}]",
                        bound.object.namespace,
                        bound.object.name()
                    ),
                    server_names: Vec::new(),
                    clusters: self.l4_clusters(bound.object, &route.route, &path),
                });
            }
        }
        routes
    }

    /// The `tls` routes of `bound` for `gateway` on `port`, by the SNI names they match.
    pub(super) fn tls_routes(
        &mut self,
        bound: &Bound<'a>,
        client: Client<'_>,
        port: u32,
    ) -> Vec<TcpRoute> {
        let mut routes = Vec::new();
        for (index, route) in bound.spec.tls.iter().enumerate() {
            let path = FieldPath::ROOT.field("spec").field("tls").index(index);
            self.at(bound.object, path.clone());
            let mut server_names = Vec::new();
            for m in route.matches.iter().flatten() {
                if self.applies(
                    bound.object,
                    &m.gateways,
                    m.port,
                    &m.source_labels,
                    &m.source_namespace,
                    client,
                    port,
                ) {
                    server_names
                        .extend(m.sni_hosts.iter().flatten().map(|h| h.to_ascii_lowercase()));
                }
            }
            if server_names.is_empty() {
                continue;
            }
            routes.push(TcpRoute {
                name: format!(
                    "{}/{}.tls[{index}]",
                    bound.object.namespace,
                    bound.object.name()
                ),
                server_names,
                clusters: self.l4_clusters(bound.object, &route.route, &path),
            });
        }
        routes
    }

    /// Whether a match block applies to `client` on port `port`. Source labels and namespace
    /// select the client workload: the gateway itself, or the sidecar's workload.
    #[allow(clippy::too_many_arguments)]
    fn applies(
        &self,
        vs: &Object,
        gateways: &[String],
        match_port: Option<u32>,
        source_labels: &std::collections::BTreeMap<String, String>,
        source_namespace: &Option<String>,
        client: Client<'_>,
        port: u32,
    ) -> bool {
        // Blocks without `gateways` take the VirtualService's, which already bound it.
        (gateways.is_empty() || client.named_by(&vs.namespace, gateways))
            && match_port.is_none_or(|p| p == port)
            && source_labels
                .iter()
                .all(|(k, v)| self.options.labels.get(k) == Some(v))
            && source_namespace
                .as_deref()
                .is_none_or(|ns| ns == self.options.namespace)
    }

    fn route_match(&mut self, block: &HttpMatchRequest) -> Option<RouteMatch> {
        let mut headers = Vec::new();
        for (names, invert) in [(&block.headers, false), (&block.without_headers, true)] {
            for (name, matcher) in names {
                let name = name.to_ascii_lowercase();
                // Istio ignores these keys in `headers`: they have their own fields.
                if matches!(name.as_str(), "uri" | "scheme" | "method" | "authority") {
                    continue;
                }
                headers.push(HeaderMatch {
                    name,
                    matcher: self.string_matcher(matcher)?,
                    invert,
                });
            }
        }
        let mut query_params = Vec::new();
        for (name, matcher) in &block.query_params {
            query_params.push(QueryMatch {
                name: name.clone(),
                matcher: self.string_matcher(matcher)?,
            });
        }
        Some(RouteMatch {
            path: self.optional_matcher(block.uri.as_ref())?,
            ignore_case: block.ignore_uri_case == Some(true),
            method: self.optional_matcher(block.method.as_deref())?,
            authority: self.optional_matcher(block.authority.as_deref())?,
            scheme: self.optional_matcher(block.scheme.as_deref())?,
            headers,
            query_params,
            // The port was applied when choosing the routes of this server.
            port: None,
        })
    }

    /// `Some(None)` for no condition, `None` when the condition cannot be compiled.
    fn optional_matcher(&mut self, matcher: Option<&StringMatch>) -> Option<Option<StringMatcher>> {
        match matcher {
            None => Some(None),
            Some(m) => self.string_matcher(m).map(Some),
        }
    }

    /// An empty StringMatch is a presence check.
    fn string_matcher(&mut self, m: &StringMatch) -> Option<StringMatcher> {
        Some(if let Some(exact) = &m.exact {
            StringMatcher::Exact(exact.clone())
        } else if let Some(prefix) = &m.prefix {
            StringMatcher::Prefix(prefix.clone())
        } else if let Some(regex) = &m.regex {
            let compiled = match self.patterns.get(regex) {
                Some(pattern) => Ok(pattern.clone()),
                None => Pattern::new(regex).inspect(|pattern| {
                    self.patterns.insert(regex.clone(), pattern.clone());
                }),
            };
            match compiled {
                Ok(pattern) => StringMatcher::Regex(pattern),
                Err(error) => {
                    self.problem(format!("regex {regex:?}: {error}; the match is not served"));
                    return None;
                }
            }
        } else {
            StringMatcher::Present
        })
    }

    /// What a route does; `server_port` is the Gateway server port its table serves.
    fn route_action(
        &mut self,
        vs: &'a Object,
        route: &HttpRoute,
        path: &FieldPath,
        server_port: u32,
    ) -> Option<RouteAction> {
        if route.delegate.is_some() {
            self.problem("delegate is not supported yet; the route is not served");
            return None;
        }
        if let Some(redirect) = &route.redirect {
            let port = match (redirect.port, redirect.derive_port) {
                (Some(port), _) => RedirectPort::Port(u16::try_from(port).unwrap_or(u16::MAX)),
                (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                    RedirectPort::FromProtocolDefault
                }
                // The port the client addressed is the server port these routes serve, as in
                // Istio; the port a server is mapped to locally is not what clients see.
                (None, Some(RedirectPortSelection::FromRequestPort)) => {
                    RedirectPort::Port(u16::try_from(server_port).unwrap_or(u16::MAX))
                }
                (None, None) => RedirectPort::Keep,
            };
            return Some(RouteAction::Redirect(Redirect {
                path: redirect.uri.clone(),
                authority: redirect.authority.clone(),
                scheme: redirect.scheme.clone(),
                port,
                status: redirect
                    .redirect_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(301),
            }));
        }
        if let Some(response) = &route.direct_response {
            let body = match response.body.as_ref() {
                Some(body) => match (&body.string, &body.bytes) {
                    (Some(text), _) => Some(bytes::Bytes::from(text.clone())),
                    (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(encoded.trim_end_matches('='))
                    {
                        Ok(decoded) => Some(bytes::Bytes::from(decoded)),
                        Err(error) => {
                            self.problem(format!(
                                "directResponse.body.bytes: {error}; the route is not served"
                            ));
                            return None;
                        }
                    },
                    (None, None) => None,
                },
                None => None,
            };
            return Some(RouteAction::DirectResponse(DirectResponse {
                status: response
                    .status
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(200),
                body,
            }));
        }
        let lone = route.route.len() == 1;
        let mut clusters = Vec::with_capacity(route.route.len());
        for (index, destination) in route.route.iter().enumerate() {
            self.at(vs, path.field("route").index(index).field("destination"));
            let Some(cluster) = self.destination_cluster(vs, destination.destination.as_ref())
            else {
                continue;
            };
            clusters.push(WeightedCluster {
                cluster,
                weight: if lone {
                    100
                } else {
                    destination
                        .weight
                        .and_then(|w| u32::try_from(w).ok())
                        .unwrap_or(0)
                },
                request_headers: header_ops(
                    destination
                        .headers
                        .as_ref()
                        .and_then(|h| h.request.as_ref()),
                ),
                response_headers: header_ops(
                    destination
                        .headers
                        .as_ref()
                        .and_then(|h| h.response.as_ref()),
                ),
            });
        }
        self.at(vs, path.clone());
        let rewrite = route.rewrite.as_ref().map(|rewrite| {
            let path_regex = rewrite.uri_regex_rewrite.as_ref().and_then(|r| {
                let (Some(pattern), Some(replacement)) = (&r.match_, &r.rewrite) else {
                    return None;
                };
                match Pattern::unanchored(pattern) {
                    Ok(pattern) => Some((pattern, re2_replacement(replacement))),
                    Err(error) => {
                        self.problem(format!(
                            "uriRegexRewrite.match {pattern:?}: {error}; not rewritten"
                        ));
                        None
                    }
                }
            });
            Rewrite {
                path: rewrite.uri.clone(),
                path_regex,
                authority: rewrite.authority.clone(),
            }
        });
        let rewrite = rewrite.map(Box::new);
        Some(RouteAction::Forward { clusters, rewrite })
    }

    /// The cluster a destination names, its host qualified in the VirtualService's namespace.
    /// A host no ServiceEntry declares still gets its cluster name, so that requests to it are
    /// answered 503 with the reason rather than falling through to another route.
    fn destination_cluster(
        &mut self,
        vs: &Object,
        destination: Option<&Destination>,
    ) -> Option<String> {
        let destination = destination?;
        let host = self
            .registry
            .qualify(destination.host.as_deref()?, &vs.namespace);
        let port = destination.port.as_ref().and_then(|p| p.number);
        let subset = destination.subset.as_deref();
        let namespace = self.options.namespace.clone();
        Some(
            self.cluster(&host, port, subset, &namespace)
                .unwrap_or_else(|| {
                    super::clusters::cluster_name(port.unwrap_or_default(), subset, &host)
                }),
        )
    }

    fn l4_clusters(
        &mut self,
        vs: &'a Object,
        destinations: &[RouteDestination],
        path: &FieldPath,
    ) -> Vec<(String, u32)> {
        let lone = destinations.len() == 1;
        let mut clusters = Vec::new();
        for (index, destination) in destinations.iter().enumerate() {
            self.at(vs, path.field("route").index(index).field("destination"));
            if let Some(cluster) = self.destination_cluster(vs, destination.destination.as_ref()) {
                let weight = if lone {
                    100
                } else {
                    destination
                        .weight
                        .and_then(|w| u32::try_from(w).ok())
                        .unwrap_or(0)
                };
                clusters.push((cluster, weight));
            }
        }
        clusters
    }

    /// The route's retry policy: its own, Istio's default (or MeshConfig's) when it sets none,
    /// none when `attempts` is 0.
    pub(super) fn retry_policy(&mut self, retries: Option<&HttpRetry>) -> Option<RetryPolicy> {
        let default = self.registry.mesh.retry.clone();
        let retry = retries.unwrap_or(&default);
        let attempts = retry.attempts.or(default.attempts).unwrap_or(2);
        if attempts <= 0 {
            return None;
        }
        let retry_on = match retry
            .retry_on
            .as_deref()
            .or(default.retry_on.as_deref())
            .filter(|r| !r.is_empty())
        {
            Some(list) => parse_retry_on(list),
            None => {
                // Istio's default policy, which also retries 503 responses.
                let mut on = parse_retry_on(ISTIO_RETRY_ON);
                on.status_codes.push(503);
                on
            }
        };
        Some(RetryPolicy {
            attempts: u32::try_from(attempts).unwrap_or(0),
            per_try_timeout: retry
                .per_try_timeout
                .as_ref()
                .and_then(|d| d.value)
                .filter(|d| !d.is_zero()),
            retry_on,
            backoff: retry
                .backoff
                .as_ref()
                .and_then(|d| d.value)
                .unwrap_or(DEFAULT_BACKOFF),
        })
    }

    fn fault(&mut self, route: &HttpRoute) -> Option<Fault> {
        let fault = route.fault.as_ref()?;
        let delay = fault.delay.as_ref().and_then(|delay| {
            if delay.exponential_delay.is_some() {
                self.problem("fault.delay.exponentialDelay is not supported; no delay is injected");
                return None;
            }
            Some(FaultDelay {
                delay: delay.fixed_delay.as_ref().and_then(|d| d.value)?,
                percentage: percentage(delay.percentage.as_ref())
                    .or(delay.percent.map(f64::from))
                    .unwrap_or(0.0),
            })
        });
        let abort = fault.abort.as_ref().and_then(|abort| {
            let share = percentage(abort.percentage.as_ref()).unwrap_or(0.0);
            if let Some(status) = abort.http_status {
                return Some(FaultAbort::Http {
                    status: u16::try_from(status).ok()?,
                    percentage: share,
                });
            }
            if let Some(name) = &abort.grpc_status {
                return match grpc_status(name) {
                    Some(status) => Some(FaultAbort::Grpc {
                        status,
                        percentage: share,
                    }),
                    None => {
                        self.problem(format!(
                            "fault.abort.grpcStatus {name:?} is not a gRPC status name; no abort"
                        ));
                        None
                    }
                };
            }
            if abort.http2_error.is_some() {
                self.problem("fault.abort.http2Error is not supported; no abort is injected");
            }
            None
        });
        (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
    }

    fn mirrors(&mut self, vs: &'a Object, route: &HttpRoute) -> Vec<Mirror> {
        let mut mirrors = Vec::new();
        if let Some(destination) = &route.mirror {
            let share = percentage(route.mirror_percentage.as_ref())
                .or(route
                    .mirror_percent
                    .or(route.mirror_percent_snake)
                    .map(f64::from))
                .unwrap_or(100.0);
            if let Some(cluster) = self.destination_cluster(vs, Some(destination)) {
                mirrors.push(Mirror {
                    cluster,
                    percentage: share,
                });
            }
        }
        for mirror in &route.mirrors {
            if let Some(cluster) = self.destination_cluster(vs, mirror.destination.as_ref()) {
                mirrors.push(Mirror {
                    cluster,
                    percentage: percentage(mirror.percentage.as_ref()).unwrap_or(100.0),
                });
            }
        }
        mirrors
    }

    fn cors(&mut self, route: &HttpRoute) -> Option<Cors> {
        let policy = route.cors_policy.as_ref()?;
        let mut allow_origins = Vec::new();
        for origin in &policy.allow_origins {
            allow_origins.push(self.string_matcher(origin)?);
        }
        allow_origins.extend(
            policy
                .allow_origin
                .iter()
                .map(|o| StringMatcher::Exact(o.clone())),
        );
        Some(Cors {
            allow_origins,
            allow_methods: policy.allow_methods.clone(),
            allow_headers: policy.allow_headers.clone(),
            expose_headers: policy.expose_headers.clone(),
            max_age: policy.max_age.as_ref().and_then(|d| d.value),
            allow_credentials: policy.allow_credentials == Some(true),
            forward_unmatched_preflights: policy.unmatched_preflights
                != Some(UnmatchedPreflights::Ignore),
        })
    }
}

/// Header edits with lowercase names, in a stable order.
fn header_ops(operations: Option<&HeaderOperations>) -> HeaderOps {
    let Some(operations) = operations else {
        return HeaderOps::default();
    };
    let lower = |(k, v): (&String, &String)| (k.to_ascii_lowercase(), v.clone());
    HeaderOps::new(HeaderEdits {
        set: operations.set.iter().map(lower).collect(),
        add: operations.add.iter().map(lower).collect(),
        remove: operations
            .remove
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect(),
    })
}

fn percentage(percent: Option<&Percent>) -> Option<f64> {
    percent.and_then(|p| p.value).map(|v| v.clamp(0.0, 100.0))
}

fn grpc_status(name: &str) -> Option<u8> {
    GRPC_STATUSES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .and_then(|code| u8::try_from(code).ok())
        .or_else(|| name.parse::<u8>().ok().filter(|code| *code <= 16))
}

/// Envoy's retry conditions from a `retryOn` list; bare numbers are retriable status codes.
pub(crate) fn parse_retry_on(list: &str) -> RetryOn {
    let mut on = RetryOn::default();
    for token in list.split(',').map(str::trim) {
        match token {
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "reset-before-request" => on.reset_before_request = true,
            "connect-failure" => on.connect_failure = true,
            "refused-stream" => on.refused_stream = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "cancelled" => on.grpc_statuses.push(1),
            "deadline-exceeded" => on.grpc_statuses.push(4),
            "resource-exhausted" => on.grpc_statuses.push(8),
            "internal" => on.grpc_statuses.push(13),
            "unavailable" => on.grpc_statuses.push(14),
            other => {
                if let Ok(code) = other.trim_start_matches('+').parse::<u16>() {
                    on.status_codes.push(code);
                    on.retriable_status_codes = true;
                }
            }
        }
    }
    on
}

/// An RE2 rewrite (`\1` for a group) as the regex crate writes it (`${1}`, `$$` for `$`).
fn re2_replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_reads_envoy_conditions_grpc_names_and_codes() {
        let on = parse_retry_on("5xx,connect-failure,unavailable,cancelled,503,+429");
        assert!(on.server_error && on.connect_failure && on.retriable_status_codes);
        assert_eq!(on.grpc_statuses, vec![14, 1]);
        assert_eq!(on.status_codes, vec![503, 429]);
        assert!(!on.reset && !on.gateway_error);
    }

    #[test]
    fn re2_group_references_become_regex_crate_references() {
        assert_eq!(re2_replacement(r"/v2/\1/\2"), "/v2/${1}/${2}");
        assert_eq!(re2_replacement("/price$"), "/price$$");
        assert_eq!(re2_replacement(r"a\\b"), r"a\b");
    }

    #[test]
    fn grpc_status_names_map_to_codes() {
        assert_eq!(grpc_status("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status("unauthenticated"), Some(16));
        assert_eq!(grpc_status("14"), Some(14));
        assert_eq!(grpc_status("BOGUS"), None);
    }
}
