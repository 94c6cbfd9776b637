//! Trust bundles: the X.509 roots of one trust domain, with the SPIFFE bundle sequence and
//! refresh hint, read and written in the SPIFFE bundle format (a JWK Set whose `x509-svid` keys
//! each carry one root in `x5c`) and as PEM.
//!
//! [`TrustBundleSet`] keeps bundles **per trust domain** and never merges them: a peer's anchors
//! are chosen by the trust domain of the SPIFFE ID it presents ([`TrustBundleSet::anchors_for`]).
//! The set precomputes webpki trust anchors and each root's validity when a bundle is inserted, so
//! verification does no parsing of roots. Share it between verifiers as [`SharedBundles`] and
//! replace it whole (copy, change, store) to reach new handshakes at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde_json::{Map, Value, json};
use x509_parser::public_key::PublicKey;

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::x509;

/// The `use` value of a JWK that carries an X.509 root.
pub const X509_SVID_USE: &str = "x509-svid";
/// Default refresh hint for bundles we publish, in seconds (the SPIFFE default poll interval).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// Bundles shared by verifiers and swapped whole while running.
pub type SharedBundles = Arc<ArcSwap<TrustBundleSet>>;

/// What is wrong with a bundle document.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bundle is not a JSON object")]
    NotAnObject,
    #[error("bundle has no \"keys\" array")]
    MissingKeys,
    #[error("bundle field {field} must be a non-negative integer")]
    BadNumber { field: &'static str },
    #[error("bundle key {index}: x5c[0] is not base64: {source}")]
    BadBase64 {
        index: usize,
        #[source]
        source: base64::DecodeError,
    },
    #[error("bundle key {index}: x5c[0] is not a DER X.509 certificate")]
    BadCertificate { index: usize },
    #[error("bundle PEM has no certificate")]
    EmptyPem,
    #[error("bundle PEM is malformed: {0}")]
    Pem(String),
    #[error("root {index} is not a usable X.509 certificate")]
    BadRoot { index: usize },
    #[error(
        "root {index}: its public key cannot be written as a JWK (only EC P-256/P-384 and RSA)"
    )]
    UnsupportedKey { index: usize },
    #[error(
        "root {index} names trust domain {claimed} (its URI SAN), not {trust_domain}, the trust domain the bundle is taken for"
    )]
    ForeignRoot {
        index: usize,
        claimed: TrustDomain,
        trust_domain: TrustDomain,
    },
    #[error("trust domain {trust_domain}: bundle sequence {offered} is not newer than {current}")]
    StaleSequence {
        trust_domain: TrustDomain,
        offered: u64,
        current: u64,
    },
}

/// The X.509 roots of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// The trust domain these roots speak for (a bundle document does not name it).
    pub trust_domain: TrustDomain,
    /// Self-signed roots, DER.
    pub roots: Vec<CertificateDer<'static>>,
    /// `spiffe_sequence`: increases whenever the contents change.
    pub sequence: u64,
    /// `spiffe_refresh_hint`: how often consumers should poll.
    pub refresh_hint: Option<Duration>,
}

