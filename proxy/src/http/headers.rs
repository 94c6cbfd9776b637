//! Header handling on the way through: what a proxy must remove (hop-by-hop headers, headers
//! only the proxy may set), what it adds (`x-request-id`, `x-forwarded-for`,
//! `x-forwarded-proto`), and a route's own set/add/remove edits.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::snapshot::HeaderOps;

/// Headers that describe one connection and never travel further (RFC 9110 §7.6.1), plus the
/// HTTP/1 framing headers HTTP/2 forbids.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names. `keep_upgrade`
/// keeps `Connection: upgrade` and `Upgrade` for a protocol upgrade (WebSocket); `te: trailers`
/// is kept, as gRPC needs it.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && *name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(&name);
    }
    let trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in HOP_BY_HOP {
        if keep_upgrade && (*name == header::UPGRADE || *name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes headers a client must not set: Envoy's and Strait's internal ones, and
/// `x-forwarded-client-cert` unless the client is a mesh peer whose certificate was verified
/// (Envoy's SANITIZE, and APPEND_FORWARD for mesh mTLS: a plaintext client could otherwise
/// claim any certificate identity to the upstream).
pub(crate) fn remove_internal(headers: &mut HeaderMap, keep_client_cert: bool) {
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-envoy-")
                || name.starts_with("x-strait-")
                || (name == "x-forwarded-client-cert" && !keep_client_cert)
        })
        .cloned()
        .collect();
    for name in internal {
        headers.remove(&name);
    }
}

/// Appends the verified mesh peer's element to `x-forwarded-client-cert`, after any the peer
/// forwarded (Envoy's APPEND_FORWARD: elements are comma-separated, the last added last).
pub(crate) fn append_client_cert(headers: &mut HeaderMap, element: &HeaderValue) {
    const XFCC: &str = "x-forwarded-client-cert";
    let earlier: Vec<&[u8]> = headers
        .get_all(XFCC)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if earlier.is_empty() {
        headers.insert(XFCC, element.clone());
        return;
    }
    let mut joined = earlier.join(&b","[..]);
    joined.push(b',');
    joined.extend_from_slice(element.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(XFCC, value);
    }
}

/// Sets `x-request-id` when the request has none; returns the request's id.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !id.is_empty()
    {
        return id.to_owned();
    }
    let id = new_request_id();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    id
}

/// A random UUID (version 4), as Envoy generates request ids, written straight into its
/// 36 bytes (this runs for every request).
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
    bytes[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = [0u8; 36];
    let mut at = 0;
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    text.iter().map(|b| char::from(*b)).collect()
}

/// `x-forwarded-for` and `x-forwarded-proto` at an edge: the client's address is appended, and
/// the proxy's view of the scheme replaces the client's, unless the client is one of
/// `trusted_hops` proxies in front (Istio's `numTrustedProxies`).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    scheme: &'static str,
    trusted_hops: u32,
) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if existing.peek().is_some() {
        let mut joined: Vec<u8> = Vec::new();
        for value in existing {
            joined.extend_from_slice(value.as_bytes());
            joined.push(b',');
        }
        joined.extend_from_slice(client.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
    } else {
        headers.insert(&X_FORWARDED_FOR, client.clone());
    }
    if trusted_hops == 0 || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
}

/// The original client of a request whose `x-forwarded-for` already ends with the peer (as
/// `set_forwarded` leaves it): the entry `trusted_hops` before the last, as Envoy picks it with
/// `xff_num_trusted_hops`; the peer itself when there are not that many entries or the entry is
/// not an address.
pub(crate) fn original_client(headers: &HeaderMap, peer: IpAddr, trusted_hops: u32) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(index) = entries
        .len()
        .checked_sub(1)
        .and_then(|last| last.checked_sub(trusted_hops as usize))
    else {
        return peer;
    };
    entries
        .get(index)
        .and_then(|entry| entry.parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// A route's header edits: remove, then set (replacing), then add (appending).
pub(crate) fn apply(ops: &HeaderOps, headers: &mut HeaderMap) {
    let Some(ops) = ops.edits() else {
        return;
    };
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_client_is_found_past_trusted_proxies() {
        let mut headers = HeaderMap::new();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9, 203.0.113.7"),
        );
        set_forwarded(
            &mut headers,
            &HeaderValue::from_static("10.0.0.2"),
            "http",
            1,
        );
        assert_eq!(original_client(&headers, peer, 0), peer);
        assert_eq!(
            original_client(&headers, peer, 1),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            original_client(&headers, peer, 2),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(original_client(&headers, peer, 3), peer, "too few entries");
        let mut forged = HeaderMap::new();
        forged.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        set_forwarded(
            &mut forged,
            &HeaderValue::from_static("10.0.0.2"),
            "http",
            1,
        );
        assert_eq!(original_client(&forged, peer, 1), peer);
    }

    #[test]
    fn hop_by_hop_headers_are_removed_including_named_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut headers, false);
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers.get(header::TE).unwrap(), "trailers");
        assert_eq!(headers.get("x-kept").unwrap(), "yes");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(headers.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn internal_headers_from_clients_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-original-path", HeaderValue::from_static("/x"));
        headers.insert("x-strait-route", HeaderValue::from_static("y"));
        headers.insert("x-envoyish", HeaderValue::from_static("kept"));
        headers.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("URI=spiffe://cluster.local/ns/a/sa/admin"),
        );
        remove_internal(&mut headers, false);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        assert_eq!(id.len(), 36);
        assert_eq!(headers.get("x-request-id").unwrap(), id.as_str());
        assert_eq!(ensure_request_id(&mut headers), id);
        // A version-4 UUID: 8-4-4-4-12 lowercase hex, version 4, variant 10xx.
        for _ in 0..100 {
            let id = new_request_id();
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
        }
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_set() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(
            &mut headers,
            &HeaderValue::from_static("192.0.2.7"),
            "http",
            0,
        );
        assert_eq!(
            headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1,192.0.2.7"
        );
        assert_eq!(
            headers.get("x-forwarded-proto").unwrap(),
            "http",
            "an untrusted client's proto is replaced"
        );
    }

    #[test]
    fn route_edits() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("1"));
        let ops = HeaderOps::new(crate::snapshot::HeaderEdits {
            set: vec![("x-a".into(), "2".into())],
            add: vec![("x-c".into(), "3".into()), ("x-c".into(), "4".into())],
            remove: vec!["x-b".into()],
        });
        apply(&ops, &mut headers);
        assert_eq!(headers.get("x-a").unwrap(), "2");
        assert!(headers.get("x-b").is_none());
        assert_eq!(headers.get_all("x-c").iter().count(), 2);
    }
}
