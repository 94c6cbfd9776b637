//! A workload without capture joins the mesh through Istio's Sidecar resource, as a VM does:
//! `vm` (namespace `vm`, network namespace `a`, no iptables) has a Sidecar with an ingress
//! listener (8443 -> its application on 127.0.0.1:8080) and an egress listener (127.0.0.1:9080
//! -> `httpbin` on its port 9080); `httpbin` (namespace `b`, network namespace `b`) is captured
//! as in tests/sidecar.rs. STRICT mesh-wide: calls both ways only work over mesh mTLS, and each
//! application sees the other's identity in XFCC. Needs root, `ip`, iptables and python3
//! (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;

use common::mesh::{strait_run, supervise, workload_flags};
use common::netns::{Netns, Pair, Process};
use common::{TempDir, run, strait};

/// The captured sidecar's socket mark, excluded by its capture rules.
const MARK: &str = "1337";

/// An HTTP application answering with what it saw: `python3 -c APP HOST PORT`.
const APP: &str = r#"
import http.server, json, sys
class Http(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        seen = {"peer": self.client_address[0], "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()}}
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
web = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Http)
print("ready", flush=True)
web.serve_forever()
"#;

/// `python3 -c CLIENT IP PORT MARK HOST` sends a GET for HOST from a socket with SO_MARK MARK
/// (0: none) and prints the response, or the error.
const CLIENT: &str = r#"
import socket, sys
ip, port, mark, host = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket()
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
s.settimeout(10)
data = b""
try:
    s.connect((ip, port))
    s.sendall(("GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except Exception as error:
    print("error:", type(error).__name__, error)
print(data.decode(errors="replace"))
"#;

fn config(vm: Ipv4Addr, httpbin: Ipv4Addr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: vm, namespace: vm}}
spec:
  hosts: [vm.vm.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8443, name: http}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: vm}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm-1, namespace: vm}}
spec:
  address: {vm}
  labels: {{app: vm, security.istio.io/tlsMode: istio}}
  serviceAccount: vm
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: b}}
spec:
  hosts: [httpbin.b.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, targetPort: 8080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin-1, namespace: b}}
spec:
  address: {httpbin}
  labels: {{app: httpbin, security.istio.io/tlsMode: istio}}
  serviceAccount: httpbin
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: vm, namespace: vm}}
spec:
  workloadSelector: {{labels: {{app: vm}}}}
  ingress:
  - port: {{number: 8443, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
  egress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    captureMode: NONE
    hosts: ["b/httpbin.b.svc.cluster.local"]
  - hosts: ["./*"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    )
}

/// The mesh: a CA, the VM (no capture) and httpbin (captured), each application and sidecar.
struct Mesh {
    pair: Pair,
    dir: TempDir,
    _processes: Vec<Process>,
}

impl Mesh {
    fn start(label: &str) -> Mesh {
        let dir = TempDir::new(label);
        let data = dir.path().join("ca-data");
        let init = run(strait().args(["ca", "init", "--data"]).arg(&data));
        assert_eq!(init.code, Some(0), "{}", init.stderr);
        for (namespace, sa) in [("vm", "vm"), ("b", "httpbin")] {
            let issued = run(strait()
                .args(["ca", "issue", "--spiffe-id"])
                .arg(format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}"))
                .arg("--out")
                .arg(dir.path().join(sa))
                .arg("--data")
                .arg(&data));
            assert_eq!(issued.code, Some(0), "{}", issued.stderr);
        }
        let pair = Pair::new(label);
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/mesh.yaml"),
            config(pair.a_ip, pair.b_ip),
        )
        .unwrap();
        let mut processes = Vec::new();
        // The VM's application listens on loopback only: the mesh reaches it through the
        // sidecar's ingress listener. httpbin's listens on its address, behind capture.
        for (netns, host) in [(&pair.a, "127.0.0.1"), (&pair.b, "0.0.0.0")] {
            let mut app = netns.spawn({
                let mut command = netns.command("python3");
                command.args(["-u", "-c", APP, host, "8080"]);
                command
            });
            app.wait_for_line(|l| l == "ready");
            processes.push(app);
        }
        let install = run(strait().args([
            "capture",
            "install",
            "--netns",
            pair.b.name(),
            "--mark",
            MARK,
        ]));
        assert_eq!(install.code, Some(0), "{}", install.stderr);
        processes.push(sidecar(
            &pair.a,
            &dir,
            "vm",
            "vm",
            &["--interception-mode", "NONE"],
            "0.0.0.0_8443",
        ));
        processes.push(sidecar(
            &pair.b,
            &dir,
            "b",
            "httpbin",
            &["--socket-mark", MARK],
            "virtualInbound",
        ));
        Mesh {
            pair,
            dir,
            _processes: processes,
        }
    }

    fn get(&self, from: &Netns, ip: Ipv4Addr, port: u16, mark: &str, host: &str) -> String {
        from.ok(
            "python3",
            &["-c", CLIENT, &ip.to_string(), &port.to_string(), mark, host],
        )
    }

    fn log(&self, workload: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{workload}.log"))).unwrap_or_default()
    }
}

