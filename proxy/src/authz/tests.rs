//! The documented semantics, case by case.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::*;
use crate::snapshot::{AuthorizationPolicy, Clause, FieldMatch, PathNormalization, Rule};

/// A request or connection to check, owning what `Attributes` borrows.
#[derive(Clone)]
struct Req {
    protocol: Protocol,
    principal: Option<String>,
    source: IpAddr,
    remote: IpAddr,
    host: String,
    method: String,
    path: String,
    headers: HeaderMap,
    destination: SocketAddr,
    sni: Option<String>,
    request_principal: Option<String>,
}

impl Req {
    fn http(method: &str, path: &str) -> Req {
        Req {
            protocol: Protocol::Http,
            principal: None,
            source: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.1".parse().unwrap(),
            host: "shop.example.com".into(),
            method: method.into(),
            path: path.into(),
            headers: HeaderMap::new(),
            destination: "10.0.0.9:8080".parse().unwrap(),
            sni: None,
            request_principal: None,
        }
    }

    fn tcp() -> Req {
        Req {
            protocol: Protocol::Tcp,
            ..Req::http("", "")
        }
    }

    fn principal(mut self, principal: &str) -> Req {
        self.principal = Some(principal.into());
        self
    }

    fn with_ips(mut self, source: &str, remote: &str) -> Req {
        self.source = source.parse().unwrap();
        self.remote = remote.parse().unwrap();
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers
            .append(name, http::HeaderValue::from_static(value));
        self
    }

    fn host(mut self, host: &str) -> Req {
        self.host = host.into();
        self
    }

    fn attributes(&self) -> Attributes<'_> {
        let http = self.protocol == Protocol::Http;
        Attributes {
            source_principal: self.principal.as_deref(),
            remote_ip: self.remote,
            request_principal: self.request_principal.as_deref(),
            host: http.then_some(self.host.as_str()),
            method: http.then_some(self.method.as_str()),
            path: http.then_some(self.path.as_str()),
            headers: http.then_some(&self.headers),
            sni: self.sni.as_deref(),
            ..Attributes::connection(self.protocol, self.source, self.destination)
        }
    }
}

fn field(attribute: Attribute, values: &[&str]) -> FieldMatch {
    let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    FieldMatch::parse(attribute, &values, false).unwrap()
}

fn not(attribute: Attribute, values: &[&str]) -> FieldMatch {
    FieldMatch {
        negated: true,
        ..field(attribute, values)
    }
}

fn clause(fields: Vec<FieldMatch>) -> Clause {
    Clause { fields }
}

fn rule(from: Vec<Clause>, to: Vec<Clause>, when: Vec<FieldMatch>) -> Rule {
    Rule { from, to, when }
}

fn to(fields: Vec<FieldMatch>) -> Rule {
    rule(Vec::new(), vec![clause(fields)], Vec::new())
}

fn from(fields: Vec<FieldMatch>) -> Rule {
    rule(vec![clause(fields)], Vec::new(), Vec::new())
}

fn policy(name: &str, rules: Vec<Rule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: name.into(),
        rules,
    }
}

fn deny(rules: Vec<Rule>) -> Policies {
    Policies {
        deny: vec![policy("ns/deny", rules)],
        ..Policies::default()
    }
}

fn allow(rules: Vec<Rule>) -> Policies {
    Policies {
        allow: vec![policy("ns/allow", rules)],
        ..Policies::default()
    }
}

fn allowed(policies: &Policies, req: &Req) -> bool {
    evaluate(policies, &req.attributes()).allowed
}

