//! Compiling gateway snapshots from YAML: which Gateways and VirtualServices bind, the virtual
//! host names, merging, TLS servers, clusters and their policy precedence, and what is reported
//! when something cannot be served.

use std::time::Duration;

use strait_proxy::snapshot::{
    Application, LbPolicy, RedirectPort, RouteAction, RouteTable, Snapshot, StringMatcher,
    Transport, UpstreamProtocol,
};

use super::{Compiled, GatewayOptions, compile_gateway};

fn compile(yaml: &str) -> Compiled {
    compile_with(yaml, &GatewayOptions::default())
}

fn compile_with(yaml: &str, options: &GatewayOptions) -> Compiled {
    let loaded = crate::resources::load_clean(&[("test.yaml", yaml)]);
    compile_gateway(&loaded.objects, options, 1)
}

fn table<'s>(snapshot: &'s Snapshot, name: &str) -> &'s RouteTable {
    snapshot
        .route_tables
        .get(name)
        .unwrap_or_else(|| panic!("no route table {name}: {:?}", snapshot.route_tables.keys()))
}

fn domains(table: &RouteTable) -> Vec<String> {
    table
        .virtual_hosts
        .iter()
        .flat_map(|h| h.domains.clone())
        .collect()
}

const SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
"#;

fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}\n---\n"
    )
}

const HTTP_SERVER: &str = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]";

fn virtual_service(name: &str, hosts: &str, gateways: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n{http}\n---\n"
    )
}

const ROUTE_API: &str = "  - route:\n    - destination: {host: api, port: {number: 8080}}";

#[test]
fn only_gateways_selecting_our_labels_are_served() {
    let other = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: egress, namespace: istio-system}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n";
    let compiled = compile(&format!("{}{other}{SERVICE}", gateway(HTTP_SERVER)));
    let names: Vec<&str> = compiled
        .snapshot
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["0.0.0.0_80"]);
}

#[test]
fn virtual_services_without_gateways_mean_mesh_and_never_bind() {
    let mesh_only = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: mesh, namespace: default}\nspec:\n  hosts: [api.example.com]\n  http:\n  - route:\n    - destination: {host: api, port: {number: 8080}}\n---\n";
    let compiled = compile(&format!("{}{mesh_only}{SERVICE}", gateway(HTTP_SERVER)));
    assert!(
        table(&compiled.snapshot, "http.80")
            .virtual_hosts
            .is_empty()
    );
}

#[test]
fn the_virtual_host_takes_the_more_specific_name_and_server_namespaces_restrict() {
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*.example.com\", \"other/*.other.com\"]";
    let yaml = format!(
        "{}{}{}{}",
        gateway(servers),
        virtual_service(
            "a",
            "[\"a.example.com\", \"*\"]",
            "[istio-system/gw]",
            ROUTE_API
        ),
        virtual_service("b", "[b.other.com]", "[istio-system/gw]", ROUTE_API),
        SERVICE
    );
    let compiled = compile(&yaml);
    // `*` meets `*.example.com` at the server's name; b.other.com is only for namespace other.
    assert_eq!(
        domains(table(&compiled.snapshot, "http.80")),
        ["*.example.com", "a.example.com"]
    );
}

#[test]
fn virtual_services_for_one_host_merge_in_creation_order_with_catch_alls_last() {
    let first = "  - route:\n    - destination: {host: api, port: {number: 8080}}";
    let second = "  - match:\n    - uri: {prefix: /v2}\n    route:\n    - destination: {host: api, port: {number: 9090}}";
    let yaml = format!(
        "{}{}{}{}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", first),
        virtual_service("b", "[api.example.com]", "[istio-system/gw]", second),
        SERVICE
    );
    let compiled = compile(&yaml);
    let routes = &table(&compiled.snapshot, "http.80").virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0].matches[0].path,
        Some(StringMatcher::Prefix("/v2".into()))
    );
    assert!(routes[1].matches.is_empty(), "the catch-all goes last");
}

