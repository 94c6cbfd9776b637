//! A sidecar's explicit HTTP proxy, for applications that set `HTTP_PROXY` where nothing
//! captures their traffic: Istio's Sidecar egress listener whose port protocol is `HTTP_PROXY`
//! (bound to `bind:PORT`, default `127.0.0.1`), or `--http-proxy-port` without a Sidecar.
//!
//! It knows the services the listener imports on every port. For each HTTP port a route table
//! holds a virtual host per service (the mesh's VirtualServices give a host its routes, as on
//! the outbound listener); absolute-form requests are routed through the table of their
//! target's port. For each TCP or TLS port, CONNECT tunnels route by the target's host to the
//! service's VirtualService `tcp` routes or its default cluster (mesh mTLS to meshed
//! endpoints). Under ALLOW_ANY every table ends in a virtual host to `PassthroughCluster` and
//! other ports and hosts pass through too (the proxy resolves the named host); under
//! REGISTRY_ONLY they have no route, and are refused with 404 NR.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strait_proxy::snapshot::{
    Application, ChainMatch, FilterChain, HttpProxy, Listener, RouteTable, TcpRoute, Transport,
    VirtualHost,
};

use super::Compiler;
use super::listeners::Bound;
use super::routes::Client;
use super::sidecar::{domains, port_protocol};
use crate::hosts;
use crate::resources::Object;

/// Which services a proxy listener imports: `(namespace, host, port)`, the port `None` for
/// "on any port" (a VirtualService's hosts).
pub(super) type Imports<'i> = &'i dyn Fn(&str, &str, Option<u32>) -> bool;

