//! The listeners a Sidecar resource adds that capture does not reach: ingress and egress
//! listeners bound to their own address and port (`captureMode: NONE`, or `DEFAULT` on a
//! workload without capture), the way a VM without iptables joins the mesh.
//!
//! - Ingress: a listener on `bind:port` (default `0.0.0.0`) whose chains follow the port's
//!   PeerAuthentication mode exactly as the virtual inbound listener's do, HTTP or TCP by the
//!   port's protocol, to the cluster `inbound|PORT||` whose one static endpoint is the
//!   `defaultEndpoint`: `127.0.0.1:PORT` / `[::1]:PORT` as written, `0.0.0.0:PORT` /
//!   `[::]:PORT` (or no endpoint: the listener's port) on the workload's own IP. As in Envoy,
//!   connections to a loopback endpoint come from loopback, and connections to the workload's
//!   IP from 127.0.0.6, which capture rules let pass instead of sending back to the proxy.
//!   Unix socket endpoints and `tls` (termination of non-mesh TLS) are not served yet: such a
//!   listener is left out with a warning rather than served differently from what it says.
//! - Egress: a listener on `bind:port` (default `127.0.0.1`) for the hosts it imports on that
//!   port: HTTP routed by `Host` through the mesh's VirtualServices (an unknown host gets 404
//!   NR: a listener that is not captured has no original destination to pass through to), TLS
//!   by SNI, TCP to the one imported service on the port. A port whose protocol is
//!   `HTTP_PROXY` is an explicit HTTP proxy for the hosts it imports on every port
//!   (`sidecar_http_proxy`).
//!
//! The captured ingress listeners are chains of the virtual inbound listener (`sidecar`); the
//! captured egress listeners scope the virtual outbound listener (`sidecar_scope`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use strait_proxy::snapshot::{
    Application, ChainMatch, Cluster, Endpoint, FilterChain, LbPolicy, Listener, PoolLimits,
    RouteTable, TcpRoute, Transport, UpstreamProtocol, UpstreamTls,
};

use super::Compiler;
use super::routes::Client;
use super::sidecar::{
    INBOUND_SOURCE, SidecarOptions, inbound_application, inbound_chains, inbound_protocol,
    port_protocol,
};
use super::sidecar_scope::{EgressScope, SidecarScope};
use crate::resources::Object;
use crate::resources::common::{Port, Protocol};
use crate::resources::sidecar::IstioIngressListener;
use crate::yaml::FieldPath;

/// An ingress listener's port and where its connections go.
#[derive(Debug)]
pub(super) struct IngressPort {
    pub(super) number: u16,
    /// HTTP towards the application, or `None` for TCP.
    pub(super) protocol: Option<UpstreamProtocol>,
    pub(super) cluster: String,
}

/// Where an ingress listener's `defaultEndpoint` points.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DefaultEndpoint {
    /// `127.0.0.1:PORT` or `[::1]:PORT`.
    Loopback(SocketAddr),
    /// `0.0.0.0:PORT`, `[::]:PORT`, or unset (the listener's port): the workload's own IP.
    InstanceIp(u16),
    /// `unix://PATH`.
    Unix(String),
}

/// Reads a `defaultEndpoint`; `listener_port` stands for an unset one.
pub(super) fn default_endpoint(
    text: Option<&str>,
    listener_port: u16,
) -> Result<DefaultEndpoint, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(DefaultEndpoint::InstanceIp(listener_port));
    };
    if let Some(path) = text.strip_prefix("unix://") {
        return Ok(DefaultEndpoint::Unix(path.to_owned()));
    }
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("defaultEndpoint {text:?} is not IP:PORT"))?;
    match address.ip() {
        ip if ip.is_loopback() => Ok(DefaultEndpoint::Loopback(address)),
        ip if ip.is_unspecified() => Ok(DefaultEndpoint::InstanceIp(address.port())),
        _ => Err(format!(
            "defaultEndpoint {text:?} must be 127.0.0.1, [::1], 0.0.0.0 or [::] with a port"
        )),
    }
}