#[test]
fn match_blocks_for_other_gateways_or_ports_are_left_out_without_widening_the_route() {
    let http = "  - match:\n    - gateways: [mesh]\n      uri: {prefix: /mesh}\n    - port: 8443\n      uri: {prefix: /tls}\n    route:\n    - destination: {host: api, port: {number: 8080}}\n  - match:\n    - uri: {prefix: /kept}\n      port: 80\n    route:\n    - destination: {host: api, port: {number: 8080}}";
    let yaml = format!(
        "{}{}{}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw, mesh]", http),
        SERVICE
    );
    let compiled = compile(&yaml);
    let routes = &table(&compiled.snapshot, "http.80").virtual_hosts[0].routes;
    assert_eq!(
        routes.len(),
        1,
        "the first route had no block for this gateway and port"
    );
    assert_eq!(
        routes[0].matches[0].path,
        Some(StringMatcher::Prefix("/kept".into()))
    );
    assert_eq!(routes[0].matches[0].port, None);
}

#[test]
fn a_redirect_to_the_request_port_names_the_server_port_not_the_listen_port() {
    let http = "  - redirect: {derivePort: FROM_REQUEST_PORT}";
    let options = GatewayOptions {
        ports: [(80, 18080)].into_iter().collect(),
        ..GatewayOptions::default()
    };
    let yaml = format!(
        "{}{}",
        gateway(HTTP_SERVER),
        virtual_service("r", "[web.example.com]", "[istio-system/gw]", http)
    );
    let compiled = compile_with(&yaml, &options);
    let route = &table(&compiled.snapshot, "http.80").virtual_hosts[0].routes[0];
    let RouteAction::Redirect(redirect) = &route.action else {
        panic!("a redirect: {:?}", route.action)
    };
    assert_eq!(redirect.port, RedirectPort::Port(80));
}

#[test]
fn https_redirect_serves_the_hosts_even_without_a_virtual_service() {
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web.example.com]\n    tls: {httpsRedirect: true}";
    let compiled = compile(&gateway(servers));
    let host = &table(&compiled.snapshot, "http.80").virtual_hosts[0];
    assert_eq!(host.domains, ["web.example.com"]);
    assert!(host.require_tls);
}

#[test]
fn a_tls_server_whose_credential_is_missing_is_left_out_with_a_warning() {
    let servers = format!(
        "{HTTP_SERVER}\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {{mode: SIMPLE, credentialName: absent}}"
    );
    let compiled = compile(&gateway(&servers));
    assert_eq!(
        compiled.snapshot.listeners.len(),
        1,
        "only port 80 is served"
    );
    let finding = compiled
        .findings
        .iter()
        .find(|f| f.message.contains("absent"))
        .expect("a finding names the credential");
    assert_eq!(finding.field, "spec.servers[1].tls");
    assert!(
        finding.message.contains("--credentials"),
        "{}",
        finding.message
    );
}

#[test]
fn passthrough_servers_route_by_sni_and_ports_map_to_listen_ports() {
    let servers = "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*.example.com\"]\n    tls: {mode: PASSTHROUGH}";
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tls, namespace: default}\nspec:\n  hosts: [\"*.example.com\"]\n  gateways: [istio-system/gw]\n  tls:\n  - match:\n    - sniHosts: [a.example.com]\n    route:\n    - destination: {host: api, port: {number: 8080}}\n---\n";
    let options = GatewayOptions {
        ports: [(443, 8443)].into_iter().collect(),
        ..GatewayOptions::default()
    };
    let compiled = compile_with(&format!("{}{vs}{SERVICE}", gateway(servers)), &options);
    let listener = &compiled.snapshot.listeners[0];
    assert_eq!(listener.address.port(), 8443);
    let chain = &listener.filter_chains[0];
    assert_eq!(chain.transport, Transport::Passthrough);
    assert_eq!(chain.server_names, ["*.example.com"]);
    let Application::Tcp { routes } = &chain.application else {
        panic!("passthrough is TCP")
    };
    assert_eq!(routes[0].server_names, ["a.example.com"]);
    assert_eq!(
        routes[0].clusters,
        [(
            "outbound|8080||api.default.svc.cluster.local".to_owned(),
            100
        )]
    );
}

