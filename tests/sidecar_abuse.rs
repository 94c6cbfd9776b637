//! Bad input on the sidecar's capture ports: garbage bytes, half a ClientHello and then
//! silence, a ClientHello offering only non-Istio ALPNs under STRICT, a handshake with a
//! certificate from another CA or with none, an oversized ClientHello, and a connection made straight to the
//! capture port. Each must be a clean refusal: the connection is closed (not left hanging),
//! nothing reaches the application, and the sidecar goes on serving the next good request.
//!
//! The mesh is `sleep` (namespace `a`) and `httpbin` (namespace `b`) with their Strait sidecars
//! and STRICT mTLS. Inbound (15006) is probed from `a` with the sidecars' mark, so that `a`'s
//! capture leaves the probe alone and `b`'s hands it to 15006; outbound (15001) is probed from
//! `a` without it. A server presenting a certificate from another CA to the outbound side is
//! in tests/mesh_envoy.rs. Needs root, `ip`, iptables and python3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::mesh::{HTTPBIN, MARK, Mesh};
use common::netns::Netns;

/// A probe: `python3 -c PROBE MODE IP PORT MARK [IDENTITY_DIR]` connects (with SO_MARK MARK
/// unless 0), misbehaves as MODE says, and prints how the connection ended — `closed`,
/// `reset`, `handshake-failed` or `timeout` — and what came back.
const PROBE: &str = r#"
import os, socket, ssl, sys
mode, ip, port, mark = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
identity = sys.argv[5] if len(sys.argv) > 5 else None
SNI = "outbound_.8000_._.httpbin.default.svc.cluster.local"
REQUEST = b"GET /hello HTTP/1.1\r\nHost: httpbin.default.svc.cluster.local\r\nConnection: close\r\n\r\n"

def vec(size, data):
    return len(data).to_bytes(size, "big") + data

def extension(kind, data):
    return kind.to_bytes(2, "big") + vec(2, data)

def client_hello(alpn, padding=0):
    extensions = b"".join([
        extension(0, vec(2, b"\x00" + vec(2, SNI.encode()))),
        extension(16, vec(2, b"".join(vec(1, p.encode()) for p in alpn))),
        extension(43, vec(1, b"\x03\x04\x03\x03")),
        extension(10, vec(2, b"\x00\x1d")),
        extension(13, vec(2, b"\x04\x03\x08\x04")),
        extension(51, vec(2, b"\x00\x1d" + vec(2, os.urandom(32)))),
    ])
    if padding:
        extensions += extension(21, bytes(padding))
    body = (b"\x03\x03" + os.urandom(32) + vec(1, os.urandom(32)) + vec(2, b"\x13\x01\x13\x02")
            + vec(1, b"\x00") + vec(2, extensions))
    handshake = b"\x01" + vec(3, body)
    return b"".join(b"\x16\x03\x01" + vec(2, handshake[i:i + 16384])
                    for i in range(0, len(handshake), 16384))

def report(result, data):
    print(result, len(data), repr(data[:80]))
    sys.exit(0)

def read_all(s):
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                report("closed", data)
            data += chunk
    except socket.timeout:
        report("timeout", data)
    except (ConnectionResetError, BrokenPipeError):
        report("reset", data)
    except ssl.SSLError as error:
        report("handshake-failed", str(error).encode())

s = socket.socket()
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
s.settimeout(20)
s.connect((ip, port))
try:
    if mode == "garbage":
        s.sendall(bytes(range(256)) * 16)
    elif mode == "half-hello":
        s.sendall(client_hello(["istio-http/1.1", "istio", "http/1.1"])[:60])
    elif mode == "oversized":
        s.sendall(client_hello(["istio-http/1.1", "istio", "http/1.1"], padding=20000))
    elif mode == "request":
        s.sendall(REQUEST)
    elif mode in ("foreign-alpn", "foreign-ca", "no-certificate"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if mode == "foreign-alpn":
            context.set_alpn_protocols(["h2", "http/1.1"])
        else:
            context.set_alpn_protocols(["istio-http/1.1", "istio", "http/1.1"])
        if mode == "foreign-ca":
            context.load_cert_chain(os.path.join(identity, "cert-chain.pem"),
                                    os.path.join(identity, "key.pem"))
        try:
            s = context.wrap_socket(s, server_hostname="httpbin.default.svc.cluster.local")
            # Under TLS 1.3 the server judges the client's certificate after the client
            # finished: the refusal arrives on the first read.
            s.sendall(REQUEST)
        except ssl.SSLError as error:
            report("handshake-failed", str(error).encode())
    else:
        raise SystemExit("unknown mode " + mode)
except (ConnectionResetError, BrokenPipeError):
    report("reset", b"")
read_all(s)
"#;

/// How a probe's connection ended, and the bytes it got back.
#[derive(Debug)]
struct Outcome {
    result: String,
    received: usize,
    text: String,
}

fn probe(
    from: &Netns,
    mode: &str,
    ip: Ipv4Addr,
    port: u16,
    mark: &str,
    identity: &Path,
) -> Outcome {
    let output = from.ok(
        "python3",
        &[
            "-c",
            PROBE,
            mode,
            &ip.to_string(),
            &port.to_string(),
            mark,
            &identity.display().to_string(),
        ],
    );
    eprintln!("{mode} to {ip}:{port}: {}", output.trim());
    let mut parts = output.trim().splitn(3, ' ');
    Outcome {
        result: parts.next().unwrap_or_default().to_owned(),
        received: parts.next().and_then(|n| n.parse().ok()).unwrap_or(0),
        text: output.clone(),
    }
}

/// The connection ended at the sidecar's hand, not at the probe's patience.
fn assert_closed(outcome: &Outcome, what: &str) {
    assert!(
        ["closed", "reset", "handshake-failed"].contains(&outcome.result.as_str()),
        "{what}: the connection was not closed: {}",
        outcome.text
    );
}

/// The mesh still works: sleep calls httpbin over mTLS.
fn assert_serves(mesh: &Mesh, what: &str) {
    let response = mesh.http_get(&mesh.pair.a, mesh.pair.b_ip, 8000, "0", "");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "after {what}, a good request failed: {response}"
    );
}