impl<'a> Compiler<'a> {
    /// Findings from here on name the applying Sidecar at `path` (under `spec`).
    fn at_sidecar(&mut self, scope: &SidecarScope<'a>, path: FieldPath) {
        if let Some((object, _)) = scope.sidecar {
            self.at(object, path);
        }
    }

    /// The port and cluster of ingress listener `index`, or `None` (with a finding) when it
    /// cannot be served. `bound` is the address a bound listener listens on.
    pub(super) fn ingress_port(
        &mut self,
        scope: &SidecarScope<'a>,
        index: usize,
        listener: &IstioIngressListener,
        options: &SidecarOptions,
        bound: Option<SocketAddr>,
    ) -> Option<IngressPort> {
        let path = FieldPath::ROOT.field("spec").field("ingress").index(index);
        self.at_sidecar(scope, path.clone());
        let port = listener.port.as_ref()?;
        let number = u16::try_from(port.number?).ok()?;
        if listener.tls.is_some() {
            self.at_sidecar(scope, path.field("tls"));
            self.problem(format!(
                "ingress listener on port {number}: terminating non-mesh TLS (tls) is not supported; the listener is not served"
            ));
            return None;
        }
        self.at_sidecar(scope, path.field("defaultEndpoint"));
        let endpoint = match default_endpoint(listener.default_endpoint.as_deref(), number) {
            Ok(endpoint) => endpoint,
            Err(why) => {
                self.problem(format!(
                    "{why}; the listener on port {number} is not served"
                ));
                return None;
            }
        };
        let address = match endpoint {
            DefaultEndpoint::Unix(path) => {
                self.problem(format!(
                    "unix domain socket endpoints ({path}) are not supported; the listener on port {number} is not served"
                ));
                return None;
            }
            DefaultEndpoint::Loopback(address) => address,
            DefaultEndpoint::InstanceIp(target) => match options.instance_ip {
                Some(ip) => SocketAddr::new(ip, target),
                None if bound.is_none() && target == number => {
                    // Captured: the connection's original destination is the workload's IP.
                    let protocol = inbound_protocol(port);
                    let cluster = format!("inbound|{number}||");
                    self.inbound_cluster(&cluster, protocol.unwrap_or(UpstreamProtocol::Http1));
                    return Some(IngressPort {
                        number,
                        protocol,
                        cluster,
                    });
                }
                None => {
                    self.problem(format!(
                        "the endpoint on port {target} is the workload's own IP, which this sidecar is not told (--instance-ip); the listener on port {number} is not served"
                    ));
                    return None;
                }
            },
        };
        if let Some(bound) = bound {
            let same_ip = bound.ip().is_unspecified() || bound.ip() == address.ip();
            if same_ip && bound.port() == address.port() {
                self.problem(format!(
                    "the listener on {bound} would forward to itself ({address}); it is not served"
                ));
                return None;
            }
        }
        let protocol = inbound_protocol(port);
        let cluster = format!("inbound|{number}||");
        self.static_inbound_cluster(
            &cluster,
            address,
            protocol.unwrap_or(UpstreamProtocol::Http1),
        );
        Some(IngressPort {
            number,
            protocol,
            cluster,
        })
    }

    /// A cluster to the application at `address`: from loopback to a loopback address, else
    /// from 127.0.0.6, as Envoy's inbound clusters do.
    fn static_inbound_cluster(
        &mut self,
        name: &str,
        address: SocketAddr,
        protocol: UpstreamProtocol,
    ) {
        let upstream_bind =
            (address.is_ipv4() && !address.ip().is_loopback()).then_some(INBOUND_SOURCE);
        let timeout = self.registry.mesh.connect_timeout;
        self.clusters.insert(
            name.to_owned(),
            Arc::new(Cluster {
                name: name.to_owned(),
                lb: LbPolicy::LeastRequest,
                connect_timeout: timeout,
                pool: PoolLimits::default(),
                outlier: None,
                tls: UpstreamTls::Disabled,
                protocol,
                endpoints: vec![Endpoint {
                    address,
                    weight: 1,
                    locality: None,
                    labels: BTreeMap::new(),
                    dns_name: None,
                    network_gateway: None,
                    priority: 0,
                }],
                original_destination: false,
                upstream_bind,
                telemetry: self.inbound_telemetry.clone(),
                empty_reason: None,
            }),
        );
    }

