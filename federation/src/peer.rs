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
//!   trunk: true
//! ```
//!
//! Nothing about a peer is inferred: the trust domain, the bundle endpoint URL and its SPIFFE ID
//! are the three parameters SPIFFE federation says cannot be derived from each other, and all
//! three are given. The endpoint is `https_spiffe` and self-serving: its SPIFFE ID is in the
//! peer's trust domain, and the bundle it serves is taken as that trust domain's. `trustBundle`
//! is the peer's bundle for first contact (SPIFFE bundle JSON); it authenticates the first fetch.
//! `trunk` (optional, false by default) says that the east-west gateways keep a QUIC trunk
//! to the peer's gateway at UDP `eastwestAddress`; the peer's gateway is authenticated as the
//! bundle endpoint's SPIFFE ID (the east-west gateway serves the bundle endpoint itself).
//!
//! [`parse_peer`] reads and validates a document, naming file, line, field and reason for every
//! problem (the rules are in `validate`); [`Peer::to_yaml`] writes one that [`parse_peer`] reads
//! back.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use strait_certs::{SpiffeId, TrustBundle, TrustDomain};
use strait_discovery::findings::{Finding, Level, ObjectRef};
use strait_discovery::yaml::{self, FieldPath, Node};

/// The `apiVersion` of a Peer document.
pub const PEER_API_VERSION: &str = "strait.io/v1alpha1";
/// The `kind` of a Peer document.
pub const PEER_KIND: &str = "Peer";

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
    /// Whether the east-west gateway keeps a QUIC trunk to the peer's (UDP `eastwest_address`).
    pub trunk: bool,
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
    trunk: bool,
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
    /// Whether the east-west gateways keep a QUIC trunk to the peer's.
    pub trunk: bool,
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
                trunk: fields.trunk,
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
        if self.trunk {
            out.push_str("  trunk: true\n");
        }
        Ok(out)
    }
}

mod validate;

use validate::Checker;
pub use validate::{check_bundle, check_host_port, first_contact_bundle};

#[cfg(test)]
mod tests;
