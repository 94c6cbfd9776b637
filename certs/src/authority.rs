//! The cluster CA: a root and an online issuing intermediate kept as files, and SVID issuance.
//!
//! # Layout of the CA directory
//!
//! The layout is Istio's plug-in CA layout plus two files of our own, so an Istio `cacerts`
//! secret and a directory made by [`Authority::init`] are read the same way:
//!
//! | file | content | mode |
//! |---|---|---|
//! | `authority.json` | trust domain, origin (`self-signed` or `plug-in`), issuance limits, bundle sequence and the digest of the roots it stands for; written last | 0644 |
//! | `root-cert.pem` | the trust domain's roots (the trust bundle) | 0644 |
//! | `root-key.pem` | the root's key (`init` only; move it offline once the intermediate exists) | 0600 |
//! | `ca-cert.pem` | the issuing CA certificate | 0644 |
//! | `ca-key.pem` | the issuing CA key | 0600 |
//! | `cert-chain.pem` | `ca-cert.pem`, its parents, then the root | 0644 |
//! | `rotation.json` | where a root rotation stands ([`root_rotation`]) | 0644 |
//! | `next/`, `previous/` | during a rotation: the next root and intermediate, then the replaced signing files, in the same layout | 0700 |
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of the directory); the
//! directory is owner-only.
//!
//! # Issuance
//!
//! A leaf carries only what the CA grants: the public key of the request and the SPIFFE ID the
//! caller was authenticated as. Everything else the CSR asks for (subject, SANs, CA:TRUE, key
//! usages, other extensions) is ignored. The request's self-signature is checked (proof of
//! possession), requests over [`MAX_CSR_BYTES`] are refused, and only ECDSA P-256 keys are
//! accepted, the one key type every mesh proxy uses. The leaf: NotBefore backdated by
//! [`CLOCK_SKEW_BACKDATE`], NotAfter = now + TTL capped at the earliest NotAfter of the issuing
//! chain, empty subject, one critical URI SAN, critical key usage digitalSignature, EKU
//! serverAuth + clientAuth, CA:FALSE, a random 128-bit serial, AKI and SKI. The CA refuses to
//! issue once its chain has expired.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::bundle::{DEFAULT_REFRESH_HINT, TrustBundle, certs_to_pem};
use crate::fs::{self, FsError, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::x509::{self, Curve};

use material::Material;

/// Largest CSR accepted, in DER bytes (a P-256 request is about 300).
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// How far NotBefore is set back from the issue time, for clocks that run behind.
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(120);
/// Default workload certificate lifetime.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// File names inside the CA directory.
pub mod files {
    /// Metadata of the authority, written last.
    pub const AUTHORITY: &str = "authority.json";
    /// The trust domain's roots.
    pub const ROOT_CERT: &str = "root-cert.pem";
    /// The root key (self-signed authorities only).
    pub const ROOT_KEY: &str = "root-key.pem";
    /// The issuing CA certificate.
    pub const CA_CERT: &str = "ca-cert.pem";
    /// The issuing CA key.
    pub const CA_KEY: &str = "ca-key.pem";
    /// The issuing CA certificate, its parents and the root.
    pub const CERT_CHAIN: &str = "cert-chain.pem";
    /// The state of a root rotation (see [`super::root_rotation`]).
    pub const ROTATION: &str = "rotation.json";
    /// The folder of the next root and intermediate, from `prepare` to `switch`.
    pub const NEXT: &str = "next";
    /// The folder of the replaced signing files, from `switch` to `finish`.
    pub const PREVIOUS: &str = "previous";
}

/// Lifetimes and limits of a new authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityOptions {
    /// Root lifetime (default 10 years).
    pub root_ttl: Duration,
    /// Issuing intermediate lifetime, capped at the root's (default 1 year).
    pub intermediate_ttl: Duration,
    /// Workload TTL when the caller asks for none (default 24 h).
    pub default_workload_ttl: Duration,
    /// Longest workload TTL granted; longer requests (and a longer default) are shortened
    /// (default 90 days).
    pub max_workload_ttl: Duration,
    /// `spiffe_refresh_hint` of the published bundle (default 5 minutes).
    pub refresh_hint: Duration,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
            intermediate_ttl: Duration::from_secs(365 * 24 * 3600),
            default_workload_ttl: DEFAULT_WORKLOAD_TTL,
            max_workload_ttl: Duration::from_secs(90 * 24 * 3600),
            refresh_hint: DEFAULT_REFRESH_HINT,
        }
    }
}

