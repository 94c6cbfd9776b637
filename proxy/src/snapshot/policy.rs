//! Policies of one workload or gateway, compiled: authorization policies grouped by action
//! (CUSTOM, DENY, ALLOW, AUDIT) with their rules as matchers, the path normalization they see,
//! and the peer-authentication mode per port.
//!
//! Matchers follow Istio's string forms: exact `abc`, prefix `abc*`, suffix `*abc`, presence
//! `*` (any non-empty value); IP blocks are CIDRs, ports exact numbers. Every field has its
//! `not` form. `authz::evaluate` reads these; discovery builds them. The JWT rules of the
//! RequestAuthentications that apply travel here too (`authn` reads them).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::matcher::Pattern;

/// Everything a workload's (or gateway's) requests are checked against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    /// CUSTOM policies (delegated to an extension provider; not supported: one that matches
    /// denies).
    pub custom: Vec<AuthorizationPolicy>,
    pub deny: Vec<AuthorizationPolicy>,
    pub allow: Vec<AuthorizationPolicy>,
    /// AUDIT policies never change the decision.
    pub audit: Vec<AuthorizationPolicy>,
    /// How request paths are normalized before `paths` are matched.
    pub path_normalization: PathNormalization,
    pub peer_authentication: PeerAuthentication,
    /// The JWT rules of every RequestAuthentication that applies, combined (HTTP only).
    pub jwt_rules: Vec<super::JwtRule>,
}

impl Policies {
    /// Whether any authorization policy applies (so the request path can skip the work).
    pub fn has_authorization(&self) -> bool {
        !(self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty())
    }

    /// Whether any authorization rule reads `connection.sni`: behind terminated mesh mTLS the
    /// proxy then reads the application's own ClientHello to know it.
    pub fn reads_connection_sni(&self) -> bool {
        [&self.custom, &self.deny, &self.allow, &self.audit]
            .into_iter()
            .flatten()
            .flat_map(|policy| &policy.rules)
            .flat_map(Rule::fields)
            .any(|field| field.attribute == Attribute::ConnectionSni)
    }
}

/// One compiled AuthorizationPolicy. No rules: it matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    /// `namespace/name`, for the access log.
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A rule matches when one of `from` (or none is given), one of `to` (or none is given) and
/// every `when` match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub from: Vec<Clause>,
    pub to: Vec<Clause>,
    pub when: Vec<FieldMatch>,
}

impl Rule {
    /// Every field of the rule.
    pub fn fields(&self) -> impl Iterator<Item = &FieldMatch> {
        self.from
            .iter()
            .chain(&self.to)
            .flat_map(|c| c.fields.iter())
            .chain(&self.when)
    }

    /// Whether the rule names an attribute only HTTP requests have.
    pub fn has_http_fields(&self) -> bool {
        self.fields().any(|f| f.attribute.is_http_only())
    }
}

/// One `source` or `operation`: every field must match. An empty clause matches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    pub fields: Vec<FieldMatch>,
}

/// One field (`principals`, `notPaths`, a `when` condition's `values` or `notValues`): the
/// attribute matches one of the values, or (negated) none of them. An absent attribute matches
/// no value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldMatch {
    pub attribute: Attribute,
    pub values: Vec<ValueMatcher>,
    pub negated: bool,
}

/// What a field is matched against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// The peer's SPIFFE ID without `spiffe://` (`principals`, `source.principal`).
    SourcePrincipal,
    /// The `ns/` segment of the peer's ID (`namespaces`, `source.namespace`).
    SourceNamespace,
    /// `NAMESPACE/SERVICE_ACCOUNT` of the peer's ID (`serviceAccounts`,
    /// `source.serviceAccount`).
    SourceServiceAccount,
    /// The trust domain of the peer's ID (`trustDomains`, `source.trustDomain`).
    SourceTrustDomain,
    /// The peer's address (`ipBlocks`, `source.ip`).
    SourceIp,
    /// The original client's address from `x-forwarded-for` (`remoteIpBlocks`, `remote.ip`).
    RemoteIp,
    /// `ISSUER/SUBJECT` of the request's token (`requestPrincipals`, `request.auth.principal`).
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// A claim by its path (`request.auth.claims[a][b]`).
    RequestClaim(Vec<String>),
    /// A request header by lowercase name (`request.headers[name]`).
    RequestHeader(String),
    /// The request's host, case-insensitive, without its port (`hosts`).
    Host,
    Method,
    /// The normalized path without the query (`paths`).
    Path,
    DestinationIp,
    /// The port the connection arrived on (`ports`, `destination.port`).
    DestinationPort,
    ConnectionSni,
}

