//! MeshConfig and MeshNetworks rules: trust domains, timeouts, ports, locality settings, extra
//! roots, extension providers, and the networks' endpoints and gateways.

use std::collections::BTreeSet;

use super::check::Check;
use super::destination_rule::locality_lb_setting;
use super::rules;
use crate::resources::mesh_config::{MeshConfig, MeshNetworks, ProxyConfig};
use crate::yaml::FieldPath;

/// A trust domain: dot-separated DNS labels (`cluster.local`, `west.mesh`).
fn trust_domain(check: &mut Check<'_>, path: &FieldPath, domain: &str) {
    if domain.is_empty() {
        check.error(path, "required", "empty trust domain not allowed");
        return;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let last = labels.len() - 1;
    let valid = labels
        .iter()
        .enumerate()
        .all(|(i, l)| (i == last && l.is_empty()) || rules::is_dns1123_label(l));
    if !valid {
        check.error(
            path,
            "invalid-value",
            format!("trust domain name {domain:?} invalid"),
        );
    } else if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        check.error(
            path,
            "invalid-value",
            format!("trust domain {domain:?} must be lowercase, as SPIFFE IDs require"),
        );
    }
}

pub(crate) fn validate_mesh_config(check: &mut Check<'_>, mesh: &MeshConfig) {
    let root = FieldPath::ROOT;
    if let Some(domain) = &mesh.trust_domain {
        trust_domain(check, &root.field("trustDomain"), domain);
    }
    let aliases = root.field("trustDomainAliases");
    for (i, alias) in mesh.trust_domain_aliases.iter().enumerate() {
        trust_domain(check, &aliases.index(i), alias);
    }
    if let Some(namespace) = &mesh.root_namespace
        && !rules::is_dns1123_label(namespace)
    {
        check.error(
            &root.field("rootNamespace"),
            "invalid-value",
            format!("rootNamespace {namespace:?} is not a valid namespace name"),
        );
    }
    for (field, port) in [
        ("proxyListenPort", mesh.proxy_listen_port),
        ("proxyInboundListenPort", mesh.proxy_inbound_listen_port),
        ("proxyHttpPort", mesh.proxy_http_port),
    ] {
        if let Some(port) = port.filter(|p| *p != 0) {
            rules::port(check, &root.field(field), u32::try_from(port).unwrap_or(0));
        }
    }
    let connect_timeout = root.field("connectTimeout");
    rules::duration(check, &connect_timeout, &mesh.connect_timeout);
    if mesh
        .connect_timeout
        .as_ref()
        .and_then(|d| d.value)
        .is_some_and(|d| d.as_secs() >= 3600)
    {
        check.error(
            &connect_timeout,
            "out-of-range",
            "connectTimeout must be less than 1h",
        );
    }
    rules::duration(check, &root.field("dnsRefreshRate"), &mesh.dns_refresh_rate);
    rules::duration(
        check,
        &root.field("hboneIdleTimeout"),
        &mesh.hbone_idle_timeout,
    );
    if let Some(locality) = &mesh.locality_lb_setting {
        // Mesh-wide, failover applies wherever a DestinationRule adds outlier detection.
        locality_lb_setting(check, &root.field("localityLbSetting"), locality, true);
    }
    let settings = root.field("serviceSettings");
    for (i, setting) in mesh.service_settings.iter().enumerate() {
        let hosts = settings.index(i).field("hosts");
        for (j, host) in setting.hosts.iter().enumerate() {
            rules::wildcard_domain(check, &hosts.index(j), host);
        }
    }
    for (field, list) in [
        ("defaultServiceExportTo", &mesh.default_service_export_to),
        (
            "defaultVirtualServiceExportTo",
            &mesh.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &mesh.default_destination_rule_export_to,
        ),
    ] {
        rules::export_to(
            check,
            &root.field(field),
            list,
            "",
            field == "defaultServiceExportTo",
        );
    }
    if mesh
        .mesh_mtls
        .as_ref()
        .is_some_and(|t| !t.ecdh_curves.is_empty())
    {
        check.error(
            &root.field("meshMTLS").field("ecdhCurves"),
            "unsupported-value",
            "mesh TLS does not support ECDH curves configuration",
        );
    }
    let certificates = root.field("caCertificates");
    for (i, certificate) in mesh.ca_certificates.iter().enumerate() {
        let at = certificates.index(i);
        match (&certificate.pem, &certificate.spiffe_bundle_url) {
            (Some(_), Some(_)) => check.error(
                &at,
                "conflict",
                "only one of pem or spiffeBundleUrl can be set",
            ),
            (None, None) => {
                check.error(&at, "required", "one of pem or spiffeBundleUrl is required")
            }
            _ => {}
        }
        let domains = at.field("trustDomains");
        for (j, domain) in certificate.trust_domains.iter().enumerate() {
            trust_domain(check, &domains.index(j), domain);
        }
    }
    let providers = root.field("extensionProviders");
    let mut names = BTreeSet::new();
    for (i, provider) in mesh.extension_providers.iter().enumerate() {
        let at = providers.index(i);
        match provider.name.as_deref() {
            None | Some("") => check.error(
                &at.field("name"),
                "required",
                "an extension provider needs a name",
            ),
            Some(name) if !names.insert(name) => check.error(
                &at.field("name"),
                "duplicate",
                format!("duplicate extension provider name {name:?}"),
            ),
            Some(_) => {}
        }
    }
    if let Some(proxy) = &mesh.default_config {
        proxy_config(check, &root.field("defaultConfig"), proxy);
    }
}