    /// The Sidecar's bound ingress and egress listeners.
    pub(super) fn bound_listeners(
        &mut self,
        visible: &[&'a Object],
        scope: &SidecarScope<'a>,
        options: &SidecarOptions,
        tables: &mut BTreeMap<String, Arc<RouteTable>>,
    ) -> Vec<Listener> {
        let mut listeners = Vec::new();
        // Only ServiceEntries, VirtualServices and DestinationRules are left out of `visible`:
        // the workload's PeerAuthentications are all there.
        let peer_authentication = self.workload_peer_authentication(visible);
        for (index, listener) in scope.ingress() {
            if !scope.binds(listener.capture_mode) {
                continue;
            }
            let Some(number) = listener
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n).ok())
            else {
                continue;
            };
            let bind =
                match bind_address(listener.bind.as_deref(), IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
                    Ok(ip) => ip,
                    Err(why) => {
                        self.at_sidecar(
                            scope,
                            FieldPath::ROOT
                                .field("spec")
                                .field("ingress")
                                .index(index)
                                .field("bind"),
                        );
                        self.problem(why);
                        continue;
                    }
                };
            let address = SocketAddr::new(bind, number);
            let Some(port) = self.ingress_port(scope, index, listener, options, Some(address))
            else {
                continue;
            };
            let name = format!("{bind}_{number}");
            let application = inbound_application(
                &format!("inbound|{number}"),
                port.protocol,
                &port.cluster,
                tables,
            );
            listeners.push(Listener {
                filter_chains: inbound_chains(
                    &format!("inbound_{number}"),
                    Some(number),
                    peer_authentication.mode_for(number),
                    application,
                    &port.cluster,
                ),
                name,
                address,
                original_destination: false,
            });
        }
        let egress: Vec<&EgressScope<'a>> = scope.bound_egress().collect();
        for listener in egress {
            if let Some(bound) = self.egress_listener(visible, scope, listener, tables) {
                listeners.push(bound);
            }
        }
        self.at = None;
        listeners
    }

    /// A bound egress listener for the hosts it imports on its port.
    fn egress_listener(
        &mut self,
        visible: &[&'a Object],
        scope: &SidecarScope<'a>,
        egress: &EgressScope<'a>,
        tables: &mut BTreeMap<String, Arc<RouteTable>>,
    ) -> Option<Listener> {
        let path = FieldPath::ROOT
            .field("spec")
            .field("egress")
            .index(egress.index);
        self.at_sidecar(scope, path.clone());
        let number = egress.port()?;
        let port16 = u16::try_from(number).ok()?;
        let bind = match bind_address(
            egress.listener.bind.as_deref(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ) {
            Ok(ip) => ip,
            Err(why) => {
                self.at_sidecar(scope, path.field("bind"));
                self.problem(why);
                return None;
            }
        };
        if egress
            .listener
            .port
            .as_ref()
            .and_then(Port::declared_protocol)
            == Some(Protocol::HttpProxy)
        {
            let imports =
                |namespace: &str, host: &str, _: Option<u32>| egress.imports(namespace, host);
            let address = SocketAddr::new(bind, port16);
            return Some(self.http_proxy_listener(visible, &imports, address, tables));
        }
        let name = format!("{bind}_{number}");
        let services: Vec<(String, super::registry::Service<'a>, Port)> = self
            .registry
            .services()
            .into_iter()
            .filter(|(host, service)| egress.imports(&service.object.namespace, host))
            .filter_map(|(host, service)| {
                let port = service.port(Some(number))?.clone();
                Some((host, service, port))
            })
            .collect();
        let protocol = egress
            .listener
            .port
            .as_ref()
            .and_then(Port::declared_protocol)
            .or_else(|| {
                let all_http = !services.is_empty()
                    && services.iter().all(|(_, _, p)| port_protocol(p).is_http());
                all_http.then_some(Protocol::Http)
            })
            .unwrap_or(Protocol::Tcp);
        let bound: Vec<_> = self
            .mesh_virtual_services(visible)
            .into_iter()
            .filter(|b| {
                b.hosts
                    .iter()
                    .any(|h| egress.imports(&b.object.namespace, h))
            })
            .collect();
        let namespace = self.options.namespace.clone();
        let (transport, application) = if protocol.is_http() {
            let mut virtual_hosts = Vec::new();
            for (host, service, _) in &services {
                virtual_hosts.push(self.mesh_virtual_host(host, *service, number, &bound));
            }
            tables.insert(
                name.clone(),
                Arc::new(RouteTable {
                    name: name.clone(),
                    virtual_hosts,
                }),
            );
            (
                Transport::Plaintext,
                Application::Http {
                    route_table: name.clone(),
                },
            )
        } else if protocol.is_tls() {
            let mut routes = Vec::new();
            for (host, _, _) in &services {
                if let Some(cluster) = self.cluster(host, Some(number), None, &namespace) {
                    routes.push(TcpRoute {
                        name: format!("{host}:{number}"),
                        server_names: vec![host.clone()],
                        clusters: vec![(cluster, 100)],
                    });
                }
            }
            (Transport::Passthrough, Application::Tcp { routes })
        } else {
            self.at_sidecar(scope, path.field("hosts"));
            let Some((host, _, _)) = services.first() else {
                self.problem(format!(
                    "no service this egress listener imports has port {number}: the TCP listener on {bind}:{number} is not served"
                ));
                return None;
            };
            if services.len() > 1 {
                let names: Vec<&str> = services.iter().map(|(h, _, _)| h.as_str()).collect();
                self.problem(format!(
                    "TCP egress listener on {bind}:{number} imports several services on the port ({}): only {host} is served",
                    names.join(", ")
                ));
            }
            let host = host.clone();
            let mut routes = Vec::new();
            for vs in bound
                .iter()
                .filter(|b| b.hosts.iter().any(|h| crate::hosts::within(&host, h)))
            {
                routes.extend(self.tcp_routes(vs, Client::Mesh, number));
            }
            if routes.is_empty() {
                let cluster = self.cluster(&host, Some(number), None, &namespace)?;
                routes.push(TcpRoute {
                    name: format!("{host}:{number}"),
                    server_names: Vec::new(),
                    clusters: vec![(cluster, 100)],
                });
            }
            (Transport::Plaintext, Application::Tcp { routes })
        };
        Some(Listener {
            name: name.clone(),
            address: SocketAddr::new(bind, port16),
            original_destination: false,
            filter_chains: vec![FilterChain {
                name,
                server_names: Vec::new(),
                matches: ChainMatch::default(),
                transport,
                application,
            }],
        })
    }
}

/// A listener's `bind`: an IP, or `default` when unset.
fn bind_address(bind: Option<&str>, default: IpAddr) -> Result<IpAddr, String> {
    match bind.filter(|b| !b.is_empty()) {
        None => Ok(default),
        Some(text) if text.starts_with("unix://") => Err(format!(
            "bind {text:?}: unix domain socket listeners are not supported; the listener is not served"
        )),
        Some(text) => text
            .parse::<IpAddr>()
            .map_err(|_| format!("bind {text:?} is not an IP address; the listener is not served")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{BLACKHOLE_CLUSTER, Compiled, PASSTHROUGH_CLUSTER, compile_sidecar};
    use crate::resources::{LoadOptions, Loaded, load_text};
    use strait_proxy::snapshot::{MtlsMode, RouteAction, TransportProtocol, VirtualHost};

    /// Two namespaces: `vm` (a workload without capture) and `b` (httpbin, captured), plus an
    /// external service in `ext` exported only to `b`.
    const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: vm}
spec:
  hosts: [vm.vm.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8443, name: http}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: vm}
spec:
  address: 10.0.0.1
  labels: {app: vm, security.istio.io/tlsMode: istio}
  serviceAccount: vm
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: b}
spec:
  hosts: [httpbin.b.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, targetPort: 8080}, {number: 9000, name: tcp-echo}]
  resolution: STATIC
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin-1, namespace: b}
spec:
  address: 10.0.0.2
  labels: {app: httpbin, security.istio.io/tlsMode: istio}
  serviceAccount: httpbin
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: b}
spec:
  hosts: [ratings.b.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: ext}
