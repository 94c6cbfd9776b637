//! Types shared by several Istio APIs: durations, selectors, ports, string matches, percentages,
//! header operations and policy target references.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::de::{Deserialize, Deserializer, IgnoredAny};

/// A duration as Istio writes it: `10s`, `1.5s`, `100ms`, `1h30m` (Go's `time.ParseDuration`
/// syntax, which is also what protobuf's JSON form `1.500s` is a case of).
///
/// Reading never fails: the text is kept and `value` is `None` when it does not parse, so that
/// validation can say so with the field path (`must be a valid duration greater than 1ms`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Duration {
    pub raw: String,
    pub value: Option<StdDuration>,
}

impl Duration {
    pub fn parse(raw: &str) -> Duration {
        Duration {
            raw: raw.to_owned(),
            value: parse_go_duration(raw),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Duration::parse(&raw))
    }
}

/// Parses Go's duration syntax: an optional sign, then one or more decimal numbers each with a
/// unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). Negative durations and overflows are `None`:
/// no Istio field accepts them. `0` alone is zero, as in Go.
pub fn parse_go_duration(text: &str) -> Option<StdDuration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(StdDuration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total_nanos = total_nanos.checked_add(whole.checked_mul(unit_nanos)?)?;
        // The fraction: as many digits as can matter, scaled exactly in integers.
        let mut scale = unit_nanos;
        for digit in fraction.chars().take(20) {
            scale /= 10;
            let digit = u128::from(digit.to_digit(10)?);
            total_nanos = total_nanos.checked_add(digit * scale)?;
        }
        rest = after;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total_nanos % 1_000_000_000).ok()?;
    Some(StdDuration::new(secs, nanos))
}

/// A port's application protocol as Istio names it (case-insensitive): from the Gateway and
/// ServiceEntry `protocol` field, or a port name prefix (`http-web`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// Terminated and routed as HTTP (`http` routes apply).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// TLS on the wire, routed by SNI unless terminated (`tls` routes apply).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// Any value at all, read and ignored: Kubernetes `status`, free-form extension config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opaque;

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Opaque)
    }
}

/// `selector: {matchLabels: {...}}` of the security APIs and DestinationRule.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkloadSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// `workloadSelector: {labels: {...}}` of ServiceEntry and Sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LabelSelector {
    pub labels: BTreeMap<String, String>,
}

/// `port: {number: 9080}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PortSelector {
    pub number: Option<u32>,
}

/// A port with a name and protocol: Gateway servers, Sidecar listeners, ServiceEntry ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Port {
    pub number: Option<u32>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<u32>,
}

impl Port {
    /// The protocol the port declares: its `protocol` field, else the prefix of its name
    /// (`http2`, `grpc-api`), the Kubernetes Service convention. `None` when neither says.
    pub fn declared_protocol(&self) -> Option<Protocol> {
        let by_name = || {
            let name = self.name.as_deref()?;
            let prefix = name.split_once('-').map_or(name, |(p, _)| p);
            Protocol::parse(prefix)
        };
        self.protocol
            .as_deref()
            .and_then(Protocol::parse)
            .or_else(by_name)
    }
}

/// `exact`, `prefix` or `regex` (RE2) on a string; at most one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

/// `percentage: {value: 12.5}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Percent {
    pub value: Option<f64>,
}

/// Header edits on requests or responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// `headers: {request: ..., response: ...}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

/// `targetRef` / `targetRefs[]` of the security APIs (attachment to a Gateway or Service).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = StdDuration::from_millis;
        assert_eq!(parse_go_duration("10s"), Some(ms(10_000)));
        assert_eq!(parse_go_duration("1.5s"), Some(ms(1_500)));
        assert_eq!(parse_go_duration("100ms"), Some(ms(100)));
        assert_eq!(parse_go_duration("1h30m"), Some(ms(5_400_000)));
        assert_eq!(parse_go_duration("0.001s"), Some(ms(1)));
        assert_eq!(
            parse_go_duration("250us"),
            Some(StdDuration::from_micros(250))
        );
        assert_eq!(parse_go_duration("0"), Some(StdDuration::ZERO));
        assert_eq!(parse_go_duration(".5s"), Some(ms(500)));
    }

    #[test]
    fn a_port_declares_its_protocol_by_the_field_else_by_its_name() {
        let port = |protocol: Option<&str>, name: Option<&str>| Port {
            protocol: protocol.map(str::to_owned),
            name: name.map(str::to_owned),
            ..Port::default()
        };
        assert_eq!(
            port(Some("TCP"), Some("http2")).declared_protocol(),
            Some(Protocol::Tcp),
            "the field wins"
        );
        assert_eq!(
            port(None, Some("http2")).declared_protocol(),
            Some(Protocol::Http2)
        );
        assert_eq!(
            port(None, Some("grpc-api")).declared_protocol(),
            Some(Protocol::Grpc)
        );
        assert_eq!(port(None, Some("echo")).declared_protocol(), None);
        assert_eq!(port(None, None).declared_protocol(), None);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "", "10", "apple", "-1s", "1.2.3s", "5 s", "1d", "s", "1ss", ".",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_go_duration("99999999999999999999999h"), None);
    }
}
