//! The egress gateway end to end, with Istio's documented patterns: two workloads (`api` and
//! `other`, each its own network namespace with capture and a Strait sidecar), the egress
//! gateway (`strait run --role egress` with its own SPIFFE identity, from files or from the CA
//! service) in a third, and in a
//! fourth a Python HTTPS server standing in for an external API, with a certificate from its
//! own CA for `api.payments.example` and `secure.payments.example` (STATIC ServiceEntry
//! endpoints give the names an address). Sidecars reach the gateway over mesh mTLS
//! (ISTIO_MUTUAL) and check its identity. Needs root, `ip`, iptables and python3
//! (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::TempDir;
use common::bridge::Bridge;
use common::mesh::{
    CA_PORT, Ca, MARK, capture, control, http_get, json_body, recorded, sidecar, supervise,
    wait_for_line_in,
};
use common::netns::{Netns, Process};
use common::pki;

/// The external API: HTTPS on PORT with CERT and KEY, answering with what it saw (peer, SNI,
/// Host, path) and recording every connection's peer and the SNI of every handshake to RECORD.
const EXTERNAL: &str = r#"
import http.server, json, ssl, sys, threading
cert, key, port, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
def note(line):
    with lock, open(record, "a") as out:
        out.write(line + "\n")
def sni(sock, name, context):
    note("sni " + str(name))
    sock.sni = name
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.sni_callback = sni
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        seen = {"peer": self.client_address[0], "sni": getattr(self.connection, "sni", None),
                "host": self.headers.get("host"), "path": self.path}
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    def get_request(self):
        sock, address = self.socket.accept()
        note("connection from " + address[0])
        sock.settimeout(10)
        try:
            return context.wrap_socket(sock, server_side=True), address
        except Exception as error:
            note("handshake failed: " + str(error))
            sock.close()
            raise OSError("handshake failed")
server = Server(("0.0.0.0", port), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

/// A TLS client: `python3 -c TLS_CLIENT IP PORT SNI CA` does TLS with SNI (verifying the server
/// for that name against CA), sends `GET /` for that host and prints the response, or `error:`
/// and what went wrong.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys
ip, port, sni, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    context = ssl.create_default_context(cafile=ca)
    s = socket.create_connection((ip, port), timeout=10)
    t = context.wrap_socket(s, server_hostname=sni)
    t.sendall(("GET /app-tls HTTP/1.1\r\nHost: " + sni + "\r\nConnection: close\r\n\r\n").encode())
    data = b""
    while True:
        chunk = t.recv(65536)
        if not chunk:
            break
        data += chunk
    print(data.decode(errors="replace"))
except Exception as error:
    print("error:", type(error).__name__, error)
"#;

const API: &str = "api.payments.example";
const SECURE: &str = "secure.payments.example";
const STATUS: &str = "status.payments.example";
/// Sent to the gateway by the mesh's route, but no route of the gateway allows it.
const LEGACY: &str = "legacy.payments.example";
const GATEWAY_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway";

/// The configuration: the egress gateway as a mesh service, the external API's hosts, the
/// gateway's servers and the two-hop VirtualServices, TLS origination at the gateway, and
/// `extra`.
fn config(egress: Ipv4Addr, external: Ipv4Addr, ca: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  workloadSelector: {{labels: {{istio: egressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: egressgateway-1, namespace: istio-system}}
spec:
  address: {egress}
  labels: {{istio: egressgateway, security.istio.io/tlsMode: istio}}
  serviceAccount: istio-egressgateway
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments-api, namespace: default}}
spec:
  hosts: [{API}]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 443, name: https, protocol: HTTPS}}
  resolution: STATIC
  endpoints: [{{address: {external}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments-tls, namespace: default}}
spec:
  hosts: [{SECURE}, {STATUS}, {LEGACY}]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {external}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: https-api, protocol: HTTPS}}
    hosts: [{API}]
    tls: {{mode: ISTIO_MUTUAL}}
  - port: {{number: 443, name: tls-payments, protocol: TLS}}
    hosts: [{SECURE}, {STATUS}]
    tls: {{mode: ISTIO_MUTUAL}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [loop.payments.example, anywhere.example, unlisted.example]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway, namespace: istio-system}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: api
    trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, sni: {API}}}}}
  - name: payments-tls
    trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, sni: {SECURE}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payments-api-origination, namespace: istio-system}}