impl<'a> Compiler<'a> {
    /// The explicit HTTP proxy listener on `address` for the services `imports` admits; its
    /// route tables are added to `tables`.
    pub(super) fn http_proxy_listener(
        &mut self,
        visible: &[&'a Object],
        imports: Imports<'_>,
        address: SocketAddr,
        tables: &mut BTreeMap<String, Arc<RouteTable>>,
    ) -> Listener {
        let name = format!("{}_{}", address.ip(), address.port());
        let bound: Vec<Bound<'a>> = self
            .mesh_virtual_services(visible)
            .into_iter()
            .filter(|b| {
                b.hosts
                    .iter()
                    .any(|h| imports(&b.object.namespace, h, None))
            })
            .collect();
        let namespace = self.options.namespace.clone();
        let mut http_ports: BTreeMap<u16, Vec<VirtualHost>> = BTreeMap::new();
        let mut tunnels: BTreeMap<u16, Vec<TcpRoute>> = BTreeMap::new();
        for (host, service) in self.registry.services() {
            for port in &service.entry.ports {
                let Some(number) = port.number else { continue };
                let Ok(port16) = u16::try_from(number) else {
                    continue;
                };
                if !imports(&service.object.namespace, &host, Some(number)) {
                    continue;
                }
                if port_protocol(port).is_http() {
                    let virtual_host = self.mesh_virtual_host(&host, service, number, &bound);
                    http_ports.entry(port16).or_default().push(virtual_host);
                    continue;
                }
                let mut routes = Vec::new();
                for vs in bound
                    .iter()
                    .filter(|b| b.hosts.iter().any(|h| hosts::within(&host, h)))
                {
                    routes.extend(self.tcp_routes(vs, Client::Mesh, number));
                }
                if routes.is_empty() {
                    let Some(cluster) = self.cluster(&host, Some(number), None, &namespace) else {
                        continue;
                    };
                    routes.push(TcpRoute {
                        name: format!("{host}:{number}"),
                        server_names: Vec::new(),
                        clusters: vec![(cluster, 100)],
                    });
                }
                // CONNECT names the host as a client would: any of the service's names.
                let names = domains(
                    &host,
                    number,
                    service,
                    &namespace,
                    self.registry.domain_suffix,
                );
                let tunnel = tunnels.entry(port16).or_default();
                for mut route in routes {
                    route.server_names.clone_from(&names);
                    tunnel.push(route);
                }
            }
        }
        let allow_any = self.registry.mesh.allow_any;
        let mut proxy = HttpProxy::default();
        for (number, mut virtual_hosts) in http_ports {
            if allow_any {
                virtual_hosts.push(self.fallback_virtual_host());
            }
            let table = format!("{name}:{number}");
            tables.insert(
                table.clone(),
                Arc::new(RouteTable {
                    name: table.clone(),
                    virtual_hosts,
                }),
            );
            proxy.route_tables.insert(number, table);
        }
        proxy.tunnels = tunnels;
        if allow_any {
            let table = format!("{name}:passthrough");
            let virtual_hosts = vec![self.fallback_virtual_host()];
            tables.insert(
                table.clone(),
                Arc::new(RouteTable {
                    name: table.clone(),
                    virtual_hosts,
                }),
            );
            proxy.default_route_table = Some(table);
            proxy.default_tunnel = Some(self.fallback_tcp_route());
        }
        self.at = None;
        Listener {
            name: name.clone(),
            address,
            original_destination: false,
            filter_chains: vec![FilterChain {
                name,
                server_names: Vec::new(),
                matches: ChainMatch::default(),
                transport: Transport::Plaintext,
                application: Application::HttpProxy(proxy),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use strait_proxy::snapshot::{Application, HttpProxy, Listener, RouteAction, UpstreamTls};

    use crate::compile::{Compiled, PASSTHROUGH_CLUSTER, SidecarOptions, compile_sidecar};
    use crate::resources::{LoadOptions, Loaded, load_text};

    /// `vm` (no capture) and `httpbin` in `b` (meshed: HTTP on 9080, TCP on 9000), and an
    /// external TLS service in `ext`.
    const MESH: &str = r#"
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
metadata: {name: api, namespace: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: b}
spec:
  hosts: [httpbin.b.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: httpbin.b.svc.cluster.local, port: {number: 9080}}}]
"#;

    const PROXY_SIDECAR: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: vm}
spec:
  egress:
  - port: {number: 15080, protocol: HTTP_PROXY, name: proxy}
    captureMode: NONE
    hosts: ["b/*"]
  - hosts: ["./*"]
"#;

    fn compile(yaml: &str, http_proxy: Option<SocketAddr>) -> Compiled {
        let mut loaded = Loaded::default();
        load_text(
            &std::sync::Arc::from("test.yaml"),
            yaml,
            &LoadOptions::default(),
            &mut loaded,
        );
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        let options = SidecarOptions {
            namespace: "vm".to_owned(),
            labels: BTreeMap::from([("app".to_owned(), "vm".to_owned())]),
            domain_suffix: "cluster.local".to_owned(),
            outbound: SocketAddr::from(([0, 0, 0, 0], 15001)),
            inbound: SocketAddr::from(([0, 0, 0, 0], 15006)),
            captured: false,
            instance_ip: None,
            http_proxy,
            workload_name: "vm".to_owned(),
            service_account: "vm".to_owned(),
            dns: Default::default(),
            network: None,
            locality: None,
        };
        compile_sidecar(&loaded.objects, &options, 1)
    }

    fn http_proxy<'c>(compiled: &'c Compiled, name: &str) -> (&'c Listener, &'c HttpProxy) {
        let listener = compiled
            .snapshot
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", compiled.snapshot.listeners));
        let Application::HttpProxy(proxy) = &listener.filter_chains[0].application else {
            panic!("not an HTTP proxy: {listener:?}")
        };
        (listener, proxy)
    }

    fn virtual_hosts(compiled: &Compiled, table: &str) -> Vec<String> {
        compiled.snapshot.route_tables[table]
            .virtual_hosts
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    #[test]
    fn an_http_proxy_egress_port_routes_each_imported_port_by_its_own_table_and_tunnels() {
        let config =
            format!("{MESH}{PROXY_SIDECAR}  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n");
        let compiled = compile(&config, None);
        let (listener, proxy) = http_proxy(&compiled, "127.0.0.1_15080");
        assert_eq!(listener.address, SocketAddr::from(([127, 0, 0, 1], 15080)));
        assert!(!listener.original_destination);
        // HTTP port 9080: one table, the VirtualService's routes for httpbin, no fallback.
        assert_eq!(
            proxy.route_tables,
            BTreeMap::from([(9080, "127.0.0.1_15080:9080".to_owned())])
        );
        assert_eq!(
            virtual_hosts(&compiled, "127.0.0.1_15080:9080"),
            ["httpbin.b.svc.cluster.local:9080"]
        );
        let httpbin = &compiled.snapshot.route_tables["127.0.0.1_15080:9080"].virtual_hosts[0];
        assert!(httpbin.domains.iter().any(|d| d == "httpbin.b"));
        assert_eq!(httpbin.routes.len(), 1, "the VirtualService's one route");
        assert!(!httpbin.routes[0].matches.is_empty());
        let RouteAction::Forward { clusters, .. } = &httpbin.routes[0].action else {
            panic!()
        };
        assert_eq!(
            clusters[0].cluster,
            "outbound|9080||httpbin.b.svc.cluster.local"
        );
        // TCP port 9000: a tunnel route named by httpbin's names, over mesh mTLS.
        let tunnel = &proxy.tunnels[&9000];
        assert_eq!(tunnel.len(), 1);
        assert_eq!(
            tunnel[0].clusters,
            [("outbound|9000||httpbin.b.svc.cluster.local".to_owned(), 100)]
        );
        for name in ["httpbin.b.svc.cluster.local", "httpbin.b", "httpbin.b.svc"] {
            assert!(tunnel[0].server_names.iter().any(|n| n == name), "{name}");
        }
        assert!(matches!(
            compiled.snapshot.clusters["outbound|9000||httpbin.b.svc.cluster.local"].tls,
            UpstreamTls::IstioMutual { .. }
        ));
        // api.example.com is not imported (`b/*`); REGISTRY_ONLY leaves no fallback.
        assert!(!proxy.tunnels.contains_key(&443));
        assert_eq!(proxy.default_route_table, None);
        assert_eq!(proxy.default_tunnel, None);
        assert!(!compiled.snapshot.clusters.contains_key(PASSTHROUGH_CLUSTER));
    }

    #[test]
    fn under_allow_any_unknown_hosts_and_ports_pass_through_and_bind_moves_the_listener() {
        let config = format!("{MESH}{PROXY_SIDECAR}")
            .replace("hosts: [\"b/*\"]", "hosts: [\"*/*\"]\n    bind: 127.0.0.2");
        let compiled = compile(&config, None);
        let (listener, proxy) = http_proxy(&compiled, "127.0.0.2_15080");
        assert_eq!(listener.address, SocketAddr::from(([127, 0, 0, 2], 15080)));
        assert_eq!(
            virtual_hosts(&compiled, "127.0.0.2_15080:9080"),
            ["httpbin.b.svc.cluster.local:9080", "allow_any"]
        );
        let default = proxy.default_route_table.as_deref().unwrap();
        assert_eq!(virtual_hosts(&compiled, default), ["allow_any"]);
        assert_eq!(
            proxy.default_tunnel.as_ref().unwrap().clusters,
            [(PASSTHROUGH_CLUSTER.to_owned(), 100)]
        );
        assert!(compiled.snapshot.clusters[PASSTHROUGH_CLUSTER].original_destination);
        // `*/*` imports the TLS service too: CONNECT api.example.com:443 has its route.
        assert_eq!(
            proxy.tunnels[&443][0].clusters,
            [("outbound|443||api.example.com".to_owned(), 100)]
        );
    }

    #[test]
    fn the_http_proxy_port_flag_adds_the_listener_for_what_the_outbound_side_sees() {
        let compiled = compile(MESH, Some(SocketAddr::from(([127, 0, 0, 1], 15081))));
        let (_, proxy) = http_proxy(&compiled, "127.0.0.1_15081");
        assert_eq!(
            virtual_hosts(&compiled, "127.0.0.1_15081:9080"),
            ["httpbin.b.svc.cluster.local:9080", "allow_any"]
        );
        assert!(proxy.tunnels.contains_key(&9000) && proxy.tunnels.contains_key(&443));
        // A Sidecar's catch-all egress hosts scope it as they scope the outbound side.
        let scoped = format!(
            "{MESH}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: vm}}\nspec:\n  egress: [{{hosts: [\"ext/*\"]}}]\n"
        );
        let compiled = compile(&scoped, Some(SocketAddr::from(([127, 0, 0, 1], 15081))));
        let (_, proxy) = http_proxy(&compiled, "127.0.0.1_15081");
        assert!(proxy.route_tables.is_empty(), "{proxy:?}");
        assert_eq!(proxy.tunnels.keys().collect::<Vec<_>>(), [&443]);
    }
}
