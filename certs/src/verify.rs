//! The mesh mTLS verifiers: a peer presents an X.509-SVID, and we check, in this order:
//!
//! 1. the leaf has exactly one URI SAN and it parses as a SPIFFE ID with a path;
//! 2. the leaf is CA:FALSE, has key usage digitalSignature and neither keyCertSign nor cRLSign;
//! 3. the anchors of **that ID's trust domain** are chosen from the [`TrustBundleSet`] (an unknown
//!    trust domain, or one with no roots, is refused); roots are never pooled across domains;
//! 4. the chain is verified with webpki up to one of those anchors, with the EKU of the peer's
//!    side (serverAuth for servers, clientAuth for clients);
//! 5. a root outside its validity is refused (webpki keeps no validity for anchors);
//! 6. the whole ID is authorized by an [`Authorizer`].
//!
//! The DNS server name is ignored: mesh identity is the SPIFFE ID. The bundles sit behind an
//! `ArcSwap` ([`SharedBundles`]), so a new root reaches the next handshake without rebuilding any
//! config. rustls verifiers cannot hand data back, so after the handshake the proxy reads the
//! verified identity with [`peer_identity`] from `peer_certificates()`.
//!
//! Every refusal is a [`VerifyError`] naming the reason. In a handshake it becomes
//! `rustls::Error::InvalidCertificate`: the standard `CertificateError` where one fits (bad
//! encoding, unknown issuer, expired, bad signature) and `CertificateError::Other` carrying the
//! `VerifyError` otherwise ([`VerifyError::from_rustls`] gets it back).
//!
//! A verifier may carry an [`UnknownIssuerObserver`]: told the trust domain of a peer whose
//! chain ends at none of the roots held for it, the moment a federated peer's bundle is worth
//! fetching early.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::bundle::{AnchorEntry, SharedBundles, TrustBundleSet};
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
use crate::x509;

/// Why a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer leaf is not a well-formed X.509 certificate")]
    BadEncoding,
    #[error("peer leaf has {0} URI SANs; an X.509-SVID has exactly one")]
    UriSanCount(usize),
    #[error("peer URI SAN is not a valid SPIFFE ID: {0}")]
    MalformedId(SpiffeIdError),
    #[error("peer ID {0} has no path; it names a trust domain, not a workload")]
    NotAWorkloadId(SpiffeId),
    #[error("peer leaf is a CA certificate (CA:TRUE)")]
    LeafIsCa,
    #[error("peer leaf lacks key usage digitalSignature")]
    LeafLacksDigitalSignature,
    #[error("peer leaf may sign certificates or CRLs (keyCertSign or cRLSign)")]
    LeafCanSign,
    #[error("no trust bundle for trust domain {0}")]
    UnknownTrustDomain(TrustDomain),
    #[error("the trust bundle of {0} has no roots; its SVIDs are untrusted")]
    EmptyBundle(TrustDomain),
    #[error("certificate chain does not verify: {0}")]
    Chain(webpki::Error),
    #[error("the chain ends at a root of {0} that has expired")]
    ExpiredRoot(TrustDomain),
    #[error("the chain ends at a root of {0} that is not yet valid")]
    RootNotYetValid(TrustDomain),
    #[error("peer {0} is not authorized here")]
    NotAuthorized(SpiffeId),
}

impl VerifyError {
    /// The rustls error a handshake reports for this refusal.
    pub fn to_rustls(&self) -> rustls::Error {
        let standard = match self {
            Self::BadEncoding => Some(CertificateError::BadEncoding),
            Self::Chain(webpki::Error::UnknownIssuer) => Some(CertificateError::UnknownIssuer),
            Self::Chain(webpki::Error::CertExpired { .. }) => Some(CertificateError::Expired),
            Self::Chain(webpki::Error::CertNotValidYet { .. }) => {
                Some(CertificateError::NotValidYet)
            }
            Self::Chain(webpki::Error::InvalidSignatureForPublicKey) => {
                Some(CertificateError::BadSignature)
            }
            _ => None,
        };
        rustls::Error::InvalidCertificate(
            standard.unwrap_or_else(|| CertificateError::Other(OtherError(Arc::new(self.clone())))),
        )
    }

    /// Whether the chain ends at none of the roots held for the leaf's trust domain: webpki's
    /// unknown issuer, or a bad signature (our CAs name their certificates after the trust
    /// domain, so a chain to a root not held here finds a held root of the same name with
    /// another key).
    pub fn chains_to_no_root_held(&self) -> bool {
        matches!(
            self,
            Self::Chain(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey)
        )
    }

    /// The refusal a rustls error carries, when it came from these verifiers as
    /// `CertificateError::Other`.
    pub fn from_rustls(error: &rustls::Error) -> Option<&VerifyError> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                let inner: &(dyn std::error::Error + 'static) = &*other.0;
                inner.downcast_ref::<VerifyError>()
            }
            _ => None,
        }
    }
}

