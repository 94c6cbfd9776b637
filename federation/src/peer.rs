//! The Peer: another cluster this one federates with, as a YAML document of our own
//! (`apiVersion: strait.io/v1alpha1`, `kind: Peer`).
//!
//! ```yaml
//! apiVersion: strait.io/v1alpha1
//! kind: Peer
//! metadata:
//!   name: west
//! spec:
//!   trustDomain: west.mesh
//!   network: net-west
//!   eastwestAddress: gw.west.example:15443
//!   bundleEndpoint:
//!     url: https://gw.west.example:15446
//!     spiffeId: spiffe://west.mesh/ns/strait-system/sa/eastwest
//!   trustBundle: |
//!     {"keys": [...], "spiffe_sequence": 1, "spiffe_refresh_hint": 300}
//! ```
//!
//! Nothing about a peer is inferred: the trust domain, the bundle endpoint URL and its SPIFFE ID
//! are the three parameters SPIFFE federation says cannot be derived from each other, and all
//! three are given. The endpoint is `https_spiffe` and self-serving: its SPIFFE ID is in the
//! peer's trust domain, and the bundle it serves is taken as that trust domain's. `trustBundle`
//! is the peer's bundle for first contact (SPIFFE bundle JSON); it authenticates the first fetch.
//!
//! [`parse_peer`] reads and validates a document, naming file, line, field and reason for every
//! problem; [`Peer::to_yaml`] writes one that [`parse_peer`] reads back.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use strait_certs::{SpiffeId, TrustBundle, TrustBundleSet, TrustDomain};
use strait_discovery::findings::{Finding, Level, ObjectRef};
use strait_discovery::yaml::{self, FieldPath, Node};

/// The `apiVersion` of a Peer document.
pub const PEER_API_VERSION: &str = "strait.io/v1alpha1";
/// The `kind` of a Peer document.
pub const PEER_KIND: &str = "Peer";
/// The east-west gateway's port (SNI passthrough and QUIC).
pub const EASTWEST_PORT: u16 = 15443;
/// The SPIFFE bundle endpoint's port.
pub const BUNDLE_ENDPOINT_PORT: u16 = 15446;

/// A validated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's name here (a DNS label; names its files under `DATA/peers`).
    pub name: String,
    /// The peer's trust domain.
    pub trust_domain: TrustDomain,
    /// The peer's network (Istio's network name for endpoints behind its gateway).
    pub network: String,
    /// The peer's east-west gateway, `HOST:PORT`.
    pub eastwest_address: String,
    /// Where the peer serves its bundle.
    pub bundle_endpoint: BundleEndpointRef,
    /// The peer's bundle as given for first contact.
    pub trust_bundle: TrustBundle,
}

/// An `https_spiffe` bundle endpoint: its URL and the SPIFFE ID its server presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointRef {
    /// `https://HOST[:PORT][/PATH]`.
    pub url: http::Uri,
    /// The SPIFFE ID the endpoint must present, exactly.
    pub spiffe_id: SpiffeId,
}

impl BundleEndpointRef {
    /// The host to connect to (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let host = self.url.host().unwrap_or_default();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port to connect to (443 when the URL names none).
    pub fn port(&self) -> u16 {
        self.url.port_u16().unwrap_or(443)
    }

    /// The path and query to ask for (`/` when the URL has none).
    pub fn path(&self) -> &str {
        self.url
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
    }
}

