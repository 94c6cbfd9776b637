//! REGISTRY_ONLY at the egress gateway, which Istio does not enforce there (its
//! `outboundTrafficPolicy` "does not apply to gateways") and Strait does: every route of an
//! egress gateway must lead to a registry host whose endpoints the gateway knows.
//!
//! A destination is refused when forwarding to it would mean forwarding to whatever address
//! the connection named (a loophole out of the registry), or back to the gateway itself:
//! - a host no ServiceEntry declares (refused where every gateway refuses it, in `clusters`);
//! - a ServiceEntry with `resolution: NONE` (the default): its endpoint is the original
//!   destination, which at a gateway is the gateway's own address (Istio's egress pattern
//!   documents this loop and asks for `resolution: DNS`);
//! - a DestinationRule `loadBalancer.simple: PASSTHROUGH` (the original destination, again);
//! - endpoints at an address the gateway listens on: a routing loop. Its own addresses are its
//!   bind address; when it binds the unspecified address, loopback, `--instance-ip`, and the
//!   endpoints the registry describes with the gateway's own labels (the WorkloadEntry behind
//!   `istio-egressgateway`, by which sidecars reach it).
//!
//! A refused destination's cluster is left out with the reason, which `validate` and the log
//! report as a finding and which the access log repeats for each request routed there (503 NC)
//! or connection (reset, NC). DNS answers are checked whenever they change, since the
//! configuration is compiled again with them.

use std::net::{IpAddr, SocketAddr};

use strait_proxy::snapshot::Endpoint;

use super::Compiler;
use super::registry::Service;
use crate::resources::service_entry::Resolution;

/// What an egress gateway knows about itself beyond its listeners.
#[derive(Clone, Debug, Default)]
pub struct EgressOptions {
    /// The gateway's own IPs besides loopback (its `--instance-ip`): where listeners bound to
    /// the unspecified address can also be reached, so endpoints there are loops too.
    pub own_ips: Vec<IpAddr>,
}

