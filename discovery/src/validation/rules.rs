//! Rules several kinds share: host names and wildcards, ports and protocols, durations,
//! percentages, labels and selectors, addresses, `exportTo`, header names and values, string
//! matches and RE2 regexes, destinations and gateway references. Each follows Istio's own
//! validation (its CRD schema and CEL rules, then its Go webhook), with Istio's messages where a
//! user would search for them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use super::check::Check;
use crate::resources::common::{Duration, LabelSelector, Percent, StringMatch, WorkloadSelector};
use crate::resources::virtual_service::Destination;
use crate::yaml::FieldPath;

/// Compiles a pattern written in this file. The patterns are constants, not input: one that
/// does not compile is a programming error, which `every_pattern_compiles` catches.
#[allow(clippy::expect_used)]
fn pattern(re: &str) -> Regex {
    Regex::new(re).expect("a constant pattern compiles")
}

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"));
static WILDCARD_DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$"));
static LABEL_KEY: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^(?:([a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)*)/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
});
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"));
/// RFC 7230 token characters, as Istio checks header names.
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$"));
static STRICT_HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[-_A-Za-z0-9]+$"));
static REPETITION: LazyLock<Regex> = LazyLock::new(|| pattern(r"\{(\d+)(?:,(\d*))?\}"));

pub(crate) fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && DNS1123_LABEL.is_match(value)
}

fn is_wildcard_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && WILDCARD_DNS1123_LABEL.is_match(value)
}

pub(crate) fn is_ip(value: &str) -> bool {
    value.parse::<IpAddr>().is_ok()
}