/// Why the CA could not be set up, loaded, or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0} already holds a certificate authority; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("{path}: the key does not match the certificate in {cert}")]
    KeyMismatch { path: PathBuf, cert: PathBuf },
    #[error("{path}: not a CA certificate allowed to sign certificates")]
    NotACa { path: PathBuf },
    #[error("the issuing chain is broken: {0}")]
    BrokenChain(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("CSR is {size} bytes, more than the {max} accepted")]
    CsrTooLarge { size: usize, max: usize },
    #[error("CSR is not a DER PKCS#10 request")]
    CsrMalformed,
    #[error("CSR signature does not verify (no proof of possession of the key)")]
    CsrBadSignature,
    #[error("CSR key is not ECDSA P-256")]
    CsrUnsupportedKey,
    #[error("{0} names a trust domain, not a workload (it has no path)")]
    NotAWorkloadId(SpiffeId),
    #[error("{id} is not in this CA's trust domain {expected}")]
    WrongTrustDomain { id: SpiffeId, expected: TrustDomain },
    #[error("the issuing chain expired or is not yet valid; the CA does not issue")]
    IssuerExpired,
    #[error("the system random number generator failed")]
    Random,
    /// A root rotation step asked for out of order, or on a CA it does not apply to.
    #[error("{0}")]
    RotationOrder(String),
    /// `finish` while certificates issued under the old root may still be in use.
    #[error(
        "certificates issued under the old root may be in use until {until_unix} (Unix time, {left_secs} s from now); finishing now fails their handshakes. Wait, or pass --force once every workload has renewed"
    )]
    OldCertificatesLive { until_unix: u64, left_secs: u64 },
}

/// Where an authority's keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorityOrigin {
    /// Made by [`Authority::init`]: our own root and intermediate.
    SelfSigned,
    /// Istio plug-in CA files taken by [`Authority::plug_in`].
    PlugIn,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthorityMeta {
    trust_domain: TrustDomain,
    origin: AuthorityOrigin,
    default_workload_ttl_secs: u64,
    max_workload_ttl_secs: u64,
    refresh_hint_secs: u64,
    bundle_sequence: u64,
    /// SHA-256 (hex) of the roots `bundle_sequence` was recorded for; see
    /// [`published_trust_bundle`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bundle_roots_sha256: Option<String>,
}

/// A certificate chain issued for one SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSvid {
    /// The identity granted.
    pub id: SpiffeId,
    /// Leaf first, then the intermediates up to (not including) the root.
    pub chain_der: Vec<CertificateDer<'static>>,
    /// The same chain as PEM.
    pub chain_pem: String,
    /// When the CA signed it.
    pub issued_at: SystemTime,
    /// The leaf's NotBefore (backdated from `issued_at`).
    pub not_before: SystemTime,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
}

