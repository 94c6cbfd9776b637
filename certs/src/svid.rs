//! The workload side of identity: the [`Svid`] a proxy holds, the [`CertificateRequest`] it sends
//! (its private key is made here and never leaves the process), when to renew ([`renew_at`]), and
//! the `X-Forwarded-Client-Cert` value Envoy writes for Istio ([`xfcc_value`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::bundle::parse_pem_certs;
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::x509;

/// Renewal happens at this fraction of the lifetime...
pub const RENEW_AT_FRACTION: f64 = 0.5;
/// ...plus or minus at most this fraction of the lifetime, scaled by the jitter value.
pub const RENEW_JITTER_FRACTION: f64 = 0.05;

/// Why an SVID could not be built or requested.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("leaf is not a DER X.509 certificate")]
    BadLeaf,
    #[error("leaf has {0} URI SANs; an SVID has exactly one")]
    UriSanCount(usize),
    #[error("leaf URI SAN is not a SPIFFE ID: {0}")]
    BadId(#[from] SpiffeIdError),
    #[error("leaf names {got}, but {expected} was requested")]
    IdMismatch { expected: SpiffeId, got: SpiffeId },
    #[error("private key unusable or not the leaf's: {0}")]
    Key(rustls::Error),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("key or CSR generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The identity a proxy holds: a SPIFFE ID, its certificate chain and private key, ready for
/// rustls.
#[derive(Clone)]
pub struct Svid {
    id: SpiffeId,
    certified: Arc<CertifiedKey>,
    issued_at: SystemTime,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("chain_len", &self.certified.cert.len())
            .field("issued_at", &self.issued_at)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Builds an SVID from a chain (leaf first) and its private key, received at `issued_at`.
    /// The leaf must carry exactly one URI SAN that is a SPIFFE ID, and the key must be the
    /// leaf's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        issued_at: SystemTime,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::EmptyChain)?;
        let cert = x509::parse_cert(leaf).ok_or(SvidError::BadLeaf)?;
        let uris = x509::uri_sans(&cert).map_err(|()| SvidError::BadLeaf)?;
        if uris.len() != 1 {
            return Err(SvidError::UriSanCount(uris.len()));
        }
        let id = SpiffeId::parse(uris[0])?;
        let (not_before, not_after) = x509::validity(&cert);
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(SvidError::Key)?;
        // `from_der` tolerates keys whose public half it cannot compute; require a match.
        certified.keys_match().map_err(SvidError::Key)?;
        Ok(Self {
            id,
            certified: Arc::new(certified),
            issued_at,
            not_before,
            not_after,
        })
    }

    /// Builds an SVID from PEM files (as `strait ca issue` writes them); the leaf's NotBefore
    /// stands for the issue time, which renews a little early rather than late.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, SvidError> {
        let chain = parse_pem_certs(chain_pem).map_err(|e| SvidError::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| SvidError::Pem(e.to_string()))?;
        let leaf = chain.first().ok_or(SvidError::EmptyChain)?;
        let cert = x509::parse_cert(leaf).ok_or(SvidError::BadLeaf)?;
        let (not_before, _) = x509::validity(&cert);
        Self::new(chain, key, not_before)
    }

    /// The identity.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }

    /// When it was issued (or received).
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// The leaf's NotBefore.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's NotAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The hex SHA-256 of the issuing CA certificate (the chain's second certificate), which
    /// names the signing chain the SVID was issued under; `None` for a chain of the leaf alone.
    pub fn issuer_sha256(&self) -> Option<String> {
        self.chain().get(1).map(|ca| crate::x509::sha256_hex(ca))
    }

    /// When to renew, for a jitter value in `[-1, 1]` (see [`renew_at`]).
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        renew_at(self.issued_at, self.not_after, jitter)
    }

    /// The chain and key as rustls wants them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// A pending request for an SVID: a fresh ECDSA P-256 key kept in this process and a CSR for it.