impl Attribute {
    /// Attributes only an HTTP request has: on TCP an ALLOW rule naming one never matches, and
    /// a DENY rule ignores it.
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            Attribute::RequestPrincipal
                | Attribute::RequestAudiences
                | Attribute::RequestPresenter
                | Attribute::RequestClaim(_)
                | Attribute::RequestHeader(_)
                | Attribute::Host
                | Attribute::Method
                | Attribute::Path
        )
    }

    /// The attribute a `when` key names.
    pub fn from_condition_key(key: &str) -> Result<Attribute, PolicyError> {
        let attribute = match key {
            "source.ip" => Attribute::SourceIp,
            "remote.ip" => Attribute::RemoteIp,
            "source.namespace" => Attribute::SourceNamespace,
            "source.principal" => Attribute::SourcePrincipal,
            "source.serviceAccount" => Attribute::SourceServiceAccount,
            "source.trustDomain" => Attribute::SourceTrustDomain,
            "request.auth.principal" => Attribute::RequestPrincipal,
            "request.auth.audiences" => Attribute::RequestAudiences,
            "request.auth.presenter" => Attribute::RequestPresenter,
            "destination.ip" => Attribute::DestinationIp,
            "destination.port" => Attribute::DestinationPort,
            "connection.sni" => Attribute::ConnectionSni,
            _ => {
                if let Some(name) = bracketed(key, "request.headers") {
                    match name.as_slice() {
                        [name] => return Ok(Attribute::RequestHeader(name.to_ascii_lowercase())),
                        _ => return Err(PolicyError::UnsupportedKey(key.to_owned())),
                    }
                }
                if let Some(path) = bracketed(key, "request.auth.claims") {
                    return Ok(Attribute::RequestClaim(path));
                }
                return Err(PolicyError::UnsupportedKey(key.to_owned()));
            }
        };
        Ok(attribute)
    }

    /// How values of this attribute are written.
    fn value_kind(&self) -> ValueKind {
        match self {
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => ValueKind::Ip,
            Attribute::DestinationPort => ValueKind::Port,
            Attribute::Path => ValueKind::Path,
            Attribute::Host => ValueKind::CaseInsensitive,
            _ => ValueKind::String,
        }
    }
}

enum ValueKind {
    String,
    CaseInsensitive,
    Path,
    Ip,
    Port,
}

/// `prefix[a][b]` -> `[a, b]`; `None` unless the key is `prefix` followed by brackets.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix(prefix)?;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let part = &inner[..end];
        if part.is_empty() {
            return None;
        }
        parts.push(part.to_owned());
        rest = &inner[end + 1..];
    }
    (!parts.is_empty()).then_some(parts)
}

impl FieldMatch {
    /// Compiles a field from the values as written in the policy.
    pub fn parse(
        attribute: Attribute,
        values: &[String],
        negated: bool,
    ) -> Result<FieldMatch, PolicyError> {
        let kind = attribute.value_kind();
        let values = values
            .iter()
            .map(|value| ValueMatcher::parse(&kind, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FieldMatch {
            attribute,
            values,
            negated,
        })
    }
}

/// One value of a field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatcher {
    String(AuthzString),
    Cidr(Cidr),
    Port(u16),
    /// A path with URI template operators (`{*}` one segment, `{**}` the rest).
    PathTemplate(Pattern),
}

impl ValueMatcher {
    fn parse(kind: &ValueKind, value: &str) -> Result<ValueMatcher, PolicyError> {
        match kind {
            ValueKind::Ip => Ok(ValueMatcher::Cidr(Cidr::parse(value)?)),
            ValueKind::Port => value
                .parse::<u16>()
                .map(ValueMatcher::Port)
                .map_err(|_| PolicyError::InvalidPort(value.to_owned())),
            ValueKind::Path if value.contains('{') => path_template(value),
            ValueKind::CaseInsensitive => Ok(ValueMatcher::String(AuthzString::parse(
                &value.to_ascii_lowercase(),
            ))),
            ValueKind::Path | ValueKind::String => {
                Ok(ValueMatcher::String(AuthzString::parse(value)))
            }
        }
    }
}

/// `/a/{*}/b/{**}` as a whole-path regex: `{*}` is one non-empty segment, `{**}` zero or more
/// segments and must come last.
fn path_template(template: &str) -> Result<ValueMatcher, PolicyError> {
    let invalid = |why: &str| PolicyError::InvalidPathTemplate {
        template: template.to_owned(),
        why: why.to_owned(),
    };
    let mut regex = String::new();
    let segments: Vec<&str> = template.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            regex.push('/');
        }
        match *segment {
            "{*}" => regex.push_str("[^/]+"),
            "{**}" if i + 1 == segments.len() => regex.push_str(".*"),
            "{**}" => return Err(invalid("{**} must be the last segment")),
            literal if literal.contains('{') || literal.contains('}') => {
                return Err(invalid("an operator must be a whole segment"));
            }
            literal => regex.push_str(&regex::escape(literal)),
        }
    }
    Pattern::new(&regex)
        .map(ValueMatcher::PathTemplate)
        .map_err(|_| invalid("it does not compile"))
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (present and non-empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzString {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
}

impl AuthzString {
    pub fn parse(value: &str) -> AuthzString {
        if value == "*" {
            AuthzString::Present
        } else if let Some(prefix) = value.strip_suffix('*') {
            AuthzString::Prefix(prefix.to_owned())
        } else if let Some(suffix) = value.strip_prefix('*') {
            AuthzString::Suffix(suffix.to_owned())
        } else {
            AuthzString::Exact(value.to_owned())
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            AuthzString::Exact(exact) => value == exact,
            AuthzString::Prefix(prefix) => value.starts_with(prefix.as_str()),
            AuthzString::Suffix(suffix) => value.ends_with(suffix.as_str()),
            AuthzString::Present => !value.is_empty(),
        }
    }
}

/// An IP block: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(value: &str) -> Result<Cidr, PolicyError> {
        let invalid = || PolicyError::InvalidIpBlock(value.to_owned());
        let (address, prefix) = match value.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| invalid())?;
        let address = address.to_canonical();
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Cidr { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(block) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(block), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(block) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// MeshConfig `pathNormalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    None,
    /// RFC 3986 dot segments, unreserved characters decoded, `\` as `/`.
    #[default]
    Base,
    /// BASE, then `//` merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

/// Whether a port requires mutual TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Strict,
    #[default]
    Permissive,
    Disable,
}