#[test]
fn a_destination_no_service_declares_keeps_its_cluster_name_and_is_reported() {
    let http = "  - route:\n    - destination: {host: missing.example.com, port: {number: 80}}";
    let yaml = format!(
        "{}{}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", http)
    );
    let compiled = compile(&yaml);
    let route = &table(&compiled.snapshot, "http.80").virtual_hosts[0].routes[0];
    let RouteAction::Forward { clusters, .. } = &route.action else {
        panic!("forward")
    };
    assert_eq!(clusters[0].cluster, "outbound|80||missing.example.com");
    assert!(compiled.snapshot.clusters.is_empty());
    assert_eq!(
        compiled
            .snapshot
            .missing_cluster_reason("outbound|80||missing.example.com"),
        "cluster outbound|80||missing.example.com is not configured: no ServiceEntry declares missing.example.com"
    );
    let finding = compiled
        .findings
        .iter()
        .find(|f| f.message.contains("missing.example.com"))
        .unwrap();
    assert_eq!(finding.field, "spec.http[0].route[0].destination");
}

#[test]
fn routes_without_retries_get_istios_default_policy() {
    let yaml = format!(
        "{}{}{}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", ROUTE_API),
        SERVICE
    );
    let compiled = compile(&yaml);
    let retry = table(&compiled.snapshot, "http.80").virtual_hosts[0].routes[0]
        .retry
        .clone()
        .expect("a default retry policy");
    assert_eq!(retry.attempts, 2);
    assert!(retry.retry_on.connect_failure && retry.retry_on.refused_stream);
    assert_eq!(retry.retry_on.grpc_statuses, [14, 1]);
    assert_eq!(retry.retry_on.status_codes, [503]);
    assert_eq!(retry.backoff, Duration::from_millis(25));

    let disabled = format!("{ROUTE_API}\n    retries: {{attempts: 0}}");
    let yaml = format!(
        "{}{}{}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", &disabled),
        SERVICE
    );
    let compiled = compile(&yaml);
    assert!(
        table(&compiled.snapshot, "http.80").virtual_hosts[0].routes[0]
            .retry
            .is_none()
    );
}

#[test]
fn port_level_settings_replace_and_subset_policies_override_field_by_field() {
    let rule = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {connectTimeout: 3s}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {connectTimeout: 1s}}
      portLevelSettings:
      - port: {number: 9090}
        outlierDetection: {consecutive5xxErrors: 3}
---
"#;
    let http = "  - route:\n    - destination: {host: api, subset: v2, port: {number: 8080}}\n      weight: 40\n    - destination: {host: api, port: {number: 9090}}\n      weight: 40\n    - destination: {host: api, subset: v2, port: {number: 9090}}\n      weight: 20";
    let yaml = format!(
        "{}{}{SERVICE}---\n{rule}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", http),
    );
    let compiled = compile(&yaml);
    let clusters = &compiled.snapshot.clusters;
    let v2 = &clusters["outbound|8080|v2|api.default.svc.cluster.local"];
    assert_eq!(
        v2.lb,
        LbPolicy::RoundRobin,
        "inherited from the destination level"
    );
    assert_eq!(
        v2.connect_timeout,
        Duration::from_secs(1),
        "the subset's own"
    );
    assert_eq!(v2.endpoints.len(), 1, "subset labels select");
    let grpc = &clusters["outbound|9090||api.default.svc.cluster.local"];
    assert_eq!(grpc.lb, LbPolicy::Random, "the port-level policy replaces");
    assert_eq!(
        grpc.connect_timeout,
        Duration::from_secs(10),
        "not inherited from the destination level"
    );
    assert_eq!(
        grpc.protocol,
        UpstreamProtocol::Http2,
        "GRPC ports speak HTTP/2"
    );
    assert_eq!(grpc.endpoints.len(), 2);
    let v2_grpc = &clusters["outbound|9090|v2|api.default.svc.cluster.local"];
    assert_eq!(
        v2_grpc.outlier.as_ref().map(|o| o.consecutive_5xx),
        Some(3),
        "the subset's port-level policy"
    );
    assert_eq!(
        v2_grpc.lb,
        LbPolicy::LeastRequest,
        "a subset's port-level policy replaces everything: the default balancer"
    );
    assert_eq!(v2_grpc.connect_timeout, Duration::from_secs(10));
}