/// Why a domain name is invalid, if it is. `allow_wildcard` permits a left-most wildcard label
/// (`*`, `*.example.com`, `*x.example.com`); the remaining labels are plain DNS-1123 labels and
/// the top-level one may not be all digits (so `1.2.3.4` is not a host name).
fn domain_error(host: &str, allow_wildcard: bool) -> Option<String> {
    if host.is_empty() {
        return Some("empty domain name not allowed".to_owned());
    }
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    if !allow_wildcard {
        return labels_error(host, host);
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Some(format!(
            "domain name {host:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.and_then(|rest| labels_error(host, rest))
}

fn labels_error(host: &str, labels: &str) -> Option<String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let last = parts.len() - 1;
    if parts[last].parse::<i64>().is_ok() {
        return Some(format!(
            "domain name {host:?} invalid (top level domain {:?} cannot be all-numeric)",
            parts[last]
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) leaves an empty last label, which is allowed.
        let trailing_dot = i == last && label.is_empty();
        if !trailing_dot && !is_dns1123_label(label) {
            return Some(format!(
                "domain name {host:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    None
}

/// A DNS name, optionally with a left-most wildcard label (`*.example.com`, `*`).
pub(crate) fn wildcard_domain(check: &mut Check<'_>, path: &FieldPath, host: &str) -> bool {
    match domain_error(host, true) {
        Some(message) => {
            check.error(path, "invalid-host", message);
            false
        }
        None => true,
    }
}

/// Whether a name is a plain DNS name with no wildcard.
pub(crate) fn is_fqdn(host: &str) -> bool {
    domain_error(host, false).is_none()
}

/// `*foo.com` style wildcards: valid for Istio but matched as a plain suffix, rarely what was
/// meant.
pub(crate) fn partial_wildcard(check: &mut Check<'_>, path: &FieldPath, host: &str) {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        check.warning(
            path,
            "partial-wildcard",
            format!(
                "partial wildcard {host:?} matches any host ending in {:?}",
                &host[1..]
            ),
        );
    }
}

/// `namespace/dnsName` of Gateway servers and Sidecar egress listeners.
pub(crate) fn namespace_slash_host(
    check: &mut Check<'_>,
    path: &FieldPath,
    entry: &str,
    gateway: bool,
) {
    let (namespace, host) = match entry.split_once('/') {
        Some(parts) => parts,
        None if gateway => ("*", entry),
        None => {
            check.error(
                path,
                "invalid-host",
                "host must be of form namespace/dnsName",
            );
            return;
        }
    };
    if namespace.is_empty() || host.is_empty() {
        check.error(
            path,
            "invalid-host",
            "config namespace and dnsName in host entry cannot be empty",
        );
        return;
    }
    let namespace_ok = matches!(namespace, "*" | ".")
        || (namespace == "~" && !gateway)
        || is_dns1123_label(namespace);
    if !namespace_ok {
        let owner = if gateway { "gateway" } else { "sidecar" };
        check.error(
            path,
            "invalid-host",
            format!("invalid namespace value {namespace:?} in {owner}"),
        );
    }
    if host != "*" && !host.contains('.') {
        check.error(
            path,
            "invalid-host",
            format!("short names (non FQDN) are not allowed: {host:?}"),
        );
        return;
    }
    if let Some(message) = domain_error(host, true)
        && !(gateway && is_ip(host))
    {
        check.error(path, "invalid-host", message);
    }
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        check.error(
            path,
            "invalid-host",
            format!("partial wildcard {host:?} not allowed"),
        );
    }
}

/// A port number: 1-65535.
pub(crate) fn port(check: &mut Check<'_>, path: &FieldPath, number: u32) -> bool {
    if number == 0 || number > 65535 {
        check.error(path, "invalid-port", "port must be between 1-65535");
        return false;
    }
    true
}

/// A port name: a DNS-1123 label.
pub(crate) fn port_name(check: &mut Check<'_>, path: &FieldPath, name: &str) {
    if !is_dns1123_label(name) {
        check.error(
            path,
            "invalid-value",
            format!("invalid port name: {name:?}"),
        );
    }
}

/// A duration of at least 1ms, to millisecond precision.
pub(crate) fn duration(check: &mut Check<'_>, path: &FieldPath, value: &Option<Duration>) {
    let Some(value) = value else { return };
    match value.value {
        None => check.error(
            path,
            "invalid-duration",
            format!(
                "{:?} must be a valid duration greater than 1ms (such as 500ms, 1.5s, 1m)",
                value.raw
            ),
        ),
        Some(d) if d.as_nanos() < 1_000_000 => check.error(
            path,
            "invalid-duration",
            format!("{:?}: must be a valid duration greater than 1ms", value.raw),
        ),
        Some(d) if d.subsec_nanos() % 1_000_000 != 0 => check.error(
            path,
            "invalid-duration",
            format!(
                "{:?}: only durations to ms precision are supported",
                value.raw
            ),
        ),
        Some(_) => {}
    }
}

/// A duration where `0s` is meaningful ("disabled"); otherwise as `duration`. As in Istio,
/// anything under a whole millisecond counts as zero.
pub(crate) fn duration_or_zero(check: &mut Check<'_>, path: &FieldPath, value: &Option<Duration>) {
    match value {
        Some(d) if d.value.is_some_and(|v| v.as_millis() == 0) => {}
        _ => duration(check, path, value),
    }
}

/// `percentage: {value}`: 0, or between 0.0001 and 100.
pub(crate) fn percentage(check: &mut Check<'_>, path: &FieldPath, value: &Option<Percent>) {
    let Some(v) = value.as_ref().and_then(|p| p.value) else {
        return;
    };
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        check.error(
            &path.field("value"),
            "out-of-range",
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

/// An integer percentage: 0-100.
pub(crate) fn percent(check: &mut Check<'_>, path: &FieldPath, value: Option<i32>) {
    if let Some(v) = value
        && !(0..=100).contains(&v)
    {
        check.error(
            path,
            "out-of-range",
            format!("percentage {v} is not in range 0..100"),
        );
    }
}

/// Kubernetes label keys and values (`app.kubernetes.io/name: reviews`).
pub(crate) fn labels(check: &mut Check<'_>, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let at = path.key(key);
        match LABEL_KEY.captures(key) {
            None => check.error(&at, "invalid-label", format!("invalid label key: {key:?}")),
            Some(parts) => {
                if parts.get(1).is_some_and(|p| p.as_str().len() > 253) {
                    check.error(
                        &at,
                        "invalid-label",
                        format!("invalid label key: {key:?} (DNS prefix is too long)"),
                    );
                }
                if parts.get(2).is_some_and(|n| n.as_str().len() > 63) {
                    check.error(
                        &at,
                        "invalid-label",
                        format!("invalid label key: {key:?} (name is too long)"),
                    );
                }
            }
        }
        if !LABEL_VALUE.is_match(value) || value.len() > 63 {
            check.error(
                &at,
                "invalid-label",
                format!("invalid label value: {value:?}"),
            );
        }
    }
}

/// `selector: {matchLabels}` of the security APIs and DestinationRule.
pub(crate) fn workload_selector(
    check: &mut Check<'_>,
    path: &FieldPath,
    selector: &Option<WorkloadSelector>,
) {
    let Some(selector) = selector else { return };
    let match_labels = path.field("matchLabels");
    let labels = selector.match_labels.as_ref().filter(|l| !l.is_empty());
    let Some(labels) = labels else {
        check.warning(
            path,
            "empty-selector",
            "workload selector specified without labels: it selects every workload",
        );
        return;
    };
    for (key, value) in labels {
        let at = match_labels.key(key);
        if key.is_empty() {
            check.error(&at, "invalid-selector", "key must not be empty");
        }
        if key.contains('*') {
            check.error(
                &at,
                "invalid-selector",
                "wildcard not allowed in label key match",
            );
        }
        if value.contains('*') {
            check.error(
                &at,
                "invalid-selector",
                "wildcard not allowed in label value match",
            );
        }
        if value.len() > 63 {
            check.error(
                &at,
                "invalid-selector",
                "Too long: may not be longer than 63",
            );
        }
    }
}

/// `workloadSelector: {labels}` of ServiceEntry and Sidecar. Returns false on an error.
pub(crate) fn label_selector(
    check: &mut Check<'_>,
    path: &FieldPath,
    selector: &Option<LabelSelector>,
    owner: &str,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let labels = path.field("labels");
    let mut ok = true;
    for (key, value) in &selector.labels {
        let at = labels.key(key);
        if key.is_empty() {
            check.error(
                &at,
                "invalid-selector",
                "empty key is not supported in selector",
            );
            ok = false;
        }
        if key.contains('*') || value.contains('*') {
            check.error(
                &at,
                "invalid-selector",
                "wildcard is not supported in selector",
            );
            ok = false;
        }
        if value.len() > 63 {
            check.error(
                &at,
                "invalid-selector",
                "Too long: may not be longer than 63",
            );
            ok = false;
        }
    }
    if ok && selector.labels.is_empty() {
        check.warning(
            path,
            "empty-selector",
            format!(
                "{owner}: workload selector specified without labels, will be applied to all \
                 services in namespace"
            ),
        );
    }
    ok
}

/// An IP address.
pub(crate) fn ip_address(check: &mut Check<'_>, path: &FieldPath, value: &str) -> bool {
    if is_ip(value) {
        return true;
    }
    check.error(
        path,
        "invalid-address",
        format!("{value:?} is not a valid IP"),
    );
    false
}

/// An IP address or a CIDR block (`10.0.0.0/8`; host bits may be set, as Go allows).
pub(crate) fn ip_or_cidr(check: &mut Check<'_>, path: &FieldPath, value: &str) -> bool {
    if value.contains('/') {
        if parse_cidr(value).is_none() {
            check.error(
                path,
                "invalid-address",
                format!("{value:?} is not a valid CIDR block"),
            );
            return false;
        }
        return true;
    }
    ip_address(check, path, value)
}

/// Parses `addr/len`, allowing host bits (Go's `netip.ParsePrefix` does).
pub(crate) fn parse_cidr(value: &str) -> Option<ipnet::IpNet> {
    let (addr, len) = value.split_once('/')?;
    if len.is_empty()
        || !len.bytes().all(|b| b.is_ascii_digit())
        || (len.len() > 1 && len.starts_with('0'))
    {
        return None;
    }
    let addr: IpAddr = addr.parse().ok()?;
    ipnet::IpNet::new(addr, len.parse().ok()?).ok()
}

/// A Unix domain socket address, the part after `unix://`.
pub(crate) fn unix_address(check: &mut Check<'_>, path: &FieldPath, address: &str) {
    if address.is_empty() {
        check.error(path, "invalid-address", "unix address must not be empty");
    } else if address.starts_with('@') {
        // An abstract socket.
    } else if !address.starts_with('/') {
        check.error(
            path,
            "invalid-address",
            "UDS must be an absolute path or abstract socket",
        );
    } else if address.ends_with('/') {
        check.error(path, "invalid-address", "UDS may not be a dir");
    }
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespaces, without contradictions.
pub(crate) fn export_to(
    check: &mut Check<'_>,
    path: &FieldPath,
    entries: &[String],
    namespace: &str,
    service_entry: bool,
) {
    let mut seen = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        let key = if entry == "." {
            namespace
        } else {
            entry.as_str()
        };
        if !seen.insert(key.to_owned()) {
            let message = if key != entry {
                format!("duplicate entries in exportTo: . and current namespace {namespace}")
            } else {
                format!("duplicate entries in exportTo for entry {entry}")
            };
            check.error(&at, "duplicate", message);
            continue;
        }
        match entry.as_str() {
            "." | "*" => {}
            "~" if service_entry => {}
            "~" => check.error(
                &at,
                "invalid-value",
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            ),
            _ if is_dns1123_label(entry) => {}
            _ => check.error(
                &at,
                "invalid-value",
                "only ., *, ~, or a valid DNS 1123 label is allowed as exportTo entry",
            ),
        }
    }
    if seen.contains("*") && entries.len() > 1 {
        check.error(
            path,
            "conflict",
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains("~") && entries.len() > 1 {
        check.error(
            path,
            "conflict",
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// A header name in a match (`headers`, `withoutHeaders`): a token, a pseudo-header, or a JWT
/// claim (`@request.auth.claims.group`).
pub(crate) fn match_header_name(check: &mut Check<'_>, path: &FieldPath, name: &str) {
    if name.is_empty() {
        check.error(path, "invalid-header", "header name cannot be empty");
    } else if !(is_jwt_claim_header(name)
        || matches!(
            name,
            ":method" | ":scheme" | ":authority" | ":path" | ":status"
        )
        || HEADER_NAME.is_match(name))
    {
        check.error(
            path,
            "invalid-header",
            format!("header name {name:?} is not a valid header name"),
        );
    }
}

/// `@request.auth.claims.NAME` or `@request.auth.claims[NAME]`: routing on a JWT claim.
pub(crate) fn is_jwt_claim_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("@request.auth.claims") else {
        return false;
    };
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// A header name in CORS lists: a token or `*`.
pub(crate) fn cors_header_name(check: &mut Check<'_>, path: &FieldPath, name: &str) {
    if name.is_empty() {
        check.error(path, "invalid-header", "header name cannot be empty");
    } else if name != "*" && !HEADER_NAME.is_match(name) {
        check.error(
            path,
            "invalid-header",
            format!("header name {name:?} is not a valid header name"),
        );
    }
}

/// A header name a JWT claim is copied into: letters, digits, `-` and `_`.
pub(crate) fn strict_header_name(check: &mut Check<'_>, path: &FieldPath, name: &str) {
    if !STRICT_HEADER_NAME.is_match(name) {
        check.error(
            path,
            "invalid-header",
            format!("header name {name:?} should match '^[-_A-Za-z0-9]+$'"),
        );
    }
}

/// A header a route sets, adds or removes. `Host`/`:authority` may be set on requests only.
pub(crate) fn header_operation_name(
    check: &mut Check<'_>,
    path: &FieldPath,
    name: &str,
    authority_allowed: bool,
) {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        check.error(path, "invalid-header", "header name cannot be empty");
    } else if authority_allowed && (lower == "host" || lower == ":authority") {
        // Rewriting the authority through headers is allowed on requests.
    } else if lower == "host" {
        check.error(
            path,
            "invalid-header",
            format!("invalid header {name:?}: cannot set Host header"),
        );
    } else if name.starts_with(':') {
        check.error(
            path,
            "invalid-header",
            format!("invalid header {name:?}: header cannot have \":\" prefix"),
        );
    }
}

/// A header value a route writes: no control characters, and `%VARIABLE%` expressions well
/// formed (`%%` is a literal percent).
pub(crate) fn header_value(check: &mut Check<'_>, path: &FieldPath, value: &str) {
    if value
        .chars()
        .any(|c| (c < ' ' && c != '\t') || c == '\u{7f}')
    {
        check.error(
            path,
            "invalid-header",
            format!("header value {value:?} contains a control character"),
        );
        return;
    }
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.peek() {
            Some('%') => {
                chars.next();
            }
            None => {
                check.error(
                    path,
                    "invalid-header",
                    format!(
                        "header value {value:?}: un-escaped % at the end (write %% for a literal %)"
                    ),
                );
                return;
            }
            Some(_) => {
                // A variable runs to the next `%`.
                if !chars.by_ref().any(|c| c == '%') {
                    check.error(
                        path,
                        "invalid-header",
                        format!("header value {value:?}: un-terminated variable expression"),
                    );
                    return;
                }
            }
        }
    }
}

/// An RE2 regular expression, at most 1024 bytes. Istio hands regexes to Envoy's RE2; Rust's
/// `regex` accepts the same language (no backreferences, no lookaround), and RE2's limit of
/// 1000 on a counted repetition is checked here.
pub(crate) fn regex(check: &mut Check<'_>, path: &FieldPath, re: &str) -> bool {
    if re.len() > 1024 {
        check.error(
            path,
            "invalid-regex",
            "regex is too large, max length allowed is 1024",
        );
        return false;
    }
    if let Err(error) = compiles(re) {
        let detail = match error {
            regex::Error::Syntax(text) => text.lines().last().unwrap_or_default().trim().to_owned(),
            other => other.to_string(),
        };
        check.error(
            path,
            "invalid-regex",
            format!(
                "{re:?} is not a valid RE2 regex ({detail}); Istio uses RE2 syntax \
                 (https://github.com/google/re2/wiki/Syntax)"
            ),
        );
        return false;
    }
    let too_many = REPETITION.captures_iter(re).any(|c| {
        c.iter()
            .skip(1)
            .flatten()
            .any(|n| n.as_str().parse::<u64>().map_or(true, |n| n > 1000))
    });
    if too_many {
        check.error(
            path,
            "invalid-regex",
            format!(
                "{re:?} is not a valid RE2 regex (bad repetition operator: RE2 allows at most 1000)"
            ),
        );
        return false;
    }
    true
}

/// Regexes this thread found to compile lately: a large configuration repeats the same regex in
/// many routes, and compiling one takes far longer than the rest of its checks.
const COMPILED_CACHE: usize = 4096;

thread_local! {
    static COMPILED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Whether `re` compiles, remembering the ones that do.
fn compiles(re: &str) -> Result<(), regex::Error> {
    if COMPILED.with(|seen| seen.borrow().contains(re)) {
        return Ok(());
    }
    regex::Regex::new(re)?;
    COMPILED.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= COMPILED_CACHE {
            seen.clear();
        }
        seen.insert(re.to_owned());
    });
    Ok(())
}

/// A `StringMatch`: at most one of exact, prefix and regex; a prefix is not empty (except for
/// `uri`); a regex is valid RE2.
pub(crate) fn string_match(
    check: &mut Check<'_>,
    path: &FieldPath,
    value: &StringMatch,
    empty_prefix_allowed: bool,
) {
    check.exclusive(
        path,
        &[
            ("exact", value.exact.is_some()),
            ("prefix", value.prefix.is_some()),
            ("regex", value.regex.is_some()),
        ],
        "only one of exact, prefix or regex can be set",
    );
    if value.prefix.as_deref() == Some("") && !empty_prefix_allowed {
        check.error(
            &path.field("prefix"),
            "invalid-value",
            "prefix string match should not be empty",
        );
    }
    if let Some(re) = &value.regex {
        let at = path.field("regex");
        if re.is_empty() {
            check.error(
                &at,
                "invalid-regex",
                "regex string match should not be empty",
            );
        } else {
            regex(check, &at, re);
        }
    }
}

/// A route destination: a host (not `*`), an optional subset (a DNS label) and port.
pub(crate) fn destination(check: &mut Check<'_>, path: &FieldPath, destination: &Destination) {
    match destination.host.as_deref() {
        None => check.required(&path.field("host")),
        Some("*") => check.error(
            &path.field("host"),
            "invalid-host",
            "invalid destination host *",
        ),
        Some(host) => {
            wildcard_domain(check, &path.field("host"), host);
        }
    }
    if let Some(subset) = &destination.subset
        && !is_dns1123_label(subset)
    {
        check.error(
            &path.field("subset"),
            "invalid-value",
            format!("subset name is invalid: {subset:?}"),
        );
    }
    if let Some(number) = destination.port.as_ref().and_then(|p| p.number) {
        port(check, &path.field("port").field("number"), number);
    } else if destination.port.is_some() {
        check.required(&path.field("port").field("number"));
    }
}

/// Gateway references of a VirtualService: `mesh`, `name`, `namespace/name`.
pub(crate) fn gateway_names(check: &mut Check<'_>, path: &FieldPath, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let at = path.index(i);
        match name.split_once('/') {
            None => {
                if name.contains('.') {
                    let mut parts = name.splitn(2, '.');
                    let short = parts.next().unwrap_or_default();
                    let namespace = parts.next().unwrap_or_default();
                    check.warning(
                        &at,
                        "deprecated",
                        format!(
                            "using legacy gatewayName format {name:?}; prefer the \
                             <namespace>/<name> format: \"{namespace}/{short}\""
                        ),
                    );
                }
                if !is_fqdn(name) {
                    check.error(
                        &at,
                        "invalid-value",
                        format!("invalid gateway name {name:?}"),
                    );
                }
            }
            Some((namespace, gateway)) => {
                if namespace.is_empty() || gateway.is_empty() {
                    check.error(
                        &at,
                        "invalid-value",
                        "config namespace and gateway name cannot be empty",
                    );
                } else {
                    if !is_dns1123_label(namespace) {
                        check.error(
                            &at,
                            "invalid-value",
                            format!("invalid value for namespace: {namespace:?}"),
                        );
                    }
                    if !is_dns1123_label(gateway) {
                        check.error(
                            &at,
                            "invalid-value",
                            format!("invalid value for gateway name: {gateway:?}"),
                        );
                    }
                }
            }
        }
    }
}

/// Strings that must not be empty (`minLength: 1`).
pub(crate) fn non_empty_strings(check: &mut Check<'_>, path: &FieldPath, values: &[String]) {
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() {
            check.error(
                &path.index(i),
                "invalid-value",
                "should be at least 1 chars long",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_regexes_are_only_ones_that_compile() {
        for _ in 0..2 {
            assert!(compiles("/items/[0-9]+").is_ok());
            assert!(
                compiles("/items/[0-9+").is_err(),
                "an invalid regex stays invalid"
            );
        }
        // Past the cache's size it starts again, and still tells valid from invalid.
        for n in 0..=COMPILED_CACHE {
            assert!(compiles(&format!("/n/{n}")).is_ok());
        }
        assert!(compiles("/items/[0-9]+").is_ok());
        assert!(compiles("(unclosed").is_err());
    }

    #[test]
    fn domains_follow_istio() {
        for ok in [
            "example.com",
            "*.example.com",
            "*",
            "reviews",
            "istio.io.",
            "*x",
            "123",
        ] {
            assert_eq!(domain_error(ok, true), None, "{ok}");
        }
        for bad in [
            "",
            "1.2.3.4",
            "foo.*.com",
            "-bad.com",
            "a..b",
            "foo_bar.com",
        ] {
            assert!(domain_error(bad, true).is_some(), "{bad}");
        }
        assert!(is_fqdn("example.com"));
        assert!(is_fqdn("reviews"));
        assert!(!is_fqdn("*.example.com"));
        assert!(!is_fqdn("1.2.3.4"));
    }

    #[test]
    fn labels_and_cidrs() {
        assert!(LABEL_KEY.is_match("app.kubernetes.io/name"));
        assert!(LABEL_KEY.is_match("version"));
        assert!(!LABEL_KEY.is_match("-bad"));
        assert!(LABEL_VALUE.is_match(""));
        assert!(!LABEL_VALUE.is_match("a b"));
        assert!(parse_cidr("10.0.0.1/8").is_some());
        assert!(parse_cidr("2001:db8::/32").is_some());
        assert!(parse_cidr("1.2.3.4/99").is_none());
        assert!(parse_cidr("1.2.3.4/").is_none());
        assert!(parse_cidr("1.2.3.4/08").is_none());
    }

    #[test]
    fn jwt_claim_headers() {
        assert!(is_jwt_claim_header("@request.auth.claims.group"));
        assert!(is_jwt_claim_header("@request.auth.claims[group]"));
        assert!(!is_jwt_claim_header("@request.auth.claims"));
        assert!(!is_jwt_claim_header("@request.auth.claims[]"));
    }

    #[test]
    fn every_pattern_compiles() {
        for re in [
            &DNS1123_LABEL,
            &WILDCARD_DNS1123_LABEL,
            &LABEL_KEY,
            &LABEL_VALUE,
            &HEADER_NAME,
            &STRICT_HEADER_NAME,
            &REPETITION,
        ] {
            LazyLock::force(re);
        }
    }
}