/// Told the trust domain a peer's leaf names when its chain ends at none of the roots held for
/// that trust domain ([`VerifyError::chains_to_no_root_held`]). The trust domain is read from the
/// presented leaf, which did **not** verify: an observer acts only on trust domains it knows
/// and must be cheap (it runs inside the handshake).
#[derive(Clone)]
pub struct UnknownIssuerObserver(Arc<dyn Fn(&TrustDomain) + Send + Sync>);

impl UnknownIssuerObserver {
    pub fn new(observe: impl Fn(&TrustDomain) + Send + Sync + 'static) -> Self {
        Self(Arc::new(observe))
    }

    /// Tells the observer about a certificate of `trust_domain` that chains to no root held.
    pub fn tell(&self, trust_domain: &TrustDomain) {
        (self.0)(trust_domain);
    }

    /// Tells the observer about `error` if it is an unknown issuer, with the trust domain of
    /// `end_entity`'s SPIFFE ID (parsed, not verified).
    fn observe(&self, error: &VerifyError, end_entity: &CertificateDer<'_>) {
        if !error.chains_to_no_root_held() {
            return;
        }
        if let Ok(id) = peer_identity(std::slice::from_ref(end_entity)) {
            self.tell(&id.trust_domain());
        }
    }
}

impl std::fmt::Debug for UnknownIssuerObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnknownIssuerObserver")
    }
}

/// Which verified identities are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorizer {
    /// Any ID whose chain verified against its own trust domain's bundle.
    Any,
    /// Any ID of these trust domains.
    TrustDomains(BTreeSet<TrustDomain>),
    /// Exactly these IDs (trust domain included).
    Ids(BTreeSet<SpiffeId>),
}

impl Authorizer {
    /// Exactly these IDs.
    pub fn ids(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self::Ids(ids.into_iter().collect())
    }

    /// Any ID of these trust domains.
    pub fn trust_domains(tds: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self::TrustDomains(tds.into_iter().collect())
    }

    /// Whether `id` is allowed.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::TrustDomains(tds) => tds.iter().any(|td| td.as_str() == id.trust_domain_name()),
            Self::Ids(ids) => ids.contains(id),
        }
    }
}

/// Whether a server asks for client certificates, and whom it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate is required (mesh mTLS, STRICT).
    Required(Authorizer),
    /// A client certificate is asked for; a client without one still connects (PERMISSIVE
    /// listeners decide later), one with a bad one is refused.
    Optional(Authorizer),
}

/// The verified identity of a peer, read again from the certificates rustls kept
/// (`peer_certificates()`); steps 1 and 2 only, as the handshake already verified the chain.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, VerifyError> {
    let leaf = certs.first().ok_or(VerifyError::NoCertificate)?;
    let cert = x509::parse_cert(leaf).ok_or(VerifyError::BadEncoding)?;
    leaf_identity(&cert)
}

/// Steps 1 and 2: the one SPIFFE ID of the leaf, and the leaf's CA flag and key usage.
fn leaf_identity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<SpiffeId, VerifyError> {
    let uris = x509::uri_sans(cert).map_err(|()| VerifyError::BadEncoding)?;
    if uris.len() != 1 {
        return Err(VerifyError::UriSanCount(uris.len()));
    }
    let id = SpiffeId::parse(uris[0]).map_err(VerifyError::MalformedId)?;
    if id.is_trust_domain_id() {
        return Err(VerifyError::NotAWorkloadId(id));
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => return Err(VerifyError::LeafIsCa),
        Ok(_) => {}
        Err(_) => return Err(VerifyError::BadEncoding),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if ku.value.key_cert_sign() || ku.value.crl_sign() {
                return Err(VerifyError::LeafCanSign);
            }
            if !ku.value.digital_signature() {
                return Err(VerifyError::LeafLacksDigitalSignature);
            }
        }
        Ok(None) => return Err(VerifyError::LeafLacksDigitalSignature),
        Err(_) => return Err(VerifyError::BadEncoding),
    }
    Ok(id)
}