pub struct CertificateRequest {
    id: SpiffeId,
    key: KeyPair,
    csr_der: Vec<u8>,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CertificateRequest {
    /// Makes a key and a CSR naming `id` (the CA grants the ID it authenticated, not this one).
    pub fn new(id: &SpiffeId) -> Result<Self, SvidError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            id: id.clone(),
            key,
            csr_der: csr.der().to_vec(),
        })
    }

    /// The identity asked for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The CSR, DER.
    pub fn csr_der(&self) -> &[u8] {
        &self.csr_der
    }

    /// The CSR, PEM (`CERTIFICATE REQUEST`), as Istio's CA API carries it.
    pub fn csr_pem(&self) -> String {
        let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.csr_der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE REQUEST-----\n");
        out
    }

    /// The private key as PKCS#8 PEM, for a workload that keeps its identity in files (a VM
    /// bootstrapped once with `strait ca request`): only the process that made the key writes it.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Pairs the CA's answer with the key: the leaf must name the requested ID and carry this
    /// request's public key.
    pub fn into_svid(
        self,
        chain: Vec<CertificateDer<'static>>,
        issued_at: SystemTime,
    ) -> Result<Svid, SvidError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let svid = Svid::new(chain, key, issued_at)?;
        if svid.id != self.id {
            return Err(SvidError::IdMismatch {
                expected: self.id,
                got: svid.id,
            });
        }
        Ok(svid)
    }
}

/// When to renew a certificate issued at `issued_at` that expires at `not_after`: at half its
/// lifetime, moved by `jitter` (clamped to `[-1, 1]`) times [`RENEW_JITTER_FRACTION`] of the
/// lifetime. The same inputs always give the same time; draw the jitter with [`random_jitter`].
pub fn renew_at(issued_at: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after
        .duration_since(issued_at)
        .unwrap_or(Duration::ZERO);
    let jitter = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fraction = RENEW_AT_FRACTION + RENEW_JITTER_FRACTION * jitter;
    issued_at + lifetime.mul_f64(fraction)
}

/// A uniformly drawn jitter value in `[-1, 1]`.
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// The `X-Forwarded-Client-Cert` element Envoy writes for Istio:
/// `By=<own ID>;Hash=<hex SHA-256 of the peer leaf DER>;Subject="";URI=<peer ID>`.
pub fn xfcc_value(own: &SpiffeId, peer_leaf_der: &[u8], peer: &SpiffeId) -> String {
    format!(
        "By={own};Hash={};Subject=\"\";URI={peer}",
        crate::x509::sha256_hex(peer_leaf_der)
    )
}

