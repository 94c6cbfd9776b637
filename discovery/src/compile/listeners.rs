//! Gateway servers to listeners, as Istio builds a gateway's listeners.
//!
//! The servers of the selected Gateways are grouped by the address they bind. Plain HTTP servers
//! on a port share one route table, `http.PORT`; each TLS server is a filter chain chosen by SNI:
//! terminated HTTPS gets its own route table (`https.PORT.PORTNAME.GATEWAY.NAMESPACE`),
//! `PASSTHROUGH` forwards by the VirtualServices' `tls` routes, and TCP (plain or terminated TLS)
//! by their `tcp` routes. A VirtualService binds to a server when its `gateways` name the
//! Gateway and its hosts meet the server's; the virtual host takes the more specific name of the
//! two. Routes of several VirtualServices for one host are merged in creation order, catch-alls
//! last.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use strait_proxy::snapshot::{
    Application, CertificateKeyPair, ChainMatch, ClientAuth, FilterChain, Listener, Route,
    RouteTable, ServerTls, TcpRoute, TlsVersion, Transport, VirtualHost,
};

use super::routes::Client;
use super::{Compiler, credentials};
use crate::hosts;
use crate::resources::common::Protocol;
use crate::resources::gateway::{Gateway, Server, ServerTlsMode, TlsProtocol};
use crate::resources::virtual_service::{VirtualService, gateway_ref};
use crate::resources::{Object, Spec};
use crate::yaml::FieldPath;

/// How a server's connections are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerKind {
    Http,
    Tcp,
    TerminatedHttp,
    TerminatedTcp,
    Passthrough,
    /// `AUTO_PASSTHROUGH` at an east-west gateway: the SNI names the destination (`eastwest`).
    AutoPassthrough,
}

impl ServerKind {
    fn is_tls(self) -> bool {
        matches!(
            self,
            ServerKind::TerminatedHttp
                | ServerKind::TerminatedTcp
                | ServerKind::Passthrough
                | ServerKind::AutoPassthrough
        )
    }
}

/// A server of a selected Gateway.
struct GatewayServer<'a> {
    gateway: &'a Object,
    server: &'a Server,
    path: FieldPath,
    number: u32,
    kind: ServerKind,
    /// `(namespace filter, host)`: `None` admits VirtualServices of every namespace.
    hosts: Vec<(Option<String>, String)>,
}

impl GatewayServer<'_> {
    /// SNI names for the filter chain; empty (any) when a host is `*`.
    fn server_names(&self) -> Vec<String> {
        if self.hosts.iter().any(|(_, h)| h == "*") {
            return Vec::new();
        }
        let mut names: Vec<String> = self.hosts.iter().map(|(_, h)| h.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn https_redirect(&self) -> bool {
        self.kind == ServerKind::Http
            && self.server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true)
    }

    /// The virtual host names a VirtualService in `namespace` with `vs_hosts` (qualified) gets on
    /// this server: for each pair that meets, the more specific of the two.
    fn domains(&self, namespace: &str, vs_hosts: &[String]) -> Vec<String> {
        let mut domains = Vec::new();
        for (filter, server_host) in &self.hosts {
            if filter.as_deref().is_some_and(|ns| ns != namespace) {
                continue;
            }
            for vs_host in vs_hosts {
                if hosts::within(vs_host, server_host) {
                    domains.push(vs_host.clone());
                } else if hosts::within(server_host, vs_host) {
                    domains.push(server_host.clone());
                }
            }
        }
        domains.sort();
        domains.dedup();
        domains
    }
}

/// A VirtualService, its hosts qualified, and where it sits in creation order.
pub(super) struct Bound<'a> {
    pub(super) object: &'a Object,
    pub(super) spec: &'a VirtualService,
    pub(super) hosts: Vec<String>,
}

impl Bound<'_> {
    /// Whether the top-level `gateways` name `gateway` (omitted means `[mesh]`: never).
    fn names(&self, gateway: &Object) -> bool {
        self.spec
            .gateways
            .iter()
            .any(|reference| names_gateway(&self.object.namespace, reference, gateway))
    }
}