spec:
  host: {API}
  exportTo: ["."]
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: SIMPLE, sni: {API}, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api-through-egress, namespace: default}}
spec:
  hosts: [{API}]
  gateways: [istio-system/egress, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, subset: api, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 443}}]
    route: [{{destination: {{host: {API}, port: {{number: 443}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tls-through-egress, namespace: default}}
spec:
  hosts: [{SECURE}, {STATUS}, {LEGACY}]
  gateways: [istio-system/egress, mesh]
  tls:
  - match: [{{gateways: [mesh], port: 443, sniHosts: [{SECURE}, {STATUS}, {LEGACY}]}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, subset: payments-tls, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 443, sniHosts: [{SECURE}]}}]
    route: [{{destination: {{host: {SECURE}, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 443, sniHosts: [{STATUS}]}}]
    route: [{{destination: {{host: {STATUS}, port: {{number: 443}}}}}}]
{extra}"#
    )
}

/// Routes at the gateway that REGISTRY_ONLY refuses: back to the gateway itself (`EGRESS_IP`
/// stands for its address), to a `resolution: NONE` host (the original destination), and to a
/// host outside the registry.
const REFUSED_ROUTES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: loop, namespace: default}
spec:
  hosts: [loop.payments.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: EGRESS_IP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anywhere, namespace: default}
spec:
  hosts: [anywhere.example]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: refused, namespace: istio-system}
spec:
  hosts: [loop.payments.example, anywhere.example, unlisted.example]
  gateways: [egress]
  http:
  - match: [{authority: {exact: loop.payments.example}}]
    route: [{destination: {host: loop.payments.example, port: {number: 80}}}]
  - match: [{authority: {exact: anywhere.example}}]
    route: [{destination: {host: anywhere.example, port: {number: 443}}}]
  - route: [{destination: {host: not-in-the-registry.example, port: {number: 443}}}]
"#;

/// Only `api` may reach the payments API: over HTTP by host, over TLS by the SNI of its own
/// ClientHello inside the mesh mTLS.
const AUTHORIZATION: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments-api-only, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: egressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/api]}}]
    to: [{operation: {hosts: [api.payments.example]}}]
  - from: [{source: {principals: [cluster.local/ns/default/sa/api]}}]
    when: [{key: connection.sni, values: [secure.payments.example]}]
"#;

/// Where the egress gateway's identity comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GatewayIdentity {
    /// Files from `strait ca issue`.
    Files,
    /// The CA service (run beside the gateway), with a bootstrap token.
    Ca,
}

/// The four namespaces and what runs in them (stopped first when dropped).
struct Egress {
    _processes: Vec<Process>,
    bridge: Bridge,
    dir: TempDir,
    api_ip: Ipv4Addr,
    egress_ip: Ipv4Addr,
    external_ip: Ipv4Addr,
    /// The external API's CA, as a file.
    external_ca: PathBuf,
}

impl Egress {
    /// Everything running, with `extra` added to the configuration and MeshConfig
    /// `outboundTrafficPolicy` set to `mode`.
    fn start(label: &str, mode: &str, extra: &str) -> Egress {
        Egress::start_with(label, mode, extra, GatewayIdentity::Files)
    }

