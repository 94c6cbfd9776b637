//! Host names as Istio compares them: exact names, left-most wildcards (`*.example.com`, `*`),
//! and short names that resolve like Kubernetes service names.

/// Whether two host patterns can name a common host (`*.example.com` and `api.example.com` do;
/// `*.a.com` and `*.b.com` do not). Symmetric.
pub fn overlaps(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a.eq_ignore_ascii_case(b),
        (Some(suffix), None) => ends_with_ignore_case(b, suffix),
        (None, Some(suffix)) => ends_with_ignore_case(a, suffix),
        (Some(sa), Some(sb)) => {
            if sa.len() >= sb.len() {
                ends_with_ignore_case(sa, sb)
            } else {
                ends_with_ignore_case(sb, sa)
            }
        }
    }
}

/// Whether every host `inner` names is also named by `outer` (`api.example.com` is within
/// `*.example.com`; `*.example.com` is within `*`).
pub fn within(inner: &str, outer: &str) -> bool {
    match (inner.strip_prefix('*'), outer.strip_prefix('*')) {
        (None, None) => inner.eq_ignore_ascii_case(outer),
        (Some(_), None) => false,
        (None, Some(suffix)) => ends_with_ignore_case(inner, suffix),
        (Some(si), Some(so)) => si.len() >= so.len() && ends_with_ignore_case(si, so),
    }
}

fn ends_with_ignore_case(value: &str, suffix: &str) -> bool {
    value.len() >= suffix.len()
        && value
            .get(value.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

/// The fully qualified name of a host written in `namespace`: a name without a dot is a service
/// in that namespace (`reviews` -> `reviews.default.svc.cluster.local`); anything else, including
/// wildcards and IPs, stands as written.
pub fn qualify(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.contains('*') || host.contains(':') || host.is_empty() {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_symmetric_and_honours_wildcards() {
        let cases = [
            ("a.example.com", "a.example.com", true),
            ("A.example.com", "a.example.com", true),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.a.com", "*.b.com", false),
            ("*.x.a.com", "*.a.com", true),
            ("*", "anything.at.all", true),
            ("a.com", "b.com", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(overlaps(a, b), expected, "{a} {b}");
            assert_eq!(overlaps(b, a), expected, "{b} {a}");
        }
    }

    #[test]
    fn within_is_containment() {
        assert!(within("api.example.com", "*.example.com"));
        assert!(within("*.example.com", "*"));
        assert!(within("*.x.example.com", "*.example.com"));
        assert!(!within("*.example.com", "api.example.com"));
        assert!(!within("*", "*.example.com"));
        assert!(within("a.com", "a.com"));
    }

    #[test]
    fn short_names_resolve_in_their_namespace() {
        assert_eq!(
            qualify("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            qualify("reviews.prod", "default", "cluster.local"),
            "reviews.prod"
        );
        assert_eq!(qualify("*", "default", "cluster.local"), "*");
        assert_eq!(
            qualify("*.example.com", "default", "cluster.local"),
            "*.example.com"
        );
    }
}
