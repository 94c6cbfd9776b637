//! SPIFFE IDs and trust domains, parsed and validated per the SPIFFE ID specification.
//!
//! A SPIFFE ID is `spiffe://TRUST_DOMAIN/PATH`. The trust domain is lowercase `[a-z0-9.-_]`
//! (at most 255 bytes) with no port, userinfo or percent-encoding; the path is made of segments
//! of `[A-Za-z0-9.-_]`, none empty, `.` or `..`, with no trailing `/`; there is no query or
//! fragment, and the whole ID is at most 2048 bytes. The scheme must be written `spiffe` in
//! lowercase and uppercase trust domains are refused rather than normalised, so that an ID has
//! exactly one spelling. Istio's workload form `/ns/NAMESPACE/sa/SERVICE_ACCOUNT` has accessors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The scheme prefix of every SPIFFE ID.
pub const SCHEME_PREFIX: &str = "spiffe://";
/// Longest SPIFFE ID accepted, in bytes.
pub const MAX_ID_BYTES: usize = 2048;
/// Longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// The SPIFFE rule an ID or trust domain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is {0} bytes, more than the 2048 allowed")]
    TooLong(usize),
    #[error("SPIFFE ID must start with the scheme \"spiffe://\"")]
    WrongScheme,
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    #[error("trust domain is {0} bytes, more than the 255 allowed")]
    TrustDomainTooLong(usize),
    #[error("trust domain must be lowercase")]
    TrustDomainUppercase,
    #[error("trust domain must not contain a port")]
    Port,
    #[error("trust domain must not contain userinfo")]
    UserInfo,
    #[error("trust domain contains {0:?}; only [a-z0-9.-_] are allowed")]
    TrustDomainCharacter(char),
    #[error("SPIFFE ID must not contain percent-encoded characters")]
    PercentEncoded,
    #[error("SPIFFE ID must not have a query")]
    Query,
    #[error("SPIFFE ID must not have a fragment")]
    Fragment,
    #[error("SPIFFE ID path must not contain empty segments")]
    EmptySegment,
    #[error("SPIFFE ID path must not contain \".\" or \"..\" segments")]
    DotSegment,
    #[error("SPIFFE ID path must not end with \"/\"")]
    TrailingSlash,
    #[error("SPIFFE ID path contains {0:?}; only [A-Za-z0-9.-_] are allowed")]
    PathCharacter(char),
}

/// A SPIFFE trust domain name, such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a bare trust domain name (no scheme).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name, e.g. `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://NAME` (used on signing certificates).
    pub fn id_uri(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated SPIFFE ID. Equality is byte equality of the one canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    /// Byte length of the trust domain inside `uri` (after the scheme).
    td_len: usize,
}