/// The resolved PeerAuthentication of a workload: a default and per-port overrides (by the
/// workload's own port).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerAuthentication {
    pub mode: MtlsMode,
    pub ports: BTreeMap<u16, MtlsMode>,
    /// The policies it was resolved from (`namespace/name`), narrowest last.
    pub sources: Vec<String>,
}

impl PeerAuthentication {
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Why part of a policy cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("condition key {0:?} is not supported")]
    UnsupportedKey(String),
    #[error("{0:?} is not an IP address or CIDR block")]
    InvalidIpBlock(String),
    #[error("{0:?} is not a port number")]
    InvalidPort(String),
    #[error("path template {template:?} is not valid: {why}")]
    InvalidPathTemplate { template: String, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rule_naming_connection_sni_needs_the_sni() {
        let field = |attribute| FieldMatch {
            attribute,
            values: vec![ValueMatcher::String(AuthzString::parse("api.example"))],
            negated: false,
        };
        let policies = |rule: Rule| Policies {
            deny: vec![AuthorizationPolicy {
                name: "ns/p".to_owned(),
                rules: vec![rule],
            }],
            ..Policies::default()
        };
        let by_principal = Rule {
            from: vec![Clause {
                fields: vec![field(Attribute::SourcePrincipal)],
            }],
            ..Rule::default()
        };
        assert!(!policies(by_principal).reads_connection_sni());
        let by_sni = Rule {
            when: vec![field(Attribute::ConnectionSni)],
            ..Rule::default()
        };
        assert!(policies(by_sni).reads_connection_sni());
        assert!(!Policies::default().reads_connection_sni());
    }

    #[test]
    fn string_forms_are_exact_prefix_suffix_and_presence() {
        assert!(AuthzString::parse("abc").matches("abc"));
        assert!(!AuthzString::parse("abc").matches("abcd"));
        assert!(AuthzString::parse("abc*").matches("abcd"));
        assert!(!AuthzString::parse("abc*").matches("xabc"));
        assert!(AuthzString::parse("*abc").matches("xabc"));
        assert!(!AuthzString::parse("*abc").matches("abcx"));
        assert!(AuthzString::parse("*").matches("x"));
        assert!(!AuthzString::parse("*").matches(""));
    }

    #[test]
    fn cidrs_contain_addresses() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let single = Cidr::parse("192.0.2.7").unwrap();
        assert!(single.contains("192.0.2.7".parse().unwrap()));
        assert!(!single.contains("192.0.2.8".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn condition_keys_name_attributes() {
        assert_eq!(
            Attribute::from_condition_key("request.headers[X-Token]").unwrap(),
            Attribute::RequestHeader("x-token".into())
        );
        assert_eq!(
            Attribute::from_condition_key("request.auth.claims[groups][admin]").unwrap(),
            Attribute::RequestClaim(vec!["groups".into(), "admin".into()])
        );
        assert!(matches!(
            Attribute::from_condition_key("experimental.envoy.filters.network.mysql_proxy[db.t]"),
            Err(PolicyError::UnsupportedKey(_))
        ));
        assert!(Attribute::from_condition_key("request.headers").is_err());
        assert!(Attribute::from_condition_key("request.headers[]").is_err());
    }

    #[test]
    fn path_templates_match_segments() {
        let ValueMatcher::PathTemplate(one) = path_template("/api/{*}/info").unwrap() else {
            panic!("a template");
        };
        assert!(one.is_match("/api/v1/info"));
        assert!(!one.is_match("/api/v1/x/info"));
        assert!(!one.is_match("/api//info"));
        let ValueMatcher::PathTemplate(rest) = path_template("/files/{**}").unwrap() else {
            panic!("a template");
        };
        assert!(rest.is_match("/files/a/b/c"));
        assert!(!rest.is_match("/other/a"));
        assert!(path_template("/{**}/x").is_err());
        assert!(path_template("/a{*}").is_err());
    }

    #[test]
    fn port_level_modes_override_the_default() {
        let pa = PeerAuthentication {
            mode: MtlsMode::Strict,
            ports: BTreeMap::from([(8080, MtlsMode::Disable)]),
            sources: Vec::new(),
        };
        assert_eq!(pa.mode_for(8080), MtlsMode::Disable);
        assert_eq!(pa.mode_for(9090), MtlsMode::Strict);
    }
}
