//! Validation of a Peer's fields: each problem becomes a finding at the field (and, for a
//! document, the line) it is about, and the bundle rules every peer bundle must meet.

use strait_certs::{SpiffeId, TrustBundle, TrustBundleSet, TrustDomain};
use strait_discovery::findings::{Finding, Level};
use strait_discovery::yaml::{FieldPath, Node};

use super::{BundleEndpointRef, EndpointDoc, PEER_API_VERSION, PEER_KIND, Peer, PeerDoc};

/// Collects what is wrong, each finding at the node it is about.
pub(super) struct Checker<'a> {
    pub(super) root: &'a Node,
    pub(super) findings: &'a mut Vec<Finding>,
}

impl Checker<'_> {
    fn error(&mut self, path: &FieldPath, code: &'static str, message: impl Into<String>) {
        let position = path.locate(self.root).position;
        self.findings
            .push(Finding::new(Level::Error, code, message).at(path, position));
    }

    fn required(&mut self, path: &FieldPath, value: &str) -> bool {
        if value.is_empty() {
            self.error(path, "required", "is required");
            return false;
        }
        true
    }

    /// A required field that `check` accepts.
    fn checked(
        &mut self,
        path: &FieldPath,
        value: &str,
        code: &'static str,
        check: fn(&str) -> Result<(), String>,
    ) {
        if !self.required(path, value) {
            return;
        }
        if let Err(reason) = check(value) {
            self.error(path, code, reason);
        }
    }

    pub(super) fn peer(&mut self, doc: &PeerDoc) -> Option<Peer> {
        let root = FieldPath::ROOT;
        if doc.api_version != PEER_API_VERSION {
            self.error(
                &root.field("apiVersion"),
                "peer-api-version",
                format!("must be {PEER_API_VERSION}, not {:?}", doc.api_version),
            );
        }
        if doc.kind != PEER_KIND {
            self.error(
                &root.field("kind"),
                "peer-kind",
                format!("must be {PEER_KIND}, not {:?}", doc.kind),
            );
        }
        self.checked(
            &root.field("metadata").field("name"),
            &doc.metadata.name,
            "peer-name",
            check_name,
        );
        let spec = root.field("spec");
        let trust_domain = self.trust_domain(&spec.field("trustDomain"), &doc.spec.trust_domain);
        self.checked(
            &spec.field("network"),
            &doc.spec.network,
            "peer-network",
            check_network,
        );
        self.checked(
            &spec.field("eastwestAddress"),
            &doc.spec.eastwest_address,
            "peer-address",
            check_host_port,
        );
        let endpoint = self.endpoint(
            &spec.field("bundleEndpoint"),
            &doc.spec.bundle_endpoint,
            trust_domain.as_ref(),
        );
        let bundle = self.bundle(
            &spec.field("trustBundle"),
            &doc.spec.trust_bundle,
            trust_domain.as_ref(),
        );
        Some(Peer {
            name: doc.metadata.name.clone(),
            trust_domain: trust_domain?,
            network: doc.spec.network.clone(),
            eastwest_address: doc.spec.eastwest_address.clone(),
            bundle_endpoint: endpoint?,
            trust_bundle: bundle?,
            trunk: doc.spec.trunk,
        })
    }

    fn trust_domain(&mut self, path: &FieldPath, text: &str) -> Option<TrustDomain> {
        if !self.required(path, text) {
            return None;
        }
        match TrustDomain::new(text) {
            Ok(td) => Some(td),
            Err(error) => {
                self.error(path, "peer-trust-domain", error.to_string());
                None
            }
        }
    }

    fn endpoint(
        &mut self,
        path: &FieldPath,
        doc: &EndpointDoc,
        trust_domain: Option<&TrustDomain>,
    ) -> Option<BundleEndpointRef> {
        let url_path = path.field("url");
        let url = if self.required(&url_path, &doc.url) {
            match check_url(&doc.url) {
                Ok(url) => Some(url),
                Err(reason) => {
                    self.error(&url_path, "peer-bundle-endpoint", reason);
                    None
                }
            }
        } else {
            None
        };
        let id_path = path.field("spiffeId");
        let spiffe_id = if self.required(&id_path, &doc.spiffe_id) {
            match SpiffeId::parse(&doc.spiffe_id) {
                Ok(id) if id.is_trust_domain_id() => {
                    self.error(
                        &id_path,
                        "peer-bundle-endpoint-id",
                        "names a trust domain, not a workload (it has no path)",
                    );
                    None
                }
                Ok(id) => {
                    if let Some(td) =
                        trust_domain.filter(|td| td.as_str() != id.trust_domain_name())
                    {
                        self.error(
                            &id_path,
                            "peer-bundle-endpoint-id",
                            format!(
                                "is in trust domain {}, not the peer's {td}: the endpoint must be self-serving \
                                 (the bundle it serves is taken as the trust domain of its SVID)",
                                id.trust_domain_name()
                            ),
                        );
                        None
                    } else {
                        Some(id)
                    }
                }
                Err(error) => {
                    self.error(&id_path, "peer-bundle-endpoint-id", error.to_string());
                    None
                }
            }
        } else {
            None
        };
        Some(BundleEndpointRef {
            url: url?,
            spiffe_id: spiffe_id?,
        })
    }

    fn bundle(
        &mut self,
        path: &FieldPath,
        text: &str,
        trust_domain: Option<&TrustDomain>,
    ) -> Option<TrustBundle> {
        if !self.required(path, text) {
            return None;
        }
        let td = trust_domain?;
        match first_contact_bundle(td, text) {
            Ok(bundle) => Some(bundle),
            Err(reason) => {
                self.error(path, "peer-trust-bundle", reason);
                None
            }
        }
    }
}