impl Compiler<'_> {
    /// Why an egress gateway must not forward to this destination, if it must not.
    pub(super) fn egress_refusal(
        &self,
        host: &str,
        service: Service<'_>,
        endpoints: &[Endpoint],
        original_destination: bool,
    ) -> Option<String> {
        let egress = self.options.egress.as_ref()?;
        if service.entry.resolution.unwrap_or_default() == Resolution::None {
            return Some(format!(
                "REGISTRY_ONLY at the egress gateway: {host} has resolution NONE, so the gateway would forward to the original destination (its own address); declare the host with resolution DNS or STATIC"
            ));
        }
        if original_destination {
            return Some(format!(
                "REGISTRY_ONLY at the egress gateway: the DestinationRule of {host} sets loadBalancer PASSTHROUGH, which forwards to the original destination instead of the registry's endpoints"
            ));
        }
        let looping = endpoints
            .iter()
            .find(|e| self.is_own_address(e.address, &egress.own_ips) || self.is_own_endpoint(e))?
            .address;
        Some(format!(
            "REGISTRY_ONLY at the egress gateway: endpoint {looping} of {host} is an address this gateway listens on; forwarding there would loop"
        ))
    }

    /// Whether the registry describes `endpoint` as the gateway itself (it carries the
    /// gateway's labels) at a port the gateway listens on.
    fn is_own_endpoint(&self, endpoint: &Endpoint) -> bool {
        let labels = &self.options.labels;
        !labels.is_empty()
            && labels
                .iter()
                .all(|(k, v)| endpoint.labels.get(k) == Some(v))
            && self
                .listening
                .iter()
                .any(|l| l.port() == endpoint.address.port())
    }

    /// Whether `address` reaches one of the gateway's own listeners.
    fn is_own_address(&self, address: SocketAddr, own_ips: &[IpAddr]) -> bool {
        self.listening.iter().any(|listening| {
            if listening.port() != address.port() {
                return false;
            }
            let ip = address.ip();
            if listening.ip().is_unspecified() {
                ip.is_loopback() || ip.is_unspecified() || own_ips.contains(&ip)
            } else {
                ip == listening.ip()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use strait_proxy::snapshot::{Application, Snapshot, Transport, UpstreamTls};

    use super::EgressOptions;
    use crate::compile::{Compiled, GatewayOptions, compile_gateway};

    fn egress_options() -> GatewayOptions {
        GatewayOptions {
            labels: [("istio".to_owned(), "egressgateway".to_owned())].into(),
            mesh_identity: true,
            egress: Some(EgressOptions::default()),
            ..GatewayOptions::default()
        }
    }

    fn compile(yaml: &str, options: &GatewayOptions) -> Compiled {
        let loaded = crate::resources::load_clean(&[("egress.yaml", yaml)]);
        compile_gateway(&loaded.objects, options, 1)
    }

    /// The route tables' clusters, and the TCP routes' (name, SNI names, cluster).
    fn forwarded_to(snapshot: &Snapshot) -> Vec<String> {
        let mut clusters = Vec::new();
        for table in snapshot.route_tables.values() {
            for host in &table.virtual_hosts {
                for route in &host.routes {
                    if let strait_proxy::snapshot::RouteAction::Forward { clusters: to, .. } =
                        &route.action
                    {
                        clusters.extend(to.iter().map(|c| c.cluster.clone()));
                    }
                }
            }
        }
        clusters
    }

    /// Istio's `edition.cnn.com` egress task, with the gateway's part of each VirtualService.
    const CNN: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  ports:
  - {number: 80, name: http-port, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
"#;

    const HTTP_GATEWAY: &str = r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.cnn.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn-through-egress-gateway, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: cnn, port: {number: 80}}}]
  - match: [{gateways: [istio-egressgateway], port: 80}]
    route: [{destination: {host: edition.cnn.com, port: {number: PORT}}}]
"#;

    #[test]
    fn http_through_the_gateway_routes_the_gateway_s_half_of_the_virtual_service() {
        let yaml = format!("{CNN}{}", HTTP_GATEWAY.replace("PORT", "80"));
        let compiled = compile(&yaml, &egress_options());
        let listener = &compiled.snapshot.listeners[0];
        assert_eq!(listener.address.port(), 80);
        assert!(matches!(
            listener.filter_chains[0].application,
            Application::Http { .. }
        ));
        // Only the gateway's route: the mesh's half goes to the gateway itself.
        assert_eq!(
            forwarded_to(&compiled.snapshot),
            ["outbound|80||edition.cnn.com"]
        );
        let cluster = &compiled.snapshot.clusters["outbound|80||edition.cnn.com"];
        assert_eq!(cluster.tls, UpstreamTls::Disabled);
    }

    #[test]
    fn tls_origination_at_the_gateway_uses_the_destination_rule_s_sni_and_ca() {
        let rule = r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-tls-for-edition-cnn-com, namespace: default}
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, sni: edition.cnn.com, caCertificates: CA_FILE}
"#;
        // The external server's CA: a file, as a DestinationRule names it.
        let certified =
            rcgen::generate_simple_self_signed(vec!["edition.cnn.com".to_owned()]).unwrap();
        let ca = std::env::temp_dir().join(format!("strait-egress-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let rule = rule.replace("CA_FILE", &ca.display().to_string());
        let yaml = format!("{CNN}{}{rule}", HTTP_GATEWAY.replace("PORT", "443"));
        let compiled = compile(&yaml, &egress_options());
        let _ = std::fs::remove_file(&ca);
        let cluster = compiled
            .snapshot
            .clusters
            .get("outbound|443||edition.cnn.com")
            .unwrap_or_else(|| panic!("{:?}", compiled.snapshot.missing_clusters));
        let UpstreamTls::Simple {
            sni,
            ca_certificates,
            ..
        } = &cluster.tls
        else {
            panic!("SIMPLE origination: {:?}", cluster.tls)
        };
        assert_eq!(sni.as_deref(), Some("edition.cnn.com"));
        assert_eq!(
            ca_certificates.as_deref(),
            Some(certified.cert.pem().as_str())
        );
    }

    #[test]
    fn sni_passthrough_routes_by_sni_hosts_without_terminating() {
        let yaml = format!(
            r#"{CNN}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: default}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [edition.cnn.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-cnn-through-egress-gateway, namespace: default}}
spec:
  hosts: [edition.cnn.com]
  gateways: [mesh, istio-egressgateway]
  tls:
  - match: [{{gateways: [mesh], port: 443, sniHosts: [edition.cnn.com]}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, subset: cnn}}}}]
  - match: [{{gateways: [istio-egressgateway], port: 443, sniHosts: [edition.cnn.com]}}]
    route: [{{destination: {{host: edition.cnn.com, port: {{number: 443}}}}}}]
"#
        );
        let compiled = compile(&yaml, &egress_options());
        let chain = &compiled.snapshot.listeners[0].filter_chains[0];
        assert_eq!(chain.transport, Transport::Passthrough);
        let Application::Tcp { routes } = &chain.application else {
            panic!("passthrough is TCP")
        };
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].server_names, ["edition.cnn.com"]);
        assert_eq!(routes[0].clusters[0].0, "outbound|443||edition.cnn.com");
    }

    const MUTUAL_TLS_SERVER: &str = r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [edition.cnn.com]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway]
  tls:
  - match: [{sniHosts: [edition.cnn.com]}]
    route: [{destination: {host: edition.cnn.com, port: {number: 443}}}]
  tcp:
  - route: [{destination: {host: edition.cnn.com, port: {number: 443}}}]