/// Runs a table: `(what, policies, request, allowed)`.
fn table(cases: Vec<(&str, Policies, Req, bool)>) {
    let mut failures = Vec::new();
    for (what, policies, req, expected) in &cases {
        let decision = evaluate(policies, &req.attributes());
        if decision.allowed != *expected {
            failures.push(format!(
                "{what}: expected allowed={expected}, got {decision:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn policy_presence_and_empty_rules() {
    let get = Req::http("GET", "/");
    table(vec![
        (
            "no policy at all allows",
            Policies::default(),
            get.clone(),
            true,
        ),
        (
            "ALLOW with no rules denies everything",
            allow(Vec::new()),
            get.clone(),
            false,
        ),
        (
            "ALLOW with one empty rule allows everything",
            allow(vec![Rule::default()]),
            get.clone(),
            true,
        ),
        (
            "DENY with no rules matches nothing",
            deny(Vec::new()),
            get.clone(),
            true,
        ),
        (
            "DENY with one empty rule denies everything",
            deny(vec![Rule::default()]),
            get.clone(),
            false,
        ),
        (
            "an empty source and operation match anything",
            deny(vec![rule(
                vec![Clause::default()],
                vec![Clause::default()],
                Vec::new(),
            )]),
            get.clone(),
            false,
        ),
        (
            "AUDIT never denies",
            Policies {
                audit: vec![policy("ns/audit", vec![Rule::default()])],
                ..Policies::default()
            },
            get.clone(),
            true,
        ),
        (
            "AUDIT does not count as an ALLOW policy",
            Policies {
                audit: vec![policy("ns/audit", Vec::new())],
                ..Policies::default()
            },
            get.clone(),
            true,
        ),
        (
            "a CUSTOM policy that matches denies",
            Policies {
                custom: vec![policy(
                    "ns/ext",
                    vec![to(vec![field(Attribute::Path, &["/admin*"])])],
                )],
                ..Policies::default()
            },
            Req::http("GET", "/admin/x"),
            false,
        ),
        (
            "a CUSTOM policy that does not match leaves the decision alone",
            Policies {
                custom: vec![policy(
                    "ns/ext",
                    vec![to(vec![field(Attribute::Path, &["/admin*"])])],
                )],
                ..Policies::default()
            },
            Req::http("GET", "/public"),
            true,
        ),
        (
            "DENY wins over ALLOW",
            Policies {
                deny: vec![policy("ns/d", vec![Rule::default()])],
                allow: vec![policy("ns/a", vec![Rule::default()])],
                ..Policies::default()
            },
            get.clone(),
            false,
        ),
        (
            "one of several ALLOW policies suffices",
            Policies {
                allow: vec![
                    policy("ns/a", Vec::new()),
                    policy("ns/b", vec![to(vec![field(Attribute::Method, &["GET"])])]),
                ],
                ..Policies::default()
            },
            get,
            true,
        ),
    ]);
}

#[test]
fn decisions_name_the_policy() {
    let denied = evaluate(
        &deny(vec![Rule::default()]),
        &Req::http("GET", "/").attributes(),
    );
    assert_eq!(denied.policy.as_deref(), Some("ns/deny"));
    assert!(denied.reason.contains("ns/deny"), "{denied:?}");
    let nothing = evaluate(&allow(Vec::new()), &Req::http("GET", "/").attributes());
    assert_eq!(nothing.policy, None);
    assert_eq!(
        nothing.reason,
        "no ALLOW policy matched (ALLOW policies: ns/allow)"
    );
    let custom = Policies {
        custom: vec![policy("ns/ext", vec![Rule::default()])],
        ..Policies::default()
    };
    let custom = evaluate(&custom, &Req::http("GET", "/").attributes());
    assert!(custom.reason.contains("CUSTOM") && custom.reason.contains("not supported"));
    let audit = Policies {
        audit: vec![policy("ns/audit", vec![Rule::default()])],
        ..Policies::default()
    };
    let audited = evaluate(&audit, &Req::http("GET", "/").attributes());
    assert!(audited.allowed);
    assert_eq!(audited.audit.as_deref(), Some("ns/audit"));
}

#[test]
fn rule_structure_ands_sections_and_ors_clauses() {
    let two_sources = rule(
        vec![
            clause(vec![field(Attribute::SourceIp, &["192.0.2.0/24"])]),
            clause(vec![field(Attribute::SourceIp, &["198.51.100.0/24"])]),
        ],
        vec![clause(vec![field(Attribute::Method, &["GET"])])],
        Vec::new(),
    );
    let both_fields = to(vec![
        field(Attribute::Method, &["GET"]),
        field(Attribute::Path, &["/a"]),
    ]);
    let with_not = to(vec![
        field(Attribute::Path, &["/api/*"]),
        not(Attribute::Path, &["/api/private*"]),
    ]);
    table(vec![
        (
            "either source",
            allow(vec![two_sources.clone()]),
            Req::http("GET", "/").with_ips("198.51.100.4", "198.51.100.4"),
            true,
        ),
        (
            "a source matches but the operation does not",
            allow(vec![two_sources.clone()]),
            Req::http("POST", "/").with_ips("198.51.100.4", "198.51.100.4"),
            false,
        ),
        (
            "no source matches",
            allow(vec![two_sources]),
            Req::http("GET", "/").with_ips("203.0.113.1", "203.0.113.1"),
            false,
        ),
        (
            "every field of an operation",
            allow(vec![both_fields.clone()]),
            Req::http("GET", "/a"),
            true,
        ),
        (
            "one field of an operation fails",
            allow(vec![both_fields]),
            Req::http("GET", "/b"),
            false,
        ),
        (
            "a not field that does not match",
            allow(vec![with_not.clone()]),
            Req::http("GET", "/api/x"),
            true,
        ),
        (
            "a not field that matches",
            allow(vec![with_not]),
            Req::http("GET", "/api/private/x"),
            false,
        ),
        (
            "every when must match",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![
                    field(Attribute::RequestHeader("x-a".into()), &["1"]),
                    field(Attribute::RequestHeader("x-b".into()), &["2"]),
                ],
            )]),
            Req::http("GET", "/").header("x-a", "1"),
            false,
        ),
        (
            "notValues on an absent header match",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![not(Attribute::RequestHeader("x-debug".into()), &["*"])],
            )]),
            Req::http("GET", "/"),
            true,
        ),
        (
            "values on an absent header do not match",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::RequestHeader("x-debug".into()), &["*"])],
            )]),
            Req::http("GET", "/"),
            false,
        ),
    ]);
}

