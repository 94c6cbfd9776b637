//! Request path normalization before authorization, as MeshConfig `pathNormalization` says:
//! BASE decodes percent-encoded unreserved characters once (`%2e` is `.`), turns `\` into `/`
//! and removes dot segments (RFC 3986 section 5.2.4); MERGE_SLASHES also merges `//`;
//! DECODE_AND_MERGE_SLASHES first decodes `%2F` and `%5C`; NONE leaves the path alone. A path
//! carrying `%00` is refused under every mode but NONE. The query is never part of the path.

use std::borrow::Cow;

use crate::snapshot::PathNormalization;

/// Why a path cannot be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
}

/// The path of a request target, without its query or fragment.
pub fn without_query(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    &target[..end]
}

/// `path` (without query) normalized by `mode`.
pub fn normalize(path: &str, mode: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path));
    }
    let decode_slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    let decoded = decode(path, decode_slashes)?;
    let slashed = decoded.replace('\\', "/");
    let mut normalized = remove_dot_segments(&slashed);
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        normalized = merge_slashes(&normalized);
    }
    if normalized == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(normalized))
    }
}

/// Decodes `%HH` once where it encodes an unreserved character (and `/`, `\` when asked);
/// other escapes stay as they are.
fn decode(path: &str, slashes: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            let unreserved =
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
            if byte == 0 {
                return Err(PathError::EncodedNul);
            }
            if unreserved || (slashes && matches!(byte, b'/' | b'\\')) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII bytes were decoded, so the text stays valid UTF-8.
    Ok(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

/// RFC 3986 section 5.2.4 for an absolute path: `.` segments go, `..` removes the one before
/// (never above the root); a path ending in either keeps a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_owned();
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let trailing = matches!(segments.last(), Some(&".") | Some(&".."));
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for segment in segments {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    normalized.push('/');
    normalized.push_str(&out.join("/"));
    if trailing && !out.is_empty() {
        normalized.push('/');
    }
    normalized
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(path: &str) -> String {
        normalize(path, PathNormalization::Base)
            .unwrap()
            .into_owned()
    }

    #[test]
    fn base_resolves_dot_segments_and_encoded_dots() {
        assert_eq!(base("/./admin"), "/admin");
        assert_eq!(base("/a/../admin"), "/admin");
        assert_eq!(base("/%2e/admin"), "/admin");
        assert_eq!(base("/%2E%2E/admin"), "/admin");
        assert_eq!(base("/x/%2e%2E/admin"), "/admin");
        assert_eq!(base("/../../admin"), "/admin");
        assert_eq!(base("/a/b/.."), "/a/");
        assert_eq!(base("/a/."), "/a/");
        assert_eq!(base("/.."), "/");
        assert_eq!(base("/"), "/");
        assert_eq!(base("\\admin"), "/admin", "a backslash is a slash");
        assert_eq!(base("/a\\..\\admin"), "/admin");
        assert_eq!(base("/%61dmin"), "/admin");
        assert_eq!(base("/a//b"), "/a//b", "BASE keeps double slashes");
        assert_eq!(base("/a%2Fb"), "/a%2Fb", "BASE keeps encoded slashes");
        assert_eq!(base("/%252e/admin"), "/%252e/admin", "decoded once only");
    }

    #[test]
    fn merge_and_decode_modes() {
        let merge = |p| {
            normalize(p, PathNormalization::MergeSlashes)
                .unwrap()
                .into_owned()
        };
        assert_eq!(merge("//admin//x"), "/admin/x");
        assert_eq!(merge("/a%2F/admin"), "/a%2F/admin");
        let decode = |p| {
            normalize(p, PathNormalization::DecodeAndMergeSlashes)
                .unwrap()
                .into_owned()
        };
        assert_eq!(decode("/a%2F%2Fadmin"), "/a/admin");
        assert_eq!(decode("/x%2f..%2fadmin"), "/admin");
        assert_eq!(decode("/x%5C..%5cadmin"), "/admin");
        assert_eq!(
            normalize("/./a", PathNormalization::None).unwrap(),
            "/./a",
            "NONE leaves the path alone"
        );
    }

    #[test]
    fn encoded_nul_is_refused_and_queries_are_cut() {
        assert_eq!(
            normalize("/a%00b", PathNormalization::Base),
            Err(PathError::EncodedNul)
        );
        assert_eq!(without_query("/admin?x=/public"), "/admin");
        assert_eq!(without_query("/admin#frag"), "/admin");
        assert_eq!(without_query("/admin"), "/admin");
    }
}
