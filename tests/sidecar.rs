//! Two workloads in the mesh, each in its own network namespace with Istio's capture rules and
//! its Strait sidecar, identities from a Strait CA: `sleep` (namespace `a`) calls `httpbin`
//! (namespace `b`). The applications are small Python servers and clients; the sidecars are the
//! real binary. Needs root, `ip`, iptables and python3 (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::netns::{Netns, Pair, Process};
use common::{Run, TempDir, run, strait};

/// The sidecars' socket mark, excluded by the capture rules.
const MARK: &str = "1337";

/// httpbin's application: HTTP on 8080 answering with what it saw (peer address, headers), and
/// a TCP echo on 9000 that names the peer address.
const APP: &str = r#"
import http.server, json, socketserver, threading
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
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().strip()
        self.wfile.write(b"peer=" + self.client_address[0].encode() + b" echo=" + line + b"\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer.allow_reuse_address = True
echo = socketserver.ThreadingTCPServer(("0.0.0.0", 9000), Echo)
threading.Thread(target=echo.serve_forever, daemon=True).start()
web = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Http)
print("ready", flush=True)
web.serve_forever()
"#;

/// A client: `python3 -c CLIENT IP PORT MARK PAYLOAD` sends PAYLOAD (with `\n` escapes) from a
/// socket with SO_MARK MARK (0: none) and prints what comes back.
const CLIENT: &str = r#"
import socket, sys
ip, port, mark, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket()
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
s.settimeout(10)
s.connect((ip, port))
s.sendall(payload.encode().decode("unicode_escape").encode())
data = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and b"content-length" in data.lower():
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.lower().split(b"\r\n") if l.startswith(b"content-length")][0]
            if len(body) >= length:
                break
        if data.endswith(b"\n") and data.startswith(b"peer="):
            break
except Exception as error:
    print("error:", type(error).__name__, error)
print(data.decode(errors="replace"))
"#;

fn config(a: Ipv4Addr, b: Ipv4Addr, extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {{number: 8000, name: http, targetPort: 8080}}
  - {{number: 9000, name: tcp-echo}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin-1, namespace: default}}
spec:
  address: {b}
  labels: {{app: httpbin, security.istio.io/tlsMode: istio}}
  serviceAccount: httpbin
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: sleep, namespace: default}}
spec:
  hosts: [sleep.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep-1, namespace: default}}
spec:
  address: {a}
  labels: {{app: sleep, security.istio.io/tlsMode: istio}}
  serviceAccount: sleep
{extra}"#
    )
}

/// Where the sidecars' identities come from.
#[derive(Clone, Copy, Debug)]
enum Identity {
    /// Files from `strait ca issue`.
    Files,
    /// The CA service (`strait run --role control`, in namespace `b`) with this certificate
    /// lifetime, and a bootstrap token each.
    Ca { workload_ttl: &'static str },
}

/// The CA service's port (excluded from capture, as the proxy's own control traffic).
const CA_PORT: &str = "15012";

/// The mesh: a CA, two namespaces with capture, the httpbin application, two sidecars.
struct Mesh {
    pair: Pair,
    dir: TempDir,
    _app: Process,
    _control: Option<Process>,
    _sidecars: Vec<Process>,
}

impl Mesh {
    fn start(label: &str) -> Mesh {
        Mesh::start_with(label, Identity::Files, "")
    }

