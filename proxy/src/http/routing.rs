//! Finding the route for a request: the virtual host by authority (exact, then the longest
//! wildcard suffix, then `*`), then the first route of that host whose conditions all hold.

use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;

use crate::snapshot::{HeaderMatch, QueryMatch, Route, RouteMatch, RouteTable, VirtualHost};

/// A route table with its domains indexed for lookup.
#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) table: Arc<RouteTable>,
    exact: HashMap<String, usize>,
    /// `(suffix including the dot, virtual host)`, longest first.
    wildcards: Vec<(String, usize)>,
    any: Option<usize>,
}

impl Router {
    pub(crate) fn new(table: Arc<RouteTable>) -> Router {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        let mut any = None;
        for (index, host) in table.virtual_hosts.iter().enumerate() {
            for domain in &host.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    any.get_or_insert(index);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    wildcards.push((suffix.to_owned(), index));
                } else {
                    exact.entry(domain).or_insert(index);
                }
            }
        }
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Router {
            table,
            exact,
            wildcards,
            any,
        }
    }

    /// The virtual host for a request's authority (its port ignored).
    pub(crate) fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host = host_of(authority).to_ascii_lowercase();
        let index = self
            .exact
            .get(&host)
            .copied()
            .or_else(|| {
                self.wildcards
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, index)| *index)
            })
            .or(self.any)?;
        self.table.virtual_hosts.get(index)
    }
}

/// The host part of an authority: `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`.
pub(crate) fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// What a route is matched against, taken from the request once.
#[derive(Debug)]
pub(crate) struct RequestFacts<'a> {
    pub(crate) parts: &'a Parts,
    pub(crate) authority: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) port: u16,
}

/// The first route of `host` that matches.
pub(crate) fn find_route<'r>(host: &'r VirtualHost, facts: &RequestFacts<'_>) -> Option<&'r Route> {
    host.routes
        .iter()
        .find(|route| route.matches.is_empty() || route.matches.iter().any(|m| matches(m, facts)))
}

fn matches(condition: &RouteMatch, facts: &RequestFacts<'_>) -> bool {
    let parts = facts.parts;
    if let Some(path) = &condition.path {
        // Paths are matched without the query string.
        let value = parts.uri.path();
        let ok = if condition.ignore_case {
            path.matches_ignoring_case(value)
        } else {
            path.matches(value)
        };
        if !ok {
            return false;
        }
    }
    if let Some(method) = &condition.method
        && !method.matches(parts.method.as_str())
    {
        return false;
    }
    if let Some(authority) = &condition.authority
        && !authority.matches(facts.authority)
    {
        return false;
    }
    if let Some(scheme) = &condition.scheme
        && !scheme.matches(facts.scheme)
    {
        return false;
    }
    if condition.port.is_some_and(|port| port != facts.port) {
        return false;
    }
    condition.headers.iter().all(|h| header_matches(h, parts))
        && condition
            .query_params
            .iter()
            .all(|q| query_matches(q, parts.uri.query().unwrap_or("")))
}

/// A header condition; several values of one header are joined with `,`, as Envoy does.
fn header_matches(condition: &HeaderMatch, parts: &Parts) -> bool {
    let mut values = parts.headers.get_all(condition.name.as_str()).iter();
    let found = match values.next() {
        None => false,
        Some(first) => {
            let mut value = String::from_utf8_lossy(first.as_bytes()).into_owned();
            for more in values {
                value.push(',');
                value.push_str(&String::from_utf8_lossy(more.as_bytes()));
            }
            condition.matcher.matches(&value)
        }
    };
    found != condition.invert
}