/// The application saw the good requests and nothing else.
fn assert_only_good_requests(mesh: &Mesh, good: usize) {
    let record = mesh.app_record();
    for line in record.lines() {
        assert!(
            line == "http connection from 127.0.0.6" || line == "http request /hello",
            "the application saw more than the good requests:\n{record}"
        );
    }
    assert_eq!(
        record.matches("http request /hello").count(),
        good,
        "{record}"
    );
}

fn strict_mesh(label: &str) -> Mesh {
    // Short timeouts so that probes that stop half-way are closed soon.
    let mesh = Mesh::start_with(
        label,
        &[
            "--client-hello-timeout",
            "2s",
            "--header-read-timeout",
            "2s",
        ],
    );
    mesh.apply(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    );
    mesh
}

#[test]
fn bad_input_on_the_inbound_capture_port_is_refused_and_the_sidecar_serves_on() {
    let mesh = strict_mesh("abuse-inbound");
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    let foreign = mesh.dir.path().join("foreign-sleep");
    common::mesh::Ca::init(&mesh.dir, "foreign-ca-data").issue("sleep", &foreign);
    let mut good = 0;
    // The HTTP port and the TCP port of httpbin, both behind 15006.
    for port in [8080, 9000] {
        for mode in [
            "garbage",
            "half-hello",
            "foreign-alpn",
            "foreign-ca",
            "no-certificate",
            "oversized",
        ] {
            let what = format!("{mode} on 15006 for port {port}");
            let outcome = probe(a, mode, b_ip, port, MARK, &foreign);
            assert_closed(&outcome, &what);
            if !["foreign-alpn", "foreign-ca", "no-certificate"].contains(&mode) {
                assert_eq!(outcome.received, 0, "{what}: {}", outcome.text);
            }
            assert!(
                !outcome.text.contains("HTTP/1.1 200"),
                "{what}: {}",
                outcome.text
            );
            assert_serves(&mesh, &what);
            good += 1;
        }
    }
    // Straight to 15006 from inside b: no original destination, no loop.
    let outcome = probe(
        &mesh.pair.b,
        "request",
        Ipv4Addr::LOCALHOST,
        15006,
        MARK,
        &foreign,
    );
    assert_closed(&outcome, "a request sent straight to 15006");
    assert_eq!(outcome.received, 0, "{}", outcome.text);
    assert_serves(&mesh, "a request sent straight to 15006");
    good += 1;
    assert_only_good_requests(&mesh, good);
}

#[test]
fn bad_input_on_the_outbound_capture_port_is_refused_and_the_sidecar_serves_on() {
    let mesh = strict_mesh("abuse-outbound");
    let (a, b_ip) = (&mesh.pair.a, mesh.pair.b_ip);
    let identity = mesh.dir.path().join("sleep");
    let mut good = 0;
    // httpbin's HTTP service port, captured by 15001 in a: what is not HTTP is refused there
    // and never sent on.
    for mode in ["garbage", "half-hello", "foreign-alpn", "oversized"] {
        let what = format!("{mode} on 15001 for {HTTPBIN}:8000");
        let outcome = probe(a, mode, b_ip, 8000, "0", &identity);
        assert_closed(&outcome, &what);
        // Closed at once, or after a 400 (which a TLS client reads as a bad record).
        assert!(
            outcome.received == 0
                || outcome.text.contains("HTTP/1.1 400")
                || outcome.text.contains("WRONG_VERSION_NUMBER"),
            "{what}: {}",
            outcome.text
        );
        assert_serves(&mesh, &what);
        good += 1;
    }
    // Straight to 15001 (with the mark, so the capture does not redirect it): no original
    // destination, so the sidecar must not connect to itself.
    let outcome = probe(a, "request", Ipv4Addr::LOCALHOST, 15001, MARK, &identity);
    assert_closed(&outcome, "a request sent straight to 15001");
    assert_eq!(outcome.received, 0, "{}", outcome.text);
    assert_serves(&mesh, "a request sent straight to 15001");
    good += 1;
    assert_only_good_requests(&mesh, good);
}
