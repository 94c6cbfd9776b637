//! Finding tokens in a request: headers (with a prefix such as `Bearer `), query parameters
//! and cookies, at the locations the JWT rules name. A header whose value does not start with
//! the prefix holds no token for that location (`Authorization: Basic ...` is not a JWT).

use http::{HeaderMap, Uri, header};

use crate::snapshot::TokenLocation;

/// A token found at a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found<'r> {
    pub(crate) location: &'r TokenLocation,
    pub(crate) token: String,
}

/// Every token at `locations`, each (location, token) pair once, in the order found.
pub(crate) fn find_tokens<'r>(
    locations: impl IntoIterator<Item = &'r TokenLocation>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Vec<Found<'r>> {
    let mut found: Vec<Found<'r>> = Vec::new();
    let mut seen: Vec<&TokenLocation> = Vec::new();
    for location in locations {
        if seen.contains(&location) {
            continue;
        }
        seen.push(location);
        for token in tokens_at(location, headers, uri) {
            let candidate = Found { location, token };
            if !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    found
}

fn tokens_at(location: &TokenLocation, headers: &HeaderMap, uri: &Uri) -> Vec<String> {
    match location {
        TokenLocation::Header { name, prefix } => headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| strip_prefix(value.trim(), prefix))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
            .collect(),
        TokenLocation::Param(name) => uri
            .query()
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .filter(|(key, _)| percent_decode(key) == *name)
            .map(|(_, value)| percent_decode(value))
            .filter(|token| !token.is_empty())
            .collect(),
        TokenLocation::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.trim_matches('"').to_owned())
            .filter(|token| !token.is_empty())
            .collect(),
    }
}

/// `value` without `prefix` (compared without regard to ASCII case, so `bearer` works too).
fn strip_prefix<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// `%XX` escapes and `+` decoded; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The header a token was found in, when it was found in one (so it can be removed).
pub(crate) fn header_name(location: &TokenLocation) -> Option<&str> {
    match location {
        TokenLocation::Header { name, .. } => Some(name),
        TokenLocation::Param(_) | TokenLocation::Cookie(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, prefix: &str) -> TokenLocation {
        TokenLocation::Header {
            name: name.into(),
            prefix: prefix.into(),
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> (HeaderMap, Uri) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        (map, uri.parse().unwrap())
    }

    fn tokens(locations: &[TokenLocation], uri: &str, headers: &[(&str, &str)]) -> Vec<String> {
        let (headers, uri) = request(uri, headers);
        find_tokens(locations, &headers, &uri)
            .into_iter()
            .map(|f| f.token)
            .collect()
    }

    #[test]
    fn default_locations_are_bearer_header_and_access_token_param() {
        let defaults = TokenLocation::defaults();
        assert_eq!(
            tokens(&defaults, "/", &[("authorization", "Bearer a.b.c")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&defaults, "/", &[("authorization", "bearer  a.b.c ")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&defaults, "/p?x=1&access_token=d.e.f", &[]),
            ["d.e.f"]
        );
        // Another scheme is no token at all.
        assert!(tokens(&defaults, "/", &[("authorization", "Basic dXNlcjpw")]).is_empty());
        assert!(tokens(&defaults, "/?access_token=", &[]).is_empty());
    }

    #[test]
    fn custom_headers_strip_their_prefix_or_take_the_whole_value() {
        let locations = [header("x-jwt", ""), header("x-token", "Token ")];
        assert_eq!(
            tokens(
                &locations,
                "/",
                &[("x-jwt", "g.h.i"), ("x-token", "Token j.k.l")]
            ),
            ["g.h.i", "j.k.l"]
        );
        // The default locations are replaced: the Authorization header is not read.
        assert!(tokens(&locations, "/", &[("authorization", "Bearer a.b.c")]).is_empty());
        assert!(tokens(&locations, "/", &[("x-token", "j.k.l")]).is_empty());
    }

    #[test]
    fn params_and_cookies_are_read() {
        let locations = [
            TokenLocation::Param("jwt".into()),
            TokenLocation::Cookie("session".into()),
        ];
        assert_eq!(
            tokens(
                &locations,
                "/?a=b&jwt=m%2En.o",
                &[("cookie", "theme=dark; session=p.q.r")]
            ),
            ["m.n.o", "p.q.r"]
        );
    }

    #[test]
    fn several_locations_give_several_tokens_each_once() {
        let defaults = TokenLocation::defaults();
        let found = {
            let (headers, uri) = request(
                "/?access_token=t.u.v",
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer a.b.c"),
                ],
            );
            find_tokens(&defaults, &headers, &uri)
                .into_iter()
                .map(|f| (f.location.to_string(), f.token))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found,
            [
                ("header authorization".to_owned(), "a.b.c".to_owned()),
                (
                    "query parameter access_token".to_owned(),
                    "t.u.v".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("a%zzb"), "a%zzb");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