"#;

    #[test]
    fn istio_mutual_servers_terminate_mesh_mtls_and_route_the_inner_tls_by_sni() {
        let compiled = compile(&format!("{CNN}{MUTUAL_TLS_SERVER}"), &egress_options());
        let chain = &compiled.snapshot.listeners[0].filter_chains[0];
        assert_eq!(chain.transport, Transport::IstioMutualInnerSni);
        assert_eq!(chain.server_names, ["edition.cnn.com"]);
        let Application::Tcp { routes } = &chain.application else {
            panic!("TLS behind mesh mTLS is TCP")
        };
        // The inner ClientHello's SNI first (`tls` routes), then the `tcp` routes.
        assert_eq!(routes[0].server_names, ["edition.cnn.com"]);
        assert!(routes[1].server_names.is_empty());

        // Without an identity the server cannot be served, and says why.
        let options = GatewayOptions {
            mesh_identity: false,
            ..egress_options()
        };
        let compiled = compile(&format!("{CNN}{MUTUAL_TLS_SERVER}"), &options);
        assert!(compiled.snapshot.listeners.is_empty());
        assert!(
            compiled
                .findings
                .iter()
                .any(|f| f.message.contains("needs a mesh identity")),
            "{:?}",
            compiled.findings
        );
    }

    /// An egress gateway's HTTP server routing `HOST` to `DESTINATION`, plus `extra`.
    fn routed(destination: &str, extra: &str) -> String {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: out, namespace: istio-system}}