/// Whether `reference`, written in `namespace`, names `gateway`.
pub(super) fn names_gateway(namespace: &str, reference: &str, gateway: &Object) -> bool {
    gateway_ref(namespace, reference)
        .is_some_and(|(ns, name)| ns == gateway.namespace && name == gateway.name())
}

type Tables = BTreeMap<String, Arc<RouteTable>>;

impl<'a> Compiler<'a> {
    /// The listeners and route tables of the Gateways this gateway serves.
    pub(super) fn gateway_listeners(&mut self, objects: &[&'a Object]) -> (Vec<Listener>, Tables) {
        let mut gateways: Vec<(&'a Object, &'a Gateway)> = objects
            .iter()
            .filter_map(|o| match &o.spec {
                Spec::Gateway(g)
                    if g.selector
                        .iter()
                        .all(|(k, v)| self.options.labels.get(k) == Some(v)) =>
                {
                    Some((*o, g))
                }
                _ => None,
            })
            .collect();
        gateways.sort_by(|a, b| creation_order(a.0).cmp(&creation_order(b.0)));
        let mut services: Vec<Bound<'a>> = objects
            .iter()
            .filter_map(|o| match &o.spec {
                Spec::VirtualService(vs) if !vs.gateways.is_empty() => Some(Bound {
                    object: o,
                    spec: vs,
                    hosts: vs
                        .hosts
                        .iter()
                        .map(|h| self.registry.qualify(h, &o.namespace))
                        .collect(),
                }),
                _ => None,
            })
            .collect();
        services.sort_by(|a, b| creation_order(a.object).cmp(&creation_order(b.object)));

        let mut by_address: BTreeMap<SocketAddr, Vec<GatewayServer<'a>>> = BTreeMap::new();
        for (object, gateway) in gateways {
            for (index, server) in gateway.servers.iter().enumerate() {
                let path = FieldPath::ROOT.field("spec").field("servers").index(index);
                self.at(object, path.clone());
                if let Some((address, server)) = self.gateway_server(object, server, path) {
                    by_address.entry(address).or_default().push(server);
                }
            }
        }
        self.listening = by_address.keys().copied().collect();
        let mut listeners = Vec::new();
        let mut tables = Tables::new();
        for (address, servers) in by_address {
            let filter_chains = self.filter_chains(&servers, &services, &mut tables);
            if !filter_chains.is_empty() {
                listeners.push(Listener {
                    name: format!("{}_{}", address.ip(), address.port()),
                    address,
                    original_destination: false,
                    filter_chains,
                });
            }
        }
        self.at = None;
        (listeners, tables)
    }

    /// A server's address and kind, or `None` (with a finding) when it cannot be served.
    fn gateway_server(
        &mut self,
        gateway: &'a Object,
        server: &'a Server,
        path: FieldPath,
    ) -> Option<(SocketAddr, GatewayServer<'a>)> {
        let port = server.port.as_ref()?;
        let number = port.number?;
        let protocol = port.protocol.as_deref().and_then(Protocol::parse)?;
        let mode = server.tls.as_ref().and_then(|t| t.mode).unwrap_or_default();
        let kind = match protocol {
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => {
                ServerKind::Http
            }
            Protocol::Https | Protocol::Tls => match mode {
                ServerTlsMode::Passthrough => ServerKind::Passthrough,
                ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                    if protocol == Protocol::Https {
                        ServerKind::TerminatedHttp
                    } else {
                        ServerKind::TerminatedTcp
                    }
                }
                ServerTlsMode::IstioMutual if self.options.mesh_identity => {
                    if protocol == Protocol::Https {
                        ServerKind::TerminatedHttp
                    } else {
                        ServerKind::TerminatedTcp
                    }
                }
                ServerTlsMode::AutoPassthrough if self.options.eastwest => {
                    ServerKind::AutoPassthrough
                }
                ServerTlsMode::AutoPassthrough | ServerTlsMode::IstioMutual => {
                    self.problem(format!(
                        "tls.mode {mode:?} needs a mesh identity (--identity-dir or --ca-address) or the east-west role; this server is not served"
                    ));
                    return None;
                }
            },
            _ => ServerKind::Tcp,
        };
        let listen_port = match self.options.ports.get(&number) {
            Some(mapped) => *mapped,
            None => match u16::try_from(number) {
                Ok(port) => port,
                Err(_) => {
                    self.problem(format!("port {number} is out of range"));
                    return None;
                }
            },
        };
        let ip = match server.bind.as_deref() {
            None | Some("") => self.options.bind,
            Some(bind) => match bind.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    self.problem(format!(
                        "bind {bind:?} is not an IP address (unix sockets are not supported)"
                    ));
                    return None;
                }
            },
        };
        let hosts = server
            .hosts
            .iter()
            .flatten()
            .map(|host| match host.split_once('/') {
                Some(("*", h)) => (None, h.to_ascii_lowercase()),
                Some((".", h)) => (Some(gateway.namespace.clone()), h.to_ascii_lowercase()),
                Some((ns, h)) => (Some(ns.to_owned()), h.to_ascii_lowercase()),
                None => (None, host.to_ascii_lowercase()),
            })
            .collect();
        Some((
            SocketAddr::new(ip, listen_port),
            GatewayServer {
                gateway,
                server,
                path,
                number,
                kind,
                hosts,
            },
        ))
    }

    /// The filter chains of the servers sharing one address.
    fn filter_chains(
        &mut self,
        servers: &[GatewayServer<'a>],
        services: &[Bound<'a>],
        tables: &mut Tables,
    ) -> Vec<FilterChain> {
        let Some(first) = servers.first() else {
            return Vec::new();
        };
        // One port carries either plaintext (HTTP or TCP) or TLS chosen by SNI, as in Istio.
        let mut accepted: Vec<&GatewayServer<'a>> = Vec::new();
        for server in servers {
            let compatible = if first.kind.is_tls() {
                server.kind.is_tls()
            } else {
                server.kind == first.kind
            };
            if compatible {
                accepted.push(server);
            } else {
                self.at(server.gateway, server.path.clone());
                self.problem(format!(
                    "port {} is already served as {:?} by Gateway {}/{}; a port carries one protocol, so this server is ignored",
                    server.number,
                    first.kind,
                    first.gateway.namespace,
                    first.gateway.name()
                ));
            }
        }
        match first.kind {
            ServerKind::Http => {
                let name = format!("http.{}", first.number);
                let table = self.route_table(&name, &accepted, services);
                tables.insert(name.clone(), Arc::new(table));
                vec![FilterChain {
                    name: "http".to_owned(),
                    server_names: Vec::new(),
                    matches: ChainMatch::default(),
                    transport: Transport::Plaintext,
                    application: Application::Http { route_table: name },
                }]
            }
            ServerKind::Tcp => {
                let mut routes = Vec::new();
                for server in &accepted {
                    routes.extend(self.tcp_routes_of(server, services));
                }
                vec![FilterChain {
                    name: "tcp".to_owned(),
                    server_names: Vec::new(),
                    matches: ChainMatch::default(),
                    transport: Transport::Plaintext,
                    application: Application::Tcp { routes },
                }]
            }
            _ => {
                let mut chains: Vec<FilterChain> = Vec::new();
                // The AUTO_PASSTHROUGH servers of a port expose what their hosts take in
                // together: one chain per destination, one refusal chain.
                let (auto, accepted): (Vec<_>, Vec<_>) = accepted
                    .into_iter()
                    .partition(|s| s.kind == ServerKind::AutoPassthrough);
                if !auto.is_empty() {
                    let hosts: Vec<(Option<String>, String)> =
                        auto.iter().flat_map(|s| s.hosts.iter().cloned()).collect();
                    self.at(auto[0].gateway, auto[0].path.clone());
                    chains.extend(self.auto_passthrough_chains(&hosts));
                }
                for server in accepted {
                    self.at(server.gateway, server.path.clone());
                    let server_names = server.server_names();
                    if let Some(existing) = chains.iter().find(|c| c.server_names == server_names) {
                        self.problem(format!(
                            "another server on port {} ({}) already serves the same hosts; this one is ignored",
                            server.number, existing.name
                        ));
                        continue;
                    }
                    if let Some(chain) = self.tls_chain(server, services, tables) {
                        chains.push(chain);
                    }
                }
                chains
            }
        }
    }

    fn tls_chain(
        &mut self,
        server: &GatewayServer<'a>,
        services: &[Bound<'a>],
        tables: &mut Tables,
    ) -> Option<FilterChain> {
        let port_name = server
            .server
            .port
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .unwrap_or_default();
        let name = format!(
            "https.{}.{}.{}.{}",
            server.number,
            port_name,
            server.gateway.name(),
            server.gateway.namespace
        );
        let server_names = server.server_names();
        match server.kind {
            ServerKind::Passthrough => {
                let routes = self.tls_routes_of(server, services);
                Some(FilterChain {
                    name,
                    server_names,
                    matches: ChainMatch::default(),
                    transport: Transport::Passthrough,
                    application: Application::Tcp { routes },
                })
            }
            ServerKind::TerminatedHttp => {
                let transport = self.server_transport(server, &["h2", "http/1.1"])?;
                let table = self.route_table(&name, &[server], services);
                tables.insert(name.clone(), Arc::new(table));
                Some(FilterChain {
                    name: name.clone(),
                    server_names,
                    matches: ChainMatch::default(),
                    transport,
                    application: Application::Http { route_table: name },
                })
            }
            ServerKind::TerminatedTcp => {
                let mut transport = self.server_transport(server, &[])?;
                let mut routes = Vec::new();
                if transport == Transport::IstioMutual {
                    // Behind mesh mTLS the application's own TLS may follow: its `tls` routes
                    // choose by the inner ClientHello's SNI, ahead of the `tcp` routes.
                    transport = Transport::IstioMutualInnerSni;
                    routes.extend(self.tls_routes_of(server, services));
                }
                routes.extend(self.tcp_routes_of(server, services));
                Some(FilterChain {
                    name,
                    server_names,
                    matches: ChainMatch::default(),
                    transport,
                    application: Application::Tcp { routes },
                })
            }
            ServerKind::Http | ServerKind::Tcp | ServerKind::AutoPassthrough => None,
        }
    }

    /// The route table of HTTP servers: a virtual host per name the bound VirtualServices
    /// and the servers' hosts meet at.
    fn route_table(
        &mut self,
        name: &str,
        servers: &[&GatewayServer<'a>],
        services: &[Bound<'a>],
    ) -> RouteTable {
        struct Building {
            routes: Vec<Route>,
            require_tls: bool,
            from: Vec<usize>,
        }
        let mut hosts: BTreeMap<String, Building> = BTreeMap::new();
        let mut compiled: HashMap<(usize, usize), Vec<Route>> = HashMap::new();
        for server in servers {
            // Routes are compiled once per VirtualService and Gateway, and kept for the
            // Gateway's other servers only when it has any here.
            let shared = servers
                .iter()
                .filter(|other| std::ptr::eq(other.gateway, server.gateway))
                .nth(1)
                .is_some();
            let redirect = server.https_redirect();
            if redirect {
                for (_, host) in &server.hosts {
                    hosts.entry(host.clone()).or_insert_with(|| Building {
                        routes: Vec::new(),
                        require_tls: true,
                        from: Vec::new(),
                    });
                }
            }
            for (index, bound) in services.iter().enumerate() {
                if !bound.names(server.gateway) {
                    continue;
                }
                let domains = server.domains(&bound.object.namespace, &bound.hosts);
                if domains.is_empty() {
                    continue;
                }
                let gateway_id = server.gateway as *const Object as usize;
                let mut routes = match compiled.get(&(index, gateway_id)) {
                    Some(routes) => routes.clone(),
                    None => {
                        let routes =
                            self.http_routes(bound, Client::Gateway(server.gateway), server.number);
                        if shared {
                            compiled.insert((index, gateway_id), routes.clone());
                        }
                        routes
                    }
                };
                let last = domains.len().saturating_sub(1);
                for (at, domain) in domains.into_iter().enumerate() {
                    let entry = hosts.entry(domain).or_insert_with(|| Building {
                        routes: Vec::new(),
                        require_tls: false,
                        from: Vec::new(),
                    });
                    entry.require_tls |= redirect;
                    if entry.from.contains(&index) {
                        continue;
                    }
                    let merging = !entry.from.is_empty();
                    entry.from.push(index);
                    if at == last && entry.routes.is_empty() {
                        entry.routes = std::mem::take(&mut routes);
                    } else {
                        entry.routes.extend(routes.iter().cloned());
                    }
                    if merging {
                        // Istio merges VirtualServices for one host and moves catch-alls last.
                        entry.routes.sort_by_key(|r| {
                            r.matches.iter().any(is_catch_all) || r.matches.is_empty()
                        });
                    }
                }
            }
        }
        RouteTable {
            name: name.to_owned(),
            virtual_hosts: hosts
                .into_iter()
                .map(|(domain, building)| VirtualHost {
                    name: format!(
                        "{domain}:{}",
                        servers.first().map(|s| s.number).unwrap_or_default()
                    ),
                    domains: vec![domain],
                    routes: building.routes,
                    require_tls: building.require_tls,
                })
                .collect(),
        }
    }

    /// The `tcp` routes of the VirtualServices bound to a TCP server.
    fn tcp_routes_of(
        &mut self,
        server: &GatewayServer<'a>,
        services: &[Bound<'a>],
    ) -> Vec<TcpRoute> {
        let mut routes = Vec::new();
        for bound in services {
            if bound.names(server.gateway)
                && !server
                    .domains(&bound.object.namespace, &bound.hosts)
                    .is_empty()
            {
                routes.extend(self.tcp_routes(
                    bound,
                    Client::Gateway(server.gateway),
                    server.number,
                ));
            }
        }
        routes
    }

    /// The `tls` routes of the VirtualServices bound to a passthrough server, limited to the SNI
    /// names the server accepts.
    fn tls_routes_of(
        &mut self,
        server: &GatewayServer<'a>,
        services: &[Bound<'a>],
    ) -> Vec<TcpRoute> {
        let mut routes = Vec::new();
        for bound in services {
            if !bound.names(server.gateway)
                || server
                    .domains(&bound.object.namespace, &bound.hosts)
                    .is_empty()
            {
                continue;
            }
            for mut route in self.tls_routes(bound, Client::Gateway(server.gateway), server.number)
            {
                route.server_names.retain(|sni| {
                    server
                        .hosts
                        .iter()
                        .any(|(_, host)| hosts::within(sni, host) || hosts::within(host, sni))
                });
                if !route.server_names.is_empty() {
                    routes.push(route);
                }
            }
        }
        routes
    }

    /// How a terminating server's TLS is ended: with the proxy's mesh identity for
    /// `ISTIO_MUTUAL`, else with the server's own certificate (`server_tls`).
    fn server_transport(&mut self, server: &GatewayServer<'a>, alpn: &[&str]) -> Option<Transport> {
        let mode = server.server.tls.as_ref().and_then(|t| t.mode);
        if mode == Some(ServerTlsMode::IstioMutual) {
            return Some(Transport::IstioMutual);
        }
        self.server_tls(server, alpn).map(Transport::Terminate)
    }

    /// TLS termination for a server: its certificate (from `credentialName` or files), the
    /// client-certificate mode, versions and cipher suites. `None` (with a finding) when the
    /// material does not load: the server is then not served, the rest is.
    fn server_tls(&mut self, server: &GatewayServer<'a>, alpn: &[&str]) -> Option<ServerTls> {
        self.at(server.gateway, server.path.field("tls"));
        let settings = server.server.tls.as_ref()?;
        let store = self.options.credentials.clone();
        let credential_name = settings.credential_name.clone().or_else(|| {
            settings
                .credential_names
                .as_ref()
                .and_then(|n| n.first().cloned())
        });
        if settings
            .credential_names
            .as_ref()
            .is_some_and(|n| n.len() > 1)
        {
            self.problem(
                "only the first of credentialNames is served (one certificate per server)",
            );
        }
        let (certificate, credential) = match &credential_name {
            Some(name) => match credentials::load_certificate(store.as_deref(), name) {
                Ok((chain, key, credential)) => (
                    CertificateKeyPair {
                        source: credential.source.clone(),
                        certificate_chain: chain,
                        private_key: key,
                    },
                    Some(credential),
                ),
                Err(error) => {
                    self.problem(format!("{error}; the server is not served"));
                    return None;
                }
            },
            None => {
                let chain =
                    self.read_file(settings.server_certificate.as_deref(), "serverCertificate")?;
                let key = self.read_file(settings.private_key.as_deref(), "privateKey")?;
                (
                    CertificateKeyPair {
                        source: settings.server_certificate.clone().unwrap_or_default(),
                        certificate_chain: chain,
                        private_key: key,
                    },
                    None,
                )
            }
        };
        let mode = settings.mode.unwrap_or_default();
        let client_auth = if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) {
            let (ca_certificates, crl) = match (&credential_name, &credential) {
                (Some(name), Some(credential)) => {
                    match credentials::load_client_ca(store.as_deref(), name, credential) {
                        Ok(found) => found,
                        Err(error) => {
                            self.problem(format!(
                                "{mode:?} needs CA certificates: {error}; the server is not served"
                            ));
                            return None;
                        }
                    }
                }
                _ => {
                    let ca =
                        self.read_file(settings.ca_certificates.as_deref(), "caCertificates")?;
                    let crl = match settings.ca_crl.as_deref() {
                        Some(path) => Some(self.read_file(Some(path), "caCrl")?),
                        None => None,
                    };
                    (ca, crl)
                }
            };
            if mode == ServerTlsMode::Mutual {
                ClientAuth::Required {
                    ca_certificates,
                    crl,
                }
            } else {
                ClientAuth::Optional {
                    ca_certificates,
                    crl,
                }
            }
        } else {
            ClientAuth::None
        };
        let min_version = match settings.min_protocol_version.unwrap_or_default() {
            TlsProtocol::V1_3 => Some(TlsVersion::V1_3),
            // TLS 1.0 and 1.1 are not offered at all (rustls), so their minimum is 1.2's.
            _ => Some(TlsVersion::V1_2),
        };
        let max_version = match settings.max_protocol_version.unwrap_or_default() {
            TlsProtocol::Auto | TlsProtocol::V1_3 => None,
            TlsProtocol::V1_2 => Some(TlsVersion::V1_2),
            TlsProtocol::V1_0 | TlsProtocol::V1_1 => {
                self.problem("maxProtocolVersion below TLSV1_2: TLS 1.0 and 1.1 are not supported; the server is not served");
                return None;
            }
        };
        let tls = ServerTls {
            certificate,
            client_auth,
            min_version,
            max_version,
            cipher_suites: settings.cipher_suites.clone(),
            alpn: alpn.iter().map(|p| (*p).to_owned()).collect(),
        };
        let Err(error) = strait_proxy::tls::server::server_config(&tls) else {
            self.options.last_good.remember(&tls.certificate);
            return Some(tls);
        };
        // A certificate caught half-written keeps its last good version in force.
        let source = tls.certificate.source.clone();
        let last_good = self
            .options
            .last_good
            .get(&source)
            .filter(|last| *last != tls.certificate)
            .map(|certificate| ServerTls {
                certificate,
                ..tls.clone()
            })
            .filter(|earlier| strait_proxy::tls::server::server_config(earlier).is_ok());
        match last_good {
            Some(earlier) => {
                self.problem(format!(
                    "{error}; the last good certificate of {source} stays in force"
                ));
                Some(earlier)
            }
            None => {
                self.problem(format!("{error}; the server is not served"));
                None
            }
        }
    }

    fn read_file(&mut self, path: Option<&str>, field: &str) -> Option<String> {
        let Some(path) = path else {
            self.problem(format!("{field} (or credentialName) is required for this TLS mode; the server is not served"));
            return None;
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                self.problem(format!(
                    "reading {field} {path}: {error}; the server is not served"
                ));
                None
            }
        }
    }
}

/// A match that admits every request: no conditions, or only the prefix `/`.
fn is_catch_all(m: &strait_proxy::snapshot::RouteMatch) -> bool {
    let only_root = m.path.is_none()
        || matches!(&m.path, Some(strait_proxy::snapshot::StringMatcher::Prefix(p)) if p == "/");
    only_root
        && m.method.is_none()
        && m.authority.is_none()
        && m.scheme.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.port.is_none()
}

/// Istio's order among objects: oldest first, then by namespace and name.
pub(super) fn creation_order(object: &Object) -> (&str, &str, &str) {
    (
        object
            .meta
            .creation_timestamp
            .as_deref()
            .unwrap_or_default(),
        &object.namespace,
        object.name(),
    )
}