impl SpiffeId {
    /// Parses and validates `spiffe://TD/path`.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        if uri.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if uri.len() > MAX_ID_BYTES {
            return Err(SpiffeIdError::TooLong(uri.len()));
        }
        let rest = uri
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment are refused wherever they appear.
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        let td_len = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..td_len])?;
        validate_path(&rest[td_len..])?;
        Ok(Self {
            uri: uri.to_owned(),
            td_len,
        })
    }

    /// Builds `spiffe://TD` + `path`; `path` is empty or starts with `/`.
    pub fn new(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME_PREFIX}{trust_domain}{path}"))
    }

    /// Istio's workload identity `spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    pub fn istio(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        // Each part is one path segment: a '/' inside would shift the /ns/../sa/.. form.
        if namespace.contains('/') || service_account.contains('/') {
            return Err(SpiffeIdError::PathCharacter('/'));
        }
        Self::new(
            trust_domain,
            &format!("/ns/{namespace}/sa/{service_account}"),
        )
    }

    /// The whole ID as written, e.g. `spiffe://cluster.local/ns/default/sa/web`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain name.
    pub fn trust_domain_name(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len]
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len() + self.td_len..]
    }

    /// True when the ID has no path: it names the trust domain itself (a signing authority), and
    /// can never be a workload's identity.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// The namespace of an Istio identity (`/ns/N/sa/S`), else `None`.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio identity (`/ns/N/sa/S`), else `None`.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError::TrustDomainTooLong(td.len()));
    }
    for c in td.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            'A'..='Z' => return Err(SpiffeIdError::TrustDomainUppercase),
            ':' => return Err(SpiffeIdError::Port),
            '@' => return Err(SpiffeIdError::UserInfo),
            '%' => return Err(SpiffeIdError::PercentEncoded),
            other => return Err(SpiffeIdError::TrustDomainCharacter(other)),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path == "/" || path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    // `path` starts with '/', so the first split item is the empty string before it.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        for c in segment.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '%' => return Err(SpiffeIdError::PercentEncoded),
                other => return Err(SpiffeIdError::PathCharacter(other)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse_and_keep_their_parts() {
        let cases = [
            (
                "spiffe://cluster.local/ns/default/sa/web",
                "cluster.local",
                "/ns/default/sa/web",
            ),
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://td-a_b.example/path/To.Thing-x_y",
                "td-a_b.example",
                "/path/To.Thing-x_y",
            ),
            ("spiffe://192.168.1.1/workload", "192.168.1.1", "/workload"),
            ("spiffe://example.org/..a/b..", "example.org", "/..a/b.."),
            ("spiffe://example.org/.../x", "example.org", "/.../x"),
        ];
        for (uri, td, path) in cases {
            let id = SpiffeId::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(id.trust_domain_name(), td, "{uri}");
            assert_eq!(id.path(), path, "{uri}");
            assert_eq!(id.to_string(), uri);
            assert_eq!(id.trust_domain(), TrustDomain::new(td).unwrap());
        }
    }

    #[test]
    fn invalid_ids_name_the_rule_they_break() {
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2048));
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        let cases: Vec<(&str, SpiffeIdError)> = vec![
            ("", SpiffeIdError::Empty),
            ("http://example.org/x", SpiffeIdError::WrongScheme),
            ("SPIFFE://example.org/x", SpiffeIdError::WrongScheme),
            ("spiffe:/example.org/x", SpiffeIdError::WrongScheme),
            ("example.org/x", SpiffeIdError::WrongScheme),
            ("spiffe://", SpiffeIdError::MissingTrustDomain),
            ("spiffe:///path", SpiffeIdError::MissingTrustDomain),
            (
                "spiffe://Example.org/x",
                SpiffeIdError::TrustDomainUppercase,
            ),
            ("spiffe://example.org:8443/x", SpiffeIdError::Port),
            ("spiffe://user@example.org/x", SpiffeIdError::UserInfo),
            ("spiffe://exa%41mple.org/x", SpiffeIdError::PercentEncoded),
            ("spiffe://example.org/a%2Fb", SpiffeIdError::PercentEncoded),
            (
                "spiffe://exa mple.org/x",
                SpiffeIdError::TrustDomainCharacter(' '),
            ),
            ("spiffe://[::1]/x", SpiffeIdError::TrustDomainCharacter('[')),
            ("spiffe://example.org/x?y=1", SpiffeIdError::Query),
            ("spiffe://example.org/x#frag", SpiffeIdError::Fragment),
            ("spiffe://example.org/", SpiffeIdError::TrailingSlash),
            (
                "spiffe://example.org/ns/default/",
                SpiffeIdError::TrailingSlash,
            ),
            ("spiffe://example.org//x", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a//b", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/./x", SpiffeIdError::DotSegment),
            ("spiffe://example.org/a/..", SpiffeIdError::DotSegment),
            (
                "spiffe://example.org/a/b c",
                SpiffeIdError::PathCharacter(' '),
            ),
            (
                "spiffe://example.org/a/b*",
                SpiffeIdError::PathCharacter('*'),
            ),
            (
                "spiffe://example.org/caf\u{e9}",
                SpiffeIdError::PathCharacter('\u{e9}'),
            ),
            (long_path.as_str(), SpiffeIdError::TooLong(long_path.len())),
            (long_td.as_str(), SpiffeIdError::TrustDomainTooLong(256)),
        ];
        for (uri, expected) in cases {
            assert_eq!(SpiffeId::parse(uri), Err(expected), "{uri}");
        }
    }

    #[test]
    fn longest_allowed_id_parses() {
        let prefix = "spiffe://example.org/";
        let id = format!("{prefix}{}", "a".repeat(MAX_ID_BYTES - prefix.len()));
        assert_eq!(id.len(), MAX_ID_BYTES);
        assert!(SpiffeId::parse(&id).is_ok());
    }

    #[test]
    fn istio_form_has_namespace_and_service_account() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let id = SpiffeId::istio(&td, "payments", "api").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/payments/sa/api");
        assert_eq!(id.namespace(), Some("payments"));
        assert_eq!(id.service_account(), Some("api"));
        assert_eq!(id.trust_domain(), td);

        let other = SpiffeId::parse("spiffe://cluster.local/ns/payments/sa/api/extra").unwrap();
        assert_eq!(other.namespace(), None);
        let gateway = SpiffeId::parse("spiffe://cluster.local/gateway/east").unwrap();
        assert_eq!(gateway.service_account(), None);
        assert!(SpiffeId::istio(&td, "bad/ns", "x").is_err());
        assert!(SpiffeId::istio(&td, "", "x").is_err());
    }

    #[test]
    fn trust_domain_rules_apply_to_bare_names() {
        assert!(TrustDomain::new("cluster.local").is_ok());
        assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::MissingTrustDomain));
        assert_eq!(
            TrustDomain::new("Cluster.local"),
            Err(SpiffeIdError::TrustDomainUppercase)
        );
        assert_eq!(
            TrustDomain::new("a/b"),
            Err(SpiffeIdError::TrustDomainCharacter('/'))
        );
        let td = TrustDomain::new("west.mesh").unwrap();
        assert_eq!(td.id_uri(), "spiffe://west.mesh");
    }

    #[test]
    fn serializes_as_a_string() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://cluster.local/ns/a/sa/b\"");
        let back: SpiffeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://A/x\"").is_err());
    }
}