    fn start_with(label: &str, identity: Identity, extra: &str) -> Mesh {
        let dir = TempDir::new(label);
        let data = dir.path().join("ca-data");
        let init = run(strait().args(["ca", "init", "--data"]).arg(&data));
        assert_eq!(init.code, Some(0), "{}", init.stderr);
        for sa in ["sleep", "httpbin"] {
            let issued = run(strait()
                .args(["ca", "issue", "--spiffe-id"])
                .arg(format!("spiffe://cluster.local/ns/default/sa/{sa}"))
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
            config(pair.a_ip, pair.b_ip, extra),
        )
        .unwrap();
        let control = match identity {
            Identity::Files => None,
            Identity::Ca { workload_ttl } => Some(control(&pair, &dir, &data, workload_ttl)),
        };
        let mut app = pair.b.spawn({
            let mut command = pair.b.command("python3");
            command.args(["-u", "-c", APP]);
            command
        });
        app.wait_for_line(|l| l == "ready");
        let mut sidecars = Vec::new();
        for (netns, workload) in [(&pair.a, "sleep"), (&pair.b, "httpbin")] {
            capture(
                netns,
                &[
                    "install",
                    "--exclude-outbound-ports",
                    CA_PORT,
                    "--exclude-inbound-ports",
                    CA_PORT,
                ],
            );
            let source = match identity {
                Identity::Files => vec![
                    "--identity-dir".into(),
                    dir.path().join(workload).into_os_string(),
                ],
                Identity::Ca { .. } => {
                    let token = run(strait()
                        .args(["ca", "token", "--identity"])
                        .arg(format!("spiffe://cluster.local/ns/default/sa/{workload}"))
                        .arg("--data")
                        .arg(&data));
                    assert_eq!(token.code, Some(0), "{}", token.stderr);
                    let token_file = dir.write(&format!("{workload}.token"), &token.stdout);
                    vec![
                        "--ca-address".into(),
                        format!("{}:{CA_PORT}", pair.b_ip).into(),
                        "--trust-bundle".into(),
                        dir.path().join("bundle.pem").into_os_string(),
                        "--bootstrap-token-file".into(),
                        token_file.into_os_string(),
                    ]
                }
            };
            sidecars.push(sidecar(netns, &dir, workload, &source));
        }
        Mesh {
            pair,
            dir,
            _app: app,
            _control: control,
            _sidecars: sidecars,
        }
    }

    /// Runs the client in `netns` and returns what it printed.
    fn call(&self, netns: &Netns, ip: Ipv4Addr, port: u16, mark: &str, payload: &str) -> String {
        netns.ok(
            "python3",
            &[
                "-c",
                CLIENT,
                &ip.to_string(),
                &port.to_string(),
                mark,
                payload,
            ],
        )
    }

    fn http_get(&self, from: &Netns, ip: Ipv4Addr, port: u16, mark: &str, extra: &str) -> String {
        let request = format!(
            "GET /hello HTTP/1.1\\r\\nHost: httpbin.default.svc.cluster.local\\r\\n{extra}Connection: close\\r\\n\\r\\n"
        );
        self.call(from, ip, port, mark, &request)
    }

    fn access_log(&self, workload: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{workload}-access.log")))
            .unwrap_or_default()
    }

    /// Waits until `workload`'s access log has a line with all of `parts`.
    fn wait_for_log(&self, workload: &str, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log(workload);
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line of {workload} with {parts:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the configuration and waits until both sidecars installed it.
    fn apply(&self, extra: &str) {
        let before = self.installs();
        std::fs::write(
            self.dir.path().join("config/mesh.yaml"),
            config(self.pair.a_ip, self.pair.b_ip, extra),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .installs()
            .iter()
            .zip(&before)
            .any(|(now, was)| now <= was)
        {
            assert!(
                Instant::now() < deadline,
                "the sidecars did not install the change"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many configurations each sidecar installed, from its log.
    fn installs(&self) -> Vec<usize> {
        ["sleep", "httpbin"]
            .iter()
            .map(|w| {
                std::fs::read_to_string(self.dir.path().join(format!("{w}.log")))
                    .unwrap_or_default()
                    .matches("configuration installed")
                    .count()
            })
            .collect()
    }
}

fn capture(netns: &Netns, args: &[&str]) -> Run {
    let mut command = strait();
    command
        .arg("capture")
        .args(args)
        .args(["--netns", netns.name()]);
    if args.first() == Some(&"install") {
        command.args(["--mark", MARK]);
    }
    let result = run(&mut command);
    assert_eq!(
        result.code,
        Some(0),
        "strait capture {args:?}: {}",
        result.stderr
    );
    result
}

/// Starts the CA service in namespace `b` and writes its trust bundle to `bundle.pem`.
fn control(pair: &Pair, dir: &TempDir, data: &std::path::Path, workload_ttl: &str) -> Process {
    let bundle = run(strait().args(["ca", "bundle", "--data"]).arg(data));
    assert_eq!(bundle.code, Some(0), "{}", bundle.stderr);
    dir.write("bundle.pem", &bundle.stdout);
    let log = dir.path().join("control.log");
    let mut command = pair.b.command("sh");
    command.arg("-c").arg(format!(
        "\"$0\" \"$@\" 2>{log} & pid=$!; \
         while kill -0 $pid 2>/dev/null && ! grep -q 'endpoint ready' {log}; do sleep 0.05; done; \
         sleep 0.3; if kill -0 $pid 2>/dev/null; then echo serving; wait $pid; else echo exited; fi",
        log = log.display(),
    ));
    command
        .arg(env!("CARGO_BIN_EXE_strait"))
        .args(["run", "--role", "control", "--workload-ttl", workload_ttl])
        .arg("--ca-listen")
        .arg(format!("{}:{CA_PORT}", pair.b_ip))
        .args([
            "--admin",
            "127.0.0.1:15100",
            "--metrics",
            "127.0.0.1:15120",
            "--health",
            "127.0.0.1:15121",
            "--drain-period",
            "0s",
        ])
        .arg("--data")
        .arg(data);
    let mut process = pair.b.spawn(command);
    let state = process.wait_for_line(|l| l == "serving" || l == "exited");
    assert_eq!(
        state,
        "serving",
        "the CA exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    process
}

/// Starts `workload`'s sidecar in `netns` and waits until it serves.
fn sidecar(
    netns: &Netns,
    dir: &TempDir,
    workload: &str,
    identity: &[std::ffi::OsString],
) -> Process {
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let log = path(&format!("{workload}.log"));
    let mut command = netns.command("sh");
    command.arg("-c").arg(format!(
        "\"$0\" \"$@\" 2>{log} & pid=$!; \
         while kill -0 $pid 2>/dev/null && ! grep -q virtualInbound {log}; do sleep 0.05; done; \
         if kill -0 $pid 2>/dev/null; then echo serving; wait $pid; else echo exited; cat {log}; fi",
        log = log.display(),
    ));
    command.arg(env!("CARGO_BIN_EXE_strait")).args([
        "run",
        "--role",
        "sidecar",
        "--workload",
        &format!("default/{workload}"),
        "--service-account",
        workload,
        "--labels",
        &format!("app={workload},security.istio.io/tlsMode=istio"),
        "--socket-mark",
        MARK,
        "--drain-period",
        "0s",
        "--drain-timeout",
        "1s",
    ]);
    command
        .arg("--config")
        .arg(path("config"))
        .args(identity)
        .arg("--data")
        .arg(path(&format!("{workload}-data")))
        .arg("--access-log")
        .arg(path(&format!("{workload}-access.log")));
    let mut process = netns.spawn(command);
    let state = process.wait_for_line(|l| l == "serving" || l == "exited");
    assert_eq!(
        state,
        "serving",
        "the {workload} sidecar exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    process
}

fn counter(show: &str, chain: &str) -> u64 {
    // `strait capture show`: rules with packet counters; the jump into `chain` from its parent.
    show.lines()
        .filter(|l| l.contains(chain) && !l.starts_with("Chain"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn json_body(response: &str) -> serde_json::Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[test]
fn http_and_tcp_between_sidecars_go_over_mtls_and_carry_the_caller_s_identity() {
    let mesh = Mesh::start("mesh-call");
    let (a, b) = (&mesh.pair.a, &mesh.pair.b);
    let before_out = counter(&capture(a, &["show"]).stdout, "ISTIO_REDIRECT");
    let before_in = counter(&capture(b, &["show"]).stdout, "ISTIO_IN_REDIRECT");

    // sleep calls httpbin's service port; nothing listens on 8000 in b: only the sidecars make
    // this work (captured in a, routed by Host, mTLS to b's 8080, captured again in b).
    let response = mesh.http_get(a, mesh.pair.b_ip, 8000, "0", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("no XFCC: {seen}"));
    assert!(
        xfcc.starts_with("By=spiffe://cluster.local/ns/default/sa/httpbin;Hash="),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/sleep"),
        "{xfcc}"
    );
    assert_eq!(
        seen["peer"], "127.0.0.6",
        "the sidecar reaches the app from 127.0.0.6"
    );
    let inbound = mesh.wait_for_log("httpbin", &["GET /hello", "inbound|8080||"]);
    assert!(
        inbound.contains("peer=\"spiffe://cluster.local/ns/default/sa/sleep\""),
        "{inbound}"
    );
    mesh.wait_for_log(
        "sleep",
        &[
            "GET /hello",
            "outbound|8000||httpbin.default.svc.cluster.local",
        ],
    );

    // TCP to the echo port: the same path, and httpbin's sidecar names the caller.
    let echoed = mesh.call(a, mesh.pair.b_ip, 9000, "0", "ping\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=ping");
    let tcp = mesh.wait_for_log("httpbin", &["TCP", "inbound|9000||"]);
    assert!(
        tcp.contains("peer=\"spiffe://cluster.local/ns/default/sa/sleep\""),
        "{tcp}"
    );

    // The iptables counters prove the capture: outbound in a, inbound in b.
    assert!(counter(&capture(a, &["show"]).stdout, "ISTIO_REDIRECT") > before_out);
    assert!(counter(&capture(b, &["show"]).stdout, "ISTIO_IN_REDIRECT") > before_in);
}

#[test]
fn strict_refuses_plaintext_and_permissive_strips_a_forged_client_certificate_header() {
    let mesh = Mesh::start("mesh-strict");
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    // A plaintext caller outside the mesh: the sidecar's mark keeps a's capture out of the way,
    // so it reaches b's inbound capture without mTLS. PERMISSIVE (the default) serves it, and
    // the identity it claims in XFCC is removed.
    let forged =
        "X-Forwarded-Client-Cert: By=x;URI=spiffe://cluster.local/ns/default/sa/admin\\r\\n";
    let response = mesh.http_get(a, b_ip, 8080, MARK, forged);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    assert!(
        seen["headers"].get("x-forwarded-client-cert").is_none(),
        "{seen}"
    );
    let echoed = mesh.call(a, b_ip, 9000, MARK, "plain\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=plain");

    mesh.apply(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    );
    // STRICT: plaintext is refused for HTTP and TCP alike; mesh callers still get through.
    let refused = mesh.http_get(a, b_ip, 8080, MARK, "");
    assert!(!refused.contains("HTTP/1.1 200"), "{refused}");
    let refused = mesh.call(a, b_ip, 9000, MARK, "plain\\n");
    assert!(!refused.contains("echo=plain"), "{refused}");
    let response = mesh.http_get(a, b_ip, 8000, "0", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let echoed = mesh.call(a, b_ip, 9000, "0", "meshed\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=meshed");
}

/// sleep's traffic to httpbin for as long as it is told, each request on a new upstream
/// connection (so each makes a new mTLS handshake); one line per request: status and the hash
/// of sleep's certificate that httpbin's sidecar saw, then a summary.
const LOAD: &str = r#"
import socket, sys, time, json
ip, seconds = sys.argv[1], float(sys.argv[2])
end = time.time() + seconds
ok = failed = 0
hashes = []
while time.time() < end:
    try:
        s = socket.create_connection((ip, 8000), timeout=10)
        s.sendall(b"GET /load HTTP/1.1\r\nHost: httpbin.default.svc.cluster.local\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
            xfcc = json.loads(body)["headers"].get("x-forwarded-client-cert", "")
            digest = [p for p in xfcc.split(";") if p.startswith("Hash=")]
            if digest and (not hashes or hashes[-1] != digest[0]):
                hashes.append(digest[0])
        else:
            failed += 1
            print("failed:", head.split(b"\r\n")[0].decode(errors="replace"), flush=True)
    except Exception as error:
        failed += 1
        print("failed:", type(error).__name__, error, flush=True)
    time.sleep(0.05)
print(json.dumps({"ok": ok, "failed": failed, "certificates": len(hashes)}), flush=True)
"#;

/// How long the rotation test sends traffic (`STRAIT_ROTATION_SECONDS` shortens it by hand).
fn load_seconds() -> String {
    std::env::var("STRAIT_ROTATION_SECONDS").unwrap_or_else(|_| "180".to_owned())
}

/// A 60 s certificate lifetime (renewed at about 30 s) and three minutes of steady traffic:
/// several rotations on both sides, and not one request lost.
#[test]
fn exclusive_certificates_rotate_under_load_without_losing_a_request() {
    let one_request_per_connection = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: default}\nspec:\n  host: httpbin.default.svc.cluster.local\n  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}\n";
    let mesh = Mesh::start_with(
        "mesh-rotate",
        Identity::Ca {
            workload_ttl: "60s",
        },
        one_request_per_connection,
    );
    let out = mesh.pair.a.ok(
        "python3",
        &["-c", LOAD, &mesh.pair.b_ip.to_string(), &load_seconds()],
    );
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(summary["failed"], 0, "{out}");
    assert!(summary["ok"].as_u64().unwrap() > 500, "{out}");
    // Renewed at about 30 s, 60 s, ... : at least four certificates of sleep's in 180 s.
    let log = |name: &str| std::fs::read_to_string(mesh.dir.path().join(name)).unwrap_or_default();
    assert!(
        summary["certificates"].as_u64().unwrap() >= 4,
        "{out}\nsleep's log:\n{}",
        log("sleep.log")
    );
    assert!(
        log("httpbin.log").matches("SVID renewed").count() >= 4,
        "{}",
        log("httpbin.log")
    );
}

#[test]
fn sidecars_get_their_identity_from_the_ca_with_a_bootstrap_token() {
    let mesh = Mesh::start_with("mesh-ca", Identity::Ca { workload_ttl: "1h" }, "");
    let response = mesh.http_get(&mesh.pair.a, mesh.pair.b_ip, 8000, "0", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = json_body(&response);
    let xfcc = seen["headers"]["x-forwarded-client-cert"].as_str().unwrap();
    assert!(
        xfcc.ends_with("URI=spiffe://cluster.local/ns/default/sa/sleep"),
        "{xfcc}"
    );
    // The token was used: a second sidecar with the same token is refused and says why.
    let reused = run(mesh
        .pair
        .a
        .command(env!("CARGO_BIN_EXE_strait"))
        .args([
            "run",
            "--role",
            "sidecar",
            "--workload",
            "default/sleep",
            "--service-account",
            "sleep",
        ])
        .arg("--config")
        .arg(mesh.dir.path().join("config"))
        .arg("--ca-address")
        .arg(format!("{}:{CA_PORT}", mesh.pair.b_ip))
        .arg("--trust-bundle")
        .arg(mesh.dir.path().join("bundle.pem"))
        .arg("--bootstrap-token-file")
        .arg(mesh.dir.path().join("sleep.token")));
    assert_ne!(reused.code, Some(0));
    assert!(reused.stderr.contains("already used"), "{}", reused.stderr);
}

#[test]
fn authorization_decides_by_the_verified_caller_identity() {
    let policy = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-callers, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
    to: [{operation: {paths: ["/hello"]}}]
  - from: [{source: {namespaces: ["default"]}}]
    to: [{operation: {ports: ["9000"]}}]
"#;
    let mesh = Mesh::start_with("mesh-authz", Identity::Files, policy);
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    // sleep's verified identity is allowed to /hello, and nothing else.
    let allowed = mesh.http_get(a, b_ip, 8000, "0", "");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let request = "GET /admin HTTP/1.1\\r\\nHost: httpbin.default.svc.cluster.local\\r\\nConnection: close\\r\\n\\r\\n";
    let denied = mesh.call(a, b_ip, 8000, "0", request);
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        denied.ends_with("RBAC: access denied\n") || denied.contains("RBAC: access denied"),
        "{denied}"
    );
    mesh.wait_for_log("httpbin", &["GET /admin", "403", "RBAC"]);
    // A plaintext caller has no principal: the same path is denied.
    let anonymous = mesh.http_get(a, b_ip, 8080, MARK, "");
    assert!(anonymous.starts_with("HTTP/1.1 403"), "{anonymous}");
    // TCP: the rule naming the port and the caller's namespace admits sleep over mTLS; the
    // plaintext caller has no namespace and its connection is closed.
    let echoed = mesh.call(a, b_ip, 9000, "0", "in\\n");
    assert_eq!(echoed.trim(), "peer=127.0.0.6 echo=in");
    let refused = mesh.call(a, b_ip, 9000, MARK, "out\\n");
    assert!(!refused.contains("echo=out"), "{refused}");
}
