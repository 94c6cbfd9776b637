//! The key a consistent-hash cluster balances a request on (DestinationRule `consistentHash`):
//! a header, a cookie, the client's address or a query parameter, hashed.
//!
//! A cookie key with a ttl is Envoy's cookie affinity: when the request has no such cookie, the
//! gateway makes one up, balances on it, and sets it on the response, so that the client's next
//! requests carry it and reach the same endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;
use http::header;
use http::request::Parts;

use crate::snapshot::{HashKey, LbPolicy};
use crate::upstream::lb::stable_hash;

/// What a request is balanced on.
#[derive(Debug, Default)]
pub(crate) struct RequestHash {
    /// The hash; `None` when the policy is not consistent hashing or the request has no key.
    pub(crate) hash: Option<u64>,
    /// The `Set-Cookie` for the response, when the gateway chose the cookie.
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// The request's hash under `policy`. `peer` and `local` are the downstream connection's
/// addresses: the client's address for `useSourceIp`, and what a generated cookie is made of
/// (the same for every request of a connection, as Envoy does).
pub(crate) fn request_hash(
    policy: &LbPolicy,
    parts: &Parts,
    peer: SocketAddr,
    local: SocketAddr,
) -> RequestHash {
    let LbPolicy::ConsistentHash(hash) = policy else {
        return RequestHash::default();
    };
    let keyed = |key: &[u8]| RequestHash {
        hash: Some(stable_hash(key)),
        set_cookie: None,
    };
    match &hash.key {
        HashKey::Header(name) => parts
            .headers
            .get(name.as_str())
            .map_or_else(RequestHash::default, |v| keyed(v.as_bytes())),
        HashKey::SourceIp => keyed(peer.ip().to_string().as_bytes()),
        HashKey::QueryParameter(name) => parts
            .uri
            .query()
            .and_then(|query| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k == name)
            })
            .map_or_else(RequestHash::default, |(_, v)| keyed(v.as_bytes())),
        HashKey::Cookie { name, path, ttl } => match cookie(parts, name) {
            Some(value) => keyed(value.as_bytes()),
            None => match ttl {
                Some(ttl) => {
                    let value =
                        format!("{:016x}", stable_hash(format!("{peer}{local}").as_bytes()));
                    RequestHash {
                        hash: Some(stable_hash(value.as_bytes())),
                        set_cookie: HeaderValue::from_str(&set_cookie(
                            name,
                            &value,
                            path.as_deref(),
                            *ttl,
                        ))
                        .ok(),
                    }
                }
                None => RequestHash::default(),
            },
        },
    }
}

/// The value of the request's cookie `name`, without the double quotes it may be sent in.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    let value = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)?
        .1;
    Some(
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value),
    )
}

/// Envoy's `Set-Cookie` for a generated affinity cookie: the value quoted, `Max-Age` unless the
/// ttl is zero (a session cookie), the path if set, `HttpOnly`.
fn set_cookie(name: &str, value: &str, path: Option<&str>, ttl: Duration) -> String {
    let mut cookie = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        cookie.push_str(&format!("; Path={path}"));
    }
    cookie.push_str("; HttpOnly");
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ConsistentHash, HashPolicy};

    fn cookie_policy(ttl: Option<Duration>) -> LbPolicy {
        LbPolicy::ConsistentHash(ConsistentHash {
            key: HashKey::Cookie {
                name: "affinity".to_owned(),
                path: Some("/".to_owned()),
                ttl,
            },
            policy: HashPolicy::RingHash {
                minimum_ring_size: 1024,
            },
        })
    }

    fn parts(cookie: Option<&str>) -> Parts {
        let mut request = http::Request::get("/");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.body(()).unwrap().into_parts().0
    }

    const PEER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)),
        4000,
    );
    const LOCAL: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 80);

    #[test]
    fn a_generated_cookie_hashes_as_the_cookie_sent_back() {
        let policy = cookie_policy(Some(Duration::from_secs(60)));
        let generated = request_hash(&policy, &parts(None), PEER, LOCAL);
        let set_cookie = generated.set_cookie.unwrap();
        let set_cookie = set_cookie.to_str().unwrap();
        assert!(set_cookie.starts_with("affinity=\""), "{set_cookie}");
        assert!(
            set_cookie.ends_with("; Max-Age=60; Path=/; HttpOnly"),
            "{set_cookie}"
        );
        let pair = set_cookie.split(';').next().unwrap();
        let sent_back = request_hash(&policy, &parts(Some(&format!("a=1; {pair}"))), PEER, LOCAL);
        assert_eq!(sent_back.hash, generated.hash);
        assert!(sent_back.set_cookie.is_none());
        let unquoted = pair.replace('"', "");
        let sent_unquoted = request_hash(&policy, &parts(Some(&unquoted)), PEER, LOCAL);
        assert_eq!(sent_unquoted.hash, generated.hash);
    }

    #[test]
    fn without_a_ttl_a_missing_cookie_is_no_key() {
        let missing = request_hash(&cookie_policy(None), &parts(None), PEER, LOCAL);
        assert!(missing.hash.is_none() && missing.set_cookie.is_none());
        let session = request_hash(
            &cookie_policy(Some(Duration::ZERO)),
            &parts(None),
            PEER,
            LOCAL,
        );
        let session = session.set_cookie.unwrap();
        assert!(!session.to_str().unwrap().contains("Max-Age"));
    }
}
