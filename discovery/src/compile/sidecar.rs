//! A sidecar's outbound side, as Istio builds it: one listener on the capture port that reads
//! each connection's original destination and chooses a filter chain by it.
//!
//! - HTTP ports (by `protocol`, or the port name's prefix): one chain per port, routed by the
//!   `Host` header through the route table named after the port (`9080`), which holds a
//!   virtual host per service on that port (`reviews.default.svc.cluster.local:9080`, with its
//!   short names). The VirtualServices bound to the mesh (`gateways` omitted, or naming `mesh`)
//!   give a host its routes; a host without one goes to its default cluster.
//! - TLS ports: one chain per port, forwarded by SNI by the mesh's `tls` routes for the name,
//!   else to the service that declares it.
//! - TCP ports: one chain per service and port, chosen by the service's addresses (its
//!   `addresses`, else its endpoints' IPs), forwarded by the `tcp` routes of its VirtualService
//!   or to its default cluster.
//! - Anything else goes to `PassthroughCluster` (the original destination) under MeshConfig's
//!   `outboundTrafficPolicy: ALLOW_ANY`, Istio's default, or nowhere under `REGISTRY_ONLY`
//!   (`BlackHoleCluster`: the connection is closed, an HTTP request gets 502).
//!
//! And its inbound side: one listener on the inbound capture port whose chains, per port of
//! the services that select the workload, follow the port's PeerAuthentication mode: mesh mTLS
//! (a ClientHello offering one of Istio's ALPNs) terminated with the proxy's identity under
//! STRICT and PERMISSIVE; under PERMISSIVE and DISABLE also plaintext, and an application's
//! own TLS passed through untouched. Traffic reaches the application at its original
//! destination from 127.0.0.6, so that capture does not take it again.
//!
//! The Sidecar resource that applies to the workload (`sidecar_scope`) narrows both sides: its
//! egress hosts and the `exportTo` of each object decide which services and rules the outbound
//! side knows, its `outboundTrafficPolicy` replaces MeshConfig's, and its ingress listeners
//! replace the ports of the services that select the workload. Its listeners that are not
//! captured become listeners of their own (`sidecar_listeners`), and an explicit HTTP proxy
//! listener serves applications that set `HTTP_PROXY` (`sidecar_http_proxy`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use strait_proxy::snapshot::{
    Application, ChainMatch, Cluster, FilterChain, HeaderOps, LbPolicy, Listener, MtlsMode,
    PoolLimits, RetryPolicy, Route, RouteAction, RouteTable, TcpRoute, Transport,
    TransportProtocol, UpstreamProtocol, UpstreamTls, VirtualHost, WeightedCluster,
};

use super::listeners::creation_order;
use super::registry::Service;
use super::routes::Client;
use super::sidecar_scope::SidecarScope;
use super::vips::Vips;
use super::{Compiled, Compiler, GatewayOptions};
use crate::dns_proxy::NameTable;
use crate::hosts;
use crate::resources::common::{Port, Protocol};
use crate::resources::service_entry::{Resolution, ServiceEntry};
use crate::resources::{Object, Spec};
use crate::yaml::FieldPath;

use super::listeners::Bound;

/// Istio's cluster for traffic to destinations outside the registry (ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster for traffic that must go nowhere (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's cluster for inbound traffic to ports no service declares.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// The source address inbound traffic reaches the application from (Istio's).
pub const INBOUND_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 6));
/// The ALPN protocols that mark Istio's mesh mTLS in a ClientHello.
const ISTIO_ALPNS: [&str; 5] = [
    "istio-peer-exchange",
    "istio-h2",
    "istio-http/1.1",
    "istio-http/1.0",
    "istio",
];

/// What a sidecar is: the workload it fronts, and where it captures.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// The workload's namespace: its VirtualService `sourceNamespace` and DestinationRule
    /// lookups.
    pub namespace: String,
    /// The workload's labels: VirtualService `sourceLabels` select on them.
    pub labels: BTreeMap<String, String>,
    /// Short host names resolve under it.
    pub domain_suffix: String,
    /// The outbound capture listener (15001).
    pub outbound: SocketAddr,
    /// The inbound capture listener (15006).
    pub inbound: SocketAddr,
    /// Whether iptables sends the workload's traffic to the capture listeners (Istio's
    /// interception mode REDIRECT); Sidecar listeners with `captureMode: DEFAULT` bind their
    /// own port when it does not.
    pub captured: bool,
    /// The workload's own IP (Istio's instance IP): where an ingress listener's
    /// `defaultEndpoint: 0.0.0.0:PORT` forwards.
    pub instance_ip: Option<IpAddr>,
    /// The workload's name and service account, for the metrics its inbound side reports.
    pub workload_name: String,
    pub service_account: String,
    /// An explicit HTTP proxy listener (`--http-proxy-port`) for what the outbound side sees,
    /// as a Sidecar egress listener of protocol `HTTP_PROXY` adds one.
    pub http_proxy: Option<SocketAddr>,
    /// The latest DNS answers for `resolution: DNS` hosts (read, never waited on).
    pub dns: crate::dns::DnsCache,
    /// The workload's network (`--network`): endpoints on other networks are reached through
    /// their east-west gateways.
    pub network: Option<String>,
    /// The workload's locality (`--locality`, `region/zone/subzone`).
    pub locality: Option<String>,
}