/// Why a Peer document was refused: every problem found, each with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerError {
    pub findings: Vec<Finding>,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PeerError {}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PeerDoc {
    api_version: String,
    kind: String,
    metadata: MetadataDoc,
    spec: SpecDoc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetadataDoc {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecDoc {
    trust_domain: String,
    network: String,
    eastwest_address: String,
    bundle_endpoint: EndpointDoc,
    trust_bundle: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EndpointDoc {
    url: String,
    spiffe_id: String,
}

/// Reads one Peer document from `text` (read from `file`, named in errors).
pub fn parse_peer(text: &str, file: &str) -> Result<Peer, PeerError> {
    let file: Arc<str> = Arc::from(file);
    let fail = |findings: Vec<Finding>| PeerError {
        findings: findings.into_iter().map(|f| f.in_file(&file)).collect(),
    };
    let documents = yaml::parse_documents(text).map_err(|e| {
        fail(vec![
            Finding::new(Level::Error, "yaml-syntax", e.message).at("", e.position),
        ])
    })?;
    let root = match documents.as_slice() {
        [one] => one,
        [] => {
            return Err(fail(vec![Finding::new(
                Level::Error,
                "peer-empty",
                "no Peer document in the file",
            )]));
        }
        [_, second, ..] => {
            return Err(fail(vec![
                Finding::new(
                    Level::Error,
                    "peer-several",
                    "one Peer document per file; this file has more",
                )
                .at("", second.position),
            ]));
        }
    };
    let mut findings = Vec::new();
    let doc: PeerDoc = yaml::from_node(root, FieldPath::ROOT, &mut findings);
    let object = ObjectRef {
        kind: PEER_KIND.into(),
        namespace: String::new(),
        name: doc.metadata.name.clone(),
    };
    let mut check = Checker {
        root,
        findings: &mut findings,
    };
    let peer = check.peer(&doc);
    if !findings.is_empty() {
        return Err(fail(
            findings.into_iter().map(|f| f.about(&object)).collect(),
        ));
    }
    peer.ok_or_else(|| fail(Vec::new()))
}

/// A peer's fields as given one by one (`strait link`'s flags), before validation.
#[derive(Debug, Clone, Default)]
pub struct PeerFields {
    pub name: String,
    pub trust_domain: String,
    pub network: String,
    pub eastwest_address: String,
    pub bundle_endpoint_url: String,
    pub bundle_endpoint_id: String,
    /// SPIFFE bundle JSON.
    pub trust_bundle: String,
}

impl Peer {
    /// A peer from its fields, validated exactly as a document is (findings name the document
    /// field, without a file or line).
    pub fn from_fields(fields: PeerFields) -> Result<Peer, PeerError> {
        let doc = PeerDoc {
            api_version: PEER_API_VERSION.into(),
            kind: PEER_KIND.into(),
            metadata: MetadataDoc { name: fields.name },
            spec: SpecDoc {
                trust_domain: fields.trust_domain,
                network: fields.network,
                eastwest_address: fields.eastwest_address,
                bundle_endpoint: EndpointDoc {
                    url: fields.bundle_endpoint_url,
                    spiffe_id: fields.bundle_endpoint_id,
                },
                trust_bundle: fields.trust_bundle,
            },
        };
        let root = Node {
            value: yaml::Value::Null,
            position: yaml::Position::UNKNOWN,
        };
        let mut findings = Vec::new();
        let peer = Checker {
            root: &root,
            findings: &mut findings,
        }
        .peer(&doc);
        let object = ObjectRef {
            kind: PEER_KIND.into(),
            namespace: String::new(),
            name: doc.metadata.name.clone(),
        };
        match peer {
            Some(peer) if findings.is_empty() => Ok(peer),
            _ => Err(PeerError {
                findings: findings.into_iter().map(|f| f.about(&object)).collect(),
            }),
        }
    }
}

/// Collects what is wrong, each finding at the node it is about.
struct Checker<'a> {
    root: &'a Node,
    findings: &'a mut Vec<Finding>,
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

    fn peer(&mut self, doc: &PeerDoc) -> Option<Peer> {
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

impl Peer {
    /// The Peer document, in the form [`parse_peer`] reads.
    pub fn to_yaml(&self) -> Result<String, strait_certs::BundleError> {
        let bundle = self.trust_bundle.to_spiffe_json()?;
        let quote = |s: &str| format!("{s:?}");
        let mut out = String::new();
        out.push_str(&format!(
            "apiVersion: {PEER_API_VERSION}\nkind: {PEER_KIND}\n"
        ));
        out.push_str(&format!("metadata:\n  name: {}\n", quote(&self.name)));
        out.push_str("spec:\n");
        out.push_str(&format!(
            "  trustDomain: {}\n",
            quote(self.trust_domain.as_str())
        ));
        out.push_str(&format!("  network: {}\n", quote(&self.network)));
        out.push_str(&format!(
            "  eastwestAddress: {}\n",
            quote(&self.eastwest_address)
        ));
        out.push_str("  bundleEndpoint:\n");
        out.push_str(&format!(
            "    url: {}\n",
            quote(&self.bundle_endpoint.url.to_string())
        ));
        out.push_str(&format!(
            "    spiffeId: {}\n",
            quote(self.bundle_endpoint.spiffe_id.as_str())
        ));
        out.push_str("  trustBundle: |\n");
        for line in bundle.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
