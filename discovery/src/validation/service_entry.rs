//! ServiceEntry and WorkloadEntry rules: hosts, addresses, ports, resolution and endpoints.

use std::collections::{BTreeMap, BTreeSet};

use super::check::Check;
use super::rules;
use crate::resources::common::Protocol;
use crate::resources::service_entry::{Resolution, ServiceEntry, WorkloadEntry};
use crate::yaml::FieldPath;

pub(crate) fn validate_service_entry(
    check: &mut Check<'_>,
    spec: &FieldPath,
    entry: &ServiceEntry,
) {
    let selector_ok = rules::label_selector(
        check,
        &spec.field("workloadSelector"),
        &entry.workload_selector,
        "service entry",
    );
    if !selector_ok {
        return;
    }
    if entry.workload_selector.is_some() && entry.endpoints.is_some() {
        check.error(
            spec,
            "conflict",
            "only one of WorkloadSelector or Endpoints can be set",
        );
    }

    let hosts = spec.field("hosts");
    match &entry.hosts {
        None => check.required(&hosts),
        Some(list) if list.is_empty() => check.error(
            &hosts,
            "required",
            "service entry must have at least one host",
        ),
        Some(list) => {
            if list.len() > 256 {
                check.error(&hosts, "out-of-range", "must have at most 256 items");
            }
            for (i, host) in list.iter().enumerate() {
                let at = hosts.index(i);
                if host == "*" {
                    check.error(&at, "invalid-host", "hostname cannot be wildcard");
                } else if rules::wildcard_domain(check, &at, host) {
                    rules::partial_wildcard(check, &at, host);
                }
            }
        }
    }

    let resolution = entry.resolution.unwrap_or_default();
    let addresses = spec.field("addresses");
    let address_list = entry.addresses.as_deref().unwrap_or_default();
    for (i, address) in address_list.iter().enumerate() {
        rules::ip_or_cidr(check, &addresses.index(i), address);
    }
    if address_list.iter().any(|a| a.contains('/'))
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        check.error(
            &addresses,
            "conflict",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let ports_path = spec.field("ports");
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (i, port) in entry.ports.iter().enumerate() {
        let at = ports_path.index(i);
        match &port.name {
            None => check.required(&at.field("name")),
            Some(name) => {
                if !names.insert(name.as_str()) {
                    check.error(
                        &at.field("name"),
                        "duplicate",
                        format!("Duplicate value: port name {name:?}"),
                    );
                }
                rules::port_name(check, &at.field("name"), name);
                port_names.insert(name.clone());
            }
        }
        match port.number {
            None => check.required(&at.field("number")),
            Some(number) => {
                if !numbers.insert(number) {
                    check.error(
                        &at.field("number"),
                        "duplicate",
                        "port number cannot be duplicated",
                    );
                }
                rules::port(check, &at.field("number"), number);
            }
        }
        if let Some(target) = port.target_port {
            rules::port(check, &at.field("targetPort"), target);
        }
        if let Some(protocol) = &port.protocol
            && Protocol::parse(protocol).is_none()
        {
            check.error(
                &at.field("protocol"),
                "unsupported-value",
                format!(
                    "unsupported protocol {protocol:?}: use HTTP, HTTPS, HTTP2, GRPC, TLS, TCP, \
                         MONGO, REDIS or MYSQL"
                ),
            );
        }
    }

    let endpoints = spec.field("endpoints");
    let endpoint_list = entry.endpoints.as_deref().unwrap_or_default();
    if endpoint_list.len() > 4096 {
        check.error(&endpoints, "out-of-range", "must have at most 4096 items");
    }
    match resolution {
        Resolution::None => {
            if entry.endpoints.is_some() {
                check.error(&endpoints, "conflict", "NONE mode cannot set endpoints");
            }
            if entry.workload_selector.is_some() {
                check.warning(
                    &spec.field("workloadSelector"),
                    "ignored",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, endpoint) in endpoint_list.iter().enumerate() {
                workload_entry(
                    check,
                    &endpoints.index(i),
                    endpoint,
                    Some(&port_names),
                    Addresses::Static,
                );
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if endpoint_list.is_empty() {
                for (i, host) in entry.hosts.iter().flatten().enumerate() {
                    if host != "*" && !rules::is_fqdn(host) {
                        check.error(
                            &hosts.index(i),
                            "invalid-host",
                            format!(
                                "hosts must be FQDN if no endpoints are provided for resolution \
                                 mode {}: {host:?} cannot be resolved",
                                resolution_name(resolution)
                            ),
                        );
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && endpoint_list.len() > 1 {
                check.error(
                    &endpoints,
                    "conflict",
                    "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
                );
            }
            for (i, endpoint) in endpoint_list.iter().enumerate() {
                workload_entry(
                    check,
                    &endpoints.index(i),
                    endpoint,
                    Some(&port_names),
                    Addresses::Dns,
                );
            }
        }
        Resolution::DynamicDns => {
            for (i, endpoint) in endpoint_list.iter().enumerate() {
                workload_entry(
                    check,
                    &endpoints.index(i),
                    endpoint,
                    Some(&port_names),
                    Addresses::Dns,
                );
            }
        }
    }
    if endpoint_list.iter().any(|e| {
        e.address
            .as_deref()
            .is_some_and(|a| a.starts_with("unix://"))
    }) && entry.ports.len() != 1
    {
        check.error(
            &ports_path,
            "invalid-value",
            "exactly 1 service port required for unix endpoints",
        );
    }
    let host_count = entry.hosts.as_ref().map_or(0, Vec::len);
    if resolution != Resolution::None && host_count > 1 {
        let opaque = entry.ports.iter().position(|p| {
            p.protocol
                .as_deref()
                .and_then(Protocol::parse)
                .is_none_or(|p| !p.is_http() && !p.is_tls())
        });
        if let Some(i) = opaque {
            check.error(
                &ports_path.index(i),
                "conflict",
                "multiple hosts provided with non-HTTP, non-TLS ports: a TCP connection cannot say \
                 which host it is for",
            );
        }
    }
    let namespace = check.object().namespace.clone();
    rules::export_to(
        check,
        &spec.field("exportTo"),
        &entry.export_to,
        &namespace,
        true,
    );
}

fn resolution_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

pub(crate) fn validate_workload_entry(
    check: &mut Check<'_>,
    spec: &FieldPath,
    entry: &WorkloadEntry,
) {
    workload_entry(check, spec, entry, None, Addresses::Any);
}

/// What a workload's address may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addresses {
    /// A WorkloadEntry: an IP, a DNS name, a `unix://` socket, or none when a network is named.
    Any,
    /// An endpoint of a STATIC ServiceEntry: an IP or a `unix://` socket.
    Static,
    /// An endpoint of a DNS ServiceEntry: an IP or a DNS name to resolve.
    Dns,
}

/// A workload: a WorkloadEntry's spec or a ServiceEntry endpoint. `service_ports` are the port
/// names of the ServiceEntry an endpoint belongs to.
fn workload_entry(
    check: &mut Check<'_>,
    path: &FieldPath,
    entry: &WorkloadEntry,
    service_ports: Option<&BTreeSet<String>>,
    addresses: Addresses,
) {
    let address_path = path.field("address");
    let address = entry.address.as_deref().unwrap_or_default();
    if addresses == Addresses::Dns && !rules::is_ip(address) && !rules::is_fqdn(address) {
        check.error(
            &address_path,
            "invalid-address",
            format!("endpoint address {address:?} is not a valid FQDN or an IP address (resolution is DNS)"),
        );
    }
    match entry.address.as_deref() {
        _ if addresses == Addresses::Dns => {}
        None | Some("") => match entry.network.as_deref() {
            None | Some("") => {
                check.error(&address_path, "required", "Address is required (or a network to reach it through)");
                return;
            }
            Some(network) => check.info(
                &address_path,
                "network-only",
                format!("address is unset: the workload is reached through network {network:?}'s gateway"),
            ),
        },
        Some(address) => {
            if address.len() > 256 {
                check.error(&address_path, "out-of-range", "Too long: may not be longer than 256");
            }
            if let Some(socket) = address.strip_prefix("unix://") {
                rules::unix_address(check, &address_path, socket);
                if entry.ports.is_some() {
                    check.error(&path.field("ports"), "conflict", "UDS may not include ports");
                }
            } else if !rules::is_ip(address) {
                if addresses == Addresses::Static {
                    check.error(
                        &address_path,
                        "invalid-address",
                        format!("endpoint address {address:?} is not a valid IP address (resolution is STATIC)"),
                    );
                } else if !rules::is_fqdn(address) {
                    check.error(
                        &address_path,
                        "invalid-address",
                        format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
                    );
                }
            }
        }
    }
    endpoint_ports(
        check,
        &path.field("ports"),
        entry.ports.as_ref(),
        service_ports,
    );
    rules::labels(check, &path.field("labels"), &entry.labels);
    for (field, value, limit) in [
        ("locality", &entry.locality, 2048),
        ("network", &entry.network, 2048),
        ("serviceAccount", &entry.service_account, 253),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > limit) {
            check.error(
                &path.field(field),
                "out-of-range",
                format!("Too long: may not be longer than {limit}"),
            );
        }
    }
}

fn endpoint_ports(
    check: &mut Check<'_>,
    path: &FieldPath,
    ports: Option<&BTreeMap<String, u32>>,
    service_ports: Option<&BTreeSet<String>>,
) {
    let Some(ports) = ports else { return };
    for (name, number) in ports {
        let at = path.key(name);
        if name.len() >= 63 || !rules::is_dns1123_label(name) {
            check.error(
                path,
                "invalid-value",
                format!("Invalid value: {name:?}: port name must be valid"),
            );
        }
        if service_ports.is_some_and(|declared| !declared.contains(name)) {
            check.error(
                &at,
                "invalid-value",
                format!("endpoint port {name:?} is not defined by the service entry"),
            );
        }
        rules::port(check, &at, *number);
    }
}