/// A query parameter condition: `?key` has the empty value.
fn query_matches(condition: &QueryMatch, query: &str) -> bool {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == condition.name)
        .is_some_and(|(_, value)| condition.matcher.matches(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{DirectResponse, HeaderOps, Pattern, RouteAction, StringMatcher};

    fn route(name: &str, matches: Vec<RouteMatch>) -> Route {
        Route {
            name: name.to_owned(),
            matches,
            action: RouteAction::DirectResponse(DirectResponse {
                status: 200,
                body: None,
            }),
            timeout: None,
            retry: None,
            fault: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            mirrors: Vec::new(),
            cors: None,
        }
    }

    fn table(hosts: Vec<(Vec<&str>, Vec<Route>)>) -> Router {
        Router::new(Arc::new(RouteTable {
            name: "test".into(),
            virtual_hosts: hosts
                .into_iter()
                .enumerate()
                .map(|(i, (domains, routes))| VirtualHost {
                    name: format!("vh{i}"),
                    domains: domains.into_iter().map(str::to_owned).collect(),
                    routes,
                    require_tls: false,
                })
                .collect(),
        }))
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn route_name(
        router: &Router,
        authority: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let parts = parts(uri, headers);
        let facts = RequestFacts {
            parts: &parts,
            authority,
            scheme: "http",
            port: 80,
        };
        let host = router.virtual_host(authority)?;
        find_route(host, &facts).map(|r| r.name.clone())
    }

    #[test]
    fn virtual_hosts_prefer_exact_then_longest_wildcard_then_any() {
        let router = table(vec![
            (vec!["*"], vec![route("any", vec![])]),
            (vec!["*.example.com"], vec![route("wild", vec![])]),
            (vec!["*.api.example.com"], vec![route("wilder", vec![])]),
            (vec!["shop.example.com"], vec![route("exact", vec![])]),
        ]);
        assert_eq!(
            route_name(&router, "shop.example.com:8080", "/", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            route_name(&router, "Shop.Example.com", "/", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            route_name(&router, "v1.api.example.com", "/", &[]).as_deref(),
            Some("wilder")
        );
        assert_eq!(
            route_name(&router, "www.example.com", "/", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            route_name(&router, "example.com", "/", &[]).as_deref(),
            Some("any")
        );
        assert_eq!(
            route_name(&router, "other.org", "/", &[]).as_deref(),
            Some("any")
        );
    }

    #[test]
    fn no_virtual_host_means_no_route() {
        let router = table(vec![(vec!["a.example.com"], vec![route("a", vec![])])]);
        assert_eq!(route_name(&router, "b.example.com", "/", &[]), None);
    }

    #[test]
    fn first_matching_route_wins_and_paths_ignore_the_query() {
        let exact = RouteMatch {
            path: Some(StringMatcher::Exact("/productpage".into())),
            ..RouteMatch::default()
        };
        let prefix = RouteMatch {
            path: Some(StringMatcher::Prefix("/static".into())),
            ..RouteMatch::default()
        };
        let router = table(vec![(
            vec!["*"],
            vec![
                route("exact", vec![exact]),
                route("prefix", vec![prefix]),
                route("rest", vec![]),
            ],
        )]);
        assert_eq!(
            route_name(&router, "h", "/productpage?u=1", &[]).as_deref(),
            Some("exact")
        );
        assert_eq!(
            route_name(&router, "h", "/productpage/x", &[]).as_deref(),
            Some("rest")
        );
        assert_eq!(
            route_name(&router, "h", "/static/app.js", &[]).as_deref(),
            Some("prefix")
        );
    }

    #[test]
    fn regexes_match_the_whole_path_and_ignore_case_spares_them() {
        let regex = RouteMatch {
            path: Some(StringMatcher::Regex(Pattern::new("/api/v[0-9]+").unwrap())),
            ignore_case: true,
            ..RouteMatch::default()
        };
        let router = table(vec![(vec!["*"], vec![route("regex", vec![regex])])]);
        assert_eq!(
            route_name(&router, "h", "/api/v12", &[]).as_deref(),
            Some("regex")
        );
        assert_eq!(route_name(&router, "h", "/api/v12/x", &[]), None);
        assert_eq!(route_name(&router, "h", "/API/v12", &[]), None);
    }

    #[test]
    fn headers_presence_and_absence() {
        let jason = RouteMatch {
            headers: vec![HeaderMatch {
                name: "end-user".into(),
                matcher: StringMatcher::Exact("jason".into()),
                invert: false,
            }],
            ..RouteMatch::default()
        };
        let present = RouteMatch {
            headers: vec![HeaderMatch {
                name: "x-canary".into(),
                matcher: StringMatcher::Present,
                invert: false,
            }],
            ..RouteMatch::default()
        };
        let without = RouteMatch {
            headers: vec![HeaderMatch {
                name: "x-debug".into(),
                matcher: StringMatcher::Present,
                invert: true,
            }],
            ..RouteMatch::default()
        };
        let router = table(vec![(
            vec!["*"],
            vec![
                route("jason", vec![jason]),
                route("canary", vec![present]),
                route("quiet", vec![without]),
            ],
        )]);
        assert_eq!(
            route_name(&router, "h", "/", &[("end-user", "jason")]).as_deref(),
            Some("jason")
        );
        assert_eq!(
            route_name(&router, "h", "/", &[("x-canary", "")]).as_deref(),
            Some("canary")
        );
        assert_eq!(route_name(&router, "h", "/", &[]).as_deref(), Some("quiet"));
        assert_eq!(route_name(&router, "h", "/", &[("x-debug", "1")]), None);
    }

    #[test]
    fn query_parameters() {
        let flag = RouteMatch {
            query_params: vec![QueryMatch {
                name: "debug".into(),
                matcher: StringMatcher::Exact(String::new()),
            }],
            ..RouteMatch::default()
        };
        let router = table(vec![(vec!["*"], vec![route("flag", vec![flag])])]);
        assert_eq!(
            route_name(&router, "h", "/x?debug", &[]).as_deref(),
            Some("flag")
        );
        assert_eq!(
            route_name(&router, "h", "/x?a=1&debug=", &[]).as_deref(),
            Some("flag")
        );
        assert_eq!(route_name(&router, "h", "/x?debug=1", &[]), None);
        assert_eq!(route_name(&router, "h", "/x", &[]), None);
    }

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("example.com:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }
}