    /// [`Egress::start`] with the gateway's identity from `identity`.
    fn start_with(label: &str, mode: &str, extra: &str, identity: GatewayIdentity) -> Egress {
        let bridge = Bridge::new(label, &["api", "other", "egress", "external"]);
        let ip = |name: &str| bridge.member(name).ip;
        let (api_ip, egress_ip, external_ip) = (ip("api"), ip("egress"), ip("external"));
        let dir = TempDir::new(label);
        let ca = Ca::init(&dir, "ca-data");
        for sa in ["api", "other"] {
            ca.issue(sa, &dir.path().join(sa));
        }
        ca.issue_id(GATEWAY_ID, &dir.path().join("egress"));

        let external_root = pki::Ca::new("external API root");
        let server = external_root.server(&[API, SECURE, STATUS, LEGACY]);
        let external_ca = dir.write("external/ca.pem", &external_root.pem);
        let cert = dir.write("external/cert.pem", &server.cert);
        let key = dir.write("external/key.pem", &server.key);

        let extra = extra.replace("EGRESS_IP", &egress_ip.to_string());
        dir.write(
            "config/services.yaml",
            &config(
                egress_ip,
                external_ip,
                &external_ca.display().to_string(),
                &extra,
            ),
        );
        dir.write(
            "config/mesh.yaml",
            &format!("outboundTrafficPolicy: {{mode: {mode}}}\n"),
        );

        let mut processes = Vec::new();
        let external = bridge.member("external");
        let mut server = external.netns.spawn({
            let mut command = external.netns.command("python3");
            command
                .args(["-u", "-c", EXTERNAL])
                .arg(&cert)
                .arg(&key)
                .arg("443")
                .arg(dir.path().join("external.log"));
            command
        });
        server.wait_for_line(|l| l == "ready");
        processes.push(server);
        let egress_netns = &bridge.member("egress").netns;
        let identity_flags = match identity {
            GatewayIdentity::Files => vec![
                "--identity-dir".to_owned(),
                dir.path().join("egress").display().to_string(),
            ],
            GatewayIdentity::Ca => {
                processes.push(control(egress_netns, egress_ip, &dir, &ca, "1h"));
                vec![
                    "--ca-address".to_owned(),
                    format!("{egress_ip}:{CA_PORT}"),
                    "--trust-bundle".to_owned(),
                    dir.path().join("bundle.pem").display().to_string(),
                    "--bootstrap-token-file".to_owned(),
                    ca.token_id(GATEWAY_ID, "egress", &dir),
                ]
            }
        };
        processes.push(gateway(egress_netns, &dir, egress_ip, &identity_flags));
        for workload in ["api", "other"] {
            let netns = &bridge.member(workload).netns;
            capture(netns, &["install"]);
            processes.push(sidecar(netns, &dir, workload, &[]));
        }
        Egress {
            bridge,
            dir,
            api_ip,
            egress_ip,
            external_ip,
            external_ca,
            _processes: processes,
        }
    }

    fn netns(&self, name: &str) -> &Netns {
        &self.bridge.member(name).netns
    }

    /// `GET /hello` for `host` on port 80 of the external API's address, from `workload`.
    fn http(&self, workload: &str, host: &str) -> String {
        http_get(self.netns(workload), self.external_ip, 80, "0", host, "")
    }

