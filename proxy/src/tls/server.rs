//! TLS termination: a rustls server configuration per filter chain, built from the snapshot's
//! certificate, client-certificate mode, versions, cipher suites and ALPN.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::snapshot::{CertificateKeyPair, ClientAuth, ServerTls, TlsVersion};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{source_name}: no certificate in the PEM")]
    NoCertificate { source_name: String },
    #[error("{source_name}: reading the certificate chain: {detail}")]
    Certificate { source_name: String, detail: String },
    #[error("{source_name}: reading the private key: {detail}")]
    PrivateKey { source_name: String, detail: String },
    #[error("the CA certificates: {0}")]
    CaCertificates(String),
    #[error("no SNI: originating TLS needs the server name to send")]
    NoServerName,
    #[error("{0:?} is not a valid server name for SNI")]
    InvalidServerName(String),
    #[error("no TLS version is left between the minimum and maximum")]
    NoVersion,
    #[error("none of the cipher suites {0:?} is supported")]
    NoCipherSuite(Vec<String>),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider everything uses: aws-lc-rs. Named cipher suites (Istio's `cipherSuites`,
/// OpenSSL names) narrow the TLS 1.2 suites; TLS 1.3's suites are always on, as in Envoy.
pub(crate) fn provider(cipher_suites: &[String]) -> Result<Arc<CryptoProvider>, TlsConfigError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !cipher_suites.is_empty() {
        let named = |suite: &SupportedCipherSuite| {
            openssl_name(*suite).is_some_and(|name| cipher_suites.iter().any(|n| n == name))
        };
        if !provider.cipher_suites.iter().any(named) {
            return Err(TlsConfigError::NoCipherSuite(cipher_suites.to_vec()));
        }
        provider
            .cipher_suites
            .retain(|suite| suite.tls13().is_some() || named(suite));
    }
    Ok(Arc::new(provider))
}

/// The OpenSSL name Istio uses for a TLS 1.2 suite.
fn openssl_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match suite.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// The protocol versions between `min` and `max` (rustls offers TLS 1.2 and 1.3).
pub(crate) fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsConfigError> {
    let all = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ];
    let chosen: Vec<_> = all
        .iter()
        .filter(|(v, _)| min.is_none_or(|m| *v >= m) && max.is_none_or(|m| *v <= m))
        .map(|(_, version)| *version)
        .collect();
    if chosen.is_empty() {
        return Err(TlsConfigError::NoVersion);
    }
    Ok(chosen)
}

/// Reads a certificate chain and its key.
pub(crate) fn certified_key(
    pair: &CertificateKeyPair,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(pair.certificate_chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Certificate {
            source_name: pair.source.clone(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            source_name: pair.source.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(pair.private_key.as_bytes()).map_err(|e| {
        TlsConfigError::PrivateKey {
            source_name: pair.source.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok((chain, key))
}

/// Root certificates from PEM.
pub(crate) fn root_store(pem: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|e| TlsConfigError::CaCertificates(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| TlsConfigError::CaCertificates(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::CaCertificates(
            "no certificate in the PEM".to_owned(),
        ));
    }
    Ok(roots)
}

/// Verifies client certificates against `ca_certificates`, and the CRL when there is one.
fn client_verifier(
    ca_certificates: &str,
    crl: Option<&str>,
    optional: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsConfigError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_certificates)?),
        provider,
    );
    if let Some(crl) = crl {
        let crls = CertificateRevocationListDer::pem_slice_iter(crl.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::CaCertificates(format!("the CRL: {e}")))?;
        if crls.is_empty() {
            return Err(TlsConfigError::CaCertificates(
                "the CRL holds no X509 CRL block".to_owned(),
            ));
        }
        builder = builder.with_crls(crls);
    }
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map_err(|e| TlsConfigError::CaCertificates(e.to_string()))
}

/// The rustls server configuration for a chain that terminates TLS.
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider(&tls.cipher_suites)?;
    let versions = versions(tls.min_version, tls.max_version)?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match &tls.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required {
            ca_certificates,
            crl,
        } => builder.with_client_cert_verifier(client_verifier(
            ca_certificates,
            crl.as_deref(),
            false,
            provider,
        )?),
        ClientAuth::Optional {
            ca_certificates,
            crl,
        } => builder.with_client_cert_verifier(client_verifier(
            ca_certificates,
            crl.as_deref(),
            true,
            provider,
        )?),
    };
    let (chain, key) = certified_key(&tls.certificate)?;
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}