#[test]
fn tcp_treats_http_only_fields_per_action() {
    let methods = || to(vec![field(Attribute::Method, &["GET"])]);
    let paths = || to(vec![field(Attribute::Path, &["/public*"])]);
    let deny_methods_on_port = to(vec![
        field(Attribute::Method, &["DELETE"]),
        field(Attribute::DestinationPort, &["8080"]),
    ]);
    table(vec![
        (
            "a DENY with methods matches a TCP connection",
            deny(vec![methods()]),
            Req::tcp(),
            false,
        ),
        (
            "a DENY with methods and a port matches TCP on that port",
            deny(vec![deny_methods_on_port.clone()]),
            Req::tcp(),
            false,
        ),
        (
            "... and not on another port",
            deny(vec![deny_methods_on_port]),
            Req {
                destination: "10.0.0.9:9090".parse().unwrap(),
                ..Req::tcp()
            },
            true,
        ),
        (
            "a DENY with notPaths matches TCP",
            deny(vec![to(vec![not(Attribute::Path, &["/ok"])])]),
            Req::tcp(),
            false,
        ),
        (
            "a DENY with a request header condition matches TCP",
            deny(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::RequestHeader("x-a".into()), &["1"])],
            )]),
            Req::tcp(),
            false,
        ),
        (
            "an ALLOW with paths never matches TCP",
            allow(vec![paths()]),
            Req::tcp(),
            false,
        ),
        (
            "an ALLOW with notMethods never matches TCP",
            allow(vec![to(vec![not(Attribute::Method, &["DELETE"])])]),
            Req::tcp(),
            false,
        ),
        (
            "an ALLOW with requestPrincipals never matches TCP",
            allow(vec![from(vec![field(Attribute::RequestPrincipal, &["*"])])]),
            Req::tcp(),
            false,
        ),
        (
            "an ALLOW with hosts never matches TCP",
            allow(vec![to(vec![field(Attribute::Host, &["*"])])]),
            Req::tcp(),
            false,
        ),
        (
            "an ALLOW with only TCP fields matches TCP",
            allow(vec![from(vec![field(
                Attribute::SourceIp,
                &["10.0.0.0/8"],
            )])]),
            Req::tcp(),
            true,
        ),
        (
            "the same ALLOW with paths matches HTTP",
            allow(vec![paths()]),
            Req::http("GET", "/public/a"),
            true,
        ),
    ]);
}

