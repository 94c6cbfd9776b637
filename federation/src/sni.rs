//! Istio's names for an outbound destination, which cross-cluster traffic is routed by: the
//! SNI `outbound_.PORT_.SUBSET_.HOST` a sidecar sends to an east-west gateway, and the cluster
//! name `outbound|PORT|SUBSET|HOST`, which gateways accept as an SNI too. The subset is empty
//! for none in both (`outbound_.9080_._.reviews...`: the `_.` around it are separators).

/// A service port, and optionally a subset of it, named by an SNI or a cluster name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundName {
    pub host: String,
    pub port: u16,
    /// Empty for none.
    pub subset: String,
}

impl OutboundName {
    /// Reads either form; `None` for anything else (a plain DNS name, a port that is not one).
    pub fn parse(name: &str) -> Option<OutboundName> {
        if let Some(rest) = name.strip_prefix("outbound_.") {
            let (port, rest) = rest.split_once("_.")?;
            let (subset, host) = rest.split_once("_.")?;
            return OutboundName::new(host, port, subset);
        }
        let mut parts = name.strip_prefix("outbound|")?.splitn(3, '|');
        let (port, subset, host) = (parts.next()?, parts.next()?, parts.next()?);
        OutboundName::new(host, port, subset)
    }

    fn new(host: &str, port: &str, subset: &str) -> Option<OutboundName> {
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        if host.is_empty() || host.contains('|') || subset.contains('|') {
            return None;
        }
        Some(OutboundName {
            host: host.to_ascii_lowercase(),
            port,
            subset: subset.to_owned(),
        })
    }

    /// The SNI form, `outbound_.PORT_.SUBSET_.HOST`.
    pub fn sni(&self) -> String {
        format!("outbound_.{}_.{}_.{}", self.port, self.subset, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str, port: u16, subset: &str) -> Option<OutboundName> {
        Some(OutboundName {
            host: host.to_owned(),
            port,
            subset: subset.to_owned(),
        })
    }

    #[test]
    fn both_forms_are_read() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(
            OutboundName::parse("outbound_.9080_.v1_.reviews.default.svc.cluster.local"),
            name(host, 9080, "v1")
        );
        assert_eq!(
            OutboundName::parse("outbound_.9080_._.reviews.default.svc.cluster.local"),
            name(host, 9080, "")
        );
        assert_eq!(
            OutboundName::parse("outbound|9080|v2|reviews.default.svc.cluster.local"),
            name(host, 9080, "v2")
        );
        assert_eq!(
            OutboundName::parse("outbound|9080||Reviews.default.svc.cluster.local"),
            name(host, 9080, "")
        );
    }

    #[test]
    fn anything_else_is_not_an_outbound_name() {
        for other in [
            "reviews.default.svc.cluster.local",
            "outbound_.0_._.reviews",
            "outbound_.http_._.reviews",
            "outbound_.9080_._.",
            "outbound_.9080_.v1",
            "outbound|9080|v1",
            "outbound|99999||reviews",
            "inbound|9080||reviews",
            "outbound|9080||a|b",
        ] {
            assert_eq!(OutboundName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_sni_form_round_trips() {
        for sni in [
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
            "outbound_.443_._.api.example.com",
        ] {
            assert_eq!(
                OutboundName::parse(sni).map(|n| n.sni()).as_deref(),
                Some(sni)
            );
        }
    }
}
