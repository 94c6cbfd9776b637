//! The sidecar's DNS proxy on the wire: `dig` asks a running `strait run --role sidecar` (in
//! its own network namespace, upstream a real dnsmasq) for ServiceEntry hosts, the VIPs of
//! address-less hosts, short names, and names it forwards; and, with Istio's capture rules,
//! an application's port-53 queries reach the proxy, and the VIPs it answers take the
//! application's connections to the right service. Needs root, `ip`, iptables, python3, dig
//! and dnsmasq (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::TempDir;
use common::mesh::{Ca, call, capture, http_get, sidecar, start_app, wait_for_line_in};
use common::netns::{Netns, Pair, Process};

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [192.0.2.10, "2001:db8::10"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: v4only, namespace: default}
spec:
  hosts: [v4only.example.com]
  addresses: [192.0.2.11]
  ports: [{number: 80, name: http}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.external.test]
  ports: [{number: 80, name: http}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: default}
spec:
  hosts: [cart]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.3.3.3}]
"#;

/// A ServiceEntry file that sorts before the others: added before the restart, it must not
/// move the VIPs the others had.
const MORE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: more, namespace: default}
spec:
  hosts: [aaa.external.test, zzz.external.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#;

/// dnsmasq in `netns` on 127.0.0.1:`port`, answering for `mesh.test` from `hosts` (NXDOMAIN
/// for other `mesh.test` names); stops when dropped.
fn dnsmasq(netns: &Netns, port: u16, hosts: &Path) -> Process {
    let mut command = netns.command("dnsmasq");
    command.args(common::dnsmasq::args(port, hosts));
    let process = netns.spawn(command);
    let port = port.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = netns.run(
            "dig",
            &[
                "@127.0.0.1",
                "-p",
                &port,
                "+short",
                "+time=1",
                "+tries=1",
                "up.mesh.test",
            ],
        );
        if run.stdout.trim() == "10.1.1.1" {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not start: {}",
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The records dnsmasq serves: one name, one with an answer too big for 512 bytes, and
/// `extra` lines.
fn write_hosts(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    let mut hosts = format!("10.1.1.1 up.mesh.test\n{extra}");
    for i in 1..=40 {
        hosts.push_str(&format!("10.2.0.{i} big.mesh.test\n"));
    }
    dir.write("hosts", &hosts)
}

/// `dig @SERVER -p PORT ARGS` in `netns`; panics unless dig ran.
fn dig(netns: &Netns, server: &str, port: u16, args: &[&str]) -> String {
    let at = format!("@{server}");
    let port = port.to_string();
    let mut all = vec![at.as_str(), "-p", &port, "+time=3", "+tries=1"];
    all.extend_from_slice(args);
    let run = netns.run("dig", &all);
    assert_eq!(
        run.code,
        Some(0),
        "dig {all:?}: {}{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// The addresses of a `+short` answer.
fn short(netns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    dig(netns, "127.0.0.1", 15053, &all)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn vip4(netns: &Netns, name: &str) -> Ipv4Addr {
    let answer = short(netns, &[name, "A"]);
    assert_eq!(answer.len(), 1, "{name}: {answer:?}");
    let ip: Ipv4Addr = answer[0].parse().unwrap();
    assert_eq!(&ip.octets()[..2], &[240, 240], "{name}: {ip} is a VIP");
    ip
}

fn start_sidecar(netns: &Netns, dir: &TempDir) -> Process {
    sidecar(netns, dir, "sleep", &["--dns-server", "127.0.0.1:5353"])
}

#[test]
fn a_real_client_gets_mesh_names_vips_and_short_names_and_the_rest_from_upstream() {
    let dir = TempDir::new("dnsp");
    let ca = Ca::init(&dir, "ca-data");
    ca.issue("sleep", &dir.path().join("sleep"));
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    dir.write("config/services.yaml", CONFIG);
    let netns = Netns::new("dnsp");
    let hosts = write_hosts(&dir, "");
    let _upstream = dnsmasq(&netns, 5353, &hosts);
    let proxy = start_sidecar(&netns, &dir);

    // A ServiceEntry's own addresses, by family.
    assert_eq!(short(&netns, &["api.example.com", "A"]), ["192.0.2.10"]);
    assert_eq!(
        short(&netns, &["API.Example.com", "AAAA"]),
        ["2001:db8::10"]
    );
    // A known name without an address of the family: NOERROR, no answer (not NXDOMAIN).
    let nodata = dig(&netns, "127.0.0.1", 15053, &["v4only.example.com", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );

    // An address-less DNS host gets a VIP of each family, with Istio's 30 s TTL.
    let web = vip4(&netns, "web.external.test");
    let web6: Ipv6Addr = short(&netns, &["web.external.test", "AAAA"])[0]
        .parse()
        .unwrap();
    assert_eq!(web6.segments()[..3], [0x2001, 0x2, 0]);
    let full = dig(&netns, "127.0.0.1", 15053, &["web.external.test", "A"]);
    assert!(full.contains("\t30\tIN\tA\t"), "{full}");

    // Short names within the namespace, as Kubernetes search domains expand them.
    let cart = vip4(&netns, "cart.default.svc.cluster.local");
    for name in [
        "cart",
        "cart.default",
        "cart.default.svc",
        "CART.default.svc.cluster.local",
    ] {
        assert_eq!(vip4(&netns, name), cart, "{name}");
    }

    // Everything else comes from upstream, unchanged: an answer, and NXDOMAIN.
    assert_eq!(short(&netns, &["up.mesh.test", "A"]), ["10.1.1.1"]);
    let missing = dig(&netns, "127.0.0.1", 15053, &["missing.mesh.test", "A"]);
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");

    // TCP: the proxy's own answers and forwarded ones.
    assert_eq!(vip4(&netns, "cart"), cart);
    assert_eq!(short(&netns, &["+tcp", "cart", "A"]), [cart.to_string()]);
    assert_eq!(short(&netns, &["+tcp", "up.mesh.test", "A"]), ["10.1.1.1"]);

    // An answer too big for plain UDP comes back truncated; dig then asks again over TCP
    // and gets all of it.
    let truncated = dig(
        &netns,
        "127.0.0.1",
        15053,
        &["+noedns", "+ignore", "big.mesh.test", "A"],
    );
    assert!(truncated.contains(" tc"), "{truncated}");
    let retried = dig(
        &netns,
        "127.0.0.1",
        15053,
        &["+noedns", "big.mesh.test", "A"],
    );
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );
    assert!(retried.contains("ANSWER: 40"), "{retried}");

    // Garbage does not stop it: a junk datagram is dropped, a junk TCP stream is closed.
    let junk = netns.ok(
        "python3",
        &[
            "-c",
            "import socket\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             u.sendto(b'\\xff' * 30, ('127.0.0.1', 15053))\n\
             t = socket.create_connection(('127.0.0.1', 15053), timeout=5)\n\
             t.sendall(b'\\x00\\x05hello')\n\
             print('closed' if t.recv(100) == b'' else 'answered')",
        ],
    );
    assert_eq!(junk.trim(), "closed");
    assert_eq!(short(&netns, &["cart", "A"]), [cart.to_string()]);

    // The same VIPs after a restart, with more hosts in the configuration.
    drop(proxy);
    dir.write("config/aaa-more.yaml", MORE);
    let proxy = start_sidecar(&netns, &dir);
    assert_eq!(vip4(&netns, "web.external.test"), web);
    assert_eq!(vip4(&netns, "cart"), cart);
    let more = vip4(&netns, "aaa.external.test");
    assert!(more != web && more != cart);

    // Restarted without its configuration, the sidecar serves the last-known-good snapshot,
    // and its DNS proxy answers the names and VIPs that snapshot was compiled with.
    let last_good = dir.path().join("sleep-data/last-good/snapshot.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&last_good)
        .unwrap_or_default()
        .contains("aaa.external.test")
    {
        assert!(
            Instant::now() < deadline,
            "no last-known-good snapshot with the new hosts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(proxy);
    std::fs::rename(dir.path().join("config"), dir.path().join("config-away")).unwrap();
    let _proxy = start_sidecar(&netns, &dir);
    assert_eq!(vip4(&netns, "aaa.external.test"), more);
    assert_eq!(vip4(&netns, "cart"), cart);
    assert_eq!(short(&netns, &["api.example.com", "A"]), ["192.0.2.10"]);
}

/// A TCP server in `netns` on `port` that answers every connection with `name`.
fn named_server(netns: &Netns, port: u16, name: &str) -> Process {
    let mut command = netns.command("python3");
    command.args([
        "-u",
        "-c",
        "import socket, sys\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', int(sys.argv[1])))\n\
         s.listen(16)\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   c.sendall(sys.argv[2].encode() + b'\\n')\n\
         \x20   c.close()",
        &port.to_string(),
        name,
    ]);
    let mut process = netns.spawn(command);
    process.wait_for_line(|l| l == "ready");
    process
}

#[test]
fn under_capture_the_applications_dns_gets_vips_that_reach_the_right_service() {
    let dir = TempDir::new("dnspc");
    let ca = Ca::init(&dir, "ca-data");
    ca.issue("sleep", &dir.path().join("sleep"));
    let pair = Pair::new("dnspc");
    let b = pair.b_ip;
    // Two external TCP services on the same port, with nothing else to tell them apart: their
    // endpoints are the same host (on different target ports).
    let config = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: alpha, namespace: default}}
spec:
  hosts: [alpha.external.test]
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: 7001}}]
  resolution: STATIC
  endpoints: [{{address: {b}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: beta, namespace: default}}
spec:
  hosts: [beta.external.test]
  ports: [{{number: 7000, name: tcp, protocol: TCP, targetPort: 7002}}]
  resolution: STATIC
  endpoints: [{{address: {b}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: delta, namespace: default}}
spec:
  hosts: [delta.mesh.test]
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: gamma, namespace: default}}
spec:
  hosts: [gamma.external.test]
  ports: [{{number: 8000, name: http, protocol: HTTP, targetPort: 8080}}]
  resolution: STATIC
  endpoints: [{{address: {b}}}]
"#
    );
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    dir.write("config/external.yaml", &config);
    let _alpha = named_server(&pair.b, 7001, "alpha");
    let _beta = named_server(&pair.b, 7002, "beta");
    let _delta = named_server(&pair.b, 7000, "delta");
    let _web = start_app(
        &pair.b,
        "0.0.0.0",
        8080,
        9000,
        &dir.path().join("web.record"),
    );

    // The workload's namespace: a default route (VIPs are reachable only through capture),
    // an upstream resolver on port 53 of loopback, capture with DNS redirected, the sidecar.
    pair.a
        .ok("ip", &["route", "add", "default", "via", &b.to_string()]);
    let hosts = write_hosts(&dir, &format!("{b} delta.mesh.test\n"));
    let _upstream = dnsmasq(&pair.a, 53, &hosts);
    capture(&pair.a, &["install", "--redirect-dns"]);
    let _proxy = sidecar(
        &pair.a,
        &dir,
        "sleep",
        &[
            "--socket-mark",
            common::mesh::MARK,
            "--dns-server",
            "127.0.0.1:53",
        ],
    );

    // The application asks some server's port 53 (nothing serves DNS at b): capture takes
    // the query to the proxy, which answers each service's VIP.
    let resolve = |name: &str| -> Ipv4Addr {
        let answer = dig(&pair.a, &b.to_string(), 53, &["+short", name, "A"]);
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {answer:?}"))
    };
    let alpha = resolve("alpha.external.test");
    let beta = resolve("beta.external.test");
    assert_ne!(alpha, beta);
    assert_eq!(&alpha.octets()[..2], &[240, 240]);
    // Over TCP too.
    let over_tcp = dig(
        &pair.a,
        &b.to_string(),
        53,
        &["+tcp", "+short", "alpha.external.test"],
    );
    assert_eq!(over_tcp.trim(), alpha.to_string());

    // Connections to the VIPs reach each its own service.
    assert_eq!(call(&pair.a, alpha, 7000, "0", "").trim(), "alpha");
    assert_eq!(call(&pair.a, beta, 7000, "0", "").trim(), "beta");

    // A `resolution: DNS` service: the application gets its VIP, while the sidecar's own
    // lookup of the host (marked, so not captured) gets its real address from upstream.
    let delta = resolve("delta.mesh.test");
    assert_eq!(&delta.octets()[..2], &[240, 240]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(&pair.a, delta, 7000, "0", "");
        if answer.trim() == "delta" {
            break;
        }
        assert!(Instant::now() < deadline, "delta never answered: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // HTTP to a VIP is that service's, whatever the Host header says.
    let gamma = resolve("gamma.external.test");
    let response = http_get(&pair.a, gamma, 8000, "0", "unknown.example", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    wait_for_line_in(
        &dir.path().join("sleep-access.log"),
        &["GET /hello", "outbound|8000||gamma.external.test"],
    );

    // A name the proxy does not know goes upstream with the proxy's mark, so capture lets it
    // out instead of sending it back to the proxy.
    let forwarded = dig(&pair.a, &b.to_string(), 53, &["+short", "up.mesh.test"]);
    assert_eq!(forwarded.trim(), "10.1.1.1");
}