/// Starts `workload`'s sidecar in `netns` and waits until its log names `listener`; it is
/// stopped when the returned process is dropped, also when the test process dies.
fn sidecar(
    netns: &Netns,
    dir: &TempDir,
    namespace: &str,
    workload: &str,
    extra: &[&str],
    listener: &str,
) -> Process {
    let identity = dir.path().join(workload);
    let workload_flags = workload_flags(namespace, workload);
    let mut flags: Vec<&OsStr> = workload_flags.iter().map(OsString::as_os_str).collect();
    flags.extend(extra.iter().map(OsStr::new));
    flags.extend([OsStr::new("--identity-dir"), identity.as_os_str()]);
    let command = strait_run(dir, "sidecar", workload, &flags);
    supervise(
        netns,
        &command.iter().map(OsString::as_os_str).collect::<Vec<_>>(),
        &dir.path().join(format!("{workload}.log")),
        &format!("listener={listener}"),
    )
}

fn json_body(response: &str) -> serde_json::Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// The XFCC header the application saw, after checking the response is a 200.
fn client_certificate(response: &str) -> (String, serde_json::Value) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"))
        .to_owned();
    (xfcc, seen)
}

#[test]
fn a_workload_without_capture_calls_and_is_called_over_mesh_mtls_through_its_sidecar_resource() {
    let mesh = Mesh::start("sidecar-res");
    let (a, b) = (&mesh.pair.a, &mesh.pair.b);
    let vm_ip = mesh.pair.a_ip;

    // The VM's application calls its egress listener on loopback by httpbin's name; the VM's
    // sidecar opens mesh mTLS to httpbin's address, where capture hands it to httpbin's sidecar.
    let response = mesh.get(a, Ipv4Addr::LOCALHOST, 9080, "0", "httpbin.b:9080");
    let (xfcc, seen) = client_certificate(&response);
    assert!(
        xfcc.starts_with("By=spiffe://cluster.local/ns/b/sa/httpbin;Hash="),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/vm/sa/vm"),
        "{xfcc}"
    );
    assert_eq!(seen["peer"], "127.0.0.6");

    // httpbin calls the VM's service: captured in b, mesh mTLS to the VM's address, where the
    // ingress listener (no capture there) terminates it and forwards to 127.0.0.1:8080.
    let response = mesh.get(b, vm_ip, 8443, "0", "vm.vm.svc.cluster.local");
    let (xfcc, seen) = client_certificate(&response);
    assert!(
        xfcc.starts_with("By=spiffe://cluster.local/ns/vm/sa/vm;Hash="),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/b/sa/httpbin"),
        "{xfcc}"
    );
    assert_eq!(
        seen["peer"], "127.0.0.1",
        "a loopback endpoint is reached from loopback"
    );

    // STRICT: a plaintext caller (the mark keeps b's capture out of the way) is refused by
    // the VM's ingress listener, and the application itself is not reachable from outside.
    let refused = mesh.get(b, vm_ip, 8443, MARK, "vm.vm.svc.cluster.local");
    assert!(!refused.contains("HTTP/1.1 200"), "{refused}");
    let direct = mesh.get(b, vm_ip, 8080, MARK, "vm.vm.svc.cluster.local");
    assert!(direct.contains("error:"), "{direct}");

    // The VM has no capture: its virtual listeners carried nothing, the Sidecar's did.
    let access = std::fs::read_to_string(mesh.dir.path().join("vm-access.log")).unwrap();
    assert!(
        access
            .lines()
            .any(|l| l.contains("outbound|9080||httpbin.b.svc.cluster.local")),
        "{access}"
    );
    assert!(
        access.lines().any(|l| l.contains("inbound|8443||")),
        "{access}"
    );
    assert!(
        mesh.log("vm").contains("listener=127.0.0.1_9080"),
        "{}",
        mesh.log("vm")
    );
}