/// A self-signed P-256 certificate and its key (PEM), made once per test run, for TLS settings
/// that must load.
fn test_certificate() -> &'static (String, String) {
    static CERTIFICATE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        let certified =
            rcgen::generate_simple_self_signed(vec!["api.example.com".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    })
}

/// The gateway, a route to `api:8080` and a DestinationRule for `api` with `tls` settings.
fn originating(tls: &str) -> String {
    format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: default}}\nspec:\n  host: api.default.svc.cluster.local\n  trafficPolicy:\n    tls: {tls}\n---\n{SERVICE}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[api.example.com]", "[istio-system/gw]", ROUTE_API),
    )
}

#[test]
fn tls_origination_that_cannot_be_set_up_leaves_only_its_cluster_out() {
    // SIMPLE without CA certificates cannot verify the server (system roots are not used).
    let compiled = compile(&originating("{mode: SIMPLE}"));
    let name = "outbound|8080||api.default.svc.cluster.local";
    assert!(compiled.snapshot.clusters.is_empty());
    assert_eq!(compiled.snapshot.listeners.len(), 1, "the rest is served");
    let why = &compiled.snapshot.missing_clusters[name];
    assert!(why.contains("TLS origination"), "{why}");
    assert!(
        compiled
            .findings
            .iter()
            .any(|f| f.message.contains("TLS origination cannot be set up")),
        "{:?}",
        compiled.findings
    );
}

#[test]
fn a_destination_rule_credential_finds_its_ca_in_the_cacert_credential() {
    let store = std::env::temp_dir().join(format!(
        "strait-compile-credentials-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(store.join("upstream")).unwrap();
    std::fs::create_dir_all(store.join("upstream-cacert")).unwrap();
    std::fs::write(
        store.join("upstream-cacert/ca.crt"),
        test_certificate().0.as_str(),
    )
    .unwrap();
    let options = GatewayOptions {
        credentials: Some(store.clone()),
        ..GatewayOptions::default()
    };
    let compiled = compile_with(
        &originating("{mode: SIMPLE, credentialName: upstream}"),
        &options,
    );
    std::fs::remove_dir_all(&store).unwrap();
    let cluster = &compiled.snapshot.clusters["outbound|8080||api.default.svc.cluster.local"];
    let strait_proxy::snapshot::UpstreamTls::Simple {
        ca_certificates, ..
    } = &cluster.tls
    else {
        panic!("SIMPLE origination: {:?}", cluster.tls)
    };
    assert_eq!(
        ca_certificates.as_deref(),
        Some(test_certificate().0.as_str())
    );
}

#[test]
fn a_credential_caught_half_written_keeps_its_last_good_certificate() {
    let store = std::env::temp_dir().join(format!(
        "strait-compile-last-good-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let folder = store.join("web");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), test_certificate().0.as_str()).unwrap();
    std::fs::write(folder.join("tls.key"), test_certificate().1.as_str()).unwrap();
    let options = GatewayOptions {
        credentials: Some(store.clone()),
        ..GatewayOptions::default()
    };
    let servers = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: web}";
    let yaml = gateway(servers);
    let served = |compiled: &Compiled| match compiled.snapshot.listeners.first() {
        Some(listener) => match &listener.filter_chains[0].transport {
            Transport::Terminate(tls) => Some(tls.certificate.certificate_chain.clone()),
            _ => None,
        },
        None => None,
    };
    assert_eq!(
        served(&compile_with(&yaml, &options)).as_deref(),
        Some(test_certificate().0.as_str())
    );

    // The certificate is being rewritten (truncated): the last good one stays in force.
    std::fs::write(folder.join("tls.crt"), &test_certificate().0.as_str()[..40]).unwrap();
    let compiled = compile_with(&yaml, &options);
    assert_eq!(
        served(&compiled).as_deref(),
        Some(test_certificate().0.as_str())
    );
    assert!(
        compiled.findings.iter().any(|f| f
            .message
            .contains("last good certificate of credential web")),
        "{:?}",
        compiled.findings
    );
    // A compilation that never saw it load has nothing to fall back on.
    let fresh = GatewayOptions {
        credentials: Some(store.clone()),
        ..GatewayOptions::default()
    };
    assert_eq!(served(&compile_with(&yaml, &fresh)), None);
    std::fs::remove_dir_all(&store).unwrap();
}

#[test]
fn a_port_named_for_http2_or_grpc_speaks_http2_to_its_endpoints_without_a_protocol_field() {
    let service = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: named, namespace: default}
spec:
  hosts: [named.default.svc.cluster.local]
  ports: [{number: 8080, name: http-web}, {number: 8081, name: http2}, {number: 9090, name: grpc-api}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.3}]
---
"#;
    let http = "  - route:\n    - destination: {host: named, port: {number: 8080}}\n      weight: 40\n    - destination: {host: named, port: {number: 8081}}\n      weight: 30\n    - destination: {host: named, port: {number: 9090}}\n      weight: 30";
    let yaml = format!(
        "{}{}{service}",
        gateway(HTTP_SERVER),
        virtual_service("a", "[named.example.com]", "[istio-system/gw]", http),
    );
    let compiled = compile(&yaml);
    let protocol = |port: u16| {
        compiled.snapshot.clusters[&format!("outbound|{port}||named.default.svc.cluster.local")]
            .protocol
    };
    assert_eq!(protocol(8080), UpstreamProtocol::Http1);
    assert_eq!(protocol(8081), UpstreamProtocol::Http2);
    assert_eq!(protocol(9090), UpstreamProtocol::Http2);
}

fn dns_service(resolution: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: default}}\nspec:\n  hosts: [api.default.svc.cluster.local]\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  resolution: {resolution}\n  endpoints: [{{address: backend.example.test}}]\n---\n"
    )
}

