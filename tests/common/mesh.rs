//! Workloads in the mesh for end-to-end tests in network namespaces: identities from a Strait CA
//! (`strait ca init` / `strait ca issue`), Istio's capture rules (`strait capture install`), the
//! Strait sidecar (`strait run --role sidecar`), small Python applications that record every
//! connection they accept, a Python client that speaks from inside a namespace, and the
//! two-workload mesh (`sleep` in namespace `a` calls `httpbin` in namespace `b`) that several
//! suites share. Needs root, `ip`, iptables and python3 (scripts/install-test-deps).

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::netns::{Netns, Pair, Process};
use super::{Run, TempDir, run, strait};

/// The sidecars' socket mark, excluded by the capture rules.
pub const MARK: &str = "1337";

/// An application: `python3 -c APP HOST HTTP_PORT ECHO_PORT RECORD` serves HTTP on HTTP_PORT
/// answering with what it saw (peer address, path, headers, HTTP version), and a TCP echo on
/// ECHO_PORT that names the peer address. Every accepted connection and request is appended to
/// the file RECORD, so a test can tell what reached the application.
pub const APP: &str = r#"
import http.server, json, socketserver, sys, threading
host, http_port, echo_port, record = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
def note(line):
    with lock, open(record, "a") as out:
        out.write(line + "\n")