/// The `X-Forwarded-Client-Cert` element a gateway sets for a client certificate it verified
/// (Envoy's SANITIZE_SET with Istio's subject, URI and DNS details):
/// `Hash=<hex SHA-256>;Subject="<RFC 2253 subject>";URI=<each URI SAN>;DNS=<each DNS SAN>`.
/// `None` when the certificate does not parse.
pub fn client_certificate_xfcc(leaf_der: &[u8]) -> Option<String> {
    let cert = crate::x509::parse_cert(leaf_der)?;
    let mut element = format!(
        "Hash={};Subject=\"{}\"",
        crate::x509::sha256_hex(leaf_der),
        crate::x509::rfc2253_subject(&cert).replace('"', "\\\"")
    );
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(uri) => {
                    element.push_str(&format!(";URI={uri}"));
                }
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    element.push_str(&format!(";DNS={dns}"));
                }
                _ => {}
            }
        }
    }
    Some(element)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Authority, AuthorityOptions};
    use crate::fs::test_dir::TestDir;
    use crate::spiffe::TrustDomain;

    fn ca(name: &str) -> (TestDir, Authority) {
        let dir = TestDir::new(name);
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = Authority::init(td, &dir.path().join("ca"), &AuthorityOptions::default()).unwrap();
        (dir, ca)
    }

    #[test]
    fn request_signed_by_the_ca_becomes_an_svid() {
        let (_dir, ca) = ca("svid-request");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let request = CertificateRequest::new(&id).unwrap();
        assert!(
            request
                .csr_pem()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
        );
        let issued = ca
            .sign_csr(request.csr_der(), &id, Duration::from_secs(3600))
            .unwrap();
        let svid = request
            .into_svid(issued.chain_der.clone(), issued.issued_at)
            .unwrap();
        assert_eq!(svid.id(), &id);
        assert_eq!(svid.chain(), issued.chain_der.as_slice());
        assert_eq!(svid.not_after(), issued.not_after);
        assert_eq!(svid.certified_key().cert.len(), 2);
    }

    #[test]
    fn answer_for_another_key_or_id_is_refused() {
        let (_dir, ca) = ca("svid-mismatch");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let other = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/other").unwrap();

        // A chain issued for someone else's key.
        let request = CertificateRequest::new(&id).unwrap();
        let (_, foreign) = ca.issue(&id, Duration::from_secs(600)).unwrap();
        assert!(matches!(
            request.into_svid(foreign.chain_der, SystemTime::now()),
            Err(SvidError::Key(_))
        ));

        // Our key, but the CA granted a different ID.
        let request = CertificateRequest::new(&id).unwrap();
        let granted = ca
            .sign_csr(request.csr_der(), &other, Duration::from_secs(600))
            .unwrap();
        assert!(matches!(
            request.into_svid(granted.chain_der, SystemTime::now()),
            Err(SvidError::IdMismatch { .. })
        ));
    }

    #[test]
    fn issued_key_and_chain_load_from_pem() {
        let (_dir, ca) = ca("svid-pem");
        let id = SpiffeId::parse("spiffe://cluster.local/vm/db-1").unwrap();
        let (key_pem, issued) = ca.issue(&id, Duration::from_secs(600)).unwrap();
        let svid = Svid::from_pem(&issued.chain_pem, &key_pem).unwrap();
        assert_eq!(svid.id(), &id);
        assert_eq!(svid.issued_at(), issued.not_before);
        assert!(matches!(
            Svid::from_pem("", &key_pem),
            Err(SvidError::Pem(_))
        ));
    }

    #[test]
    fn renewal_is_at_half_life_with_bounded_jitter() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let not_after = issued + Duration::from_secs(24 * 3600);
        assert_eq!(
            renew_at(issued, not_after, 0.0),
            issued + Duration::from_secs(12 * 3600)
        );
        // Jitter moves it by at most 5% of the lifetime (72 minutes) either way.
        assert_eq!(
            renew_at(issued, not_after, 1.0),
            issued + Duration::from_secs(12 * 3600 + 72 * 60)
        );
        assert_eq!(
            renew_at(issued, not_after, -1.0),
            issued + Duration::from_secs(12 * 3600 - 72 * 60)
        );
        assert_eq!(
            renew_at(issued, not_after, 7.0),
            renew_at(issued, not_after, 1.0)
        );
        assert_eq!(
            renew_at(issued, not_after, f64::NAN),
            renew_at(issued, not_after, 0.0)
        );
        // An already-expired certificate renews at once.
        assert_eq!(renew_at(not_after, issued, 0.3), not_after);
        for _ in 0..100 {
            let j = random_jitter();
            assert!((-1.0..=1.0).contains(&j));
        }
    }

    #[test]
    fn xfcc_matches_envoys_format() {
        let own = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/server").unwrap();
        let peer = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/client").unwrap();
        // SHA-256 of "abc" is a published test vector.
        assert_eq!(
            xfcc_value(&own, b"abc", &peer),
            "By=spiffe://cluster.local/ns/default/sa/server;\
             Hash=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad;\
             Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/client"
        );
    }

    #[test]
    fn a_gateway_client_certificate_element_has_hash_subject_uri_and_dns() {
        let mut params =
            rcgen::CertificateParams::new(vec!["client.example.com".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://example.org/ns/a/sa/b").unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let element = client_certificate_xfcc(cert.der()).unwrap();
        let hash = crate::x509::sha256_hex(cert.der());
        assert_eq!(
            element,
            format!(
                "Hash={hash};Subject=\"CN=client,O=Acme\\, Inc\";DNS=client.example.com;URI=spiffe://example.org/ns/a/sa/b"
            )
        );
        assert_eq!(client_certificate_xfcc(b"not a certificate"), None);
    }
}
