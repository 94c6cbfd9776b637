//! TLS origination towards endpoints (DestinationRule `tls.mode: SIMPLE` and `MUTUAL`): the
//! rustls client configuration, the SNI, and the names the server's certificate must hold.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::server::{TlsConfigError, certified_key, provider, root_store};
use crate::snapshot::{CertificateKeyPair, UpstreamProtocol, UpstreamTls};
use crate::upstream::connect::TlsOrigination;

/// The TLS origination for a cluster, and the identity of its settings (for pool keys), or
/// `None` when the cluster speaks plaintext.
pub(crate) fn origination(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Option<(Arc<TlsOrigination>, String)>, TlsConfigError> {
    let (sni, ca, names, client) = match tls {
        // Mesh mTLS comes from the proxy's identity, not from the snapshot (`tls::mesh`).
        UpstreamTls::Disabled | UpstreamTls::IstioMutual { .. } => return Ok(None),
        UpstreamTls::Simple {
            sni,
            ca_certificates,
            subject_alt_names,
        } => (sni, ca_certificates, subject_alt_names, None),
        UpstreamTls::Mutual {
            sni,
            ca_certificates,
            subject_alt_names,
            certificate_chain,
            private_key,
        } => (
            sni,
            ca_certificates,
            subject_alt_names,
            Some(CertificateKeyPair {
                source: "the cluster's client certificate".to_owned(),
                certificate_chain: certificate_chain.clone(),
                private_key: private_key.clone(),
            }),
        ),
    };
    let Some(sni) = sni.clone() else {
        return Err(TlsConfigError::NoServerName);
    };
    let Some(ca) = ca else {
        return Err(TlsConfigError::CaCertificates(
            "caCertificates are required to originate TLS (the system's roots are not used yet)"
                .to_owned(),
        ));
    };
    let provider = provider(&[])?;
    let roots = Arc::new(root_store(ca)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsConfigError::CaCertificates(e.to_string()))?;
    let expected: Vec<ServerName<'static>> = names
        .iter()
        .filter_map(|n| ServerName::try_from(n.clone()).ok())
        .collect();
    let verifier = Arc::new(NamesVerifier { webpki, expected });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let (chain, key) = certified_key(pair)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Downstream => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let server_name = ServerName::try_from(sni.clone())
        .map_err(|_| TlsConfigError::InvalidServerName(sni.clone()))?;
    let key = format!(
        "sni={sni};names={names:?};ca={:x};client={:x}",
        fingerprint(ca),
        client
            .as_ref()
            .map_or(0, |c| fingerprint(&c.certificate_chain))
    );
    Ok(Some((
        Arc::new(TlsOrigination {
            config: Arc::new(config),
            server_name,
        }),
        key,
    )))
}

/// Whether TLS can be originated with `tls` (the CA certificates, client certificate and SNI
/// load), as installing a snapshot would find out: for checking a cluster before it is built.
pub fn check(tls: &UpstreamTls) -> Result<(), TlsConfigError> {
    origination(tls, UpstreamProtocol::Http1).map(|_| ())
}

/// A short fingerprint of PEM text, to tell settings apart in pool keys.
fn fingerprint(text: &str) -> u64 {
    crate::upstream::lb::stable_hash(text.as_bytes())
}

/// Verifies the server's chain with webpki and its name against `expected` (any of them), or
/// against the SNI when none are given.
#[derive(Debug)]
struct NamesVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    expected: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.expected.is_empty() {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let mut last = None;
        for name in &self.expected {
            match self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(rustls::Error::General(
            "no subject alt name to check".to_owned(),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
