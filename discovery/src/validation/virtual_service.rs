//! VirtualService rules: hosts and gateway bindings, HTTP routes (matches, actions and their
//! conflicts, retries, faults, mirrors, CORS, header edits), TLS and TCP routes, and the
//! reachability of routes that an earlier catch-all hides.

use super::check::Check;
use super::rules;
use crate::hosts;
use crate::resources::common::Headers;
use crate::resources::virtual_service::{
    CorsPolicy, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, RouteDestination, TcpRoute, TlsRoute, VirtualService,
};
use crate::yaml::FieldPath;

pub(crate) fn validate(check: &mut Check<'_>, spec: &FieldPath, vs: &VirtualService) {
    let delegate = vs.hosts.is_empty();
    let binds_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    let binds_gateway_only = !vs.gateways.is_empty() && !binds_mesh;

    if delegate {
        for (field, set) in [
            ("gateways", !vs.gateways.is_empty()),
            ("tls", !vs.tls.is_empty()),
            ("tcp", !vs.tcp.is_empty()),
        ] {
            if set {
                check.error(
                    &spec.field(field),
                    "conflict",
                    format!("a delegate VirtualService (one without hosts) must have no {field}"),
                );
            }
        }
    }
    rules::gateway_names(check, &spec.field("gateways"), &vs.gateways);

    let hosts_path = spec.field("hosts");
    let sni_routes = vs
        .tls
        .iter()
        .any(|r| r.matches.iter().flatten().any(|m| m.sni_hosts.is_some()));
    let mut all_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let at = hosts_path.index(i);
        let valid = if binds_gateway_only && sni_routes && host.starts_with("outbound_") {
            host.split('_').count() >= 4
        } else {
            rules::is_ip(host) || rules::wildcard_domain(check, &at, host)
        };
        all_valid &= valid;
        if valid && binds_mesh && host == "*" {
            check.error(
                &at,
                "invalid-host",
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        }
    }
    if all_valid {
        for (i, a) in vs.hosts.iter().enumerate() {
            for b in &vs.hosts[i + 1..] {
                if hosts::overlaps(a, b) {
                    check.error(
                        &hosts_path.index(i),
                        "duplicate",
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        check.error(
            spec,
            "required",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    rules::export_to(
        check,
        &spec.field("exportTo"),
        &vs.export_to,
        &check.object().namespace.clone(),
        false,
    );

    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        let at = http.index(i);
        http_route(check, &at, route, delegate);
        if !binds_gateway_only {
            for (j, m) in route.matches.iter().enumerate() {
                for (field, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                ] {
                    for key in map.keys().filter(|k| rules::is_jwt_claim_header(k)) {
                        check.error(
                            &at.field("match").index(j).field(field).key(key),
                            "conflict",
                            format!(
                                "JWT claim based routing ({key}) is only supported on gateways; \
                                 this VirtualService also binds to the mesh"
                            ),
                        );
                    }
                }
            }
        }
    }
    let tls = spec.field("tls");
    for (i, route) in vs.tls.iter().enumerate() {
        tls_route(check, &tls.index(i), route, vs);
    }
    let tcp = spec.field("tcp");
    for (i, route) in vs.tcp.iter().enumerate() {
        tcp_route(check, &tcp.index(i), route);
    }
    unreachable_routes(check, &http, vs.http.iter().map(|r| r.matches.is_empty()));
    unreachable_routes(check, &tcp, vs.tcp.iter().map(|r| r.matches.is_empty()));
}

/// First match wins, so a route after a route without conditions never matches.
fn unreachable_routes(
    check: &mut Check<'_>,
    path: &FieldPath,
    catch_all: impl Iterator<Item = bool>,
) {
    let mut first_catch_all = None;
    for (i, is_catch_all) in catch_all.enumerate() {
        if let Some(earlier) = first_catch_all {
            check.warning(
                &path.index(i),
                "unreachable-route",
                format!(
                    "this route is never used: route [{earlier}] before it has no match conditions \
                     and takes every request (the first matching route wins)"
                ),
            );
        } else if is_catch_all {
            first_catch_all = Some(i);
        }
    }
}

fn http_route(check: &mut Check<'_>, path: &FieldPath, route: &HttpRoute, in_delegate: bool) {
    let has_route = !route.route.is_empty();
    if route.delegate.is_some() && !in_delegate {
        if route.redirect.is_some() {
            check.error(
                &path.field("redirect"),
                "conflict",
                "a route that delegates must not specify redirect",
            );
        }
        if has_route {
            check.error(
                &path.field("route"),
                "conflict",
                "a route that delegates must not specify route",
            );
        }
    } else {
        if in_delegate && route.delegate.is_some() {
            check.error(
                &path.field("delegate"),
                "conflict",
                "a delegate VirtualService cannot delegate again (one level only)",
            );
        }
        if route.redirect.is_some() {
            for (field, set) in [
                ("route", has_route),
                ("fault", route.fault.is_some()),
                ("rewrite", route.rewrite.is_some()),
                ("directResponse", route.direct_response.is_some()),
            ] {
                if set {
                    check.error(
                        &path.field(field),
                        "conflict",
                        format!("HTTP route cannot contain both {field} and redirect"),
                    );
                }
            }
        } else if route.direct_response.is_some() {
            for (field, set) in [
                ("route", has_route),
                ("fault", route.fault.is_some()),
                ("rewrite", route.rewrite.is_some()),
            ] {
                if set {
                    check.error(
                        &path.field(field),
                        "conflict",
                        format!("HTTP route cannot contain both {field} and directResponse"),
                    );
                }
            }
        } else if !has_route {
            check.error(
                path,
                "required",
                "HTTP route, redirect or directResponse is required",
            );
        }
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        check.error(
            &path.field("mirrors"),
            "conflict",
            "HTTP route cannot contain both mirror and mirrors",
        );
    }

    let matches = path.field("match");
    for (i, m) in route.matches.iter().enumerate() {
        http_match(check, &matches.index(i), m);
    }
    if let Some(headers) = &route.headers {
        header_operations(check, &path.field("headers"), headers);
    }
    authority_rewrites(check, path, route);
    if let Some(cors) = &route.cors_policy {
        cors_policy(check, &path.field("corsPolicy"), cors);
    }
    if let Some(fault) = &route.fault {
        fault_injection(check, &path.field("fault"), fault);
    }
    for (field, value) in [
        ("mirrorPercent", route.mirror_percent),
        ("mirror_percent", route.mirror_percent_snake),
    ] {
        if let Some(value) = value {
            let at = path.field(field);
            if value > 100 {
                check.error(
                    &at,
                    "out-of-range",
                    format!("{field} must have a max value of 100 (it has {value})"),
                );
            }
            check.warning(
                &at,
                "deprecated",
                format!("{field} is deprecated: use mirrorPercentage"),
            );
        }
    }
    rules::percentage(
        check,
        &path.field("mirrorPercentage"),
        &route.mirror_percentage,
    );
    if let Some(mirror) = &route.mirror {
        rules::destination(check, &path.field("mirror"), mirror);
    }
    let mirrors = path.field("mirrors");
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let at = mirrors.index(i);
        match &mirror.destination {
            None => check.required(&at.field("destination")),
            Some(destination) => rules::destination(check, &at.field("destination"), destination),
        }
        rules::percentage(check, &at.field("percentage"), &mirror.percentage);
    }
    if let Some(redirect) = &route.redirect {
        http_redirect(check, &path.field("redirect"), redirect);
    }
    if let Some(response) = &route.direct_response {
        direct_response(check, &path.field("directResponse"), response);
    }
    if let Some(retries) = &route.retries {
        http_retry(check, &path.field("retries"), retries);
    }
    if let Some(rewrite) = &route.rewrite {
        http_rewrite(check, &path.field("rewrite"), rewrite);
    }
    let destinations = path.field("route");
    let mut total_weight: i64 = 0;
    for (i, destination) in route.route.iter().enumerate() {
        let at = destinations.index(i);
        match &destination.destination {
            None => check.required(&at.field("destination")),
            Some(d) => rules::destination(check, &at.field("destination"), d),
        }
        if let Some(headers) = &destination.headers {
            header_operations(check, &at.field("headers"), headers);
        }
        total_weight += weight(check, &at.field("weight"), destination.weight);
    }
    if route.route.len() > 1 && total_weight == 0 {
        check.error(
            &destinations,
            "invalid-value",
            "total destination weight = 0: no destination gets traffic",
        );
    }
    rules::duration(check, &path.field("timeout"), &route.timeout);
}

/// A weight: not negative. Returns it for the total.
fn weight(check: &mut Check<'_>, path: &FieldPath, weight: Option<i32>) -> i64 {
    match weight {
        Some(w) if w < 0 => {
            check.error(
                path,
                "out-of-range",
                format!("weight must not be negative (found {w})"),
            );
            0
        }
        Some(w) => i64::from(w),
        None => 0,
    }
}

fn http_match(check: &mut Check<'_>, path: &FieldPath, m: &HttpMatchRequest) {
    let headers = path.field("headers");
    for (name, value) in &m.headers {
        let at = headers.key(name);
        rules::match_header_name(check, &at, name);
        rules::string_match(check, &at, value, false);
    }
    let without = path.field("withoutHeaders");
    for (name, value) in &m.without_headers {
        let at = without.key(name);
        rules::match_header_name(check, &at, name);
        rules::string_match(check, &at, value, false);
    }
    if let Some(uri) = &m.uri {
        // An empty prefix is allowed on the path: it matches everything.
        rules::string_match(check, &path.field("uri"), uri, true);
    }
    for (field, value) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(value) = value {
            rules::string_match(check, &path.field(field), value, false);
        }
    }
    let params = path.field("queryParams");
    for (name, value) in &m.query_params {
        rules::string_match(check, &params.key(name), value, false);
    }
    if let Some(port) = m.port.filter(|p| *p != 0) {
        rules::port(check, &path.field("port"), port);
    }
    rules::labels(check, &path.field("sourceLabels"), &m.source_labels);
    rules::gateway_names(check, &path.field("gateways"), &m.gateways);
    if let Some(namespace) = m.source_namespace.as_deref().filter(|n| !n.is_empty())
        && !rules::is_dns1123_label(namespace)
    {
        check.error(
            &path.field("sourceNamespace"),
            "invalid-value",
            format!("sourceNamespace match {namespace:?} is invalid"),
        );
    }
}

fn header_operations(check: &mut Check<'_>, path: &FieldPath, headers: &Headers) {
    for (direction, operations, request) in [
        ("request", &headers.request, true),
        ("response", &headers.response, false),
    ] {
        let Some(operations) = operations else {
            continue;
        };
        let at = path.field(direction);
        for (field, map) in [("set", &operations.set), ("add", &operations.add)] {
            let field_path = at.field(field);
            for (name, value) in map {
                let entry = field_path.key(name);
                rules::header_operation_name(check, &entry, name, request);
                rules::header_value(check, &entry, value);
            }
        }
        let remove = at.field("remove");
        for (i, name) in operations.remove.iter().enumerate() {
            rules::header_operation_name(check, &remove.index(i), name, false);
        }
    }
}

/// The authority may be rewritten once: by `rewrite.authority` or one `Host`/`:authority` header.
fn authority_rewrites(check: &mut Check<'_>, path: &FieldPath, route: &HttpRoute) {
    let mut current = route.rewrite.as_ref().and_then(|r| r.authority.clone());
    let Some(request) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (field, map) in [("set", &request.set), ("add", &request.add)] {
        for (name, value) in map {
            let lower = name.to_ascii_lowercase();
            if lower != ":authority" && lower != "host" {
                continue;
            }
            if let Some(existing) = &current {
                check.error(
                    &path
                        .field("headers")
                        .field("request")
                        .field(field)
                        .key(name),
                    "conflict",
                    format!(
                        "authority header cannot be set multiple times: have {existing:?}, \
                         attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = Some(value.clone());
        }
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

fn cors_policy(check: &mut Check<'_>, path: &FieldPath, cors: &CorsPolicy) {
    let origins = path.field("allowOrigins");
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let at = origins.index(i);
        let value = origin
            .exact
            .as_deref()
            .or(origin.prefix.as_deref())
            .or(origin.regex.as_deref());
        if value.is_none_or(str::is_empty) {
            check.error(
                &at,
                "invalid-value",
                "an allowed origin needs a non-empty exact, prefix or regex",
            );
        } else {
            rules::string_match(check, &at, origin, false);
        }
    }
    let methods = path.field("allowMethods");
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&method.as_str()) {
            check.error(
                &methods.index(i),
                "unsupported-value",
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        let at = path.field(field);
        for (i, name) in names.iter().enumerate() {
            rules::cors_header_name(check, &at.index(i), name);
        }
    }
    let max_age = path.field("maxAge");
    rules::duration(check, &max_age, &cors.max_age);
    if cors
        .max_age
        .as_ref()
        .and_then(|d| d.value)
        .is_some_and(|d| d.subsec_nanos() != 0)
    {
        check.error(
            &max_age,
            "invalid-duration",
            "maxAge is accurate only to seconds precision",
        );
    }
}

/// gRPC status code names an abort may use.
const GRPC_STATUSES: &[&str] = &[
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

fn fault_injection(check: &mut Check<'_>, path: &FieldPath, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        check.error(
            path,
            "required",
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(abort) = &fault.abort {
        let at = path.field("abort");
        rules::percentage(check, &at.field("percentage"), &abort.percentage);
        check.exclusive(
            &at,
            &[
                ("httpStatus", abort.http_status.is_some()),
                ("grpcStatus", abort.grpc_status.is_some()),
                ("http2Error", abort.http2_error.is_some()),
            ],
            "only one of httpStatus, grpcStatus or http2Error can be set",
        );
        if let Some(status) = &abort.grpc_status {
            if !GRPC_STATUSES.contains(&status.as_str()) {
                check.error(
                    &at.field("grpcStatus"),
                    "unsupported-value",
                    format!(
                        "gRPC status {status:?} is not supported; use a code name such as NOT_FOUND"
                    ),
                );
            }
        } else if abort.http2_error.is_some() {
            check.error(
                &at.field("http2Error"),
                "unsupported-value",
                "HTTP/2 abort fault injection is not supported yet",
            );
        } else if let Some(status) = abort.http_status {
            http_status(check, &at.field("httpStatus"), i64::from(status));
        } else {
            check.warning(
                &at,
                "ignored",
                "abort configured, but no httpStatus or grpcStatus: nothing is aborted",
            );
        }
        if abort.percentage.is_none() {
            no_percentage(check, &at, "aborts");
        }
    }
    if let Some(delay) = &fault.delay {
        let at = path.field("delay");
        rules::percentage(check, &at.field("percentage"), &delay.percentage);
        check.exclusive(
            &at,
            &[
                ("fixedDelay", delay.fixed_delay.is_some()),
                ("exponentialDelay", delay.exponential_delay.is_some()),
            ],
            "only one of fixedDelay or exponentialDelay can be set",
        );
        rules::duration(check, &at.field("fixedDelay"), &delay.fixed_delay);
        if delay.exponential_delay.is_some() {
            check.error(
                &at.field("exponentialDelay"),
                "unsupported-value",
                "exponentialDelay is not supported yet",
            );
        }
        if delay.percentage.is_none() && delay.percent.is_none() {
            no_percentage(check, &at, "delays");
        }
    }
}

/// A fault without a percentage: Istio applies it to no request at all.
fn no_percentage(check: &mut Check<'_>, path: &FieldPath, effect: &str) {
    check.warning(
        path,
        "no-effect",
        format!(
            "no percentage: as in Istio, a fault with an omitted percentage {effect} no requests"
        ),
    );
}

/// Istio accepts 200-600 for aborts and direct responses.
fn http_status(check: &mut Check<'_>, path: &FieldPath, status: i64) {
    if !(200..=600).contains(&status) {
        check.error(
            path,
            "out-of-range",
            format!("HTTP status {status} is not in range 200-599"),
        );
    }
}

fn http_redirect(check: &mut Check<'_>, path: &FieldPath, redirect: &HttpRedirect) {
    if redirect.uri.is_none()
        && redirect.authority.is_none()
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
        && redirect.scheme.is_none()
    {
        check.error(
            path,
            "required",
            "redirect must specify uri, authority, scheme, or port",
        );
    }
    check.exclusive(
        path,
        &[
            ("port", redirect.port.is_some()),
            ("derivePort", redirect.derive_port.is_some()),
        ],
        "only one of port or derivePort can be set",
    );
    if let Some(code) = redirect.redirect_code.filter(|c| *c != 0)
        && !(300..=399).contains(&code)
    {
        check.error(
            &path.field("redirectCode"),
            "out-of-range",
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(scheme) = redirect.scheme.as_deref()
        && !matches!(scheme, "" | "http" | "https")
    {
        check.error(
            &path.field("scheme"),
            "unsupported-value",
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(port) = redirect.port.filter(|p| *p > 0) {
        rules::port(check, &path.field("port"), port);
    }
}

fn direct_response(check: &mut Check<'_>, path: &FieldPath, response: &HttpDirectResponse) {
    match response.status {
        None => check.required(&path.field("status")),
        Some(status) => http_status(check, &path.field("status"), i64::from(status)),
    }
    let Some(body) = &response.body else { return };
    let at = path.field("body");
    check.exclusive(
        &at,
        &[
            ("string", body.string.is_some()),
            ("bytes", body.bytes.is_some()),
        ],
        "only one of string or bytes can be set",
    );
    if let Some(bytes) = &body.bytes
        && !is_base64(bytes)
    {
        check.error(
            &at.field("bytes"),
            "invalid-value",
            "bytes must be base64-encoded",
        );
    }
    let size = body
        .string
        .as_ref()
        .map(String::len)
        .or(body.bytes.as_ref().map(|b| b.len() / 4 * 3))
        .unwrap_or(0);
    if size > 1024 * 1024 {
        check.error(
            &at,
            "out-of-range",
            "a direct response body must be less than 1MB",
        );
    } else if size > 100 * 1024 {
        check.warning(
            &at,
            "large",
            "large direct responses (over 100KB) are held in memory in every proxy",
        );
    }
}

/// Envoy's retry conditions, as `retryOn` names them.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Status codes HTTP defines (the ones a `retryOn` list may name).
fn is_http_status(code: u16) -> bool {
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

fn http_retry(check: &mut Check<'_>, path: &FieldPath, retry: &HttpRetry) {
    let attempts = retry.attempts.unwrap_or(0);
    if attempts < 0 {
        check.error(
            &path.field("attempts"),
            "out-of-range",
            "attempts cannot be negative",
        );
    }
    if attempts == 0
        && (retry.per_try_timeout.is_some()
            || retry.retry_on.as_deref().is_some_and(|r| !r.is_empty())
            || retry.retry_remote_localities.is_some())
    {
        check.error(
            &path.field("attempts"),
            "conflict",
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    rules::duration(check, &path.field("perTryTimeout"), &retry.per_try_timeout);
    rules::duration(check, &path.field("backoff"), &retry.backoff);
    if let Some(retry_on) = retry.retry_on.as_deref().filter(|r| !r.is_empty()) {
        for token in retry_on.split(',') {
            let digits = token.strip_prefix('+').unwrap_or(token);
            let status_code = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok_and(is_http_status);
            if !status_code && !RETRY_ON.contains(&token) {
                check.error(
                    &path.field("retryOn"),
                    "unsupported-value",
                    format!("{token:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn http_rewrite(check: &mut Check<'_>, path: &FieldPath, rewrite: &HttpRewrite) {
    if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
        check.error(
            path,
            "conflict",
            "rewrite may only contain one of uri or uriRegexRewrite",
        );
    }
    if rewrite.uri.is_none() && rewrite.uri_regex_rewrite.is_none() && rewrite.authority.is_none() {
        check.error(
            path,
            "required",
            "rewrite must specify at least one of uri, uriRegexRewrite, or authority",
        );
    }
    if let Some(regex_rewrite) = &rewrite.uri_regex_rewrite {
        let at = path.field("uriRegexRewrite");
        match (&regex_rewrite.match_, &regex_rewrite.rewrite) {
            (Some(pattern), Some(_)) if !pattern.is_empty() => {
                rules::regex(check, &at.field("match"), pattern);
            }
            _ => check.error(
                &at,
                "required",
                "uriRegexRewrite requires both match and rewrite",
            ),
        }
    }
}

fn route_destinations(
    check: &mut Check<'_>,
    path: &FieldPath,
    route: &[RouteDestination],
    protocol: &str,
) {
    if route.is_empty() {
        check.error(path, "required", format!("{protocol} route is required"));
    }
    let mut total_weight = 0;
    for (i, destination) in route.iter().enumerate() {
        let at = path.index(i);
        match &destination.destination {
            None => check.required(&at.field("destination")),
            Some(d) => rules::destination(check, &at.field("destination"), d),
        }
        total_weight += weight(check, &at.field("weight"), destination.weight);
    }
    if route.len() > 1 && total_weight == 0 {
        check.error(
            path,
            "invalid-value",
            "total destination weight = 0: no destination gets traffic",
        );
    }
}

fn tls_route(check: &mut Check<'_>, path: &FieldPath, route: &TlsRoute, vs: &VirtualService) {
    let matches = path.field("match");
    match &route.matches {
        None => check.required(&matches),
        Some(list) if list.is_empty() => check.error(
            &matches,
            "required",
            "TLS route must have at least one match condition",
        ),
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                let at = matches.index(i);
                let sni = at.field("sniHosts");
                match &m.sni_hosts {
                    None => check.required(&sni),
                    Some(hosts) if hosts.is_empty() => check.error(
                        &sni,
                        "required",
                        "TLS match must have at least one SNI host",
                    ),
                    Some(hosts) => {
                        for (j, host) in hosts.iter().enumerate() {
                            sni_host(check, &sni.index(j), host, vs);
                        }
                    }
                }
                l4_match(
                    check,
                    &at,
                    &m.destination_subnets,
                    m.port,
                    &m.source_labels,
                    &m.gateways,
                );
            }
        }
    }
    route_destinations(check, &path.field("route"), &route.route, "TLS");
}

fn sni_host(check: &mut Check<'_>, path: &FieldPath, host: &str, vs: &VirtualService) {
    if rules::is_ip(host) {
        check.warning(
            path,
            "sni-ip",
            format!("using an IP address ({host:?}) as SNI goes against the SNI spec; most clients do not send one"),
        );
        return;
    }
    if !rules::wildcard_domain(check, path, host) {
        return;
    }
    if !vs.hosts.iter().any(|h| hosts::within(host, h)) {
        check.error(
            path,
            "invalid-host",
            format!(
                "SNI host {host:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                vs.hosts.join(", ")
            ),
        );
    }
}

fn tcp_route(check: &mut Check<'_>, path: &FieldPath, route: &TcpRoute) {
    let matches = path.field("match");
    for (i, m) in route.matches.iter().enumerate() {
        let at = matches.index(i);
        l4_match(
            check,
            &at,
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
        if let Some(subnet) = &m.source_subnet {
            rules::ip_or_cidr(check, &at.field("sourceSubnet"), subnet);
        }
    }
    route_destinations(check, &path.field("route"), &route.route, "TCP");
}

fn l4_match(
    check: &mut Check<'_>,
    path: &FieldPath,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &std::collections::BTreeMap<String, String>,
    gateways: &[String],
) {
    let at = path.field("destinationSubnets");
    for (i, subnet) in subnets.iter().enumerate() {
        rules::ip_or_cidr(check, &at.index(i), subnet);
    }
    if let Some(port) = port.filter(|p| *p != 0) {
        rules::port(check, &path.field("port"), port);
    }
    rules::labels(check, &path.field("sourceLabels"), source_labels);
    rules::gateway_names(check, &path.field("gateways"), gateways);
}

/// Base64 as Kubernetes' `format: byte` reads it (standard alphabet, padding optional).
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && body.len() % 4 != 1
}
