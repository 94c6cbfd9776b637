//! The CA material on disk (Istio's plug-in files): reading `ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem` and `root-cert.pem`, and checking that they form a usable issuing chain.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use super::{AuthorityError, bad_file, files};
use crate::bundle::parse_pem_certs;
use crate::fs;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::x509;

/// The four plug-in files as read from a directory.
pub(super) struct Material {
    dir: PathBuf,
    pub(super) ca_cert: CertificateDer<'static>,
    pub(super) ca_key: KeyPair,
    chain: Vec<CertificateDer<'static>>,
    pub(super) roots: Vec<CertificateDer<'static>>,
}

/// What checking the material found.
pub(super) struct Checked {
    pub(super) intermediates: Vec<CertificateDer<'static>>,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

impl Material {
    pub(super) fn read(dir: &Path) -> Result<Self, AuthorityError> {
        let read_certs = |name: &str| -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
            let path = dir.join(name);
            parse_pem_certs(&fs::read_text(&path)?).map_err(|e| bad_file(&path, e))
        };
        let ca_cert = read_certs(files::CA_CERT)?
            .into_iter()
            .next()
            .ok_or_else(|| bad_file(&dir.join(files::CA_CERT), "no certificate"))?;
        let key_path = dir.join(files::CA_KEY);
        let ca_key =
            KeyPair::from_pem(&fs::read_text(&key_path)?).map_err(|e| bad_file(&key_path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
            chain: read_certs(files::CERT_CHAIN)?,
            roots: read_certs(files::ROOT_CERT)?,
        })
    }

    /// Checks the key against `ca-cert.pem`, that it may sign, and that `cert-chain.pem` starts
    /// with it and links signature by signature up to one of the roots.
    pub(super) fn check(&self, trust_domain: &TrustDomain) -> Result<Checked, AuthorityError> {
        let ca_path = self.dir.join(files::CA_CERT);
        let ca = x509::parse_cert(&self.ca_cert)
            .ok_or_else(|| bad_file(&ca_path, "not a DER X.509 certificate"))?;
        if ca.public_key().raw != self.ca_key.subject_public_key_info().as_slice() {
            return Err(AuthorityError::KeyMismatch {
                path: self.dir.join(files::CA_KEY),
                cert: ca_path,
            });
        }
        if !may_sign_certificates(&ca) {
            return Err(AuthorityError::NotACa { path: ca_path });
        }
        if let Some(td) = spiffe_trust_domain(&ca)
            && td != trust_domain.as_str()
        {
            return Err(AuthorityError::BrokenChain(format!(
                "the issuing CA names trust domain {td}, not {trust_domain}"
            )));
        }
        if self.chain.first() != Some(&self.ca_cert) {
            return Err(AuthorityError::BrokenChain(format!(
                "{} does not start with {}",
                files::CERT_CHAIN,
                files::CA_CERT
            )));
        }

        let roots = self
            .roots
            .iter()
            .map(|r| parse(r, files::ROOT_CERT))
            .collect::<Result<Vec<_>, _>>()?;
        let mut intermediates = Vec::new();
        let mut not_before = SystemTime::UNIX_EPOCH;
        let mut not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
        let mut i = 0;
        loop {
            let der = &self.chain[i];
            let cert = parse(der, files::CERT_CHAIN)?;
            if !may_sign_certificates(&cert) {
                return Err(AuthorityError::BrokenChain(format!(
                    "certificate {i} of {} is not a CA",
                    files::CERT_CHAIN
                )));
            }
            let (nb, na) = x509::validity(&cert);
            not_before = not_before.max(nb);
            not_after = not_after.min(na);
            if self.roots.contains(der) {
                // The issuing CA is itself a root (a one-level plug-in CA).
                break;
            }
            intermediates.push(der.clone());
            match self.chain.get(i + 1) {
                Some(next) if !self.roots.contains(next) => {
                    let parent = parse(next, files::CERT_CHAIN)?;
                    cert.verify_signature(Some(parent.public_key()))
                        .map_err(|_| {
                            AuthorityError::BrokenChain(format!(
                                "certificate {i} of {} is not signed by certificate {}",
                                files::CERT_CHAIN,
                                i + 1
                            ))
                        })?;
                    i += 1;
                }
                _ => {
                    let root = roots
                        .iter()
                        .find(|r| cert.verify_signature(Some(r.public_key())).is_ok())
                        .ok_or_else(|| {
                            AuthorityError::BrokenChain(format!(
                                "{} does not lead to a root in {}",
                                files::CERT_CHAIN,
                                files::ROOT_CERT
                            ))
                        })?;
                    let (rnb, rna) = x509::validity(root);
                    not_before = not_before.max(rnb);
                    not_after = not_after.min(rna);
                    break;
                }
            }
        }
        Ok(Checked {
            intermediates,
            not_before,
            not_after,
        })
    }
}

fn parse<'a>(
    der: &'a CertificateDer<'_>,
    what: &str,
) -> Result<X509Certificate<'a>, AuthorityError> {
    x509::parse_cert(der)
        .ok_or_else(|| AuthorityError::BrokenChain(format!("{what} is not a certificate")))
}

pub(super) fn may_sign_certificates(cert: &X509Certificate<'_>) -> bool {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let can_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    is_ca && can_sign
}

/// The trust domain of a certificate's `spiffe://` URI SAN, if it has one.
fn spiffe_trust_domain(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => SpiffeId::parse(uri)
            .ok()
            .map(|id| id.trust_domain_name().to_owned()),
        _ => None,
    })
}