spec:
  hosts: [api.example.com]
  exportTo: [b]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
"#;

    fn compile_for(yaml: &str, namespace: &str, app: &str, captured: bool) -> Compiled {
        let mut loaded = Loaded::default();
        load_text(
            &Arc::from("test.yaml"),
            yaml,
            &LoadOptions::default(),
            &mut loaded,
        );
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        let options = SidecarOptions {
            namespace: namespace.to_owned(),
            labels: BTreeMap::from([
                ("app".to_owned(), app.to_owned()),
                ("security.istio.io/tlsMode".to_owned(), "istio".to_owned()),
            ]),
            domain_suffix: "cluster.local".to_owned(),
            outbound: SocketAddr::from(([0, 0, 0, 0], 15001)),
            inbound: SocketAddr::from(([0, 0, 0, 0], 15006)),
            captured,
            instance_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            workload_name: app.to_owned(),
            service_account: app.to_owned(),
            http_proxy: None,
            dns: Default::default(),
            network: None,
            locality: None,
        };
        compile_sidecar(&loaded.objects, &options, 1)
    }

    fn sidecar(namespace: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {namespace}}}\nspec:\n{spec}"
        )
    }

    fn listener<'s>(compiled: &'s Compiled, name: &str) -> &'s Listener {
        compiled
            .snapshot
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = compiled
                    .snapshot
                    .listeners
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect();
                panic!("no listener {name}: {names:?} {:?}", compiled.findings)
            })
    }

    fn virtual_host_names(compiled: &Compiled, table: &str) -> Vec<String> {
        compiled.snapshot.route_tables[table]
            .virtual_hosts
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    fn outbound_chain_names(compiled: &Compiled) -> Vec<String> {
        listener(compiled, "virtualOutbound")
            .filter_chains
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    fn forwards_to(host: &VirtualHost) -> Vec<String> {
        match &host.routes[0].action {
            RouteAction::Forward { clusters, .. } => {
                clusters.iter().map(|c| c.cluster.clone()).collect()
            }
            other => panic!("not forwarded: {other:?}"),
        }
    }

    fn findings(compiled: &Compiled) -> String {
        compiled
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn default_endpoints_are_loopback_the_instance_ip_or_refused() {
        assert_eq!(
            default_endpoint(Some("127.0.0.1:8080"), 8443),
            Ok(DefaultEndpoint::Loopback(SocketAddr::from((
                [127, 0, 0, 1],
                8080
            ))))
        );
        assert_eq!(
            default_endpoint(Some("[::1]:8080"), 8443),
            Ok(DefaultEndpoint::Loopback("[::1]:8080".parse().unwrap()))
        );
        assert_eq!(
            default_endpoint(Some("0.0.0.0:8080"), 8443),
            Ok(DefaultEndpoint::InstanceIp(8080))
        );
        assert_eq!(
            default_endpoint(None, 8443),
            Ok(DefaultEndpoint::InstanceIp(8443))
        );
        assert_eq!(
            default_endpoint(Some("unix:///var/run/app.sock"), 8443),
            Ok(DefaultEndpoint::Unix("/var/run/app.sock".to_owned()))
        );
        assert!(default_endpoint(Some("10.1.2.3:8080"), 8443).is_err());
        assert!(default_endpoint(Some("127.0.0.1"), 8443).is_err());
    }

    #[test]
    fn egress_hosts_scope_the_outbound_side_and_export_to_hides_what_is_not_exported() {
        // Without a Sidecar the `vm` namespace sees every service exported to it: not
        // api.example.com (exported to `b` only).
        let all = compile_for(MESH, "vm", "vm", true);
        assert_eq!(
            virtual_host_names(&all, "9080"),
            [
                "httpbin.b.svc.cluster.local:9080",
                "ratings.b.svc.cluster.local:9080",
                "allow_any"
            ]
        );
        let from_b = compile_for(MESH, "b", "httpbin", true);
        assert!(
            virtual_host_names(&from_b, "9080")
                .iter()
                .any(|h| h == "api.example.com:9080")
        );
        // `*/httpbin...` imports just that host; ratings is not routed (ALLOW_ANY passes it
        // through as unknown).
        let scoped = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                "  egress: [{hosts: [\"*/httpbin.b.svc.cluster.local\", \"./*\"]}]\n"
            )
        );
        let compiled = compile_for(&scoped, "vm", "vm", true);
        assert_eq!(
            virtual_host_names(&compiled, "9080"),
            ["httpbin.b.svc.cluster.local:9080", "allow_any"]
        );
        assert!(
            outbound_chain_names(&compiled)
                .iter()
                .any(|c| c == "httpbin.b.svc.cluster.local:9000"),
            "{:?}",
            outbound_chain_names(&compiled)
        );
        // `~/*`: nothing is routed, and the Sidecar's REGISTRY_ONLY refuses the rest.
        let none = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                "  egress: [{hosts: [\"~/*\"]}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
            )
        );
        let compiled = compile_for(&none, "vm", "vm", true);
        assert_eq!(
            outbound_chain_names(&compiled),
            ["PassthroughFilterChain"],
            "no service chain is left"
        );
        let Application::Tcp { routes } =
            &listener(&compiled, "virtualOutbound").filter_chains[0].application
        else {
            panic!()
        };
        assert_eq!(routes[0].clusters[0].0, BLACKHOLE_CLUSTER);
        assert!(!compiled.snapshot.clusters.contains_key(PASSTHROUGH_CLUSTER));
    }

    #[test]
    fn a_sidecar_s_virtual_services_follow_their_own_export_and_the_egress_hosts() {
        let rules = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: b}