#[test]
fn paths_are_normalized_and_queries_ignored() {
    let exact = || deny(vec![to(vec![field(Attribute::Path, &["/admin"])])]);
    let prefix = || deny(vec![to(vec![field(Attribute::Path, &["/admin*"])])]);
    let mut cases = Vec::new();
    for path in [
        "/admin",
        "/./admin",
        "/a/../admin",
        "/%2e/admin",
        "/%2E%2E/admin",
        "/x/%2e%2e/admin",
        "/admin?debug=1",
        "/public/../admin?x=/public",
        "\\admin",
        "/%61dmin",
    ] {
        cases.push((path, exact(), Req::http("GET", path), false));
        cases.push((path, prefix(), Req::http("GET", path), false));
    }
    cases.push((
        "/admin/x under prefix",
        prefix(),
        Req::http("GET", "/admin/x"),
        false,
    ));
    cases.push((
        "/admin/x under exact",
        exact(),
        Req::http("GET", "/admin/x"),
        true,
    ));
    cases.push((
        "/public",
        prefix(),
        Req::http("GET", "/public?q=/admin"),
        true,
    ));
    cases.push((
        "%00 is refused",
        Policies::default(),
        Req::http("GET", "/a%00"),
        false,
    ));
    let mut none = exact();
    none.path_normalization = PathNormalization::None;
    cases.push((
        "NONE does not resolve dots",
        none,
        Req::http("GET", "/./admin"),
        true,
    ));
    let mut merge = exact();
    merge.path_normalization = PathNormalization::MergeSlashes;
    cases.push((
        "MERGE_SLASHES merges",
        merge,
        Req::http("GET", "//admin"),
        false,
    ));
    cases.push(("BASE keeps //", exact(), Req::http("GET", "//admin"), true));
    let mut decode = exact();
    decode.path_normalization = PathNormalization::DecodeAndMergeSlashes;
    cases.push((
        "DECODE_AND_MERGE_SLASHES decodes %2F",
        decode,
        Req::http("GET", "/x%2F..%2Fadmin"),
        false,
    ));
    table(cases);
}

#[test]
fn identities_principals_namespaces_and_service_accounts() {
    let payments = "spiffe://cluster.local/ns/payments/sa/checkout";
    let west = "spiffe://west.mesh/ns/payments/sa/checkout";
    let by =
        |attribute: Attribute, values: &[&str]| allow(vec![from(vec![field(attribute, values)])]);
    table(vec![
        (
            "exact principal without spiffe://",
            by(
                Attribute::SourcePrincipal,
                &["cluster.local/ns/payments/sa/checkout"],
            ),
            Req::http("GET", "/").principal(payments),
            true,
        ),
        (
            "prefix principal",
            by(Attribute::SourcePrincipal, &["cluster.local/ns/payments/*"]),
            Req::http("GET", "/").principal(payments),
            true,
        ),
        (
            "suffix principal admits any trust domain",
            by(Attribute::SourcePrincipal, &["*/ns/payments/sa/checkout"]),
            Req::http("GET", "/").principal(west),
            true,
        ),
        (
            "a principal pinned to the local trust domain refuses another",
            by(
                Attribute::SourcePrincipal,
                &["cluster.local/ns/payments/sa/checkout"],
            ),
            Req::http("GET", "/").principal(west),
            false,
        ),
        (
            "* needs a principal",
            by(Attribute::SourcePrincipal, &["*"]),
            Req::http("GET", "/"),
            false,
        ),
        (
            "namespaces match under another trust domain",
            by(Attribute::SourceNamespace, &["payments"]),
            Req::http("GET", "/").principal(west),
            true,
        ),
        (
            "namespaces need an identity",
            by(Attribute::SourceNamespace, &["payments"]),
            Req::http("GET", "/"),
            false,
        ),
        (
            "service accounts as ns/sa",
            by(Attribute::SourceServiceAccount, &["payments/checkout"]),
            Req::http("GET", "/").principal(payments),
            true,
        ),
        (
            "another service account",
            by(Attribute::SourceServiceAccount, &["payments/refunds"]),
            Req::http("GET", "/").principal(payments),
            false,
        ),
        (
            "trust domains",
            by(Attribute::SourceTrustDomain, &["west.mesh"]),
            Req::http("GET", "/").principal(west),
            true,
        ),
        (
            "notPrincipals refuses the named one",
            allow(vec![from(vec![not(
                Attribute::SourcePrincipal,
                &["cluster.local/ns/payments/*"],
            )])]),
            Req::http("GET", "/").principal(payments),
            false,
        ),
        (
            "notPrincipals admits others",
            allow(vec![from(vec![not(
                Attribute::SourcePrincipal,
                &["cluster.local/ns/payments/*"],
            )])]),
            Req::http("GET", "/").principal("spiffe://cluster.local/ns/web/sa/default"),
            true,
        ),
        (
            "notPrincipals admits a caller without identity",
            allow(vec![from(vec![not(
                Attribute::SourcePrincipal,
                &["cluster.local/ns/payments/*"],
            )])]),
            Req::http("GET", "/"),
            true,
        ),
        (
            "source.namespace condition",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::SourceNamespace, &["pay*"])],
            )]),
            Req::http("GET", "/").principal(payments),
            true,
        ),
    ]);
}