fn proxy_config(check: &mut Check<'_>, path: &FieldPath, proxy: &ProxyConfig) {
    let drain = path.field("drainDuration");
    rules::duration(check, &drain, &proxy.drain_duration);
    if proxy
        .drain_duration
        .as_ref()
        .and_then(|d| d.value)
        .is_some_and(|d| d.subsec_nanos() != 0)
    {
        check.error(
            &drain,
            "invalid-duration",
            "drainDuration only supports durations to seconds precision",
        );
    }
    rules::duration(
        check,
        &path.field("terminationDrainDuration"),
        &proxy.termination_drain_duration,
    );
    for (field, port) in [
        ("proxyAdminPort", proxy.proxy_admin_port),
        ("statusPort", proxy.status_port),
    ] {
        if let Some(port) = port.filter(|p| *p != 0) {
            rules::port(check, &path.field(field), u32::try_from(port).unwrap_or(0));
        }
    }
    if proxy.concurrency.is_some_and(|c| c < 0) {
        check.error(
            &path.field("concurrency"),
            "out-of-range",
            "concurrency must be greater than or equal to 0",
        );
    }
    if proxy
        .proxy_metadata
        .contains_key("ISTIO_META_DNS_AUTO_ALLOCATE")
    {
        check.warning(
            &path
                .field("proxyMetadata")
                .key("ISTIO_META_DNS_AUTO_ALLOCATE"),
            "deprecated",
            "ISTIO_META_DNS_AUTO_ALLOCATE is deprecated: addresses are allocated without it",
        );
    }
}

pub(crate) fn validate_mesh_networks(check: &mut Check<'_>, networks: &MeshNetworks) {
    let root = FieldPath::ROOT.field("networks");
    for (name, network) in &networks.networks {
        let at = root.key(name);
        let endpoints = at.field("endpoints");
        for (i, endpoint) in network.endpoints.iter().enumerate() {
            let entry = endpoints.index(i);
            match (&endpoint.from_cidr, &endpoint.from_registry) {
                (Some(_), Some(_)) => check.error(
                    &entry,
                    "conflict",
                    "only one of fromCidr or fromRegistry can be set",
                ),
                (None, None) => check.error(
                    &entry,
                    "required",
                    "one of fromCidr or fromRegistry is required",
                ),
                (Some(cidr), None) => {
                    rules::ip_or_cidr(check, &entry.field("fromCidr"), cidr);
                }
                (None, Some(registry)) => {
                    if !rules::is_dns1123_label(registry) {
                        check.error(
                            &entry.field("fromRegistry"),
                            "invalid-value",
                            format!("invalid registry name: {registry:?}"),
                        );
                    }
                }
            }
        }
        let gateways = at.field("gateways");
        for (i, gateway) in network.gateways.iter().enumerate() {
            let entry = gateways.index(i);
            match (&gateway.registry_service_name, &gateway.address) {
                (Some(_), Some(_)) => check.error(
                    &entry,
                    "conflict",
                    "only one of registryServiceName or address can be set",
                ),
                (None, None) => check.error(
                    &entry,
                    "required",
                    "one of registryServiceName or address is required",
                ),
                (Some(service), None) => {
                    if !rules::is_fqdn(service) {
                        check.error(
                            &entry.field("registryServiceName"),
                            "invalid-host",
                            format!("{service:?} is not a fully qualified service name"),
                        );
                    }
                }
                (None, Some(address)) => {
                    if !rules::is_ip(address) && !rules::is_fqdn(address) {
                        check.error(
                            &entry.field("address"),
                            "invalid-address",
                            format!("{address:?} is not a valid IP address or DNS name"),
                        );
                    }
                }
            }
            match gateway.port {
                None => check.required(&entry.field("port")),
                Some(port) => {
                    rules::port(check, &entry.field("port"), port);
                }
            }
        }
    }
}