/// The cluster CA, loaded from its directory.
pub struct Authority {
    dir: PathBuf,
    meta: AuthorityMeta,
    issuer: Issuer<'static, KeyPair>,
    /// The issuing CA certificate and its parents, without roots.
    intermediates: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    chain_not_before: SystemTime,
    chain_not_after: SystemTime,
    /// Hex SHA-256 of `ca-cert.pem`'s certificate: names the signing chain.
    issuer_sha256: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("trust_domain", &self.meta.trust_domain)
            .field("origin", &self.meta.origin)
            .field("chain_not_after", &self.chain_not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates a new root (CA:TRUE, pathlen 1, keyCertSign + cRLSign, ECDSA P-256) and an
    /// issuing intermediate (pathlen 0, valid inside the root) in `dir`, then loads them.
    /// Refuses a directory that already holds an authority.
    pub fn init(
        trust_domain: TrustDomain,
        dir: &Path,
        options: &AuthorityOptions,
    ) -> Result<Self, AuthorityError> {
        fs::create_private_dir(dir)?;
        if dir.join(files::AUTHORITY).exists() {
            return Err(AuthorityError::AlreadyInitialized(dir.to_path_buf()));
        }
        let ca = NewCa::generate(&trust_domain, options)?;
        ca.write(dir, &ca.root_pem)?;
        write_meta(
            dir,
            &new_meta(trust_domain, AuthorityOrigin::SelfSigned, options),
        )?;
        Self::load(dir)
    }

    /// Takes Istio plug-in CA files (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`) from `source`, checks that they form a valid issuing chain, copies them
    /// into `dir` and loads them. The trust domain is not in Istio's files, so it is given.
    pub fn plug_in(
        trust_domain: TrustDomain,
        source: &Path,
        dir: &Path,
        options: &AuthorityOptions,
    ) -> Result<Self, AuthorityError> {
        fs::create_private_dir(dir)?;
        if dir.join(files::AUTHORITY).exists() {
            return Err(AuthorityError::AlreadyInitialized(dir.to_path_buf()));
        }
        let material = Material::read(source)?;
        material.check(&trust_domain)?;
        for (name, mode) in [
            (files::ROOT_CERT, PUBLIC_FILE_MODE),
            (files::CA_CERT, PUBLIC_FILE_MODE),
            (files::CA_KEY, PRIVATE_FILE_MODE),
            (files::CERT_CHAIN, PUBLIC_FILE_MODE),
        ] {
            let text = fs::read_text(&source.join(name))?;
            write(dir, name, text.as_bytes(), mode)?;
        }
        write_meta(
            dir,
            &new_meta(trust_domain, AuthorityOrigin::PlugIn, options),
        )?;
        Self::load(dir)
    }

    /// Loads an authority written by [`Authority::init`] or [`Authority::plug_in`] (a restart).
    pub fn load(dir: &Path) -> Result<Self, AuthorityError> {
        let meta = read_meta(dir)?;
        let material = Material::read(dir)?;
        let checked = material.check(&meta.trust_domain)?;
        let issuer_sha256 = x509::sha256_hex(&material.ca_cert);
        let issuer = Issuer::from_ca_cert_der(&material.ca_cert, material.ca_key)
            .map_err(|e| bad_file(&dir.join(files::CA_CERT), e))?;
        Ok(Self {
            issuer_sha256,
            dir: dir.to_path_buf(),
            meta,
            issuer,
            intermediates: checked.intermediates,
            roots: material.roots,
            chain_not_before: checked.not_before,
            chain_not_after: checked.not_after,
        })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.meta.trust_domain
    }

    /// Where the CA's files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the keys were made here or plugged in.
    pub fn origin(&self) -> AuthorityOrigin {
        self.meta.origin
    }

    /// The earliest NotAfter of the issuing chain: no leaf outlives it, and the CA stops issuing
    /// then (export it as a metric; alert well before).
    pub fn chain_not_after(&self) -> SystemTime {
        self.chain_not_after
    }

    /// The hex SHA-256 of the issuing CA certificate: it names the signing chain, and changes
    /// when a root rotation switches (the CA stream carries it so proxies renew at once).
    pub fn issuer_sha256(&self) -> &str {
        &self.issuer_sha256
    }

    /// The issuing CA certificate and its parents, without roots.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// The bundle to publish for this trust domain.
    pub fn trust_bundle(&self) -> TrustBundle {
        TrustBundle {
            trust_domain: self.meta.trust_domain.clone(),
            roots: self.roots.clone(),
            sequence: self.meta.bundle_sequence,
            refresh_hint: Some(Duration::from_secs(self.meta.refresh_hint_secs)),
        }
    }

    /// Signs a CSR for `id`, taking only the request's public key (see the module docs).
    /// A zero `ttl` means the default workload TTL.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<IssuedSvid, AuthorityError> {
        let public_key = csr_public_key(csr_der)?;
        self.issue_for_key(&public_key, id, ttl)
    }

    /// Checks a CSR the way [`Authority::sign_csr`] does (size, encoding, proof of possession,
    /// key type) without issuing anything: lets a caller refuse bad input before it spends a
    /// one-time credential.
    pub fn check_csr(csr_der: &[u8]) -> Result<(), AuthorityError> {
        csr_public_key(csr_der).map(|_| ())
    }