/// Compiles the outbound snapshot of a sidecar; `objects` should be valid.
pub fn compile_sidecar<O: std::borrow::Borrow<Object>>(
    objects: &[O],
    options: &SidecarOptions,
    version: u64,
) -> Compiled {
    let objects: Vec<&Object> = objects.iter().map(std::borrow::Borrow::borrow).collect();
    let scope = SidecarScope::new(
        &objects,
        &options.namespace,
        &options.labels,
        options.captured,
    );
    // What is not exported to the workload's namespace is not there for its outbound side.
    let visible: Vec<&Object> = objects
        .iter()
        .copied()
        .filter(|o| scope.exported(o))
        .collect();
    let as_client = GatewayOptions {
        labels: options.labels.clone(),
        namespace: options.namespace.clone(),
        domain_suffix: options.domain_suffix.clone(),
        mesh_identity: true,
        dns: options.dns.clone(),
        network: options.network.clone(),
        locality: options.locality.clone(),
        ..GatewayOptions::default()
    };
    let mut compiler = Compiler::new(&visible, &as_client);
    compiler.inbound_telemetry = compiler.inbound_telemetry_of(&objects, options);
    if options.captured {
        // From every ServiceEntry, not only those this workload sees: a host's VIP then does
        // not depend on the workload's scope.
        compiler.vips = Vips::of_service_entries(&objects, &options.domain_suffix);
    }
    if let Some(allow_any) = scope.allow_any() {
        compiler.registry.mesh.allow_any = allow_any;
    }
    let (outbound, mut route_tables) =
        compiler.outbound_listener(&visible, options.outbound, &scope);
    let inbound = compiler.inbound_listener(
        &objects,
        options.inbound,
        &mut route_tables,
        &scope,
        options,
    );
    // Without capture (Istio's interception mode NONE) nothing is redirected to the virtual
    // listeners: as in Istio, they are not there (and do not hold 15001 and 15006).
    let mut listeners = if options.captured {
        vec![outbound, inbound]
    } else {
        Vec::new()
    };
    let mut bound = compiler.bound_listeners(&visible, &scope, options, &mut route_tables);
    if let Some(address) = options.http_proxy {
        let imports = |namespace: &str, host: &str, port: Option<u32>| match port {
            Some(port) => scope.captured_imports(namespace, host, port),
            None => scope.captured_imports_any(namespace, host),
        };
        bound.push(compiler.http_proxy_listener(&visible, &imports, address, &mut route_tables));
    }
    for listener in bound {
        if listeners.iter().any(|l| l.address == listener.address) {
            compiler.problem(format!(
                "listener {} would bind {}, which another listener of this sidecar binds: it is not served",
                listener.name, listener.address
            ));
            continue;
        }
        listeners.push(listener);
    }
    let names = compiler.name_table(&scope, options);
    let mut compiled = compiler.finish(&objects, version, listeners, route_tables);
    compiled.names = names;
    compiled
}

/// Whether a port's traffic is routed as HTTP, and its protocol towards the application.
pub(super) fn inbound_protocol(port: &Port) -> Option<UpstreamProtocol> {
    let protocol = port_protocol(port);
    protocol.is_http().then_some(match protocol {
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    })
}

/// How a service port is proxied: as it declares (`protocol`, else its name's prefix), TCP
/// when it does not say.
pub(super) fn port_protocol(port: &Port) -> Protocol {
    port.declared_protocol().unwrap_or(Protocol::Tcp)
}