#[test]
fn dns_endpoints_come_from_the_cache_and_wait_for_the_first_answer() {
    use crate::dns::{Outcome, Timing};
    use std::net::SocketAddr;
    use std::time::Instant;

    let options = GatewayOptions::default();
    let yaml = format!(
        "{}{}{}",
        gateway(HTTP_SERVER),
        virtual_service("api", "[\"*\"]", "[istio-system/gw]", ROUTE_API),
        dns_service("DNS")
    );
    let name = "outbound|8080||api.default.svc.cluster.local";
    // Not resolved yet: the cluster is there, empty, and says why; it is not a finding.
    let compiled = compile_with(&yaml, &options);
    let cluster = &compiled.snapshot.clusters[name];
    assert!(cluster.endpoints.is_empty());
    let reason = cluster.empty_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("waiting for DNS") && reason.contains("backend.example.test"),
        "{reason}"
    );
    assert!(compiled.findings.is_empty(), "{:?}", compiled.findings);

    let timing = Timing {
        floor: Duration::from_secs(60),
        nxdomain_grace: Duration::from_secs(300),
    };
    let answer = Outcome::Resolved {
        addresses: vec![
            "fd00::1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        ],
        ttl: Duration::from_secs(30),
    };
    options
        .dns
        .record("backend.example.test", answer, Instant::now(), timing);
    let compiled = compile_with(&yaml, &options);
    let cluster = &compiled.snapshot.clusters[name];
    let addresses: Vec<SocketAddr> = cluster.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(
        addresses,
        vec![
            SocketAddr::from(([10, 0, 0, 1], 8080)),
            SocketAddr::from(([10, 0, 0, 2], 8080))
        ]
    );
    assert_eq!(cluster.empty_reason, None);
    // Each endpoint says which name it came from (a restart without DNS starts from it).
    assert!(
        cluster
            .endpoints
            .iter()
            .all(|e| e.dns_name.as_deref() == Some("backend.example.test"))
    );

    // DNS_ROUND_ROBIN: one logical endpoint, the first address of the answer.
    let yaml = yaml.replace("resolution: DNS\n", "resolution: DNS_ROUND_ROBIN\n");
    let compiled = compile_with(&yaml, &options);
    let cluster = &compiled.snapshot.clusters[name];
    let addresses: Vec<SocketAddr> = cluster.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(addresses, vec![SocketAddr::from(([10, 0, 0, 1], 8080))]);
}
