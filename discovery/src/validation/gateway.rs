//! Gateway rules: servers, their ports, hosts and TLS settings (the TLS rules are shared with
//! Sidecar ingress listeners).

use std::collections::BTreeSet;

use super::check::Check;
use super::rules;
use crate::resources::common::{Port, Protocol};
use crate::resources::gateway::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::yaml::FieldPath;

pub(crate) fn validate(check: &mut Check<'_>, spec: &FieldPath, gateway: &Gateway) {
    let name = check.object().name();
    if !name.is_empty() && !rules::is_dns1123_label(name) {
        check.error(
            &FieldPath::ROOT.field("metadata").field("name"),
            "invalid-value",
            format!("invalid gateway name {name:?}: it must be a DNS-1123 label (no dots)"),
        );
    }
    let servers = spec.field("servers");
    if gateway.servers.is_empty() {
        check.error(
            &servers,
            "required",
            "gateway must have at least one server",
        );
    }
    let mut port_names = BTreeSet::new();
    for (i, server) in gateway.servers.iter().enumerate() {
        let at = servers.index(i);
        if let Some(name) = server.port.as_ref().and_then(|p| p.name.as_ref())
            && !port_names.insert(name.as_str())
        {
            check.error(
                &at.field("port").field("name"),
                "duplicate",
                format!("port names in servers must be unique: duplicate name {name}"),
            );
        }
        validate_server(check, &at, server);
    }
}