spec:
  hosts: [out.example]
  gateways: [egress]
  http:
  - route: [{{destination: {{host: {destination}, port: {{number: 80}}}}}}]
{extra}"#
        )
    }

    fn service(host: &str, resolution: &str, endpoint: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: {resolution}\n{endpoint}"
        )
    }

    /// Why the cluster for `host:80` is missing, or `None` when it is served.
    fn refusal(compiled: &Compiled, host: &str) -> Option<String> {
        let name = format!("outbound|80||{host}");
        if compiled.snapshot.clusters.contains_key(&name) {
            return None;
        }
        Some(compiled.snapshot.missing_cluster_reason(&name))
    }

    #[test]
    fn the_egress_gateway_refuses_destinations_outside_the_registry() {
        let static_endpoint = "  endpoints: [{address: 192.0.2.10}]\n";
        // Not declared at all.
        let compiled = compile(&routed("nowhere.example", ""), &egress_options());
        let why = refusal(&compiled, "nowhere.example").unwrap();
        assert!(
            why.contains("REGISTRY_ONLY at the egress gateway: no ServiceEntry declares"),
            "{why}"
        );
        // resolution NONE: the original destination, which is the gateway itself.
        let none = service("none.example", "NONE", "");
        let compiled = compile(&routed("none.example", &none), &egress_options());
        let why = refusal(&compiled, "none.example").unwrap();
        assert!(why.contains("resolution NONE"), "{why}");
        assert!(
            compiled
                .findings
                .iter()
                .any(|f| f.message.contains("resolution NONE")
                    && f.object.as_ref().is_some_and(|o| o.name == "out")),
            "a finding names the VirtualService: {:?}",
            compiled.findings
        );
        // PASSTHROUGH: the original destination again.
        let passthrough = format!(
            "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: p, namespace: default}}\nspec:\n  host: api.example\n  trafficPolicy: {{loadBalancer: {{simple: PASSTHROUGH}}}}\n",
            service("api.example", "STATIC", static_endpoint)
        );
        let compiled = compile(&routed("api.example", &passthrough), &egress_options());
        let why = refusal(&compiled, "api.example").unwrap();
        assert!(why.contains("PASSTHROUGH"), "{why}");
        // A registry host with endpoints of its own is served.
        let declared = service("api.example", "STATIC", static_endpoint);
        let compiled = compile(&routed("api.example", &declared), &egress_options());
        assert_eq!(refusal(&compiled, "api.example"), None);
        // An ingress gateway is not held to it: resolution NONE is not refused there.
        let ingress = GatewayOptions {
            labels: egress_options().labels,
            ..GatewayOptions::default()
        };
        let compiled = compile(&routed("none.example", &none), &ingress);
        assert_eq!(refusal(&compiled, "none.example"), None);
    }

    #[test]
    fn a_destination_at_the_gateway_s_own_listening_address_is_a_loop() {
        let at = |address: &str| format!("  endpoints: [{{address: {address}}}]\n");
        let own = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let options = GatewayOptions {
            egress: Some(EgressOptions { own_ips: vec![own] }),
            ..egress_options()
        };
        for (endpoint, loops) in [("127.0.0.1", true), ("10.1.2.3", true), ("10.1.2.4", false)] {
            let yaml = routed(
                "loop.example",
                &service("loop.example", "STATIC", &at(endpoint)),
            );
            let compiled = compile(&yaml, &options);
            let why = refusal(&compiled, "loop.example");
            assert_eq!(why.is_some(), loops, "{endpoint}: {why:?}");
            if let Some(why) = why {
                assert!(why.contains("would loop"), "{why}");
            }
        }
        // Bound to one address: only that address (and port) loops.
        let options = GatewayOptions {
            bind: own,
            ..egress_options()
        };
        for (endpoint, loops) in [("10.1.2.3", true), ("127.0.0.1", false)] {
            let yaml = routed(
                "loop.example",
                &service("loop.example", "STATIC", &at(endpoint)),
            );
            let compiled = compile(&yaml, &options);
            assert_eq!(
                refusal(&compiled, "loop.example").is_some(),
                loops,
                "{endpoint}"
            );
        }
        // The registry's own entry for the gateway (its labels) is the gateway, wherever it is.
        let gateway_entry = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: istio-egressgateway, namespace: istio-system}\nspec:\n  hosts: [loop.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.7.7.7, labels: {istio: egressgateway}}]\n";
        let compiled = compile(&routed("loop.example", gateway_entry), &egress_options());
        let why = refusal(&compiled, "loop.example").unwrap();
        assert!(
            why.contains("10.7.7.7:80") && why.contains("would loop"),
            "{why}"
        );
        // Another port of the gateway's address is not this listener.
        let other_port = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: p, namespace: default}\nspec:\n  hosts: [loop.example]\n  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n";
        let compiled = compile(&routed("loop.example", other_port), &egress_options());
        assert_eq!(refusal(&compiled, "loop.example"), None);
    }
}
