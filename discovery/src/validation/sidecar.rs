//! Sidecar rules: ingress and egress listeners, their ports, binds and hosts, and the outbound
//! traffic policy.

use std::collections::BTreeSet;

use super::check::Check;
use super::destination_rule::connection_pool_settings;
use super::gateway::server_tls;
use super::rules;
use crate::resources::common::{Port, Protocol};
use crate::resources::gateway::ServerTlsMode;
use crate::resources::sidecar::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficMode, Sidecar,
};
use crate::yaml::FieldPath;

pub(crate) fn validate(check: &mut Check<'_>, spec: &FieldPath, sidecar: &Sidecar) {
    let selector_ok = rules::label_selector(
        check,
        &spec.field("workloadSelector"),
        &sidecar.workload_selector,
        "sidecar",
    );
    if !selector_ok {
        return;
    }
    if sidecar.egress.is_empty()
        && sidecar.ingress.is_empty()
        && sidecar.outbound_traffic_policy.is_none()
        && sidecar.inbound_connection_pool.is_none()
    {
        check.error(spec, "required", "sidecar: empty configuration provided");
        return;
    }
    let ingress = spec.field("ingress");
    let mut ports = BTreeSet::new();
    for (i, listener) in sidecar.ingress.iter().enumerate() {
        ingress_listener(check, &ingress.index(i), listener, &mut ports);
    }
    if let Some(pool) = &sidecar.inbound_connection_pool {
        connection_pool_settings(check, &spec.field("inboundConnectionPool"), pool);
    }
    let egress = spec.field("egress");
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    for (i, listener) in sidecar.egress.iter().enumerate() {
        let at = egress.index(i);
        if listener.port.is_none() && i + 1 != sidecar.egress.len() {
            check.error(
                &at,
                "conflict",
                "sidecar: the egress listener with empty port should be the last listener in the list",
            );
        }
        egress_listener(check, &at, listener, &mut ports, &mut sockets);
    }
    if let Some(policy) = &sidecar.outbound_traffic_policy {
        let at = spec.field("outboundTrafficPolicy");
        if let Some(proxy) = &policy.egress_proxy {
            let proxy_path = at.field("egressProxy");
            if policy.mode != Some(OutboundTrafficMode::AllowAny) {
                check.error(
                    &proxy_path,
                    "conflict",
                    "sidecar: egressProxy must be set only with ALLOW_ANY outbound traffic policy mode",
                );
                return;
            }
            match proxy.host.as_deref() {
                None => check.required(&proxy_path.field("host")),
                Some(host) if !rules::is_fqdn(host) => check.error(
                    &proxy_path.field("host"),
                    "invalid-host",
                    format!("egressProxy host {host:?} must be a fully qualified name"),
                ),
                Some(_) => {}
            }
            match proxy.port.as_ref().and_then(|p| p.number) {
                None => check.error(
                    &proxy_path.field("port"),
                    "required",
                    "sidecar: egressProxy port must be set",
                ),
                Some(number) => {
                    rules::port(check, &proxy_path.field("port").field("number"), number);
                }
            }
        }
    }
}

/// A listener port: an optional name, a known protocol (or none), no target port.
fn listener_port(check: &mut Check<'_>, path: &FieldPath, port: &Port) -> Option<Protocol> {
    if port.target_port.is_some_and(|t| t > 0) {
        check.error(
            &path.field("targetPort"),
            "invalid-value",
            "targetPort has no impact on Sidecars",
        );
    }
    if let Some(name) = &port.name {
        rules::port_name(check, &path.field("name"), name);
    }
    let protocol = port.protocol.as_deref().filter(|p| !p.is_empty());
    let parsed = protocol.and_then(Protocol::parse);
    if let (Some(name), None) = (protocol, parsed) {
        check.error(
            &path.field("protocol"),
            "unsupported-value",
            format!("unsupported protocol: {name:?}"),
        );
    }
    parsed
}