spec:
  host: httpbin.b.svc.cluster.local
  exportTo: ["."]
  subsets: [{name: v1, labels: {app: httpbin}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-private, namespace: b}
spec:
  hosts: [httpbin.b.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: httpbin.b.svc.cluster.local, subset: v1, port: {number: 9080}}}]}]
"#;
        let config = format!("{MESH}{rules}");
        // In `b` the VirtualService (and its DestinationRule's subset) apply.
        let from_b = compile_for(&config, "b", "httpbin", true);
        let table = &from_b.snapshot.route_tables["9080"];
        let httpbin = table
            .virtual_hosts
            .iter()
            .find(|h| h.name == "httpbin.b.svc.cluster.local:9080")
            .unwrap();
        assert_eq!(
            forwards_to(httpbin),
            ["outbound|9080|v1|httpbin.b.svc.cluster.local"]
        );
        // From `vm` neither is exported: the host goes to its default cluster.
        let from_vm = compile_for(&config, "vm", "vm", true);
        let httpbin = from_vm.snapshot.route_tables["9080"]
            .virtual_hosts
            .iter()
            .find(|h| h.name == "httpbin.b.svc.cluster.local:9080")
            .unwrap();
        assert_eq!(
            forwards_to(httpbin),
            ["outbound|9080||httpbin.b.svc.cluster.local"]
        );
    }

    #[test]
    fn a_bound_egress_listener_serves_its_hosts_on_its_port_by_host_or_to_the_one_tcp_service() {
        let config = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                r#"  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    captureMode: NONE
    hosts: ["b/*"]
  - port: {number: 9000, name: tcp}
    bind: 127.0.0.2
    captureMode: NONE
    hosts: ["b/httpbin.b.svc.cluster.local"]
  - hosts: ["./*"]
"#
            )
        );
        let compiled = compile_for(&config, "vm", "vm", true);
        let http = listener(&compiled, "127.0.0.1_9080");
        assert_eq!(http.address, SocketAddr::from(([127, 0, 0, 1], 9080)));
        assert!(!http.original_destination);
        assert_eq!(
            http.filter_chains[0].application,
            Application::Http {
                route_table: "127.0.0.1_9080".to_owned()
            }
        );
        let table = &compiled.snapshot.route_tables["127.0.0.1_9080"];
        let names: Vec<&str> = table
            .virtual_hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        // No fallback: without an original destination an unknown Host gets 404 NR.
        assert_eq!(
            names,
            [
                "httpbin.b.svc.cluster.local:9080",
                "ratings.b.svc.cluster.local:9080"
            ]
        );
        assert!(
            table.virtual_hosts[0]
                .domains
                .iter()
                .any(|d| d == "httpbin.b:9080")
        );
        assert_eq!(
            forwards_to(&table.virtual_hosts[0]),
            ["outbound|9080||httpbin.b.svc.cluster.local"]
        );
        // The cluster is mesh mTLS to httpbin's identity.
        assert!(matches!(
            compiled.snapshot.clusters["outbound|9080||httpbin.b.svc.cluster.local"].tls,
            UpstreamTls::IstioMutual { .. }
        ));
        let tcp = listener(&compiled, "127.0.0.2_9000");
        let Application::Tcp { routes } = &tcp.filter_chains[0].application else {
            panic!("{tcp:?}")
        };
        assert_eq!(
            routes[0].clusters,
            [("outbound|9000||httpbin.b.svc.cluster.local".to_owned(), 100)]
        );
        // The bound ports do not scope the captured side: there the catch-all (`./*`) does.
        assert_eq!(
            virtual_host_names(&compiled, "8443"),
            ["vm.vm.svc.cluster.local:8443", "allow_any"]
        );
        assert!(!compiled.snapshot.route_tables.contains_key("9080"));
    }

    #[test]
    fn a_tcp_egress_listener_with_no_or_several_services_says_so() {
        let config = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                "  egress:\n  - port: {number: 9080, protocol: TCP, name: tcp}\n    captureMode: NONE\n    hosts: [\"b/*\"]\n  - port: {number: 7777, protocol: TCP, name: none}\n    captureMode: NONE\n    hosts: [\"b/*\"]\n"
            )
        );
        let compiled = compile_for(&config, "vm", "vm", true);
        let text = findings(&compiled);
        assert!(
            text.contains("only httpbin.b.svc.cluster.local is served"),
            "{text}"
        );
        assert!(text.contains("has port 7777"), "{text}");
        assert!(text.contains("Sidecar vm/default"), "{text}");
        let _ = listener(&compiled, "127.0.0.1_9080");
        assert!(
            !compiled
                .snapshot
                .listeners
                .iter()
                .any(|l| l.name == "127.0.0.1_7777")
        );
    }

    fn ingress_sidecar(mode: &str) -> String {
        let config = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                r#"  ingress:
  - port: {number: 8443, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
  - port: {number: 9443, protocol: TCP, name: tcp}
    defaultEndpoint: 0.0.0.0:9000
    bind: 10.0.0.1
    captureMode: NONE
"#
            )
        );
        if mode.is_empty() {
            return config;
        }
        format!(
            "{config}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: vm, namespace: vm}}\nspec: {{selector: {{matchLabels: {{app: vm}}}}, mtls: {{mode: {mode}}}, portLevelMtls: {{9443: {{mode: PERMISSIVE}}}}}}\n"
        )
    }

    fn chain_names(listener: &Listener) -> Vec<&str> {
        listener
            .filter_chains
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_bound_ingress_listener_terminates_mesh_mtls_per_the_port_s_mode_to_its_endpoint() {
        let compiled = compile_for(&ingress_sidecar("STRICT"), "vm", "vm", true);
        let http = listener(&compiled, "0.0.0.0_8443");
        assert_eq!(http.address, SocketAddr::from(([0, 0, 0, 0], 8443)));
        assert!(!http.original_destination);
        // STRICT: mesh mTLS only, by the offered ALPN, to the application's HTTP route table.
        assert_eq!(chain_names(http), ["inbound_8443_mtls"]);
        let mtls = &http.filter_chains[0];
        assert_eq!(mtls.transport, Transport::IstioMutual);
        assert_eq!(
            mtls.matches.transport_protocol,
            Some(TransportProtocol::Tls)
        );
        assert!(
            mtls.matches
                .application_protocols
                .iter()
                .any(|p| p == "istio-http/1.1")
        );
        assert_eq!(
            mtls.application,
            Application::Http {
                route_table: "inbound|8443".to_owned()
            }
        );
        // The endpoint is static; loopback is reached from loopback.
        let cluster = &compiled.snapshot.clusters["inbound|8443||"];
        assert!(!cluster.original_destination);
        assert_eq!(
            cluster.endpoints[0].address,
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        assert_eq!(cluster.upstream_bind, None);
        assert_eq!(cluster.protocol, UpstreamProtocol::Http1);
        // Port level PERMISSIVE: mesh mTLS, the application's own TLS and plaintext, TCP, to
        // the instance IP from 127.0.0.6.
        let tcp = listener(&compiled, "10.0.0.1_9443");
        assert_eq!(
            chain_names(tcp),
            [
                "inbound_9443_mtls",
                "inbound_9443_tls",
                "inbound_9443_plaintext"
            ]
        );
        assert!(matches!(
            tcp.filter_chains[2].application,
            Application::Tcp { .. }
        ));
        let cluster = &compiled.snapshot.clusters["inbound|9443||"];
        assert_eq!(
            cluster.endpoints[0].address,
            SocketAddr::from(([10, 0, 0, 1], 9000))
        );
        assert_eq!(cluster.upstream_bind, Some(INBOUND_SOURCE));
        // The Sidecar's ingress replaces the service's ports on the captured side.
        let inbound = listener(&compiled, "virtualInbound");
        assert!(
            chain_names(inbound)
                .iter()
                .all(|c| c.starts_with("inbound_passthrough")),
            "{:?}",
            chain_names(inbound)
        );

        let disabled = compile_for(&ingress_sidecar("DISABLE"), "vm", "vm", true);
        assert_eq!(
            chain_names(listener(&disabled, "0.0.0.0_8443")),
            ["inbound_8443_tls", "inbound_8443_plaintext"]
        );
        let permissive = compile_for(&ingress_sidecar(""), "vm", "vm", true);
        assert_eq!(
            chain_names(listener(&permissive, "0.0.0.0_8443")),
            [
                "inbound_8443_mtls",
                "inbound_8443_tls",
                "inbound_8443_plaintext"
            ]
        );
        assert_eq!(
            permissive.snapshot.policies.peer_authentication.mode,
            MtlsMode::Permissive
        );
    }

    #[test]
    fn captured_ingress_listeners_are_chains_of_the_virtual_inbound_listener() {
        let config = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                "  ingress:\n  - port: {number: 8443, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n"
            )
        );
        // Captured, DEFAULT follows the capture: a chain on virtualInbound, no own listener.
        let compiled = compile_for(&config, "vm", "vm", true);
        let inbound = listener(&compiled, "virtualInbound");
        let chain = inbound
            .filter_chains
            .iter()
            .find(|c| c.name == "inbound_8443_mtls")
            .unwrap();
        assert_eq!(chain.matches.destination_port, Some(8443));
        assert_eq!(compiled.snapshot.listeners.len(), 2);
        assert_eq!(
            compiled.snapshot.clusters["inbound|8443||"].endpoints[0].address,
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        // Without capture DEFAULT binds the port.
        let uncaptured = compile_for(&config, "vm", "vm", false);
        let _ = listener(&uncaptured, "0.0.0.0_8443");
    }

    #[test]
    fn ingress_listeners_that_cannot_be_served_as_written_are_left_out_with_a_reason() {
        let config = format!(
            "{MESH}{}",
            sidecar(
                "vm",
                r#"  ingress:
  - port: {number: 8443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
    tls: {mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}
  - port: {number: 8444, protocol: HTTP, name: http}
    defaultEndpoint: unix:///var/run/app.sock
    captureMode: NONE
  - port: {number: 8445, protocol: HTTP, name: http-self}
    defaultEndpoint: 0.0.0.0:8445
    captureMode: NONE
"#
            )
        );
        let compiled = compile_for(&config, "vm", "vm", true);
        assert_eq!(
            compiled.snapshot.listeners.len(),
            2,
            "only the capture listeners"
        );
        let text = findings(&compiled);
        for expected in [
            "terminating non-mesh TLS (tls) is not supported",
            "unix domain socket endpoints (/var/run/app.sock) are not supported",
            "would forward to itself",
            "spec.ingress[0].tls",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }
}
