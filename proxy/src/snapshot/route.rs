//! HTTP routing: route tables of virtual hosts, each an ordered list of routes where the first
//! match wins, and what a matched route does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::matcher::{Pattern, StringMatcher};

/// The routes one HTTP listener (filter chain) serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A set of domains and the routes for them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    /// `example.com`, `*.example.com` or `*`, lowercase; a request's host (without its port)
    /// picks the most specific one: exact, then the longest wildcard suffix, then `*`.
    pub domains: Vec<String>,
    /// First match wins.
    pub routes: Vec<Route>,
    /// Answer plain-HTTP requests with a redirect to HTTPS (`httpsRedirect`).
    pub require_tls: bool,
}

/// One route: when it matches, and what then happens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// `namespace/virtualservice[index]` or the route's own name, for logs and metrics.
    pub name: String,
    /// Any of these (an empty list matches every request).
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    /// No timeout when unset (Istio's default).
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    /// Boxed, as are `cors` and a forward's `rewrite`: most routes have none, and a large
    /// configuration has tens of thousands of routes.
    pub fault: Option<Box<Fault>>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Box<Cors>>,
}

/// All conditions of one match must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteMatch {
    /// Matched against the path without the query string.
    pub path: Option<StringMatcher>,
    /// Exact and prefix path matches ignore case.
    pub ignore_case: bool,
    pub method: Option<StringMatcher>,
    pub authority: Option<StringMatcher>,
    pub scheme: Option<StringMatcher>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    /// The port the request arrived on.
    pub port: Option<u16>,
}

/// A header condition; `invert` is `withoutHeaders`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: String,
    pub matcher: StringMatcher,
    pub invert: bool,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub matcher: StringMatcher,
}

/// What a matched route does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Send to one of these clusters, chosen by weight.
    Forward {
        clusters: Vec<WeightedCluster>,
        rewrite: Option<Box<Rewrite>>,
    },
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedCluster {
    pub cluster: String,
    /// Relative to the sum of the route's weights.
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// Path and authority rewrites before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path when the match was not a prefix).
    pub path: Option<String>,
    /// `(pattern, replacement)`: every match of the pattern is replaced.
    pub path_regex: Option<(Pattern, String)>,
    pub authority: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Redirect {
    /// Replaces the path when set; the request's query stays unless this has its own.
    pub path: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: RedirectPort,
    /// 301 unless set.
    pub status: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// Keep the authority's port as it is.
    Keep,
    Port(u16),
    /// 80 for http, 443 for https (omitted from the authority).
    FromProtocolDefault,
    /// The port the request arrived on.
    FromRequest,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<bytes::Bytes>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes. Names are lowercase.
///
/// Boxed when there are any: a route and each of its destinations carry two each, most have
/// none, and a large configuration has tens of thousands of routes. Serialized as its edits
/// (three lists, empty when there are none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderOps(Option<Box<HeaderEdits>>);

/// The edits of a [`HeaderOps`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// What a [`HeaderOps`] without edits serializes as.
static NO_EDITS: HeaderEdits = HeaderEdits {
    set: Vec::new(),
    add: Vec::new(),
    remove: Vec::new(),
};

impl HeaderOps {
    pub fn new(edits: HeaderEdits) -> HeaderOps {
        let none = edits.set.is_empty() && edits.add.is_empty() && edits.remove.is_empty();
        HeaderOps((!none).then(|| Box::new(edits)))
    }

    /// The edits; `None` when there are none.
    pub fn edits(&self) -> Option<&HeaderEdits> {
        self.0.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Serialize for HeaderOps {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.edits().unwrap_or(&NO_EDITS).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HeaderOps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<HeaderOps, D::Error> {
        HeaderEdits::deserialize(deserializer).map(HeaderOps::new)
    }
}

/// Retries: how many, on what, and how long each try may take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (total tries = 1 + attempts).
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// Base of the exponential backoff between tries (Envoy's default 25ms).
    pub backoff: Duration,
}

/// Envoy's retry conditions, as booleans, plus status codes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryOn {
    /// Any 5xx response, or a reset, connect failure or refused stream.
    pub server_error: bool,
    /// 502, 503, 504.
    pub gateway_error: bool,
    /// The upstream reset or timed out before responding.
    pub reset: bool,
    /// A reset before any request byte reached the upstream.
    pub reset_before_request: bool,
    pub connect_failure: bool,
    /// HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// 409.
    pub retriable_4xx: bool,
    /// Retry when the response status is in `status_codes`.
    pub retriable_status_codes: bool,
    pub status_codes: Vec<u16>,
    /// gRPC statuses (in `grpc-status`) that are retried.
    pub grpc_statuses: Vec<u8>,
}

/// Client-side fault injection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay {
    pub delay: Duration,
    /// Of requests, 0-100.
    pub percentage: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAbort {
    Http { status: u16, percentage: f64 },
    Grpc { status: u8, percentage: f64 },
}

/// A copy of requests sent to another cluster, response ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: String,
    /// Of requests, 0-100.
    pub percentage: f64,
}

/// CORS, answered at the proxy for preflights and added to responses otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<StringMatcher>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: bool,
    /// Preflights from origins not allowed are forwarded (Istio's default) rather than answered.
    pub forward_unmatched_preflights: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ops_serialize_as_their_edits_and_hold_nothing_when_empty() {
        let none = HeaderOps::default();
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({"set": [], "add": [], "remove": []})
        );
        let read: HeaderOps =
            serde_json::from_value(serde_json::json!({"set": [], "add": [], "remove": []}))
                .unwrap();
        assert!(read.is_empty() && read.edits().is_none());
        assert_eq!(read, none);

        let some = HeaderOps::new(HeaderEdits {
            remove: vec!["x-internal".to_owned()],
            ..HeaderEdits::default()
        });
        assert!(!some.is_empty());
        let json = serde_json::to_value(&some).unwrap();
        assert_eq!(json["remove"], serde_json::json!(["x-internal"]));
        assert_eq!(serde_json::from_value::<HeaderOps>(json).unwrap(), some);
    }
}