fn ingress_listener(
    check: &mut Check<'_>,
    path: &FieldPath,
    listener: &IstioIngressListener,
    ports: &mut BTreeSet<(String, u32)>,
) {
    let Some(port) = &listener.port else {
        check.error(
            &path.field("port"),
            "required",
            "sidecar: port is required for ingress listeners",
        );
        return;
    };
    let port_path = path.field("port");
    let protocol = listener_port(check, &port_path, port);
    match port.number {
        None => check.required(&port_path.field("number")),
        Some(number) => {
            rules::port(check, &port_path.field("number"), number);
            let bind = listener.bind.clone().unwrap_or_default();
            if !ports.insert((bind, number)) {
                check.error(
                    &port_path.field("number"),
                    "duplicate",
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
        }
    }
    if let Some(bind) = listener.bind.as_deref().filter(|b| !b.is_empty()) {
        rules::ip_address(check, &path.field("bind"), bind);
    }
    if let Some(endpoint) = listener
        .default_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        default_endpoint(check, &path.field("defaultEndpoint"), endpoint);
    }
    if let Some(tls) = &listener.tls {
        let at = path.field("tls");
        for (field, set) in [
            ("subjectAltNames", !tls.subject_alt_names.is_empty()),
            ("httpsRedirect", tls.https_redirect == Some(true)),
            ("credentialName", tls.credential_name.is_some()),
            ("credentialNames", tls.credential_names.is_some()),
            ("tlsCertificates", tls.tls_certificates.is_some()),
        ] {
            if set {
                check.error(
                    &at.field(field),
                    "unsupported-value",
                    format!("sidecar: {field} is not supported in ingress tls"),
                );
            }
        }
        if matches!(
            tls.mode,
            Some(ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)
        ) {
            check.error(
                &at.field("mode"),
                "unsupported-value",
                "cannot set ISTIO_MUTUAL or AUTO_PASSTHROUGH in sidecar ingress tls",
            );
        }
        if !protocol.is_some_and(Protocol::is_tls) {
            check.error(
                &at,
                "conflict",
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        server_tls(check, &at, tls);
    }
    if let Some(pool) = &listener.connection_pool {
        let at = path.field("connectionPool");
        connection_pool_settings(check, &at, pool);
        if pool.http.is_some() && !protocol.is_some_and(Protocol::is_http) {
            check.warning(
                &at.field("http"),
                "ignored",
                "HTTP connection pool settings on a port whose protocol is not HTTP: only the TCP settings apply",
            );
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://PATH`.
fn default_endpoint(check: &mut Check<'_>, path: &FieldPath, endpoint: &str) {
    if let Some(socket) = endpoint.strip_prefix("unix://") {
        rules::unix_address(check, path, socket);
        return;
    }
    let parsed = endpoint
        .rsplit_once(':')
        .map(|(host, port)| (host.trim_start_matches('[').trim_end_matches(']'), port));
    let Some((host, port)) = parsed else {
        check.error(
            path,
            "invalid-address",
            format!("defaultEndpoint {endpoint:?} is missing a port"),
        );
        return;
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        check.error(
            path,
            "invalid-address",
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, \
             [::]:<port>, unix://filepath or unset",
        );
    }
    match port.parse::<u32>() {
        Ok(number) => {
            rules::port(check, path, number);
        }
        Err(_) => check.error(
            path,
            "invalid-port",
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

fn egress_listener(
    check: &mut Check<'_>,
    path: &FieldPath,
    listener: &IstioEgressListener,
    ports: &mut BTreeSet<(String, u32)>,
    sockets: &mut BTreeSet<String>,
) {
    if let Some(port) = &listener.port {
        let port_path = path.field("port");
        listener_port(check, &port_path, port);
        let bind = listener.bind.as_deref().unwrap_or_default();
        match port.number.unwrap_or(0) {
            0 => match bind.strip_prefix("unix://") {
                None => check.error(
                    &path.field("bind"),
                    "invalid-address",
                    "sidecar: ports with 0 value must have a unix domain socket bind address",
                ),
                Some(socket) => {
                    rules::unix_address(check, &path.field("bind"), socket);
                    if matches!(listener.capture_mode, Some(CaptureMode::Iptables)) {
                        check.error(
                            &path.field("captureMode"),
                            "conflict",
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                    if !sockets.insert(bind.to_owned()) {
                        check.error(
                            &path.field("bind"),
                            "duplicate",
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                }
            },
            number => {
                rules::port(check, &port_path.field("number"), number);
                if !bind.is_empty() {
                    rules::ip_address(check, &path.field("bind"), bind);
                }
                if !ports.insert((bind.to_owned(), number)) {
                    check.error(
                        &port_path.field("number"),
                        "duplicate",
                        "sidecar: ports on IP bound listeners must be unique",
                    );
                }
            }
        }
    }
    let hosts = path.field("hosts");
    match &listener.hosts {
        None => check.required(&hosts),
        Some(list) if list.is_empty() => check.error(
            &hosts,
            "required",
            "sidecar: egress listener must contain at least one host",
        ),
        Some(list) => {
            for (i, host) in list.iter().enumerate() {
                rules::namespace_slash_host(check, &hosts.index(i), host, false);
            }
        }
    }
}