/// Every step for one side (`usage`): the verified SPIFFE ID, if `authorizer` allows it.
fn verify_svid(
    bundles: &TrustBundleSet,
    algs: &WebPkiSupportedAlgorithms,
    authorizer: &Authorizer,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<SpiffeId, VerifyError> {
    let id = verify_chain(bundles, algs, end_entity, intermediates, now, usage)?;
    if !authorizer.allows(&id) {
        return Err(VerifyError::NotAuthorized(id));
    }
    Ok(id)
}

/// Steps 1 to 5 for one side (`usage`): the verified SPIFFE ID, not yet authorized.
fn verify_chain(
    bundles: &TrustBundleSet,
    algs: &WebPkiSupportedAlgorithms,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<SpiffeId, VerifyError> {
    let cert = x509::parse_cert(end_entity).ok_or(VerifyError::BadEncoding)?;
    let id = leaf_identity(&cert)?;

    let td = id.trust_domain();
    let domain = bundles
        .domain(&td)
        .ok_or_else(|| VerifyError::UnknownTrustDomain(td.clone()))?;
    if domain.anchors.is_empty() {
        return Err(VerifyError::EmptyBundle(td));
    }
    let now_time = UNIX_EPOCH + Duration::from_secs(now.as_secs());
    let (current, outside): (Vec<_>, Vec<_>) = domain
        .anchors
        .iter()
        .partition(|a| a.not_before <= now_time && now_time <= a.not_after);
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| VerifyError::BadEncoding)?;
    let verify = |anchors: &[TrustAnchor<'_>]| {
        ee.verify_for_usage(algs.all, anchors, intermediates, now, usage, None, None)
            .map(|_| ())
    };
    match verify(&borrow_anchors(&current)) {
        Ok(()) => Ok(id),
        Err(error) => {
            // Would a root outside its validity have accepted the chain? Then say so.
            for entry in outside {
                if verify(&borrow_anchors(&[entry])).is_ok() {
                    return Err(if entry.not_after < now_time {
                        VerifyError::ExpiredRoot(td)
                    } else {
                        VerifyError::RootNotYetValid(td)
                    });
                }
            }
            Err(VerifyError::Chain(error))
        }
    }
}

/// Trust anchors borrowing from the entries (no copies of the root material per handshake).
fn borrow_anchors<'a>(entries: &[&'a AnchorEntry]) -> Vec<TrustAnchor<'a>> {
    entries
        .iter()
        .map(|e| TrustAnchor {
            subject: e.anchor.subject.as_ref().into(),
            subject_public_key_info: e.anchor.subject_public_key_info.as_ref().into(),
            name_constraints: e
                .anchor
                .name_constraints
                .as_ref()
                .map(|n| n.as_ref().into()),
        })
        .collect()
}

/// The server-certificate verifier of a mesh client: accepts a server whose SVID verifies
/// against its own trust domain's roots and whose ID the [`Authorizer`] allows (the expected
/// identities of the upstream).
#[derive(Debug)]
pub struct MeshServerVerifier {
    bundles: SharedBundles,
    authorizer: Authorizer,
    algs: WebPkiSupportedAlgorithms,
    unknown_issuer: Option<UnknownIssuerObserver>,
}

impl MeshServerVerifier {
    /// A verifier over shared bundles, allowing the IDs `authorizer` allows.
    pub fn new(bundles: SharedBundles, authorizer: Authorizer) -> Self {
        Self {
            bundles,
            authorizer,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
            unknown_issuer: None,
        }
    }

    /// The same verifier, telling `observer` about servers whose chain ends at no root held.
    pub fn observing_unknown_issuers(mut self, observer: Option<UnknownIssuerObserver>) -> Self {
        self.unknown_issuer = observer;
        self
    }

    /// Runs every check on a server chain at `now` and returns the server's ID.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        verify_svid(
            &self.bundles.load(),
            &self.algs,
            &self.authorizer,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .inspect_err(|error| {
            if let Some(observer) = &self.unknown_issuer {
                observer.observe(error, end_entity);
            }
        })
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(|e| e.to_rustls())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The client-certificate verifier of a mesh server. It sends no root hints (the federated
/// roots' names are nobody's business).
#[derive(Debug)]
pub struct MeshClientVerifier {
    bundles: SharedBundles,
    authorizer: Authorizer,
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
    unknown_issuer: Option<UnknownIssuerObserver>,
}

impl MeshClientVerifier {
    /// A verifier over shared bundles; `client_auth` says whether a certificate is required and
    /// whose are accepted.
    pub fn new(bundles: SharedBundles, client_auth: ClientAuth) -> Self {
        let (authorizer, mandatory) = match client_auth {
            ClientAuth::Required(a) => (a, true),
            ClientAuth::Optional(a) => (a, false),
        };
        Self {
            bundles,
            authorizer,
            mandatory,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
            unknown_issuer: None,
        }
    }

    /// The same verifier, telling `observer` about clients whose chain ends at no root held.
    pub fn observing_unknown_issuers(mut self, observer: Option<UnknownIssuerObserver>) -> Self {
        self.unknown_issuer = observer;
        self
    }

    /// Runs every check on a client chain at `now` and returns the client's ID.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        verify_svid(
            &self.bundles.load(),
            &self.algs,
            &self.authorizer,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .inspect_err(|error| {
            if let Some(observer) = &self.unknown_issuer {
                observer.observe(error, end_entity);
            }
        })
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|e| e.to_rustls())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The current time as rustls passes it to verifiers.
pub fn unix_now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests;