class Http(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        note("http connection from " + self.client_address[0])
        super().setup()
    def do_GET(self):
        note("http request " + self.path)
        seen = {"peer": self.client_address[0], "path": self.path, "version": self.request_version,
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
        note("tcp connection from " + self.client_address[0])
        line = self.rfile.readline().strip()
        note("tcp line " + line.decode(errors="replace"))
        self.wfile.write(b"peer=" + self.client_address[0].encode() + b" echo=" + line + b"\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
http.server.ThreadingHTTPServer.allow_reuse_address = True
echo = socketserver.ThreadingTCPServer((host, echo_port), Echo)
threading.Thread(target=echo.serve_forever, daemon=True).start()
web = http.server.ThreadingHTTPServer((host, http_port), Http)
print("ready", flush=True)
web.serve_forever()
"#;

/// A client: `python3 -c CLIENT IP PORT MARK PAYLOAD` sends PAYLOAD (with `\n` escapes) from a
/// socket with SO_MARK MARK (0: none) and prints what comes back.
pub const CLIENT: &str = r#"
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

/// A Strait CA in `DIR/NAME` (`strait ca init`), issuing workload identities.
pub struct Ca {
    data: PathBuf,
}

impl Ca {
    /// A new CA for the trust domain `cluster.local`.
    pub fn init(dir: &TempDir, name: &str) -> Ca {
        Ca::init_for(dir, name, "cluster.local")
    }

    /// A new CA for `trust_domain`, as another cluster has its own.
    pub fn init_for(dir: &TempDir, name: &str, trust_domain: &str) -> Ca {
        let data = dir.path().join(name);
        let init = run(strait()
            .args(["ca", "init", "--trust-domain", trust_domain, "--data"])
            .arg(&data));
        assert_eq!(init.code, Some(0), "strait ca init: {}", init.stderr);
        Ca { data }
    }

    /// The `--data` folder the CA is in (`DATA/ca`).
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Issues `spiffe://cluster.local/ns/default/sa/SA` into `out` (`key.pem`,
    /// `cert-chain.pem`, `root-cert.pem`).
    pub fn issue(&self, service_account: &str, out: &Path) {
        let issued = run(strait()
            .args(["ca", "issue", "--spiffe-id"])
            .arg(spiffe_id(service_account))
            .arg("--out")
            .arg(out)
            .arg("--data")
            .arg(&self.data));
        assert_eq!(issued.code, Some(0), "strait ca issue: {}", issued.stderr);
    }

    /// Issues the SPIFFE ID `id` into `out`, as [`Ca::issue`] does.
    pub fn issue_id(&self, id: &str, out: &Path) {
        let issued = run(strait()
            .args(["ca", "issue", "--spiffe-id", id, "--out"])
            .arg(out)
            .arg("--data")
            .arg(&self.data));
        assert_eq!(issued.code, Some(0), "strait ca issue: {}", issued.stderr);
    }

    /// Mints a bootstrap token for `SA` into `DIR/SA.token`; returns the file's path.
    pub fn token(&self, service_account: &str, dir: &TempDir) -> String {
        self.token_id(&spiffe_id(service_account), service_account, dir)
    }

    /// Mints a bootstrap token for the SPIFFE ID `id` into `DIR/NAME.token`; returns its path.
    pub fn token_id(&self, id: &str, name: &str, dir: &TempDir) -> String {
        let token = run(strait()
            .args(["ca", "token", "--identity", id, "--data"])
            .arg(&self.data));
        assert_eq!(token.code, Some(0), "strait ca token: {}", token.stderr);
        dir.write(&format!("{name}.token"), &token.stdout)
            .display()
            .to_string()
    }
}

/// The SPIFFE ID of service account `sa` in namespace `default`.
pub fn spiffe_id(service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{service_account}")
}

/// Starts [`APP`] in `netns` on `host`, recording to `record`, and waits until it serves.
pub fn start_app(
    netns: &Netns,
    host: &str,
    http_port: u16,
    echo_port: u16,
    record: &Path,
) -> Process {
    let mut app = netns.spawn({
        let mut command = netns.command("python3");
        command
            .args(["-u", "-c", APP, host])
            .arg(http_port.to_string())
            .arg(echo_port.to_string())
            .arg(record);
        command
    });
    app.wait_for_line(|l| l == "ready");
    app
}

/// What an application recorded (see [`APP`]).
pub fn recorded(record: &Path) -> String {
    std::fs::read_to_string(record).unwrap_or_default()
}

/// `strait capture ARGS --netns NETNS` (with the sidecars' mark on install); panics unless it
/// succeeds.
pub fn capture(netns: &Netns, args: &[&str]) -> Run {
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

/// Runs `command` (a program and its arguments) in `netns` with its stderr to `log`, and waits
/// until the log has a line with `ready`; panics with the log if it exits first. The program is
/// stopped (SIGTERM) when the returned [`Process`] is dropped, also when the test process dies:
/// the shell around it watches the pipe on its stdin.
pub fn supervise(netns: &Netns, command: &[&OsStr], log: &Path, ready: &str) -> Process {
    let mut shell = netns.command("sh");
    // SIGINT and SIGTERM are passed on to the program, whose exit status becomes the shell's.
    shell.arg("-c").arg(format!(
        "exec 3<&0; : >{log}; \
         \"$0\" \"$@\" 2>{log} & pid=$!; \
         trap 'kill -INT $pid 2>/dev/null' INT; trap 'kill -TERM $pid 2>/dev/null' TERM; \
         (cat <&3 >/dev/null; kill $pid 2>/dev/null) & \
         while kill -0 $pid 2>/dev/null && ! grep -q '{ready}' {log}; do sleep 0.05; done; \
         if kill -0 $pid 2>/dev/null; then echo serving; else echo exited; fi; \
         while :; do wait $pid; status=$?; kill -0 $pid 2>/dev/null || exit $status; done",
        log = log.display(),
    ));
    shell.args(command);
    let mut process = netns.spawn(shell);
    let state = process.wait_for_line(|l| l == "serving" || l == "exited");
    assert_eq!(
        state,
        "serving",
        "{:?} exited: {}",
        command.first(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    process
}

/// Starts `workload`'s sidecar in `netns` and waits until it serves. It reads its configuration
/// from `DIR/config` and its identity from `DIR/WORKLOAD`, logs to `DIR/WORKLOAD.log` and writes
/// its access log to `DIR/WORKLOAD-access.log`; `extra` adds flags.
pub fn sidecar(netns: &Netns, dir: &TempDir, workload: &str, extra: &[&str]) -> Process {
    let identity = dir.path().join(workload);
    let workload_flags = workload_flags("default", workload);
    let mut flags: Vec<&OsStr> = workload_flags.iter().map(OsString::as_os_str).collect();
    flags.extend([OsStr::new("--socket-mark"), OsStr::new(MARK)]);
    // Identity files unless the flags name the CA service.
    if !extra.contains(&"--ca-address") {
        flags.extend([OsStr::new("--identity-dir"), identity.as_os_str()]);
    }
    flags.extend(extra.iter().map(OsStr::new));
    let command = strait_run(dir, "sidecar", workload, &flags);
    supervise(
        netns,
        &command.iter().map(OsString::as_os_str).collect::<Vec<_>>(),
        &dir.path().join(format!("{workload}.log")),
        // Logged once the listeners are bound, with or without capture.
        "endpoints=Health",
    )
}

/// The flags that say which workload a sidecar fronts: `NAMESPACE/WORKLOAD`, its service
/// account (named as the workload) and its labels (`app`, and the mesh's `tlsMode`).
pub fn workload_flags(namespace: &str, workload: &str) -> Vec<OsString> {
    [
        "--workload",
        &format!("{namespace}/{workload}"),
        "--service-account",
        workload,
        "--labels",
        &format!("app={workload},security.istio.io/tlsMode=istio"),
    ]
    .map(OsString::from)
    .to_vec()
}

/// `strait run --role ROLE` as the tests run every proxy: its configuration from `DIR/config`,
/// its state in `DIR/NAME-data`, its access log in `DIR/NAME-access.log`, no drain period;
/// `flags` follow.
pub fn strait_run(dir: &TempDir, role: &str, name: &str, flags: &[&OsStr]) -> Vec<OsString> {
    let path = |file: String| dir.path().join(file).into_os_string();
    let mut command: Vec<OsString> = [
        env!("CARGO_BIN_EXE_strait"),
        "run",
        "--role",
        role,
        "--drain-period",
        "0s",
        "--drain-timeout",
        "1s",
        "--config",
    ]
    .map(OsString::from)
    .to_vec();
    command.push(path("config".to_owned()));
    command.push("--data".into());
    command.push(path(format!("{name}-data")));
    command.push("--access-log".into());
    command.push(path(format!("{name}-access.log")));
    command.extend(flags.iter().map(|f| f.to_os_string()));
    command
}

/// Runs [`CLIENT`] in `netns` and returns what it printed.
pub fn call(netns: &Netns, ip: Ipv4Addr, port: u16, mark: &str, payload: &str) -> String {
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

/// `GET /hello` for `host` with [`call`]; `extra` adds header lines (`Name: value\r\n`).
pub fn http_get(
    netns: &Netns,
    ip: Ipv4Addr,
    port: u16,
    mark: &str,
    host: &str,
    extra: &str,
) -> String {
    let request =
        format!("GET /hello HTTP/1.1\\r\\nHost: {host}\\r\\n{extra}Connection: close\\r\\n\\r\\n");
    call(netns, ip, port, mark, &request)
}

/// Waits until the file at `path` has a line with all of `parts`, and returns it.
pub fn wait_for_line_in(path: &Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line of {} with {parts:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON body of an HTTP response.
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// From `strait capture show` (rules with packet counters): the packets of the jumps into
/// `chain`.
pub fn counter(show: &str, chain: &str) -> u64 {
    show.lines()
        .filter(|l| l.contains(chain) && !l.starts_with("Chain"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// httpbin's host name.
/// The east-west gateways of the two-cluster tests, and what both serve on 15443: Istio's
/// cross-network Gateway.
pub const WEST_GATEWAY_ID: &str = "spiffe://west.mesh/ns/istio-system/sa/eastwest";
pub const EAST_GATEWAY_ID: &str = "spiffe://east.mesh/ns/istio-system/sa/eastwest";
pub const CROSS_NETWORK_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
"#;

/// The IPv4 address the sidecar's DNS proxy in `netns` (127.0.0.1:15053) answers for `host`.
pub fn resolve(netns: &Netns, host: &str) -> Ipv4Addr {
    let answer = netns.ok("dig", &["@127.0.0.1", "-p", "15053", "+short", host, "A"]);
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{host}: {answer:?}"))
}

/// `GET /hello` from `netns` to `host` on `port` by name, as an application there makes it:
/// the name answered by the sidecar's DNS proxy, the connection captured.
pub fn get_by_name(netns: &Netns, host: &str, port: u16) -> String {
    http_get(netns, resolve(netns, host), port, "0", host, "")
}

pub const HTTPBIN: &str = "httpbin.default.svc.cluster.local";

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
pub enum Identity {
    /// Files from `strait ca issue`.
    Files,
    /// The CA service (`strait run --role control`, in namespace `b`) issuing certificates of
    /// this lifetime, with a bootstrap token for each sidecar.
    Ca { workload_ttl: &'static str },
}

/// The CA service's port, left out of inbound capture in the namespace it runs in.
pub const CA_PORT: &str = "15012";

/// Starts the CA service in `netns` on `ip` and writes its trust bundle to `DIR/bundle.pem`.
pub fn control(netns: &Netns, ip: Ipv4Addr, dir: &TempDir, ca: &Ca, workload_ttl: &str) -> Process {
    let bundle = run(strait().args(["ca", "bundle", "--data"]).arg(&ca.data));
    assert_eq!(bundle.code, Some(0), "{}", bundle.stderr);
    dir.write("bundle.pem", &bundle.stdout);
    let listen = format!("{ip}:{CA_PORT}");
    let mut command: Vec<&OsStr> = vec![OsStr::new(env!("CARGO_BIN_EXE_strait"))];
    command.extend(
        [
            "run",
            "--role",
            "control",
            "--workload-ttl",
            workload_ttl,
            "--ca-listen",
            &listen,
            "--admin",
            "127.0.0.1:15100",
            "--metrics",
            "127.0.0.1:15120",
            "--health",
            "127.0.0.1:15121",
            "--drain-period",
            "0s",
            "--data",
        ]
        .map(OsStr::new),
    );
    command.push(ca.data.as_os_str());
    supervise(
        netns,
        &command,
        &dir.path().join("control.log"),
        "endpoint ready",
    )
}

/// The mesh of two workloads: a CA, two namespaces with capture, httpbin's application in `b`
/// (HTTP on 8080, TCP echo on 9000, recording to `DIR/httpbin-app.log`), and the two sidecars.
pub struct Mesh {
    pub pair: Pair,
    pub dir: TempDir,
    pub ca: Ca,
    _app: Process,
    _control: Option<Process>,
    _sidecars: Vec<Process>,
}

impl Mesh {
    pub fn start(label: &str) -> Mesh {
        Mesh::start_with(label, &[])
    }

    /// The mesh with `extra` flags for both sidecars.
    pub fn start_with(label: &str, extra: &[&str]) -> Mesh {
        Mesh::start_full(label, Identity::Files, "", extra)
    }

    /// The mesh with identities from `identity`, `config` added to the configuration, and
    /// `extra` flags for both sidecars.
    pub fn start_full(label: &str, identity: Identity, config_extra: &str, extra: &[&str]) -> Mesh {
        Mesh::start_sidecars(label, identity, config_extra, extra, None)
    }

    /// The mesh with `config` added, where `sleep` is not captured: its sidecar runs with
    /// `--interception-mode NONE` and `sleep_extra`; httpbin is captured as usual.
    pub fn start_uncaptured_caller(label: &str, config_extra: &str, sleep_extra: &[&str]) -> Mesh {
        Mesh::start_sidecars(label, Identity::Files, config_extra, &[], Some(sleep_extra))
    }

    /// `uncaptured`: `sleep` runs without capture, with these flags instead of `extra`.
    fn start_sidecars(
        label: &str,
        identity: Identity,
        config_extra: &str,
        extra: &[&str],
        uncaptured: Option<&[&str]>,
    ) -> Mesh {
        let dir = TempDir::new(label);
        let ca = Ca::init(&dir, "ca-data");
        for sa in ["sleep", "httpbin"] {
            ca.issue(sa, &dir.path().join(sa));
        }
        let pair = Pair::new(label);
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/mesh.yaml"),
            config(pair.a_ip, pair.b_ip, config_extra),
        )
        .unwrap();
        let control = match identity {
            Identity::Files => None,
            Identity::Ca { workload_ttl } => {
                Some(control(&pair.b, pair.b_ip, &dir, &ca, workload_ttl))
            }
        };
        let app = start_app(
            &pair.b,
            "0.0.0.0",
            8080,
            9000,
            &dir.path().join("httpbin-app.log"),
        );
        let mut sidecars = Vec::new();
        let ca_address = format!("{}:{CA_PORT}", pair.b_ip);
        let bundle = dir.path().join("bundle.pem").display().to_string();
        let workloads = [(&pair.a, "sleep"), (&pair.b, "httpbin")];
        // Capture goes in everywhere before any sidecar starts. Connection tracking begins in a
        // namespace with its first rules: a connection made before (sleep's to the CA in
        // httpbin's namespace) is picked up mid-stream, and when the CA's side speaks first its
        // packet looks like a new outbound connection, is captured, and the stream is reset.
        for (netns, workload) in workloads {
            if uncaptured.is_some() && workload == "sleep" {
                continue;
            }
            capture(
                netns,
                // The CA is a server outside the mesh; the sidecars' own connections to it carry
                // their mark and are not captured, except where the CA shares the namespace:
                // the proxy's connections to its own pod's address go through inbound capture
                // (as Istio's do), so there the CA's port is left out of capture both ways.
                &if workload == "httpbin" {
                    vec![
                        "install",
                        "--exclude-inbound-ports",
                        CA_PORT,
                        "--exclude-outbound-ports",
                        CA_PORT,
                    ]
                } else {
                    vec!["install", "--exclude-inbound-ports", CA_PORT]
                },
            );
        }
        for (netns, workload) in workloads {
            if let (Some(sleep_extra), "sleep") = (uncaptured, workload) {
                let mut flags = vec!["--interception-mode", "NONE"];
                flags.extend_from_slice(sleep_extra);
                sidecars.push(sidecar(netns, &dir, workload, &flags));
                continue;
            }
            let token_file;
            let mut flags: Vec<&str> = extra.to_vec();
            if let Identity::Ca { .. } = identity {
                token_file = ca.token(workload, &dir);
                flags.extend([
                    "--ca-address",
                    &ca_address,
                    "--trust-bundle",
                    &bundle,
                    "--bootstrap-token-file",
                    &token_file,
                ]);
            }
            sidecars.push(sidecar(netns, &dir, workload, &flags));
        }
        Mesh {
            pair,
            dir,
            ca,
            _app: app,
            _control: control,
            _sidecars: sidecars,
        }
    }

    /// Runs the client in `netns` and returns what it printed.
    pub fn call(
        &self,
        netns: &Netns,
        ip: Ipv4Addr,
        port: u16,
        mark: &str,
        payload: &str,
    ) -> String {
        call(netns, ip, port, mark, payload)
    }

    /// `GET /hello` to httpbin with [`call`].
    pub fn http_get(
        &self,
        from: &Netns,
        ip: Ipv4Addr,
        port: u16,
        mark: &str,
        extra: &str,
    ) -> String {
        http_get(from, ip, port, mark, HTTPBIN, extra)
    }

    /// What httpbin's application recorded.
    pub fn app_record(&self) -> String {
        recorded(&self.dir.path().join("httpbin-app.log"))
    }

    /// Waits until `workload`'s access log has a line with all of `parts`.
    pub fn wait_for_log(&self, workload: &str, parts: &[&str]) -> String {
        wait_for_line_in(
            &self.dir.path().join(format!("{workload}-access.log")),
            parts,
        )
    }

    /// Replaces the configuration and waits until both sidecars installed it.
    pub fn apply(&self, extra: &str) {
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
