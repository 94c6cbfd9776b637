//! The credential store: `credentialName` looked up as a folder of PEM files, the way Istio reads
//! a Kubernetes TLS secret. A folder holds `tls.crt`/`tls.key`/`ca.crt` (the `kubernetes.io/tls`
//! keys) or `cert`/`key`/`cacert` (Istio's generic keys), and optionally `ca.crl` or `crl`. The
//! CA for client certificates may instead live in a separate `<name>-cacert` folder.
//!
//! A server's certificate that does not load any more (caught half-written during a rotation:
//! a new certificate beside the old key, a truncated file) is not dropped: the last good one of
//! that credential stays in force (`LastGood`), as Envoy keeps a secret whose update it rejects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strait_proxy::snapshot::CertificateKeyPair;

/// The PEM material of one credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `credential NAME` (for logs and `config_dump`; never the key).
    pub source: String,
    pub certificate_chain: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub crl: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("certificate_chain", &self.certificate_chain.is_some())
            .field("ca_certificates", &self.ca_certificates.is_some())
            .finish_non_exhaustive()
    }
}

/// The last certificate each server credential (or certificate file) was served with, by its
/// source, kept from one compilation to the next.
#[derive(Clone, Debug, Default)]
pub struct LastGood(Arc<Mutex<HashMap<String, CertificateKeyPair>>>);

impl LastGood {
    /// The last good certificate from `source`.
    pub fn get(&self, source: &str) -> Option<CertificateKeyPair> {
        self.0.lock().ok()?.get(source).cloned()
    }

    /// Records a certificate that loaded as the last good one of its source.
    pub fn remember(&self, pair: &CertificateKeyPair) {
        if let Ok(mut pairs) = self.0.lock() {
            pairs.insert(pair.source.clone(), pair.clone());
        }
    }
}

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential {0:?}: no credential directory is configured (--credentials)")]
    NoStore(String),
    #[error("credential {0:?}: a credential name is one path segment (no '/', '.' or '..')")]
    InvalidName(String),
    #[error("credential {name:?}: {path} does not exist")]
    NotFound { name: String, path: PathBuf },
    #[error("credential {name:?}: reading {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential {name:?}: {path} holds neither tls.crt and tls.key nor cert and key")]
    NoCertificate { name: String, path: PathBuf },
    #[error("credential {name:?}: no CA certificates in {path} nor in {name}-cacert")]
    NoCaCertificates { name: String, path: PathBuf },
}

/// Key names in the order they are looked for: the `kubernetes.io/tls` names first.
const CERTIFICATE: [&str; 2] = ["tls.crt", "cert"];
const KEY: [&str; 2] = ["tls.key", "key"];
const CA: [&str; 2] = ["ca.crt", "cacert"];
const CRL: [&str; 2] = ["ca.crl", "crl"];

/// Reads credential `name` from the folder `store/name`.
pub fn load(store: Option<&Path>, name: &str) -> Result<Credential, CredentialError> {
    let folder = folder(store, name)?;
    if !folder.is_dir() {
        return Err(CredentialError::NotFound {
            name: name.to_owned(),
            path: folder,
        });
    }
    Ok(Credential {
        source: format!("credential {name}"),
        certificate_chain: read_first(&folder, name, &CERTIFICATE)?,
        private_key: read_first(&folder, name, &KEY)?,
        ca_certificates: read_first(&folder, name, &CA)?,
        crl: read_first(&folder, name, &CRL)?,
    })
}

/// Reads a server credential: a certificate and key are required.
pub fn load_certificate(
    store: Option<&Path>,
    name: &str,
) -> Result<(String, String, Credential), CredentialError> {
    let credential = load(store, name)?;
    match (&credential.certificate_chain, &credential.private_key) {
        (Some(chain), Some(key)) => Ok((chain.clone(), key.clone(), credential)),
        _ => Err(CredentialError::NoCertificate {
            name: name.to_owned(),
            path: folder(store, name)?,
        }),
    }
}

