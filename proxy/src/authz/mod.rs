//! Authorization: a request's (or connection's) attributes checked against a workload's
//! compiled `Policies`, with Istio's semantics.
//!
//! Order: CUSTOM (not supported: a CUSTOM policy that matches denies), then DENY (any match
//! denies), then ALLOW (no ALLOW policy allows; otherwise one must match). AUDIT never changes
//! the decision. On TCP, an ALLOW rule naming any HTTP-only attribute never matches, while a
//! DENY rule ignores those attributes and matches on the rest (else it would be a bypass).

pub mod path;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::snapshot::{
    Attribute, AuthorizationPolicy, Clause, FieldMatch, Policies, Rule, ValueMatcher,
};

/// What the request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

/// Everything a policy can look at.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    pub protocol: Protocol,
    /// The verified SPIFFE ID of the peer (with or without `spiffe://`), when there is one.
    pub source_principal: Option<&'a str>,
    /// The peer's address.
    pub source_ip: IpAddr,
    /// The original client: from `x-forwarded-for` per `numTrustedProxies`, else the peer.
    pub remote_ip: IpAddr,
    /// `ISSUER/SUBJECT` of a verified request token.
    pub request_principal: Option<&'a str>,
    pub request_audiences: &'a [String],
    pub request_presenter: Option<&'a str>,
    /// Claims of the token: a claim's path and its values.
    pub request_claims: &'a [(Vec<String>, Vec<String>)],
    /// The authority, as the request carried it.
    pub host: Option<&'a str>,
    pub method: Option<&'a str>,
    /// The request target's path, with or without a query (the query is never matched).
    pub path: Option<&'a str>,
    pub headers: Option<&'a HeaderMap>,
    /// Where the connection arrived.
    pub destination: SocketAddr,
    pub sni: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    /// A connection's attributes: no request, no identity yet.
    pub fn connection(protocol: Protocol, source_ip: IpAddr, destination: SocketAddr) -> Self {
        Attributes {
            protocol,
            source_principal: None,
            source_ip,
            remote_ip: source_ip,
            request_principal: None,
            request_audiences: &[],
            request_presenter: None,
            request_claims: &[],
            host: None,
            method: None,
            path: None,
            headers: None,
            destination,
            sni: None,
        }
    }

    /// The principal without `spiffe://`.
    fn principal(&self) -> Option<&'a str> {
        self.source_principal
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
            .filter(|p| !p.is_empty())
    }

    /// The `ns/` segment of the principal (`TD/ns/NAMESPACE/sa/SA`).
    pub fn source_namespace(&self) -> Option<&'a str> {
        identity_parts(self.principal()?).map(|(_, ns, _)| ns)
    }
}

/// `(trust domain, namespace, service account)` of `TD/ns/NS/sa/SA`.
fn identity_parts(principal: &str) -> Option<(&str, &str, &str)> {
    let mut parts = principal.split('/');
    let trust_domain = parts.next()?;
    if parts.next()? != "ns" {
        return None;
    }
    let namespace = parts.next()?;
    if parts.next()? != "sa" {
        return None;
    }
    let service_account = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((trust_domain, namespace, service_account))
}

/// The outcome of an authorization check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy that decided (`namespace/name`), when one did.
    pub policy: Option<String>,
    /// Why, in plain words, for the access log.
    pub reason: String,
    /// An AUDIT policy that matched, if any (it never changes the decision).
    pub audit: Option<String>,
}

impl Decision {
    fn allow(policy: Option<String>, reason: String) -> Decision {
        Decision {
            allowed: true,
            policy,
            reason,
            audit: None,
        }
    }

    fn deny(policy: Option<String>, reason: String) -> Decision {
        Decision {
            allowed: false,
            policy,
            reason,
            audit: None,
        }
    }
}

/// How HTTP-only attributes are treated on TCP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Rules naming one never match.
    Allow,
    /// They are dropped from the rule.
    Deny,
}

/// The request's attributes as the matchers read them, derived once.
struct Facts<'a> {
    attributes: &'a Attributes<'a>,
    principal: Option<&'a str>,
    identity: Option<(&'a str, &'a str, &'a str)>,
    service_account: Option<String>,
    path: Option<Cow<'a, str>>,
    host: Option<String>,
}

/// Checks `attributes` against `policies`.
pub fn evaluate(policies: &Policies, attributes: &Attributes<'_>) -> Decision {
    let principal = attributes.principal();
    let identity = principal.and_then(identity_parts);
    let http = attributes.protocol == Protocol::Http;
    let path = match attributes.path.filter(|_| http) {
        Some(target) => {
            match path::normalize(path::without_query(target), policies.path_normalization) {
                Ok(path) => Some(path),
                Err(error) => {
                    return Decision::deny(None, format!("RBAC: request path refused: {error}"));
                }
            }
        }
        None => None,
    };
    let facts = Facts {
        attributes,
        principal,
        identity,
        service_account: identity.map(|(_, ns, sa)| format!("{ns}/{sa}")),
        path,
        host: attributes
            .host
            .filter(|_| http)
            .map(str::to_ascii_lowercase),
    };
    let audit = first_match(&policies.audit, &facts, Action::Deny).map(|p| p.name.clone());
    let mut decision = decide(policies, &facts);
    decision.audit = audit;
    decision
}