/// Whether a ServiceEntry's `workloadSelector` selects the workload in `namespace` with
/// `labels` (a service of this workload).
fn selects_workload(
    object: &Object,
    entry: &ServiceEntry,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    object.namespace == namespace
        && entry
            .workload_selector
            .as_ref()
            .is_some_and(|s| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The chain for HTTP connections to a host's VIP on port `number`, and its route table: every
/// request on it is that host's, whatever its Host header says (or when it has none), since
/// the address already named the service. Its routes are the host's own (`virtual_host`).
fn vip_http_chain(
    vip: &super::vips::Vip,
    number: u32,
    virtual_host: &VirtualHost,
) -> (FilterChain, RouteTable) {
    let name = format!("{}_{number}", vip.v4);
    let mut catch_all = virtual_host.clone();
    catch_all.domains = vec!["*".to_owned()];
    let chain = FilterChain {
        name: name.clone(),
        server_names: Vec::new(),
        matches: ChainMatch {
            destination_port: u16::try_from(number).ok(),
            prefix_ranges: vip.addresses().map(IpNet::from).to_vec(),
            ..ChainMatch::default()
        },
        transport: Transport::Plaintext,
        application: Application::Http {
            route_table: name.clone(),
        },
    };
    let table = RouteTable {
        name,
        virtual_hosts: vec![catch_all],
    };
    (chain, table)
}

/// A route sending every request to `cluster`.
fn route_to(name: &str, cluster: String, retry: Option<RetryPolicy>) -> Route {
    Route {
        name: name.to_owned(),
        matches: Vec::new(),
        action: RouteAction::Forward {
            clusters: vec![WeightedCluster {
                cluster,
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }],
            rewrite: None,
        },
        timeout: None,
        retry,
        fault: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        mirrors: Vec::new(),
        cors: None,
    }
}

impl<'a> Compiler<'a> {
    /// The virtual outbound listener and its route tables.
    fn outbound_listener(
        &mut self,
        objects: &[&'a Object],
        address: SocketAddr,
        scope: &SidecarScope<'_>,
    ) -> (Listener, BTreeMap<String, Arc<RouteTable>>) {
        // The mesh's VirtualServices, those for hosts no captured egress listener imports left
        // out.
        let bound: Vec<Bound<'a>> = self
            .mesh_virtual_services(objects)
            .into_iter()
            .filter(|b| {
                b.hosts
                    .iter()
                    .any(|h| scope.captured_imports_any(&b.object.namespace, h))
            })
            .collect();

        let mut http_ports: BTreeMap<u32, Vec<VirtualHost>> = BTreeMap::new();
        let mut tls_ports: BTreeMap<u32, Vec<TcpRoute>> = BTreeMap::new();
        let mut chains = Vec::new();
        let mut tables_for_vips = BTreeMap::new();
        for (host, service) in self.registry.services() {
            for port in &service.entry.ports {
                let Some(number) = port.number else { continue };
                if !scope.captured_imports(&service.object.namespace, &host, number) {
                    continue;
                }
                let protocol = port_protocol(port);
                if protocol.is_http() {
                    let virtual_host = self.mesh_virtual_host(&host, service, number, &bound);
                    if let Some(vip) = self.vips.get(&service.object.namespace, &host) {
                        let (chain, table) = vip_http_chain(&vip, number, &virtual_host);
                        tables_for_vips.insert(table.name.clone(), Arc::new(table));
                        chains.push(chain);
                    }
                    http_ports.entry(number).or_default().push(virtual_host);
                } else if protocol.is_tls() {
                    // The mesh's `tls` routes for the host choose by SNI (`sniHosts`), as
                    // Istio's egress patterns send TLS to the egress gateway.
                    let mut routes = Vec::new();
                    for vs in bound
                        .iter()
                        .filter(|b| b.hosts.iter().any(|h| hosts::within(&host, h)))
                    {
                        for mut route in self.tls_routes(vs, Client::Mesh, number) {
                            route.server_names.retain(|sni| hosts::within(sni, &host));
                            if !route.server_names.is_empty() {
                                routes.push(route);
                            }
                        }
                    }
                    if !routes.is_empty() {
                        tls_ports.entry(number).or_default().extend(routes);
                    } else if let Some(cluster) =
                        self.cluster(&host, Some(number), None, &self.options.namespace.clone())
                    {
                        tls_ports.entry(number).or_default().push(TcpRoute {
                            name: format!("{host}:{number}"),
                            server_names: vec![host.clone()],
                            clusters: vec![(cluster, 100)],
                        });
                    }
                } else if let Some(chain) = self.tcp_chain(&host, service, number, &bound) {
                    chains.push(chain);
                }
            }
        }
        let mut tables = tables_for_vips;
        for (number, mut virtual_hosts) in http_ports {
            let name = number.to_string();
            virtual_hosts.push(self.fallback_virtual_host());
            chains.push(FilterChain {
                name: format!("0.0.0.0_{number}"),
                server_names: Vec::new(),
                matches: ChainMatch {
                    destination_port: u16::try_from(number).ok(),
                    ..ChainMatch::default()
                },
                transport: Transport::Plaintext,
                application: Application::Http {
                    route_table: name.clone(),
                },
            });
            tables.insert(
                name.clone(),
                Arc::new(RouteTable {
                    name,
                    virtual_hosts,
                }),
            );
        }
        for (number, mut routes) in tls_ports {
            routes.push(self.fallback_tcp_route());
            chains.push(FilterChain {
                name: format!("0.0.0.0_{number}_tls"),
                server_names: Vec::new(),
                matches: ChainMatch {
                    destination_port: u16::try_from(number).ok(),
                    ..ChainMatch::default()
                },
                transport: Transport::Passthrough,
                application: Application::Tcp { routes },
            });
        }
        chains.push(FilterChain {
            name: "PassthroughFilterChain".to_owned(),
            server_names: Vec::new(),
            matches: ChainMatch::default(),
            transport: Transport::Plaintext,
            application: Application::Tcp {
                routes: vec![self.fallback_tcp_route()],
            },
        });
        self.at = None;
        let listener = Listener {
            name: "virtualOutbound".to_owned(),
            address,
            original_destination: true,
            filter_chains: chains,
        };
        (listener, tables)
    }

    /// The mesh's VirtualServices (`gateways` omitted or naming `mesh`), their hosts
    /// qualified, in creation order.
    pub(super) fn mesh_virtual_services(&self, objects: &[&'a Object]) -> Vec<Bound<'a>> {
        let mut bound: Vec<Bound<'a>> = objects
            .iter()
            .filter_map(|o| match &o.spec {
                Spec::VirtualService(vs)
                    if vs.gateways.is_empty()
                        || Client::Mesh.named_by(&o.namespace, &vs.gateways) =>
                {
                    Some(Bound {
                        object: o,
                        spec: vs,
                        hosts: vs
                            .hosts
                            .iter()
                            .map(|h| self.registry.qualify(h, &o.namespace))
                            .collect(),
                    })
                }
                _ => None,
            })
            .collect();
        bound.sort_by(|a, b| creation_order(a.object).cmp(&creation_order(b.object)));
        bound
    }

    /// The workload's peer authentication (findings about the policies are reported once,
    /// when the snapshot is finished).
    pub(super) fn workload_peer_authentication(
        &self,
        objects: &[&'a Object],
    ) -> strait_proxy::snapshot::PeerAuthentication {
        let workload = super::policies::Workload {
            namespace: &self.options.namespace,
            labels: &self.options.labels,
        };
        super::policies::compile(objects, workload, &mut Vec::new()).peer_authentication
    }

    /// The virtual inbound listener: per port of the workload's services (or of the captured
    /// ingress listeners of its Sidecar, when it has ingress listeners), the chains its
    /// PeerAuthentication mode allows; for other ports the workload-wide mode, to the original
    /// destination.
    fn inbound_listener(
        &mut self,
        objects: &[&'a Object],
        address: SocketAddr,
        tables: &mut BTreeMap<String, Arc<RouteTable>>,
        scope: &SidecarScope<'a>,
        options: &SidecarOptions,
    ) -> Listener {
        let peer_authentication = self.workload_peer_authentication(objects);
        // Port -> (protocol to the application, the cluster that reaches it).
        let mut ports: BTreeMap<u16, (Option<UpstreamProtocol>, String)> = BTreeMap::new();
        if scope.ingress().is_empty() {
            for object in objects {
                let Spec::ServiceEntry(entry) = &object.spec else {
                    continue;
                };
                if !selects_workload(object, entry, &self.options.namespace, &self.options.labels) {
                    continue;
                }
                for port in &entry.ports {
                    let Some(number) = port.target_port.or(port.number) else {
                        continue;
                    };
                    if let Ok(number) = u16::try_from(number) {
                        ports.entry(number).or_insert_with(|| {
                            let protocol = inbound_protocol(port);
                            let cluster = format!("inbound|{number}||");
                            self.inbound_cluster(
                                &cluster,
                                protocol.unwrap_or(UpstreamProtocol::Http1),
                            );
                            (protocol, cluster)
                        });
                    }
                }
            }
        } else {
            for (index, listener) in scope.ingress() {
                if scope.binds(listener.capture_mode) {
                    continue;
                }
                if let Some(port) = self.ingress_port(scope, index, listener, options, None) {
                    ports
                        .entry(port.number)
                        .or_insert((port.protocol, port.cluster));
                }
            }
        }
        let mut chains = Vec::new();
        for (number, (protocol, cluster)) in ports {
            let application =
                inbound_application(&format!("inbound|{number}"), protocol, &cluster, tables);
            let mode = peer_authentication.mode_for(number);
            chains.extend(inbound_chains(
                &format!("inbound_{number}"),
                Some(number),
                mode,
                application,
                &cluster,
            ));
        }
        self.inbound_cluster(INBOUND_PASSTHROUGH_CLUSTER, UpstreamProtocol::Downstream);
        let passthrough = Application::Tcp {
            routes: vec![TcpRoute {
                name: INBOUND_PASSTHROUGH_CLUSTER.to_owned(),
                server_names: Vec::new(),
                clusters: vec![(INBOUND_PASSTHROUGH_CLUSTER.to_owned(), 100)],
            }],
        };
        chains.extend(inbound_chains(
            "inbound_passthrough",
            None,
            peer_authentication.mode,
            passthrough,
            INBOUND_PASSTHROUGH_CLUSTER,
        ));
        Listener {
            name: "virtualInbound".to_owned(),
            address,
            original_destination: true,
            filter_chains: chains,
        }
    }

    /// A cluster to the application at the connection's original destination, from
    /// 127.0.0.6.
    pub(super) fn inbound_cluster(&mut self, name: &str, protocol: UpstreamProtocol) {
        let timeout = self.registry.mesh.connect_timeout;
        self.clusters.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Cluster {
                name: name.to_owned(),
                lb: LbPolicy::LeastRequest,
                connect_timeout: timeout,
                pool: PoolLimits::default(),
                outlier: None,
                tls: UpstreamTls::Disabled,
                protocol,
                endpoints: Vec::new(),
                original_destination: true,
                upstream_bind: Some(INBOUND_SOURCE),
                telemetry: self.inbound_telemetry.clone(),
                empty_reason: None,
            })
        });
    }

    /// What the inbound side reports as the destination, Istio's way: this workload (its
    /// name, namespace, SPIFFE ID, `app` and `version` labels) and the first service that
    /// selects it.
    fn inbound_telemetry_of(
        &self,
        objects: &[&'a Object],
        options: &SidecarOptions,
    ) -> Vec<(String, String)> {
        let label = |name: &str| {
            options
                .labels
                .get(name)
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let mut telemetry = vec![
            ("reporter".to_owned(), "destination".to_owned()),
            (
                "destination_workload".to_owned(),
                options.workload_name.clone(),
            ),
            (
                "destination_workload_namespace".to_owned(),
                options.namespace.clone(),
            ),
            (
                "destination_principal".to_owned(),
                format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    self.registry.mesh.trust_domain, options.namespace, options.service_account
                ),
            ),
            ("destination_app".to_owned(), label("app")),
            ("destination_version".to_owned(), label("version")),
        ];
        let service = objects.iter().find_map(|object| match &object.spec {
            Spec::ServiceEntry(entry)
                if selects_workload(object, entry, &options.namespace, &options.labels) =>
            {
                let host = entry.hosts.iter().flatten().next()?;
                Some((
                    self.registry.qualify(host, &object.namespace),
                    object.namespace.clone(),
                ))
            }
            _ => None,
        });
        if let Some((host, namespace)) = service {
            telemetry.push((
                "destination_service_name".to_owned(),
                host.split('.').next().unwrap_or(&host).to_owned(),
            ));
            telemetry.push(("destination_service".to_owned(), host));
            telemetry.push(("destination_service_namespace".to_owned(), namespace));
        }
        telemetry
    }

    /// The virtual host of `host` on HTTP port `number`: the routes of the mesh's
    /// VirtualServices for the host, else one route to its default cluster.
    pub(super) fn mesh_virtual_host(
        &mut self,
        host: &str,
        service: Service<'a>,
        number: u32,
        bound: &[Bound<'a>],
    ) -> VirtualHost {
        let mut routes = Vec::new();
        for vs in bound
            .iter()
            .filter(|b| b.hosts.iter().any(|h| hosts::within(host, h)))
        {
            let mut compiled = self.http_routes(vs, Client::Mesh, number);
            let merging = !routes.is_empty();
            routes.append(&mut compiled);
            if merging {
                routes.sort_by_key(|r: &Route| r.matches.is_empty());
            }
        }
        if routes.is_empty() {
            let namespace = self.options.namespace.clone();
            if let Some(cluster) = self.cluster(host, Some(number), None, &namespace) {
                let retry = self.retry_policy(None);
                routes.push(route_to("default", cluster, retry));
            }
        }
        VirtualHost {
            name: format!("{host}:{number}"),
            domains: domains(
                host,
                number,
                service,
                &self.options.namespace,
                self.registry.domain_suffix,
            ),
            routes,
            require_tls: false,
        }
    }

    /// A TCP port's chain: by the service's addresses, to its VirtualService's `tcp` routes or
    /// its default cluster.
    pub(super) fn tcp_chain(
        &mut self,
        host: &str,
        service: Service<'a>,
        number: u32,
        bound: &[Bound<'a>],
    ) -> Option<FilterChain> {
        self.at(service.object, FieldPath::ROOT.field("spec").field("ports"));
        let mut routes = Vec::new();
        for vs in bound
            .iter()
            .filter(|b| b.hosts.iter().any(|h| hosts::within(host, h)))
        {
            routes.extend(self.tcp_routes(vs, Client::Mesh, number));
        }
        if routes.is_empty() {
            let namespace = self.options.namespace.clone();
            let cluster = self.cluster(host, Some(number), None, &namespace)?;
            routes.push(TcpRoute {
                name: format!("{host}:{number}"),
                server_names: Vec::new(),
                clusters: vec![(cluster, 100)],
            });
        }
        let prefix_ranges = self.service_addresses(host, service, number);
        if prefix_ranges.is_empty() {
            self.problem(format!(
                "{host}:{number} is TCP and has no addresses nor endpoint IPs: a captured connection cannot be told to be for it"
            ));
            return None;
        }
        Some(FilterChain {
            name: format!("{host}:{number}"),
            server_names: Vec::new(),
            matches: ChainMatch {
                destination_port: u16::try_from(number).ok(),
                prefix_ranges,
                ..ChainMatch::default()
            },
            transport: Transport::Plaintext,
            application: Application::Tcp { routes },
        })
    }

    /// The IPs a connection to the service is made to: its `addresses` (VIPs or CIDRs), else
    /// its allocated VIPs and the IPs of its endpoints on `number`.
    fn service_addresses(&mut self, host: &str, service: Service<'a>, number: u32) -> Vec<IpNet> {
        let declared: Vec<IpNet> = service
            .entry
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| {
                a.parse::<IpNet>()
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        if !declared.is_empty() {
            return declared;
        }
        let Some(port) = service.port(Some(number)).cloned() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut ips: Vec<IpNet> = self
            .registry
            .endpoints(service, &port, None, &mut problems)
            .into_iter()
            .map(|e| IpNet::from(e.address.ip()))
            .collect();
        if let Some(vip) = self.vips.get(&service.object.namespace, host) {
            ips.extend(vip.addresses().map(IpNet::from));
        }
        ips.sort();
        ips.dedup();
        ips
    }

    /// The names the sidecar's DNS proxy answers: the non-wildcard hosts its outbound side
    /// sees, with their `addresses`, else their VIP, else (STATIC) their endpoints' IPs; see
    /// `dns_proxy::names`.
    fn name_table(&mut self, scope: &SidecarScope<'_>, options: &SidecarOptions) -> NameTable {
        let mut table = NameTable::new(&options.namespace, &options.domain_suffix);
        for (host, service) in self.registry.services() {
            let namespace = &service.object.namespace;
            if host.contains('*') || !scope.imports_any(namespace, &host) {
                continue;
            }
            let declared: Vec<IpAddr> = service
                .entry
                .addresses
                .iter()
                .flatten()
                .filter_map(|a| {
                    a.parse::<IpAddr>().ok().or_else(|| {
                        // A CIDR is an address only when it holds one.
                        let net = a.parse::<IpNet>().ok()?;
                        (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
                    })
                })
                .collect();
            if !declared.is_empty() {
                table.insert(&host, declared);
            } else if let Some(vip) = self.vips.get(namespace, &host) {
                table.insert(&host, vip.addresses());
            } else if service.entry.resolution == Some(Resolution::Static) {
                let mut problems = Vec::new();
                let mut ips = Vec::new();
                for port in &service.entry.ports {
                    ips.extend(
                        self.registry
                            .endpoints(service, port, None, &mut problems)
                            .into_iter()
                            .map(|e| e.address.ip()),
                    );
                }
                table.insert(&host, ips);
            }
        }
        table
    }

    /// Where requests for hosts outside the registry go.
    pub(super) fn fallback_virtual_host(&mut self) -> VirtualHost {
        let (name, cluster) = if self.registry.mesh.allow_any {
            self.passthrough_cluster();
            ("allow_any", PASSTHROUGH_CLUSTER)
        } else {
            self.blackhole_cluster();
            ("block_all", BLACKHOLE_CLUSTER)
        };
        VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![route_to(name, cluster.to_owned(), None)],
            require_tls: false,
        }
    }

    /// The TCP route for connections to destinations outside the registry.
    pub(super) fn fallback_tcp_route(&mut self) -> TcpRoute {
        let cluster = if self.registry.mesh.allow_any {
            self.passthrough_cluster();
            PASSTHROUGH_CLUSTER
        } else {
            self.blackhole_cluster();
            BLACKHOLE_CLUSTER
        };
        TcpRoute {
            name: cluster.to_owned(),
            server_names: Vec::new(),
            clusters: vec![(cluster.to_owned(), 100)],
        }
    }

    fn passthrough_cluster(&mut self) {
        let timeout = self.registry.mesh.connect_timeout;
        self.clusters
            .entry(PASSTHROUGH_CLUSTER.to_owned())
            .or_insert_with(|| {
                Arc::new(Cluster {
                    name: PASSTHROUGH_CLUSTER.to_owned(),
                    lb: LbPolicy::LeastRequest,
                    connect_timeout: timeout,
                    pool: PoolLimits::default(),
                    outlier: None,
                    tls: UpstreamTls::Disabled,
                    protocol: UpstreamProtocol::Downstream,
                    endpoints: Vec::new(),
                    original_destination: true,
                    upstream_bind: None,
                    telemetry: vec![(
                        "destination_service".to_owned(),
                        PASSTHROUGH_CLUSTER.to_owned(),
                    )],
                    empty_reason: None,
                })
            });
    }

    fn blackhole_cluster(&mut self) {
        self.blackhole_clusters.insert(BLACKHOLE_CLUSTER.to_owned());
        self.missing_clusters.insert(
            BLACKHOLE_CLUSTER.to_owned(),
            "outboundTrafficPolicy is REGISTRY_ONLY and no service in the registry has this destination".to_owned(),
        );
    }
}

/// What an inbound port's connections carry: HTTP routed by the table `name` (added to
/// `tables`) when `protocol` is set, else TCP, to `cluster`.
pub(super) fn inbound_application(
    name: &str,
    protocol: Option<UpstreamProtocol>,
    cluster: &str,
    tables: &mut BTreeMap<String, Arc<RouteTable>>,
) -> Application {
    match protocol {
        Some(_) => {
            tables.insert(
                name.to_owned(),
                Arc::new(inbound_route_table(name, cluster)),
            );
            Application::Http {
                route_table: name.to_owned(),
            }
        }
        None => Application::Tcp {
            routes: vec![TcpRoute {
                name: cluster.to_owned(),
                server_names: Vec::new(),
                clusters: vec![(cluster.to_owned(), 100)],
            }],
        },
    }
}

/// The chains of one inbound port (or of all undeclared ports when `port` is `None`) under
/// `mode`: mesh mTLS by the offered ALPN, the application's own TLS passed through, plaintext.
pub(super) fn inbound_chains(
    name: &str,
    port: Option<u16>,
    mode: MtlsMode,
    application: Application,
    cluster: &str,
) -> Vec<FilterChain> {
    let matches = |transport_protocol, application_protocols: &[&str]| ChainMatch {
        destination_port: port,
        transport_protocol: Some(transport_protocol),
        application_protocols: application_protocols
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        ..ChainMatch::default()
    };
    let mut chains = Vec::new();
    if mode != MtlsMode::Disable {
        chains.push(FilterChain {
            name: format!("{name}_mtls"),
            server_names: Vec::new(),
            matches: matches(TransportProtocol::Tls, &ISTIO_ALPNS),
            transport: Transport::IstioMutual,
            application: application.clone(),
        });
    }
    if mode != MtlsMode::Strict {
        chains.push(FilterChain {
            name: format!("{name}_tls"),
            server_names: Vec::new(),
            matches: matches(TransportProtocol::Tls, &[]),
            transport: Transport::Passthrough,
            application: Application::Tcp {
                routes: vec![TcpRoute {
                    name: cluster.to_owned(),
                    server_names: Vec::new(),
                    clusters: vec![(cluster.to_owned(), 100)],
                }],
            },
        });
        chains.push(FilterChain {
            name: format!("{name}_plaintext"),
            server_names: Vec::new(),
            matches: matches(TransportProtocol::RawBuffer, &[]),
            transport: Transport::Plaintext,
            application,
        });
    }
    chains
}

/// An inbound port's route table: every request to the application.
fn inbound_route_table(name: &str, cluster: &str) -> RouteTable {
    RouteTable {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![route_to("default", cluster.to_owned(), None)],
            require_tls: false,
        }],
    }
}

/// The names a client may call `host` by on `port`: the host, with the port, and for a
/// Kubernetes-style name in the client's namespace its short forms (`reviews`,
/// `reviews.default`, `reviews.default.svc`), each with and without the port; and the
/// service's addresses.
pub(super) fn domains(
    host: &str,
    port: u32,
    service: Service<'_>,
    namespace: &str,
    suffix: &str,
) -> Vec<String> {
    let mut names = vec![host.to_owned()];
    let cluster_suffix = format!(".svc.{suffix}");
    if let Some(short) = host.strip_suffix(&cluster_suffix) {
        // `name.namespace`
        names.push(format!("{short}.svc"));
        names.push(short.to_owned());
        if let Some((name, ns)) = short.split_once('.')
            && ns == namespace
        {
            names.push(name.to_owned());
        }
    }
    names.extend(
        service
            .entry
            .addresses
            .iter()
            .flatten()
            .filter(|a| a.parse::<IpAddr>().is_ok())
            .cloned(),
    );
    let with_port: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    names.extend(with_port);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKINFO: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http-web}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: postgres}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.4}, {address: 10.0.0.5}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: default}
spec:
  hosts: [cache.default.svc.cluster.local]
  addresses: [240.0.0.7]
  ports: [{number: 6379, name: redis-port, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.6}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-at-the-gateway, namespace: default}
spec:
  hosts: [reviews]
  gateways: [istio-system/ingress]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
"#;

    fn compile(yaml: &str) -> Compiled {
        compile_with_mesh(yaml, "")
    }

    fn compile_with_mesh(yaml: &str, mesh: &str) -> Compiled {
        compile_full(yaml, mesh, true)
    }

    fn compile_full(yaml: &str, mesh: &str, captured: bool) -> Compiled {
        let mut files = vec![("test.yaml", yaml)];
        if !mesh.is_empty() {
            files.push(("mesh.yaml", mesh));
        }
        let loaded = crate::resources::load_clean(&files);
        let options = SidecarOptions {
            namespace: "default".to_owned(),
            labels: BTreeMap::from([
                ("app".to_owned(), "productpage".to_owned()),
                ("security.istio.io/tlsMode".to_owned(), "istio".to_owned()),
            ]),
            domain_suffix: "cluster.local".to_owned(),
            outbound: SocketAddr::from(([0, 0, 0, 0], 15001)),
            inbound: SocketAddr::from(([0, 0, 0, 0], 15006)),
            captured,
            instance_ip: None,
            workload_name: "productpage-v1".to_owned(),
            service_account: "bookinfo-productpage".to_owned(),
            http_proxy: None,
            dns: Default::default(),
            network: None,
            locality: None,
        };
        compile_sidecar(&loaded.objects, &options, 1)
    }

    fn chain<'s>(listener: &'s Listener, name: &str) -> &'s FilterChain {
        listener
            .filter_chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = listener
                    .filter_chains
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                panic!("no chain {name}: {names:?}")
            })
    }

    fn clusters_of(route: &Route) -> Vec<&str> {
        match &route.action {
            RouteAction::Forward { clusters, .. } => {
                clusters.iter().map(|c| c.cluster.as_str()).collect()
            }
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn http_ports_share_one_chain_and_route_by_host_with_the_mesh_virtual_services() {
        let compiled = compile(BOOKINFO);
        let snapshot = &compiled.snapshot;
        let listener = &snapshot.listeners[0];
        assert!(listener.original_destination);
        assert_eq!(listener.address.port(), 15001);
        let http = chain(listener, "0.0.0.0_9080");
        assert_eq!(http.matches.destination_port, Some(9080));
        assert!(http.matches.prefix_ranges.is_empty());
        let table = &snapshot.route_tables["9080"];
        let reviews = table
            .virtual_hosts
            .iter()
            .find(|h| h.name == "reviews.default.svc.cluster.local:9080")
            .unwrap();
        for name in [
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc.cluster.local:9080",
        ] {
            assert!(
                reviews.domains.iter().any(|d| d == name),
                "{name} in {:?}",
                reviews.domains
            );
        }
        // The mesh VirtualService, not the one bound only to a gateway.
        assert_eq!(reviews.routes.len(), 2);
        assert_eq!(
            clusters_of(&reviews.routes[0]),
            ["outbound|9080|v2|reviews.default.svc.cluster.local"]
        );
        assert_eq!(
            clusters_of(&reviews.routes[1]),
            ["outbound|9080|v1|reviews.default.svc.cluster.local"]
        );
        // A host without a VirtualService goes to its default cluster; the port name's prefix
        // (`http-web`) makes it HTTP.
        let ratings = table
            .virtual_hosts
            .iter()
            .find(|h| h.name == "ratings.default.svc.cluster.local:9080")
            .unwrap();
        assert_eq!(
            clusters_of(&ratings.routes[0]),
            ["outbound|9080||ratings.default.svc.cluster.local"]
        );
        assert!(
            ratings.routes[0].retry.is_some(),
            "Istio's default retry policy applies"
        );
        // Hosts outside the registry pass through (ALLOW_ANY by default).
        let last = table.virtual_hosts.last().unwrap();
        assert_eq!(last.domains, ["*"]);
        assert_eq!(clusters_of(&last.routes[0]), [PASSTHROUGH_CLUSTER]);
        assert!(snapshot.clusters[PASSTHROUGH_CLUSTER].original_destination);
    }

    const EXTERNAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: default}
spec:
  hosts: ["*.wild.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: default}
spec:
  hosts: [none.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: other}
spec:
  hosts: [db.other.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tcp-postgres}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.4}]