    /// TLS with `sni` to port 443 of the external API's address, from `workload`.
    fn tls(&self, workload: &str, sni: &str) -> String {
        self.netns(workload).ok(
            "python3",
            &[
                "-c",
                TLS_CLIENT,
                &self.external_ip.to_string(),
                "443",
                sni,
                &self.external_ca.display().to_string(),
            ],
        )
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn external_record(&self) -> String {
        recorded(&self.log("external.log"))
    }
}

/// The egress gateway in `netns`: `--role egress` with the identity `identity` flags name,
/// serving the configuration in `DIR/config`; ready when its endpoints are.
fn gateway(netns: &Netns, dir: &TempDir, ip: Ipv4Addr, identity: &[String]) -> Process {
    let path = |name: &str| dir.path().join(name);
    let (config, data, access_log) = (
        path("config"),
        path("egress-data"),
        path("egress-access.log"),
    );
    let instance_ip = ip.to_string();
    let mut command: Vec<&OsStr> = vec![OsStr::new(env!("CARGO_BIN_EXE_strait"))];
    command.extend(
        [
            "run",
            "--role",
            "egress",
            "--namespace",
            "istio-system",
            "--service-account",
            "istio-egressgateway",
            "--instance-ip",
            &instance_ip,
            "--drain-period",
            "0s",
            "--drain-timeout",
            "1s",
        ]
        .map(OsStr::new),
    );
    for (flag, value) in [
        ("--config", &config),
        ("--data", &data),
        ("--access-log", &access_log),
    ] {
        command.extend([OsStr::new(flag), value.as_os_str()]);
    }
    command.extend(identity.iter().map(OsStr::new));
    supervise(netns, &command, &path("egress.log"), "endpoint ready")
}

#[test]
fn http_is_originated_as_tls_at_the_gateway_and_app_tls_passes_through_it() {
    let egress = Egress::start("egress-patterns", "REGISTRY_ONLY", "");

    // (1) The application sends plain HTTP to port 80; its sidecar sends it over mesh mTLS to
    // the gateway, which originates TLS to port 443 with the DestinationRule's SNI and CA.
    // Nothing listens on port 80 at the external address: only the gateway's route gets there.
    let response = egress.http("api", API);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    assert_eq!(seen["sni"], API, "{seen}");
    assert_eq!(seen["host"], API, "{seen}");
    assert_eq!(
        seen["peer"],
        egress.egress_ip.to_string(),
        "the gateway made the connection: {seen}"
    );
    // The sidecar checked the gateway's SPIFFE ID, and the gateway saw the caller's.
    let gateway_line = wait_for_line_in(
        &egress.log("egress-access.log"),
        &["GET /hello", "outbound|443||api.payments.example"],
    );
    assert!(
        gateway_line.contains("peer=\"spiffe://cluster.local/ns/default/sa/api\""),
        "{gateway_line}"
    );
    wait_for_line_in(
        &egress.log("api-access.log"),
        &[
            "GET /hello",
            "outbound|443|api|istio-egressgateway.istio-system.svc.cluster.local",
        ],
    );

    // (2) The application does TLS itself, verified against the external API's own CA: the
    // sidecar routes it by SNI to the gateway inside mesh mTLS, and the gateway routes it by
    // the inner ClientHello's SNI without terminating it (it has no certificate for the name).
    let response = egress.tls("api", SECURE);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    assert_eq!(seen["sni"], SECURE, "{seen}");
    assert_eq!(seen["peer"], egress.egress_ip.to_string(), "{seen}");
    let tcp = wait_for_line_in(
        &egress.log("egress-access.log"),
        &["TCP", "outbound|443||secure.payments.example"],
    );
    assert!(tcp.contains(SECURE), "the inner SNI is logged: {tcp}");
    assert!(
        tcp.contains("peer=\"spiffe://cluster.local/ns/default/sa/api\""),
        "{tcp}"
    );
    // An inner SNI that no route of the gateway allows is refused there, though the outer SNI
    // chose the server.
    let refused = egress.tls("api", LEGACY);
    assert!(refused.starts_with("error:"), "{refused}");
    let line = wait_for_line_in(&egress.log("egress-access.log"), &["TCP", " NR ", LEGACY]);
    assert!(line.contains("no TCP route matches"), "{line}");

    // Both names reached the server only through the gateway, each with its own SNI.
    let record = egress.external_record();
    assert!(record.contains(&format!("sni {API}")), "{record}");
    assert!(record.contains(&format!("sni {SECURE}")), "{record}");
    assert!(!record.contains(LEGACY), "{record}");
}

#[test]
fn registry_only_refuses_unknown_destinations_at_the_sidecar_and_at_the_gateway() {
    let egress = Egress::start("egress-registry", "REGISTRY_ONLY", REFUSED_ROUTES);

    // (3) At the sidecar: HTTP for a host outside the registry is answered 502, with the flag
    // and the reason in the access log.
    let response = egress.http("api", "unknown.example");
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    let line = wait_for_line_in(
        &egress.log("api-access.log"),
        &["unknown.example", "BlackHoleCluster"],
    );
    assert!(line.contains(" 502 NC "), "{line}");
    assert!(line.contains("REGISTRY_ONLY"), "{line}");
    // TCP to a port nothing declares: capture accepted it, so the sidecar resets it.
    let reset = common::mesh::call(
        egress.netns("api"),
        egress.external_ip,
        9443,
        "0",
        "hello\\n",
    );
    assert!(reset.contains("ConnectionResetError"), "{reset}");
    // TLS with a name outside the registry on a TLS port: reset too.
    let reset = egress.tls("api", "elsewhere.example");
    assert!(reset.starts_with("error:"), "{reset}");
    assert!(!egress.external_record().contains("elsewhere"));

    // (4) At the gateway: routes whose destination would leave the registry, or loop back to
    // the gateway, are refused with the reason, at compile time in the log...
    let log = std::fs::read_to_string(egress.log("egress.log")).unwrap();
    assert!(log.contains("would loop"), "{log}");
    assert!(log.contains("resolution NONE"), "{log}");
    // ... and for each request, with the flag and reason in the access log.
    let other = egress.netns("other");
    for (host, reason) in [
        ("loop.payments.example", "would loop"),
        ("anywhere.example", "resolution NONE"),
        (
            "unlisted.example",
            "no ServiceEntry declares not-in-the-registry.example",
        ),
    ] {
        // Sent to the gateway's plain HTTP port directly (the mark keeps capture out of it).
        let response = http_get(other, egress.egress_ip, 80, MARK, host, "");
        assert!(response.starts_with("HTTP/1.1 503"), "{host}: {response}");
        let line = wait_for_line_in(&egress.log("egress-access.log"), &[host, " NC "]);
        assert!(line.contains(reason), "{line}");
        assert!(
            line.contains("REGISTRY_ONLY at the egress gateway"),
            "{line}"
        );
    }
}

#[test]
fn only_the_allowed_principal_reaches_the_external_api_by_host_and_by_inner_sni() {
    // The gateway gets its SVID from the CA service here, as a sidecar would.
    let egress = Egress::start_with(
        "egress-authz",
        "REGISTRY_ONLY",
        AUTHORIZATION,
        GatewayIdentity::Ca,
    );
    let log = std::fs::read_to_string(egress.log("egress.log")).unwrap();
    assert!(
        log.contains(&format!("certificate issued id={GATEWAY_ID}")),
        "{log}"
    );

    // (5) `api` may reach the API over HTTP and over its own TLS; `other` may not.
    let response = egress.http("api", API);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = egress.tls("api", SECURE);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let refused = egress.http("other", API);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let line = wait_for_line_in(
        &egress.log("egress-access.log"),
        &["GET /hello", " 403 RBAC ", "sa/other"],
    );
    assert!(line.contains("istio-system/payments-api-only"), "{line}");
    let refused = egress.tls("other", SECURE);
    assert!(refused.starts_with("error:"), "{refused}");
    let line = wait_for_line_in(
        &egress.log("egress-access.log"),
        &["TCP", "RBAC", "sa/other", SECURE],
    );
    assert!(line.contains("istio-system/payments-api-only"), "{line}");

    // The outer SNI is the same for both TLS names (the DestinationRule's subset sets it), so
    // only the inner ClientHello tells them apart: `api` may not reach the status host.
    let refused = egress.tls("api", STATUS);
    assert!(refused.starts_with("error:"), "{refused}");
    let line = wait_for_line_in(
        &egress.log("egress-access.log"),
        &["TCP", "RBAC", "sa/api", STATUS],
    );
    assert!(line.contains("istio-system/payments-api-only"), "{line}");
    let record = egress.external_record();
    assert!(!record.contains(&format!("sni {STATUS}")), "{record}");
}

#[test]
fn allow_any_sends_unknown_destinations_to_their_original_destination() {
    let egress = Egress::start("egress-allow-any", "ALLOW_ANY", "");
    // A name outside the registry on a TLS port goes straight to the address the application
    // connected to, from the workload's own address, not through the gateway. (The server's
    // certificate is not for that name, so the client's handshake then fails: only the server's
    // record matters here.)
    let response = egress.tls("api", "elsewhere.example");
    assert!(response.starts_with("error:"), "{response}");
    let record = egress.external_record();
    assert!(record.contains("sni elsewhere.example"), "{record}");
    assert!(
        record.contains(&format!("connection from {}", egress.api_ip)),
        "{record}"
    );
    let line = wait_for_line_in(
        &egress.log("api-access.log"),
        &["TCP", "PassthroughCluster"],
    );
    assert!(
        line.contains(&format!("{}:443", egress.external_ip)),
        "{line}"
    );
    // Registry hosts still take their routes through the gateway.
    let response = egress.http("api", API);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(json_body(&response)["peer"], egress.egress_ip.to_string());
}