fn decide(policies: &Policies, facts: &Facts<'_>) -> Decision {
    if let Some(policy) = first_match(&policies.custom, facts, Action::Deny) {
        return Decision::deny(
            Some(policy.name.clone()),
            format!(
                "CUSTOM policy {} matched, and the CUSTOM action (an external authorizer) is not \
                 supported: denied",
                policy.name
            ),
        );
    }
    if let Some(policy) = first_match(&policies.deny, facts, Action::Deny) {
        return Decision::deny(
            Some(policy.name.clone()),
            format!("denied by DENY policy {}", policy.name),
        );
    }
    if policies.allow.is_empty() {
        return Decision::allow(None, "no ALLOW policy applies".to_owned());
    }
    match first_match(&policies.allow, facts, Action::Allow) {
        Some(policy) => Decision::allow(
            Some(policy.name.clone()),
            format!("allowed by ALLOW policy {}", policy.name),
        ),
        None => {
            // Name the policies that could have admitted the request, so that a refusal says
            // which policy to look at.
            let names: Vec<&str> = policies.allow.iter().map(|p| p.name.as_str()).collect();
            Decision::deny(
                None,
                format!(
                    "no ALLOW policy matched (ALLOW policies: {})",
                    names.join(", ")
                ),
            )
        }
    }
}

fn first_match<'p>(
    policies: &'p [AuthorizationPolicy],
    facts: &Facts<'_>,
    action: Action,
) -> Option<&'p AuthorizationPolicy> {
    policies.iter().find(|policy| {
        policy
            .rules
            .iter()
            .any(|rule| rule_matches(rule, facts, action))
    })
}

fn rule_matches(rule: &Rule, facts: &Facts<'_>, action: Action) -> bool {
    let tcp = facts.attributes.protocol == Protocol::Tcp;
    if tcp && action == Action::Allow && rule.has_http_fields() {
        return false;
    }
    let any = |clauses: &[Clause]| {
        clauses.is_empty()
            || clauses
                .iter()
                .any(|clause| clause.fields.iter().all(|f| field_matches(f, facts)))
    };
    any(&rule.from) && any(&rule.to) && rule.when.iter().all(|f| field_matches(f, facts))
}

fn field_matches(field: &FieldMatch, facts: &Facts<'_>) -> bool {
    if facts.attributes.protocol == Protocol::Tcp && field.attribute.is_http_only() {
        // Only DENY-like rules get here on TCP: the field is dropped.
        return true;
    }
    let hit = field
        .values
        .iter()
        .any(|value| value_matches(&field.attribute, value, facts));
    hit != field.negated
}

fn value_matches(attribute: &Attribute, value: &ValueMatcher, facts: &Facts<'_>) -> bool {
    let attributes = facts.attributes;
    let text = |candidate: Option<&str>| candidate.is_some_and(|c| string_matches(value, c));
    let ip = |candidate: IpAddr| match value {
        ValueMatcher::Cidr(block) => block.contains(candidate),
        _ => false,
    };
    match attribute {
        Attribute::SourcePrincipal => text(facts.principal),
        Attribute::SourceNamespace => text(facts.identity.map(|(_, ns, _)| ns)),
        Attribute::SourceServiceAccount => text(facts.service_account.as_deref()),
        Attribute::SourceTrustDomain => text(facts.identity.map(|(td, _, _)| td).or_else(|| {
            facts
                .principal
                .and_then(|p| p.split('/').next())
                .filter(|td| !td.is_empty())
        })),
        Attribute::SourceIp => ip(attributes.source_ip),
        Attribute::RemoteIp => ip(attributes.remote_ip),
        Attribute::DestinationIp => ip(attributes.destination.ip()),
        Attribute::DestinationPort => {
            matches!(value, ValueMatcher::Port(port) if *port == attributes.destination.port())
        }
        Attribute::ConnectionSni => text(attributes.sni),
        Attribute::RequestPrincipal => text(attributes.request_principal),
        Attribute::RequestPresenter => text(attributes.request_presenter),
        Attribute::RequestAudiences => attributes
            .request_audiences
            .iter()
            .any(|a| string_matches(value, a)),
        Attribute::RequestClaim(claim) => attributes
            .request_claims
            .iter()
            .filter(|(path, _)| path == claim)
            .flat_map(|(_, values)| values)
            .any(|v| string_matches(value, v)),
        Attribute::RequestHeader(name) => {
            let Some(headers) = attributes.headers else {
                return false;
            };
            let values: Vec<&str> = headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            !values.is_empty() && string_matches(value, &values.join(","))
        }
        Attribute::Host => facts.host.as_deref().is_some_and(|host| {
            string_matches(value, host) || string_matches(value, host_without_port(host))
        }),
        Attribute::Method => text(attributes.method),
        Attribute::Path => text(facts.path.as_deref()),
    }
}

fn string_matches(value: &ValueMatcher, candidate: &str) -> bool {
    match value {
        ValueMatcher::String(pattern) => pattern.matches(candidate),
        ValueMatcher::PathTemplate(pattern) => pattern.is_match(candidate),
        ValueMatcher::Cidr(_) | ValueMatcher::Port(_) => false,
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn host_without_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => &authority[..colon],
        _ => authority,
    }
}

#[cfg(test)]
mod tests;