#[test]
fn ip_blocks_are_the_peer_and_remote_ip_blocks_the_original_client() {
    // The peer is a load balancer; the client is behind it.
    let req = || Req::http("GET", "/").with_ips("10.0.0.5", "203.0.113.7");
    let by =
        |attribute: Attribute, block: &str| allow(vec![from(vec![field(attribute, &[block])])]);
    table(vec![
        (
            "ipBlocks sees the peer",
            by(Attribute::SourceIp, "10.0.0.0/8"),
            req(),
            true,
        ),
        (
            "ipBlocks does not see the client",
            by(Attribute::SourceIp, "203.0.113.0/24"),
            req(),
            false,
        ),
        (
            "remoteIpBlocks sees the client",
            by(Attribute::RemoteIp, "203.0.113.0/24"),
            req(),
            true,
        ),
        (
            "remoteIpBlocks does not see the peer",
            by(Attribute::RemoteIp, "10.0.0.0/8"),
            req(),
            false,
        ),
        (
            "notRemoteIpBlocks",
            allow(vec![from(vec![not(Attribute::RemoteIp, &["203.0.113.7"])])]),
            req(),
            false,
        ),
        (
            "remote.ip condition",
            deny(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::RemoteIp, &["203.0.113.0/24"])],
            )]),
            req(),
            false,
        ),
        (
            "destination.ip condition",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::DestinationIp, &["10.0.0.9"])],
            )]),
            req(),
            true,
        ),
    ]);
}

#[test]
fn hosts_methods_headers_and_sni() {
    let hosts = |values: &[&str]| allow(vec![to(vec![field(Attribute::Host, values)])]);
    table(vec![
        (
            "hosts are case-insensitive",
            hosts(&["Shop.Example.com"]),
            Req::http("GET", "/").host("SHOP.example.COM"),
            true,
        ),
        (
            "hosts ignore the port",
            hosts(&["shop.example.com"]),
            Req::http("GET", "/").host("shop.example.com:8443"),
            true,
        ),
        (
            "host suffix",
            hosts(&["*.example.com"]),
            Req::http("GET", "/").host("api.example.com"),
            true,
        ),
        (
            "another host",
            hosts(&["shop.example.com"]),
            Req::http("GET", "/").host("evil.example.org"),
            false,
        ),
        (
            "notHosts",
            allow(vec![to(vec![not(Attribute::Host, &["shop.example.com"])])]),
            Req::http("GET", "/").host("shop.example.com:80"),
            false,
        ),
        (
            "methods are exact",
            allow(vec![to(vec![field(Attribute::Method, &["GET"])])]),
            Req::http("get", "/"),
            false,
        ),
        (
            "header prefix",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::RequestHeader("x-token".into()), &["abc*"])],
            )]),
            Req::http("GET", "/").header("x-token", "abcdef"),
            true,
        ),
        (
            "connection.sni",
            allow(vec![rule(
                Vec::new(),
                Vec::new(),
                vec![field(Attribute::ConnectionSni, &["*.internal"])],
            )]),
            Req {
                sni: Some("db.internal".into()),
                ..Req::tcp()
            },
            true,
        ),
        (
            "request principals",
            allow(vec![from(vec![field(
                Attribute::RequestPrincipal,
                &["https://issuer/*"],
            )])]),
            Req {
                request_principal: Some("https://issuer/alice".into()),
                ..Req::http("GET", "/")
            },
            true,
        ),
    ]);
    assert!(allowed(&Policies::default(), &Req::tcp()));
}

#[test]
fn claims_and_audiences() {
    let claims = vec![(
        vec!["groups".to_owned()],
        vec!["dev".to_owned(), "admin".to_owned()],
    )];
    let audiences = vec!["shop".to_owned()];
    let req = Req::http("GET", "/");
    let mut attributes = req.attributes();
    attributes.request_claims = &claims;
    attributes.request_audiences = &audiences;
    let by = |attribute: Attribute, value: &str| {
        allow(vec![rule(
            Vec::new(),
            Vec::new(),
            vec![field(attribute, &[value])],
        )])
    };
    assert!(
        evaluate(
            &by(Attribute::RequestClaim(vec!["groups".into()]), "admin"),
            &attributes
        )
        .allowed
    );
    assert!(
        !evaluate(
            &by(Attribute::RequestClaim(vec!["groups".into()]), "ops"),
            &attributes
        )
        .allowed
    );
    assert!(
        !evaluate(
            &by(Attribute::RequestClaim(vec!["team".into()]), "admin"),
            &attributes
        )
        .allowed
    );
    assert!(evaluate(&by(Attribute::RequestAudiences, "shop"), &attributes).allowed);
    assert!(!evaluate(&by(Attribute::RequestAudiences, "bank"), &attributes).allowed);
}