    /// Makes a P-256 key here and issues a certificate for it: for workloads that cannot make
    /// their own CSR (`strait ca issue`), the one case where a key travels. Returns the PKCS#8
    /// PEM key and the chain.
    pub fn issue(
        &self,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<(String, IssuedSvid), AuthorityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let issued = self.issue_for_key(&key, id, ttl)?;
        Ok((key.serialize_pem(), issued))
    }

    fn issue_for_key(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<IssuedSvid, AuthorityError> {
        if id.is_trust_domain_id() {
            return Err(AuthorityError::NotAWorkloadId(id.clone()));
        }
        if id.trust_domain_name() != self.meta.trust_domain.as_str() {
            return Err(AuthorityError::WrongTrustDomain {
                id: id.clone(),
                expected: self.meta.trust_domain.clone(),
            });
        }
        let now = x509::whole_seconds(SystemTime::now());
        if now >= self.chain_not_after || now < self.chain_not_before {
            return Err(AuthorityError::IssuerExpired);
        }
        let requested = if ttl.is_zero() {
            Duration::from_secs(self.meta.default_workload_ttl_secs)
        } else {
            ttl
        };
        let ttl = requested.min(Duration::from_secs(self.meta.max_workload_ttl_secs));
        let not_after = x509::whole_seconds(now + ttl).min(self.chain_not_after);
        let not_before = now - CLOCK_SKEW_BACKDATE;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            id.as_str()
                .try_into()
                .map_err(|_| AuthorityError::NotAWorkloadId(id.clone()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let leaf = params.signed_by(public_key, &self.issuer)?;

        let mut chain_der = Vec::with_capacity(1 + self.intermediates.len());
        chain_der.push(leaf.der().clone());
        chain_der.extend(self.intermediates.iter().cloned());
        Ok(IssuedSvid {
            id: id.clone(),
            chain_pem: certs_to_pem(&chain_der),
            chain_der,
            issued_at: now,
            not_before,
            not_after,
        })
    }
}

/// The trust bundle the CA directory `dir` holds now, for publishing beyond this machine (the
/// SPIFFE bundle endpoint, `strait link`): `root-cert.pem` read again, with the bundle sequence
/// and refresh hint of `authority.json`. When the roots differ from those the sequence was
/// recorded for (an operator added or removed a root), the sequence is bumped and recorded
/// (atomically) before the bundle is returned, so the same sequence never stands for two sets
/// of roots, across restarts too: peers accept only a higher sequence.
pub fn published_trust_bundle(dir: &Path) -> Result<TrustBundle, AuthorityError> {
    let mut meta = read_meta(dir)?;
    let roots_path = dir.join(files::ROOT_CERT);
    let roots = crate::bundle::parse_pem_certs(&fs::read_text(&roots_path)?)
        .map_err(|e| bad_file(&roots_path, e))?;
    let digest = roots_digest(&roots);
    match &meta.bundle_roots_sha256 {
        Some(recorded) if *recorded == digest => {}
        recorded => {
            // The first record keeps the sequence: nothing was published under another set.
            if recorded.is_some() {
                meta.bundle_sequence += 1;
            }
            meta.bundle_roots_sha256 = Some(digest);
            write_meta(dir, &meta)?;
        }
    }
    Ok(TrustBundle {
        trust_domain: meta.trust_domain,
        roots,
        sequence: meta.bundle_sequence,
        refresh_hint: Some(Duration::from_secs(meta.refresh_hint_secs)),
    })
}

fn roots_digest(roots: &[CertificateDer<'_>]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for root in roots {
        context.update(&(root.len() as u64).to_be_bytes());
        context.update(root.as_ref());
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public key of a CSR that passes every check (size, DER, signature, ECDSA P-256).
fn csr_public_key(csr_der: &[u8]) -> Result<rcgen::SubjectPublicKeyInfo, AuthorityError> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(AuthorityError::CsrTooLarge {
            size: csr_der.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let csr = match X509CertificationRequest::from_der(csr_der) {
        Ok(([], csr)) => csr,
        _ => return Err(AuthorityError::CsrMalformed),
    };
    csr.verify_signature()
        .map_err(|_| AuthorityError::CsrBadSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    if x509::ec_curve(spki) != Some(Curve::P256) {
        return Err(AuthorityError::CsrUnsupportedKey);
    }
    rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| AuthorityError::CsrUnsupportedKey)
}

fn ca_params(
    trust_domain: &TrustDomain,
    common_name: &str,
    constraints: BasicConstraints,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain.as_str());
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(trust_domain.id_uri().try_into()?)];
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// A positive 128-bit serial from the system RNG.
fn random_serial() -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AuthorityError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A new self-signed root and its issuing intermediate (pathlen 0), as PEM, before they are
/// written: made by [`Authority::init`] and by a root rotation's `prepare`.
pub(crate) struct NewCa {
    pub(crate) root_pem: String,
    root_key_pem: String,
    ca_pem: String,
    ca_key_pem: String,
}

impl NewCa {
    /// A root (CA:TRUE, pathlen 1, keyCertSign + cRLSign, ECDSA P-256) and an intermediate
    /// valid inside it.
    pub(crate) fn generate(
        trust_domain: &TrustDomain,
        options: &AuthorityOptions,
    ) -> Result<Self, AuthorityError> {
        let now = x509::whole_seconds(SystemTime::now());
        let not_before = now - CLOCK_SKEW_BACKDATE;

        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut root_params = ca_params(
            trust_domain,
            "Strait Root CA",
            BasicConstraints::Constrained(1),
        )?;
        root_params.not_before = not_before.into();
        root_params.not_after = (now + options.root_ttl).into();
        let root_cert = root_params.self_signed(&root_key)?;

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut int_params = ca_params(
            trust_domain,
            "Strait Issuing CA",
            BasicConstraints::Constrained(0),
        )?;
        int_params.not_before = not_before.into();
        int_params.not_after = (now + options.intermediate_ttl.min(options.root_ttl)).into();
        int_params.use_authority_key_identifier_extension = true;
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        let ca_cert = int_params.signed_by(&ca_key, &root_issuer)?;
        Ok(Self {
            root_pem: root_cert.pem(),
            root_key_pem: root_key.serialize_pem(),
            ca_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
        })
    }

    /// Writes the plug-in files and the root key to `dir`, with `roots_pem` as
    /// `root-cert.pem`.
    pub(crate) fn write(&self, dir: &Path, roots_pem: &str) -> Result<(), AuthorityError> {
        write(
            dir,
            files::ROOT_CERT,
            roots_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        write(
            dir,
            files::ROOT_KEY,
            self.root_key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        write(
            dir,
            files::CA_CERT,
            self.ca_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        write(
            dir,
            files::CA_KEY,
            self.ca_key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        write(
            dir,
            files::CERT_CHAIN,
            format!("{}{}", self.ca_pem, self.root_pem).as_bytes(),
            PUBLIC_FILE_MODE,
        )
    }
}

fn new_meta(
    trust_domain: TrustDomain,
    origin: AuthorityOrigin,
    options: &AuthorityOptions,
) -> AuthorityMeta {
    AuthorityMeta {
        trust_domain,
        origin,
        default_workload_ttl_secs: options.default_workload_ttl.as_secs(),
        max_workload_ttl_secs: options.max_workload_ttl.as_secs(),
        refresh_hint_secs: options.refresh_hint.as_secs(),
        bundle_sequence: 1,
        bundle_roots_sha256: None,
    }
}

fn read_meta(dir: &Path) -> Result<AuthorityMeta, AuthorityError> {
    let path = dir.join(files::AUTHORITY);
    serde_json::from_str(&fs::read_text(&path)?).map_err(|e| bad_file(&path, e))
}

fn write_meta(dir: &Path, meta: &AuthorityMeta) -> Result<(), AuthorityError> {
    let path = dir.join(files::AUTHORITY);
    let text = serde_json::to_string_pretty(meta).map_err(|e| bad_file(&path, e))?;
    write(dir, files::AUTHORITY, text.as_bytes(), PUBLIC_FILE_MODE)
}

fn write(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), AuthorityError> {
    Ok(fs::write_atomic(&dir.join(name), contents, mode)?)
}

fn bad_file(path: &Path, reason: impl std::fmt::Display) -> AuthorityError {
    AuthorityError::BadFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

mod material;
pub mod root_rotation;

#[cfg(test)]
mod tests;