impl TrustBundle {
    /// A bundle of `roots` with sequence 0 and no refresh hint.
    pub fn new(trust_domain: TrustDomain, roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            trust_domain,
            roots,
            sequence: 0,
            refresh_hint: None,
        }
    }

    /// Reads a SPIFFE bundle document (JWK Set). Only keys with `use: "x509-svid"`, a `kty` and a
    /// non-empty `x5c` become roots (the first `x5c` entry); `jwt-svid` keys and keys of unknown
    /// use or type are ignored, as the SPIFFE bundle format requires.
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let doc: Value = serde_json::from_slice(json)?;
        let doc = doc.as_object().ok_or(BundleError::NotAnObject)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(BundleError::MissingKeys)?;
        let sequence = optional_u64(doc, "spiffe_sequence")?.unwrap_or(0);
        let refresh_hint = optional_u64(doc, "spiffe_refresh_hint")?.map(Duration::from_secs);

        let mut roots = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let Some(key) = key.as_object() else { continue };
            if key.get("use").and_then(Value::as_str) != Some(X509_SVID_USE) {
                continue;
            }
            if key.get("kty").and_then(Value::as_str).is_none() {
                continue;
            }
            let Some(first) = key
                .get("x5c")
                .and_then(Value::as_array)
                .and_then(|x5c| x5c.first())
                .and_then(Value::as_str)
            else {
                continue;
            };
            let der = STANDARD
                .decode(first)
                .map_err(|source| BundleError::BadBase64 { index, source })?;
            if x509::parse_cert(&der).is_none() {
                return Err(BundleError::BadCertificate { index });
            }
            roots.push(CertificateDer::from(der));
        }
        Ok(Self {
            trust_domain,
            roots,
            sequence,
            refresh_hint,
        })
    }

    /// Writes the SPIFFE bundle document: one `x509-svid` JWK per root, with the root's public
    /// key parameters and the root itself in `x5c`.
    pub fn to_spiffe_json(&self) -> Result<String, BundleError> {
        let mut keys = Vec::with_capacity(self.roots.len());
        for (index, root) in self.roots.iter().enumerate() {
            keys.push(root_jwk(index, root)?);
        }
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        doc.insert("spiffe_sequence".into(), json!(self.sequence));
        if let Some(hint) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), json!(hint.as_secs()));
        }
        Ok(serde_json::to_string_pretty(&Value::Object(doc))?)
    }

    /// A bundle file as operators hand it over: SPIFFE bundle JSON, or PEM certificates.
    pub fn parse(trust_domain: TrustDomain, text: &str) -> Result<Self, BundleError> {
        if text.trim_start().starts_with('{') {
            Self::from_spiffe_json(trust_domain, text.as_bytes())
        } else {
            Self::from_pem(trust_domain, text)
        }
    }

    /// Reads roots from PEM (`CERTIFICATE` blocks), with sequence 0 and no refresh hint.
    pub fn from_pem(trust_domain: TrustDomain, pem: &str) -> Result<Self, BundleError> {
        let roots = parse_pem_certs(pem)?;
        for (index, root) in roots.iter().enumerate() {
            if x509::parse_cert(root).is_none() {
                return Err(BundleError::BadRoot { index });
            }
        }
        Ok(Self::new(trust_domain, roots))
    }

    /// The roots as concatenated PEM.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// Refuses a bundle whose content speaks for another trust domain. A bundle document does
    /// not name its trust domain (it is bound to one by whoever holds it), so the only claim its
    /// content can make is a root's own SPIFFE ID: a signing certificate may carry
    /// `spiffe://TRUST_DOMAIN` as its URI SAN, as the roots of [`crate::Authority`] do. A root
    /// that names another trust domain is refused; roots that name none are taken as they are.
    pub fn check_trust_domain(&self) -> Result<(), BundleError> {
        for (index, root) in self.roots.iter().enumerate() {
            let cert = x509::parse_cert(root).ok_or(BundleError::BadRoot { index })?;
            let uris = x509::uri_sans(&cert).map_err(|()| BundleError::BadRoot { index })?;
            for uri in uris {
                let Ok(id) = SpiffeId::parse(uri) else {
                    continue;
                };
                if id.trust_domain_name() != self.trust_domain.as_str() {
                    return Err(BundleError::ForeignRoot {
                        index,
                        claimed: id.trust_domain(),
                        trust_domain: self.trust_domain.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Bundles kept per trust domain, never merged, with webpki anchors ready for verification.
#[derive(Debug, Clone, Default)]
pub struct TrustBundleSet {
    domains: BTreeMap<TrustDomain, Arc<DomainAnchors>>,
}

/// One trust domain's bundle and the anchors made from it.
#[derive(Debug)]
pub(crate) struct DomainAnchors {
    pub(crate) bundle: TrustBundle,
    pub(crate) anchors: Vec<AnchorEntry>,
}

/// A trust anchor and the validity of the root it was made from (webpki drops the validity, and
/// verifiers must refuse expired roots themselves).
#[derive(Debug)]
pub(crate) struct AnchorEntry {
    pub(crate) anchor: TrustAnchor<'static>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl TrustBundleSet {
    /// An empty set: every peer is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set from bundles; a later bundle of the same trust domain replaces an earlier one.
    pub fn from_bundles(
        bundles: impl IntoIterator<Item = TrustBundle>,
    ) -> Result<Self, BundleError> {
        let mut set = Self::new();
        for bundle in bundles {
            set.insert(bundle)?;
        }
        Ok(set)
    }

    /// Puts `bundle` in place for its trust domain (an operator override: no sequence check).
    /// Returns the bundle it replaced.
    pub fn insert(&mut self, bundle: TrustBundle) -> Result<Option<TrustBundle>, BundleError> {
        let mut anchors = Vec::with_capacity(bundle.roots.len());
        for (index, root) in bundle.roots.iter().enumerate() {
            let cert = x509::parse_cert(root).ok_or(BundleError::BadRoot { index })?;
            let (not_before, not_after) = x509::validity(&cert);
            let anchor = webpki::anchor_from_trusted_cert(root)
                .map_err(|_| BundleError::BadRoot { index })?
                .to_owned();
            anchors.push(AnchorEntry {
                anchor,
                not_before,
                not_after,
            });
        }
        let td = bundle.trust_domain.clone();
        let previous = self
            .domains
            .insert(td, Arc::new(DomainAnchors { bundle, anchors }));
        Ok(previous.map(|p| p.bundle.clone()))
    }

    /// Puts `bundle` in place only if its sequence is newer than the one held (or none is held);
    /// the same bundle again is accepted as a no-op. Order by `spiffe_sequence`, as the SPIFFE
    /// federation rules ask.
    pub fn insert_if_newer(&mut self, bundle: TrustBundle) -> Result<bool, BundleError> {
        if let Some(current) = self.get(&bundle.trust_domain) {
            if *current == bundle {
                return Ok(false);
            }
            if bundle.sequence <= current.sequence {
                return Err(BundleError::StaleSequence {
                    trust_domain: bundle.trust_domain.clone(),
                    offered: bundle.sequence,
                    current: current.sequence,
                });
            }
        }
        self.insert(bundle)?;
        Ok(true)
    }

    /// Drops a trust domain's bundle (its SVIDs are refused from then on).
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<TrustBundle> {
        self.domains.remove(trust_domain).map(|d| d.bundle.clone())
    }

    /// The bundle of one trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.domains.get(trust_domain).map(|d| &d.bundle)
    }

    /// The trust anchors of one trust domain, and only that one.
    pub fn anchors_for(&self, trust_domain: &TrustDomain) -> Option<Vec<TrustAnchor<'static>>> {
        self.domains
            .get(trust_domain)
            .map(|d| d.anchors.iter().map(|a| a.anchor.clone()).collect())
    }

    pub(crate) fn domain(&self, trust_domain: &TrustDomain) -> Option<&DomainAnchors> {
        self.domains.get(trust_domain).map(|d| d.as_ref())
    }

    /// The trust domains held, in order.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }

    /// Every bundle held, ordered by trust domain.
    pub fn bundles(&self) -> impl Iterator<Item = &TrustBundle> {
        self.domains.values().map(|d| &d.bundle)
    }

    /// Wraps the set for sharing with verifiers.
    pub fn into_shared(self) -> SharedBundles {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

/// Concatenated PEM `CERTIFICATE` blocks.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Every `CERTIFICATE` block of a PEM text, in order; at least one.
pub fn parse_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BundleError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(BundleError::EmptyPem);
    }
    Ok(certs)
}

fn optional_u64(doc: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, BundleError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(BundleError::BadNumber { field }),
    }
}

fn root_jwk(index: usize, root: &CertificateDer<'_>) -> Result<Value, BundleError> {
    let cert = x509::parse_cert(root).ok_or(BundleError::BadRoot { index })?;
    let spki = cert.public_key();
    let mut jwk = Map::new();
    jwk.insert("use".into(), json!(X509_SVID_USE));
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let curve = x509::ec_curve(spki).ok_or(BundleError::UnsupportedKey { index })?;
            let n = curve.coordinate_len();
            let data = point.data();
            // An uncompressed point: 0x04 || X || Y.
            if data.len() != 1 + 2 * n || data[0] != 0x04 {
                return Err(BundleError::UnsupportedKey { index });
            }
            jwk.insert("kty".into(), json!("EC"));
            jwk.insert("crv".into(), json!(curve.jwk_name()));
            jwk.insert("x".into(), json!(URL_SAFE_NO_PAD.encode(&data[1..=n])));
            jwk.insert("y".into(), json!(URL_SAFE_NO_PAD.encode(&data[1 + n..])));
        }
        Ok(PublicKey::RSA(rsa)) => {
            jwk.insert("kty".into(), json!("RSA"));
            jwk.insert(
                "n".into(),
                json!(URL_SAFE_NO_PAD.encode(strip_zeros(rsa.modulus))),
            );
            jwk.insert(
                "e".into(),
                json!(URL_SAFE_NO_PAD.encode(strip_zeros(rsa.exponent))),
            );
        }
        _ => return Err(BundleError::UnsupportedKey { index }),
    }
    jwk.insert("x5c".into(), json!([STANDARD.encode(root.as_ref())]));
    Ok(Value::Object(jwk))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    fn root(cn: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    #[test]
    fn spiffe_json_round_trip() {
        let bundle = TrustBundle {
            trust_domain: td("west.mesh"),
            roots: vec![root("a"), root("b")],
            sequence: 42,
            refresh_hint: Some(Duration::from_secs(300)),
        };
        let json = bundle.to_spiffe_json().unwrap();
        let doc: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["spiffe_sequence"], 42);
        assert_eq!(doc["spiffe_refresh_hint"], 300);
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for key in keys {
            assert_eq!(key["use"], "x509-svid");
            assert_eq!(key["kty"], "EC");
            assert_eq!(key["crv"], "P-256");
            assert_eq!(key["x"].as_str().unwrap().len(), 43);
            assert_eq!(key["y"].as_str().unwrap().len(), 43);
            assert!(key.get("kid").is_none());
            assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
        }
        let back = TrustBundle::from_spiffe_json(td("west.mesh"), json.as_bytes()).unwrap();
        assert_eq!(back, bundle);
    }

    #[test]
    fn jwt_and_unknown_keys_are_not_x509_anchors() {
        let anchor = root("x509");
        let other = root("jwt");
        let doc = json!({
            "spiffe_sequence": 7,
            "keys": [
                {"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA",
                 "x5c": [STANDARD.encode(other.as_ref())]},
                {"use": "something-new", "kty": "EC", "x5c": [STANDARD.encode(other.as_ref())]},
                {"use": "x509-svid", "kty": "EC"},
                {"use": "x509-svid", "kty": "EC", "x5c": []},
                {"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(anchor.as_ref()),
                                                          STANDARD.encode(other.as_ref())]},
                "not an object"
            ],
            "unknown_top_level": true
        });
        let bundle =
            TrustBundle::from_spiffe_json(td("east.mesh"), doc.to_string().as_bytes()).unwrap();
        assert_eq!(bundle.roots, vec![anchor]);
        assert_eq!(bundle.sequence, 7);
        assert_eq!(bundle.refresh_hint, None);
    }

    #[test]
    fn malformed_documents_are_refused() {
        let t = td("a.mesh");
        assert!(matches!(
            TrustBundle::from_spiffe_json(t.clone(), b"{\"spiffe_sequence\": 1}"),
            Err(BundleError::MissingKeys)
        ));
        assert!(matches!(
            TrustBundle::from_spiffe_json(t.clone(), b"[]"),
            Err(BundleError::NotAnObject)
        ));
        assert!(matches!(
            TrustBundle::from_spiffe_json(t.clone(), b"{\"keys\": [], \"spiffe_sequence\": -1}"),
            Err(BundleError::BadNumber {
                field: "spiffe_sequence"
            })
        ));
        let bad_cert = json!({"keys": [{"use": "x509-svid", "kty": "EC",
                                        "x5c": [STANDARD.encode(b"not a certificate")]}]});
        assert!(matches!(
            TrustBundle::from_spiffe_json(t.clone(), bad_cert.to_string().as_bytes()),
            Err(BundleError::BadCertificate { index: 0 })
        ));
        // An empty key set is valid: the trust domain then has no usable roots.
        let empty = TrustBundle::from_spiffe_json(t, b"{\"keys\": []}").unwrap();
        assert!(empty.roots.is_empty());
    }

    #[test]
    fn pem_round_trip() {
        let bundle = TrustBundle::new(td("a.mesh"), vec![root("one"), root("two")]);
        let pem = bundle.to_pem();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(TrustBundle::from_pem(td("a.mesh"), &pem).unwrap(), bundle);
        assert!(matches!(
            TrustBundle::from_pem(td("a.mesh"), "nothing here"),
            Err(BundleError::EmptyPem)
        ));
    }

    #[test]
    fn set_keeps_trust_domains_apart() {
        let a = TrustBundle::new(td("a.mesh"), vec![root("a")]);
        let b = TrustBundle::new(td("b.mesh"), vec![root("b1"), root("b2")]);
        let set = TrustBundleSet::from_bundles([a.clone(), b.clone()]).unwrap();
        assert_eq!(set.anchors_for(&td("a.mesh")).unwrap().len(), 1);
        assert_eq!(set.anchors_for(&td("b.mesh")).unwrap().len(), 2);
        assert!(set.anchors_for(&td("c.mesh")).is_none());
        let a_anchor = webpki::anchor_from_trusted_cert(&a.roots[0]).unwrap();
        assert_eq!(
            set.anchors_for(&td("a.mesh")).unwrap()[0].subject_public_key_info,
            a_anchor.subject_public_key_info
        );
        assert_eq!(set.trust_domains().count(), 2);
    }

    fn root_with_id(uri: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_root_naming_another_trust_domain_is_refused() {
        let own = TrustBundle::new(
            td("west.mesh"),
            vec![root("plain"), root_with_id("spiffe://west.mesh")],
        );
        own.check_trust_domain().unwrap();
        let mixed = TrustBundle::new(
            td("west.mesh"),
            vec![
                root_with_id("spiffe://west.mesh"),
                root_with_id("spiffe://east.mesh"),
            ],
        );
        match mixed.check_trust_domain() {
            Err(BundleError::ForeignRoot {
                index: 1, claimed, ..
            }) => assert_eq!(claimed, td("east.mesh")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn newer_sequences_replace_older_ones() {
        let mut set = TrustBundleSet::new();
        let mut first = TrustBundle::new(td("a.mesh"), vec![root("a")]);
        first.sequence = 5;
        assert!(set.insert_if_newer(first.clone()).unwrap());
        assert!(!set.insert_if_newer(first.clone()).unwrap());
        let mut stale = TrustBundle::new(td("a.mesh"), vec![root("b")]);
        stale.sequence = 5;
        assert!(matches!(
            set.insert_if_newer(stale.clone()),
            Err(BundleError::StaleSequence {
                offered: 5,
                current: 5,
                ..
            })
        ));
        stale.sequence = 6;
        assert!(set.insert_if_newer(stale.clone()).unwrap());
        assert_eq!(set.get(&td("a.mesh")), Some(&stale));
        assert_eq!(set.remove(&td("a.mesh")), Some(stale));
        assert!(set.get(&td("a.mesh")).is_none());
    }
}