/// A peer's bundle as a document gives it: SPIFFE bundle JSON with at least one root usable as
/// a trust anchor, none of which names another trust domain.
pub fn first_contact_bundle(td: &TrustDomain, text: &str) -> Result<TrustBundle, String> {
    let bundle = TrustBundle::from_spiffe_json(td.clone(), text.as_bytes())
        .map_err(|e| format!("not a SPIFFE bundle: {e}"))?;
    check_bundle(&bundle)?;
    Ok(bundle)
}

/// What every bundle taken for a peer must be: roots usable as trust anchors (at least one),
/// none naming another trust domain.
pub fn check_bundle(bundle: &TrustBundle) -> Result<(), String> {
    if bundle.roots.is_empty() {
        return Err(format!(
            "the bundle has no X.509 roots (no key with use x509-svid); it would make every SVID of {} untrusted",
            bundle.trust_domain
        ));
    }
    bundle.check_trust_domain().map_err(|e| e.to_string())?;
    TrustBundleSet::new()
        .insert(bundle.clone())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A peer name: a DNS label (it names files).
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)"
        ))
    }
}

/// A network name: letters, digits, '.', '_' and '-', at most 63.
fn check_network(network: &str) -> Result<(), String> {
    let ok = network.len() <= 63
        && network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{network:?} is not a network name (letters, digits, '.', '_' and '-', at most 63)"
        ))
    }
}

/// `HOST:PORT`, a bracketed IPv6 literal allowed.
pub fn check_host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not HOST:PORT"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok {
        return Err(format!(
            "{text:?}: the host is not a DNS name or an IP address"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("{text:?}: {port:?} is not a port (1-65535)")),
    }
}

/// An `https` URL with a host and no user information.
fn check_url(text: &str) -> Result<http::Uri, String> {
    let url: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if url.scheme_str() != Some("https") {
        return Err(format!(
            "{text:?}: a bundle endpoint is https (the https_spiffe profile)"
        ));
    }
    let Some(authority) = url.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: a bundle endpoint URL has no user information"
        ));
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.port().is_some() && url.port_u16().is_none_or(|p| p == 0) {
        return Err(format!("{text:?} has no usable port"));
    }
    Ok(url)
}