fn validate_server(check: &mut Check<'_>, path: &FieldPath, server: &Server) {
    let hosts = path.field("hosts");
    match &server.hosts {
        None => check.required(&hosts),
        Some(list) if list.is_empty() => check.error(
            &hosts,
            "required",
            "server config must contain at least one host",
        ),
        Some(list) => {
            for (i, host) in list.iter().enumerate() {
                rules::namespace_slash_host(check, &hosts.index(i), host, true);
            }
        }
    }

    let unix_bind = server
        .bind
        .as_deref()
        .and_then(|b| b.strip_prefix("unix://"));
    let protocol = match &server.port {
        None => {
            check.required(&path.field("port"));
            None
        }
        Some(port) => server_port(check, &path.field("port"), port, unix_bind.is_some()),
    };
    match (unix_bind, server.bind.as_deref()) {
        (Some(socket), _) => {
            rules::unix_address(check, &path.field("bind"), socket);
            if server
                .port
                .as_ref()
                .and_then(|p| p.number)
                .is_some_and(|n| n != 0)
            {
                check.error(
                    &path.field("port").field("number"),
                    "invalid-port",
                    "port number must be 0 for unix domain socket",
                );
            }
        }
        (None, Some(bind)) if !bind.is_empty() => {
            rules::ip_address(check, &path.field("bind"), bind);
        }
        _ => {}
    }

    let tls_path = path.field("tls");
    if let Some(tls) = &server.tls {
        server_tls(check, &tls_path, tls);
        if tls.https_redirect == Some(true) && protocol.is_some_and(|p| !p.is_http()) {
            check.warning(
                &tls_path.field("httpsRedirect"),
                "ignored",
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }
    let Some(protocol) = protocol else { return };
    match &server.tls {
        None if protocol.is_tls() => check.error(
            &path.field("port").field("protocol"),
            "required",
            "server must have TLS settings for HTTPS/TLS protocols",
        ),
        Some(tls) if !protocol.is_tls() => {
            let passthrough = matches!(
                tls.mode.unwrap_or_default(),
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            );
            let has_certificates = tls.ca_certificates.is_some()
                || tls.private_key.is_some()
                || tls.server_certificate.is_some();
            if protocol.is_http() {
                if !passthrough || has_certificates {
                    check.error(
                        &tls_path,
                        "conflict",
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            } else {
                check.error(
                    &tls_path,
                    "conflict",
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            }
        }
        _ => {}
    }
}

/// A Gateway server port: number, name and protocol are all required.
fn server_port(
    check: &mut Check<'_>,
    path: &FieldPath,
    port: &Port,
    unix_bind: bool,
) -> Option<Protocol> {
    match port.number {
        None => check.required(&path.field("number")),
        Some(0) if unix_bind => {}
        Some(number) => {
            rules::port(check, &path.field("number"), number);
        }
    }
    match &port.name {
        None => check.required(&path.field("name")),
        Some(name) if name.is_empty() => {
            check.error(&path.field("name"), "required", "port name must be set")
        }
        Some(_) => {}
    }
    if port.target_port.is_some_and(|t| t > 0) {
        check.error(
            &path.field("targetPort"),
            "invalid-value",
            "targetPort has no impact on Gateways",
        );
    }
    let Some(name) = &port.protocol else {
        check.required(&path.field("protocol"));
        return None;
    };
    let protocol = Protocol::parse(name);
    if protocol.is_none() {
        check.error(
            &path.field("protocol"),
            "unsupported-value",
            format!(
                "invalid protocol {name:?}, supported protocols are HTTP, HTTPS, HTTP2, GRPC, \
                 GRPC-WEB, TLS, TCP, MONGO, REDIS, MYSQL"
            ),
        );
    }
    protocol
}

/// Cipher suite names Envoy accepts for TLS 1.2 and below.
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Server-side TLS settings: which certificate sources may be combined with which mode.
pub(crate) fn server_tls(check: &mut Check<'_>, path: &FieldPath, tls: &ServerTlsSettings) {
    let mode = tls.mode.unwrap_or_default();
    let mode_name = match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    };

    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::V1_0 | TlsProtocol::V1_1)
    ) && tls.cipher_suites.is_empty()
    {
        check.warning(
            &path.field("minProtocolVersion"),
            "tls-ciphers",
            "TLS versions below TLSV1_2 require setting compatible ciphers, as the default ciphers \
             no longer include them",
        );
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version)
        && min != TlsProtocol::Auto
        && max != TlsProtocol::Auto
        && min > max
    {
        check.error(
            &path.field("minProtocolVersion"),
            "conflict",
            "minProtocolVersion is above maxProtocolVersion: no TLS version is allowed",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, suite) in tls.cipher_suites.iter().enumerate() {
        let known = suite.is_empty()
            || suite == "ALL"
            || !suite.starts_with(|c: char| c.is_ascii_alphanumeric())
            || CIPHER_SUITES.contains(&suite.as_str());
        let at = path.field("cipherSuites").index(i);
        if !known {
            check.warning(
                &at,
                "tls-ciphers",
                format!("ignoring invalid cipher suite {suite:?}"),
            );
        } else if !seen.insert(suite) {
            check.warning(
                &at,
                "tls-ciphers",
                format!("ignoring duplicate cipher suite {suite:?}"),
            );
        }
    }
    for (field, list) in [
        (
            "credentialNames",
            tls.credential_names.as_ref().map(Vec::len),
        ),
        (
            "tlsCertificates",
            tls.tls_certificates.as_ref().map(Vec::len),
        ),
    ] {
        match list {
            Some(0) => check.error(
                &path.field(field),
                "invalid-value",
                "should have at least 1 items",
            ),
            Some(n) if n > 2 => check.error(
                &path.field(field),
                "invalid-value",
                "must have at most 2 items (one RSA and one ECDSA certificate)",
            ),
            _ => {}
        }
    }

    let credential_names = tls.credential_names.as_ref().is_some_and(|l| !l.is_empty());
    let tls_certificates = tls.tls_certificates.as_ref().is_some_and(|l| !l.is_empty());
    if mode == ServerTlsMode::IstioMutual {
        for (field, set) in [
            ("serverCertificate", tls.server_certificate.is_some()),
            ("privateKey", tls.private_key.is_some()),
            ("caCertificates", tls.ca_certificates.is_some()),
            ("credentialName", tls.credential_name.is_some()),
            ("credentialNames", credential_names),
            ("tlsCertificates", tls_certificates),
        ] {
            if set {
                check.error(
                    &path.field(field),
                    "conflict",
                    format!("ISTIO_MUTUAL TLS cannot have associated {field}: the workload certificate is used"),
                );
            }
        }
        return;
    }
    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) {
        let any = tls.ca_crl.is_some()
            || tls.server_certificate.is_some()
            || tls.private_key.is_some()
            || tls.ca_certificates.is_some()
            || tls.credential_name.is_some()
            || credential_names
            || tls_certificates;
        if any {
            check.warning(
                path,
                "ignored",
                format!("{mode_name} mode does not terminate TLS: its certificates are ignored"),
            );
        }
    }
    let sources = [
        tls.server_certificate.is_some() && tls.private_key.is_some(),
        tls.credential_name.is_some(),
        credential_names,
        tls_certificates,
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        check.error(
            path,
            "conflict",
            "only one of credentialName, credentialNames, serverCertificate/privateKey or \
             tlsCertificates can be set",
        );
    }
    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && (tls.credential_name.is_some() || credential_names) {
        // Certificates, keys and CRLs come from the credential.
        return;
    }
    if terminating {
        let prefix = if mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != ServerTlsMode::Simple && tls.ca_certificates.as_deref().unwrap_or("").is_empty()
        {
            check.error(
                &path.field("caCertificates"),
                "required",
                format!("{prefix} requires a client CA bundle (caCertificates or credentialName)"),
            );
        }
        match &tls.tls_certificates {
            Some(certificates) if !certificates.is_empty() => {
                for (i, certificate) in certificates.iter().enumerate() {
                    let at = path.field("tlsCertificates").index(i);
                    if certificate
                        .server_certificate
                        .as_deref()
                        .unwrap_or("")
                        .is_empty()
                    {
                        check.error(
                            &at.field("serverCertificate"),
                            "required",
                            format!("{prefix} requires a server certificate"),
                        );
                    }
                    if certificate.private_key.as_deref().unwrap_or("").is_empty() {
                        check.error(
                            &at.field("privateKey"),
                            "required",
                            format!("{prefix} requires a private key"),
                        );
                    }
                }
            }
            _ => {
                if tls.server_certificate.as_deref().unwrap_or("").is_empty() {
                    check.error(
                        &path.field("serverCertificate"),
                        "required",
                        format!("{prefix} requires a server certificate (or a credentialName)"),
                    );
                }
                if tls.private_key.as_deref().unwrap_or("").is_empty() {
                    check.error(
                        &path.field("privateKey"),
                        "required",
                        format!("{prefix} requires a private key (or a credentialName)"),
                    );
                }
            }
        }
    }
    if tls.ca_crl.as_deref().is_some_and(|c| !c.is_empty()) {
        if tls.credential_name.is_some() {
            check.error(
                &path.field("caCrl"),
                "conflict",
                "CRL is not supported with credentialName: put the CRL in the credential (ca.crl)",
            );
        } else if mode == ServerTlsMode::Simple {
            check.error(
                &path.field("caCrl"),
                "conflict",
                "CRL is not supported with SIMPLE TLS: no client certificate is checked",
            );
        }
    }
}
