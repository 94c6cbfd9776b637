//! Two workloads in the mesh, each in its own network namespace with Istio's capture rules and
//! its Strait sidecar, identities from a Strait CA: `sleep` (namespace `a`) calls `httpbin`
//! (namespace `b`). The applications are small Python servers and clients; the sidecars are the
//! real binary. Needs root, `ip`, iptables and python3 (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mesh::{CA_PORT, Identity, MARK, Mesh, capture, counter, json_body};
use common::run;

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
    // The local address logged is where sleep meant to connect, not the capture port.
    assert!(!inbound.contains(":15006"), "{inbound}");
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

    // Istio's metrics on both sides, labelled from the verified identities: httpbin's sidecar
    // reports as the destination with sleep as the mTLS source, sleep's as the source.
    let metrics = |netns: &common::netns::Netns| {
        netns.ok("curl", &["-s", "http://127.0.0.1:15020/stats/prometheus"])
    };
    let has = |text: &str, name: &str, labels: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
    };
    let inbound = metrics(b);
    for (name, extra) in [
        ("istio_requests_total", "response_code=\"200\""),
        ("istio_tcp_connections_opened_total", ""),
    ] {
        assert!(
            has(
                &inbound,
                name,
                &[
                    "reporter=\"destination\"",
                    "source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"",
                    "source_workload_namespace=\"default\"",
                    "destination_workload=\"httpbin\"",
                    "destination_principal=\"spiffe://cluster.local/ns/default/sa/httpbin\"",
                    "connection_security_policy=\"mutual_tls\"",
                    extra,
                ]
            ),
            "{name} in httpbin's metrics:\n{inbound}"
        );
    }
    let outbound = metrics(a);
    assert!(
        has(
            &outbound,
            "istio_requests_total",
            &[
                "reporter=\"source\"",
                "source_workload=\"sleep\"",
                "source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"",
                "destination_principal=\"spiffe://cluster.local/ns/default/sa/httpbin\"",
                "destination_service=\"httpbin.default.svc.cluster.local\"",
                "destination_app=\"httpbin\"",
            ]
        ),
        "sleep's metrics:\n{outbound}"
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
    let mesh = Mesh::start_full(
        "mesh-rotate",
        Identity::Ca {
            workload_ttl: "60s",
        },
        one_request_per_connection,
        &[],
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
    let mesh = Mesh::start_full("mesh-ca", Identity::Ca { workload_ttl: "1h" }, "", &[]);
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
        .arg(mesh.dir.path().join("sleep.token"))
        .arg("--data")
        .arg(mesh.dir.path().join("reused-data")));
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
    let mesh = Mesh::start_full("mesh-authz", Identity::Files, policy, &[]);
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

/// A TLS application server: answers one line per connection with what it read.
const TLS_APP: &str = r#"
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 9443))
server.listen()
print("ready", flush=True)
while True:
    connection, _ = server.accept()
    try:
        with context.wrap_socket(connection, server_side=True) as tls:
            line = tls.recv(1024).strip()
            tls.sendall(b"tls-app saw " + line + b"\n")
    except Exception as error:
        print("handshake failed:", error, flush=True)
"#;

/// A TLS client that trusts only the application's own certificate.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="app.example.com") as tls:
        tls.sendall(b"hello\n")
        print(tls.recv(1024).decode().strip())
"#;

/// PERMISSIVE passes an application's own TLS through untouched: the client's handshake is
/// with the application's certificate, not the sidecar's.
#[test]
fn permissive_passes_an_application_s_own_tls_through_untouched() {
    let mesh = Mesh::start("mesh-apptls");
    let dir = &mesh.dir;
    let (cert, key) = (dir.path().join("app.crt"), dir.path().join("app.key"));
    let made = run(std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=app.example.com"])
        .args(["-addext", "subjectAltName=DNS:app.example.com"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let mut app = mesh.pair.b.spawn({
        let mut command = mesh.pair.b.command("python3");
        command.args(["-u", "-c", TLS_APP]).arg(&cert).arg(&key);
        command
    });
    app.wait_for_line(|l| l == "ready");
    // From sleep, whose sidecar passes the unknown destination through, into httpbin's inbound
    // capture, which tells an application's TLS (no Istio ALPN) from mesh mTLS.
    let answer = mesh.pair.a.ok(
        "python3",
        &[
            "-c",
            TLS_CLIENT,
            &mesh.pair.b_ip.to_string(),
            "9443",
            &cert.display().to_string(),
        ],
    );
    assert_eq!(answer.trim(), "tls-app saw hello");
    let line = mesh.wait_for_log("httpbin", &["InboundPassthroughCluster", "app.example.com"]);
    assert!(!line.contains("peer="), "not mesh mTLS: {line}");
}