"#;

    fn vip(namespace: &str, host: &str) -> super::super::vips::Vip {
        let hosts = [
            ("default", "web.example.com"),
            ("other", "db.other.svc.cluster.local"),
            ("default", "ratings.default.svc.cluster.local"),
            ("default", "reviews.default.svc.cluster.local"),
            ("default", "db.default.svc.cluster.local"),
            ("default", "api.example.com"),
        ];
        Vips::allocate(hosts.map(|(n, h)| (n.to_owned(), h.to_owned())))
            .get(namespace, host)
            .unwrap()
    }

    #[test]
    fn an_http_vip_has_its_own_chain_where_every_request_is_its_hosts() {
        let compiled = compile(EXTERNAL);
        let listener = &compiled.snapshot.listeners[0];
        let web = vip("default", "web.example.com");
        let name = format!("{}_80", web.v4);
        let vip_chain = chain(listener, &name);
        assert_eq!(vip_chain.matches.destination_port, Some(80));
        assert_eq!(
            vip_chain.matches.prefix_ranges,
            [
                IpNet::from(IpAddr::V4(web.v4)),
                IpNet::from(IpAddr::V6(web.v6))
            ]
        );
        let table = &compiled.snapshot.route_tables[&name];
        assert_eq!(table.virtual_hosts.len(), 1);
        assert_eq!(table.virtual_hosts[0].domains, ["*"]);
        assert_eq!(
            clusters_of(&table.virtual_hosts[0].routes[0]),
            ["outbound|80||web.example.com"]
        );
        // By Host on the port's shared chain, as before.
        assert!(
            compiled.snapshot.route_tables["80"]
                .virtual_hosts
                .iter()
                .any(|h| h.domains.contains(&"web.example.com".to_owned()))
        );
        // The TCP service's chain matches its VIP as well as its endpoint.
        let db = chain(listener, "db.other.svc.cluster.local:5432");
        let other = vip("other", "db.other.svc.cluster.local");
        assert!(
            db.matches
                .prefix_ranges
                .contains(&IpNet::from(IpAddr::V4(other.v4)))
        );
    }

    #[test]
    fn the_name_table_answers_addresses_then_vips_and_leaves_wildcards_and_none_out() {
        let compiled = compile(&format!("{BOOKINFO}---\n{EXTERNAL}"));
        let names = &compiled.names;
        let web = vip("default", "web.example.com");
        let entry = names.lookup("web.example.com").unwrap();
        assert_eq!(
            (entry.v4.as_slice(), entry.v6.as_slice()),
            (&[web.v4][..], &[web.v6][..])
        );
        // Declared addresses win over a VIP.
        let cache = names.lookup("cache").unwrap();
        assert_eq!(
            cache.v4,
            ["240.0.0.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert!(cache.v6.is_empty());
        // Short names within the namespace; another namespace's with its namespace.
        assert_eq!(names.lookup("reviews"), names.lookup("reviews.default.svc"));
        assert!(names.lookup("reviews").is_some());
        assert!(names.lookup("db.other").is_some());
        assert!(names.lookup("x.wild.example.com").is_none());
        assert!(names.lookup("*.wild.example.com").is_none());
        assert!(names.lookup("none.example.com").is_none());
    }

    #[test]
    fn without_capture_there_are_no_vips_and_static_services_answer_their_endpoints() {
        let compiled = compile_full(&format!("{BOOKINFO}---\n{EXTERNAL}"), "", false);
        let names = &compiled.names;
        let ratings = names.lookup("ratings").unwrap();
        assert_eq!(
            ratings.v4,
            ["10.0.0.3".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert!(ratings.v6.is_empty());
        // A DNS host without addresses is left to the upstream resolvers.
        assert!(names.lookup("web.example.com").is_none());
        // Nothing is redirected to the virtual listeners: there are none to hold 15001/15006.
        assert!(
            compiled.snapshot.listeners.is_empty(),
            "{:?}",
            compiled.snapshot.listeners
        );
    }

    #[test]
    fn tcp_ports_are_chosen_by_the_service_addresses_else_its_endpoint_ips() {
        let compiled = compile(BOOKINFO);
        let listener = &compiled.snapshot.listeners[0];
        // No protocol and an unknown name prefix: TCP.
        let db = chain(listener, "db.default.svc.cluster.local:5432");
        assert_eq!(db.matches.destination_port, Some(5432));
        let ips: Vec<String> = db
            .matches
            .prefix_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        // Its endpoints' IPs, and (capture being on) its allocated VIPs.
        let vip = super::super::vips::Vips::allocate([(
            "default".to_owned(),
            "db.default.svc.cluster.local".to_owned(),
        )])
        .get("default", "db.default.svc.cluster.local")
        .unwrap();
        assert_eq!(
            ips,
            [
                "10.0.0.4/32".to_owned(),
                "10.0.0.5/32".to_owned(),
                format!("{}/32", vip.v4),
                format!("{}/128", vip.v6)
            ]
        );
        let cache = chain(listener, "cache.default.svc.cluster.local:6379");
        let vips: Vec<String> = cache
            .matches
            .prefix_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(vips, ["240.0.0.7/32"]);
        let Application::Tcp { routes } = &cache.application else {
            panic!()
        };
        assert_eq!(
            routes[0].clusters,
            [(
                "outbound|6379||cache.default.svc.cluster.local".to_owned(),
                100
            )]
        );
    }

    #[test]
    fn tls_ports_route_by_sni_and_everything_else_passes_through() {
        let compiled = compile(BOOKINFO);
        let listener = &compiled.snapshot.listeners[0];
        let tls = chain(listener, "0.0.0.0_443_tls");
        assert_eq!(tls.transport, Transport::Passthrough);
        let Application::Tcp { routes } = &tls.application else {
            panic!()
        };
        assert_eq!(routes[0].server_names, ["api.example.com"]);
        assert_eq!(routes[0].clusters[0].0, "outbound|443||api.example.com");
        assert_eq!(routes.last().unwrap().clusters[0].0, PASSTHROUGH_CLUSTER);
        let last = listener.filter_chains.last().unwrap();
        assert_eq!(last.name, "PassthroughFilterChain");
        assert_eq!(last.matches, ChainMatch::default());
    }

    #[test]
    fn registry_only_sends_unknown_destinations_to_the_blackhole() {
        let compiled =
            compile_with_mesh(BOOKINFO, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
        let snapshot = &compiled.snapshot;
        let last = snapshot.route_tables["9080"].virtual_hosts.last().unwrap();
        assert_eq!(clusters_of(&last.routes[0]), [BLACKHOLE_CLUSTER]);
        assert!(!snapshot.clusters.contains_key(PASSTHROUGH_CLUSTER));
        assert!(
            snapshot
                .missing_cluster_reason(BLACKHOLE_CLUSTER)
                .contains("REGISTRY_ONLY")
        );
        // The proxy answers requests routed there 502 and resets connections.
        assert!(snapshot.blackhole_clusters.contains(BLACKHOLE_CLUSTER));
    }

    /// Istio's egress pattern for application TLS: the mesh's `tls` route sends a name on a
    /// TLS port to the egress gateway, by SNI; other names keep their own route.
    #[test]
    fn mesh_tls_routes_send_a_tls_port_s_names_by_sni() {
        let yaml = format!(
            "{BOOKINFO}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 10.9.9.9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api-through-egress, namespace: default}}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/egress, mesh]
  tls:
  - match: [{{gateways: [mesh], port: 443, sniHosts: [api.example.com]}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 443, sniHosts: [api.example.com]}}]
    route: [{{destination: {{host: api.example.com, port: {{number: 443}}}}}}]
"
        );
        let compiled = compile(&yaml);
        let tls = chain(&compiled.snapshot.listeners[0], "0.0.0.0_443_tls");
        let Application::Tcp { routes } = &tls.application else {
            panic!()
        };
        let to_gateway: Vec<_> = routes
            .iter()
            .filter(|r| r.server_names == ["api.example.com"])
            .collect();
        assert_eq!(to_gateway.len(), 1, "{routes:?}");
        assert_eq!(
            to_gateway[0].clusters[0].0,
            "outbound|443||istio-egressgateway.istio-system.svc.cluster.local"
        );
    }

    const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, targetPort: 8080}, {number: 5000, name: tcp-admin}]
  resolution: STATIC
  workloadSelector: {labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-1, namespace: default}
spec:
  address: 10.0.0.9
  labels: {app: productpage, security.istio.io/tlsMode: istio}
  serviceAccount: bookinfo-productpage
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  workloadSelector: {labels: {app: details}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-1, namespace: default}
spec:
  address: 10.0.0.10
  labels: {app: details, security.istio.io/tlsMode: istio}
  serviceAccount: bookinfo-details
"#;

    fn chain_names(listener: &Listener, prefix: &str) -> Vec<String> {
        listener
            .filter_chains
            .iter()
            .filter(|c| c.name.starts_with(prefix))
            .map(|c| c.name.clone())
            .collect()
    }

    fn peer_authentication(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn inbound_chains_follow_each_port_s_peer_authentication_mode() {
        let config = format!(
            "{MESH}{}",
            peer_authentication(
                "productpage",
                "{selector: {matchLabels: {app: productpage}}, mtls: {mode: STRICT}, portLevelMtls: {5000: {mode: DISABLE}}}"
            )
        );
        let compiled = compile(&config);
        let inbound = &compiled.snapshot.listeners[1];
        assert_eq!(inbound.name, "virtualInbound");
        assert!(inbound.original_destination);
        // The target port, STRICT: mesh mTLS only.
        assert_eq!(chain_names(inbound, "inbound_8080"), ["inbound_8080_mtls"]);
        let mtls = chain(inbound, "inbound_8080_mtls");
        assert_eq!(mtls.transport, Transport::IstioMutual);
        assert_eq!(
            mtls.matches.transport_protocol,
            Some(TransportProtocol::Tls)
        );
        assert!(
            mtls.matches
                .application_protocols
                .iter()
                .any(|p| p == "istio-h2")
        );
        assert!(
            matches!(&mtls.application, Application::Http { route_table } if route_table == "inbound|8080")
        );
        // Port level DISABLE: plaintext and the application's own TLS, no mesh mTLS.
        assert_eq!(
            chain_names(inbound, "inbound_5000"),
            ["inbound_5000_tls", "inbound_5000_plaintext"]
        );
        // Undeclared ports take the workload's mode.
        assert_eq!(
            chain_names(inbound, "inbound_passthrough"),
            ["inbound_passthrough_mtls"]
        );
        let cluster = &compiled.snapshot.clusters["inbound|8080||"];
        assert!(cluster.original_destination);
        assert_eq!(cluster.upstream_bind, Some(INBOUND_SOURCE));
    }

    #[test]
    fn permissive_is_the_default_and_accepts_all_three() {
        let compiled = compile(MESH);
        let inbound = &compiled.snapshot.listeners[1];
        assert_eq!(
            chain_names(inbound, "inbound_8080"),
            [
                "inbound_8080_mtls",
                "inbound_8080_tls",
                "inbound_8080_plaintext"
            ]
        );
    }

    #[test]
    fn meshed_endpoints_get_istio_mutual_with_their_identity_unless_they_disable_it() {
        let compiled = compile(MESH);
        let cluster =
            &compiled.snapshot.clusters["outbound|9080||details.default.svc.cluster.local"];
        assert_eq!(
            cluster.tls,
            UpstreamTls::IstioMutual {
                sni: "outbound_.9080_._.details.default.svc.cluster.local".to_owned(),
                subject_alt_names: vec![
                    "spiffe://cluster.local/ns/default/sa/bookinfo-details".to_owned()
                ],
            }
        );
        let disabled = format!(
            "{MESH}{}",
            peer_authentication(
                "details",
                "{selector: {matchLabels: {app: details}}, mtls: {mode: DISABLE}}"
            )
        );
        let compiled = compile(&disabled);
        let cluster =
            &compiled.snapshot.clusters["outbound|9080||details.default.svc.cluster.local"];
        assert_eq!(cluster.tls, UpstreamTls::Disabled);
        // Endpoints without the label get plaintext (BOOKINFO's have none).
        let plain = compile(BOOKINFO);
        assert_eq!(
            plain.snapshot.clusters["outbound|9080||ratings.default.svc.cluster.local"].tls,
            UpstreamTls::Disabled
        );
    }
}