/// The CA certificates (and CRL) for verifying the peer of credential `name` (the clients of a
/// server's credential, or the server a DestinationRule's credential originates TLS to): its own
/// `ca.crt`, else the `<name>-cacert` credential's, as Istio looks them up for MUTUAL.
pub fn load_client_ca(
    store: Option<&Path>,
    name: &str,
    credential: &Credential,
) -> Result<(String, Option<String>), CredentialError> {
    if let Some(ca) = &credential.ca_certificates {
        return Ok((ca.clone(), credential.crl.clone()));
    }
    let separate = format!("{name}-cacert");
    let separate_folder = folder(store, &separate)?;
    if separate_folder.is_dir() {
        let ca = load(store, &separate)?;
        if let Some(certificates) = ca.ca_certificates.or(ca.certificate_chain) {
            return Ok((certificates, ca.crl.or_else(|| credential.crl.clone())));
        }
    }
    Err(CredentialError::NoCaCertificates {
        name: name.to_owned(),
        path: folder(store, name)?,
    })
}

fn folder(store: Option<&Path>, name: &str) -> Result<PathBuf, CredentialError> {
    let Some(store) = store else {
        return Err(CredentialError::NoStore(name.to_owned()));
    };
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(CredentialError::InvalidName(name.to_owned()));
    }
    Ok(store.join(name))
}

fn read_first(
    folder: &Path,
    name: &str,
    files: &[&str],
) -> Result<Option<String>, CredentialError> {
    for file in files {
        let path = folder.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CredentialError::Read {
                    name: name.to_owned(),
                    path,
                    source,
                });
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "strait-credentials-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn both_key_layouts_are_read() {
        let root = store();
        write(
            &root.join("tls"),
            &[("tls.crt", "C1"), ("tls.key", "K1"), ("ca.crt", "A1")],
        );
        write(
            &root.join("generic"),
            &[
                ("cert", "C2"),
                ("key", "K2"),
                ("cacert", "A2"),
                ("crl", "R2"),
            ],
        );
        let (chain, key, tls) = load_certificate(Some(&root), "tls").unwrap();
        assert_eq!((chain.as_str(), key.as_str()), ("C1", "K1"));
        assert_eq!(tls.ca_certificates.as_deref(), Some("A1"));
        let (chain, key, generic) = load_certificate(Some(&root), "generic").unwrap();
        assert_eq!((chain.as_str(), key.as_str()), ("C2", "K2"));
        assert_eq!(generic.crl.as_deref(), Some("R2"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_client_ca_may_live_in_a_separate_cacert_credential() {
        let root = store();
        write(&root.join("web"), &[("tls.crt", "C"), ("tls.key", "K")]);
        write(
            &root.join("web-cacert"),
            &[("ca.crt", "CA"), ("ca.crl", "CRL")],
        );
        let (_, _, web) = load_certificate(Some(&root), "web").unwrap();
        let (ca, crl) = load_client_ca(Some(&root), "web", &web).unwrap();
        assert_eq!((ca.as_str(), crl.as_deref()), ("CA", Some("CRL")));
        std::fs::remove_dir_all(root.join("web-cacert")).unwrap();
        let missing = load_client_ca(Some(&root), "web", &web).unwrap_err();
        assert!(missing.to_string().contains("web-cacert"), "{missing}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_cannot_leave_the_store_and_missing_parts_are_named() {
        let root = store();
        for name in ["../etc", "a/b", "..", ""] {
            assert!(
                matches!(
                    load(Some(&root), name),
                    Err(CredentialError::InvalidName(_))
                ),
                "{name}"
            );
        }
        assert!(matches!(load(None, "x"), Err(CredentialError::NoStore(_))));
        assert!(matches!(
            load(Some(&root), "absent"),
            Err(CredentialError::NotFound { .. })
        ));
        write(&root.join("keyless"), &[("tls.crt", "C")]);
        let error = load_certificate(Some(&root), "keyless").unwrap_err();
        assert!(
            error.to_string().contains("neither tls.crt and tls.key"),
            "{error}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
