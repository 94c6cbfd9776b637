//! `strait capture` in real network namespaces: two namespaces joined by a veth pair, capture
//! installed in `a`, and listeners that report which port accepted a connection and the
//! connection's original destination (SO_ORIGINAL_DST), the way the sidecar's 15001 and 15006
//! listeners read it. Needs root, `ip` and iptables (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::netns::{HELPER_ROLE, Netns, Pair, Process};
use common::{Run, TempDir, run, strait};
use socket2::{Domain, SockRef, Socket, Type};

/// The test this binary runs when it is re-run as a helper inside a namespace.
const HELPER: &str = "namespace_helper";

/// The application's port in namespace `a`.
const APP_PORT: u16 = 8080;
/// The proxy's socket mark (the default of `--mark`).
const PROXY_MARK: u32 = 1337;

// ---------------------------------------------------------------------------------------------
// Helper roles, run inside a namespace by a re-run of this binary.

/// Plays a helper role when this binary was started as one (see `Netns::helper`); a normal
/// test run has no role set and this returns at once.
#[test]
fn namespace_helper() {
    let Ok(role) = std::env::var(HELPER_ROLE) else {
        return;
    };
    if let Some(ports) = role.strip_prefix("listen:") {
        play_listener(ports);
    } else if let Some(spec) = role.strip_prefix("connect:") {
        play_client(spec);
    } else if let Some(spec) = role.strip_prefix("udp:") {
        play_udp_client(spec);
    } else {
        panic!("unknown helper role {role:?}");
    }
}

/// Listens on every port of `ports` (comma-separated; `P/udp` or `ADDR:P/udp` for UDP) and answers each
/// connection or datagram with one line: `port=P local=ADDR peer=ADDR original_dst=ADDR|none`.
fn play_listener(ports: &str) {
    let mut threads = Vec::new();
    for port in ports.split(',') {
        if let Some(port) = port.strip_suffix("/udp") {
            let at: SocketAddr = match port.parse::<u16>() {
                Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
                Err(_) => port.parse().unwrap(),
            };
            let socket = UdpSocket::bind(at).unwrap();
            threads.push(std::thread::spawn(move || answer_datagrams(&socket)));
            continue;
        }
        let port: u16 = port.parse().unwrap();
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let original_dst = SockRef::from(&stream)
                    .original_dst_v4()
                    .ok()
                    .and_then(|addr| addr.as_socket())
                    .map_or_else(|| "none".to_owned(), |addr| addr.to_string());
                let line = format!(
                    "port={port} local={} peer={} original_dst={original_dst}\n",
                    stream.local_addr().unwrap(),
                    stream.peer_addr().unwrap()
                );
                let _ = stream.write_all(line.as_bytes());
            }
        }));
    }
    println!("helper: ready");
    // Listen until the test process lets go of stdin (or dies), then exit.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(threads);
}

fn answer_datagrams(socket: &UdpSocket) {
    let port = socket.local_addr().unwrap().port();
    let mut buffer = [0u8; 512];
    while let Ok((_, peer)) = socket.recv_from(&mut buffer) {
        let line = format!("port={port}/udp peer={peer} original_dst=none\n");
        let _ = socket.send_to(line.as_bytes(), peer);
    }
}

/// `TARGET[,mark=N]`: sends one UDP datagram and prints the answer as `helper: reply ...`.
fn play_udp_client(spec: &str) {
    let mut parts = spec.split(',');
    let target: SocketAddr = parts.next().unwrap().parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
    for option in parts {
        match option.split_once('=') {
            Some(("mark", mark)) => socket.set_mark(mark.parse().unwrap()).unwrap(),
            _ => panic!("unknown udp option {option:?}"),
        }
    }
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.connect(target).unwrap();
    socket.send(b"query").unwrap();
    let mut buffer = [0u8; 512];
    match socket.recv(&mut buffer) {
        Ok(n) => println!(
            "helper: reply {}",
            String::from_utf8_lossy(&buffer[..n]).trim()
        ),
        Err(error) => println!("helper: error {error}"),
    }
}

/// `TARGET[,from=IP][,mark=N][,uid=N,gid=N,exe=PATH]`: connects (from IP, with SO_MARK N, as
/// user and group N by running the copy of this binary at PATH) and prints the listener's answer
/// as `helper: reply ...`, or `helper: error ...`.
fn play_client(spec: &str) {
    let (owner, rest): (Vec<&str>, Vec<&str>) = spec
        .split(',')
        .partition(|part| ["uid=", "gid=", "exe="].iter().any(|k| part.starts_with(k)));
    if !owner.is_empty() {
        let option = |key: &str| {
            owner
                .iter()
                .find_map(|part| part.strip_prefix(key))
                .unwrap_or_else(|| panic!("{spec}: uid=, gid= and exe= go together"))
        };
        let output = Command::new(option("exe="))
            .args([HELPER, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ROLE, format!("connect:{}", rest.join(",")))
            .uid(option("uid=").parse().unwrap())
            .gid(option("gid=").parse().unwrap())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return;
    }
    let mut parts = rest.into_iter();
    let target: SocketAddr = parts.next().unwrap().parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    for option in parts {
        match option.split_once('=') {
            Some(("from", ip)) => {
                let ip: Ipv4Addr = ip.parse().unwrap();
                socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
            }
            Some(("mark", mark)) => socket.set_mark(mark.parse().unwrap()).unwrap(),
            _ => panic!("unknown connect option {option:?}"),
        }
    }
    let result = socket
        .connect_timeout(&target.into(), Duration::from_secs(5))
        .and_then(|()| {
            let stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            Ok(line)
        });
    match result {
        Ok(line) => println!("helper: reply {}", line.trim()),
        Err(error) => println!("helper: error {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The test side.

/// Listeners in `netns` on `ports`, ready when this returns.
fn listeners(netns: &Netns, ports: &[u16]) -> Process {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    listeners_on(netns, &ports)
}

/// Listeners on ports written `P` (TCP), `P/udp` or `ADDR:P/udp`.
fn listeners_on(netns: &Netns, ports: &[String]) -> Process {
    let mut process = netns.spawn(netns.helper(HELPER, &format!("listen:{}", ports.join(","))));
    // libtest prints `test NAME ... ` before the helper runs, on the same line.
    process.wait_for_line(|line| line.ends_with("helper: ready"));
    process
}

/// Connects from `netns` to `target` and returns the accepting listener's report.
fn connect(netns: &Netns, target: SocketAddr, options: &[&str]) -> BTreeMap<String, String> {
    ask(netns, "connect", target, options)
}

/// Sends a UDP datagram from `netns` to `target` and returns the answering listener's report.
fn send_udp(netns: &Netns, target: SocketAddr, options: &[&str]) -> BTreeMap<String, String> {
    ask(netns, "udp", target, options)
}

fn ask(
    netns: &Netns,
    role: &str,
    target: SocketAddr,
    options: &[&str],
) -> BTreeMap<String, String> {
    let mut spec = format!("{role}:{target}");
    for option in options {
        spec.push(',');
        spec.push_str(option);
    }
    let result = run(&mut netns.helper(HELPER, &spec));
    let reply = result
        .stdout
        .lines()
        .find_map(|line| line.split_once("helper: reply ").map(|(_, reply)| reply))
        .unwrap_or_else(|| panic!("no reply for {spec}:\n{}\n{}", result.stdout, result.stderr));
    reply
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn capture(args: &[&str]) -> Run {
    run(strait().arg("capture").args(args))
}

fn capture_ok(args: &[&str]) -> String {
    let result = capture(args);
    assert_eq!(
        result.code,
        Some(0),
        "strait capture {args:?}: {}",
        result.stderr
    );
    result.stdout
}

fn install(netns: &Netns, extra: &[&str]) {
    let mut args = vec!["install", "--netns", netns.name()];
    args.extend_from_slice(extra);
    capture_ok(&args);
}

/// The nat table as `iptables-save` prints it, without its timestamped comments.
fn nat_table(netns: &Netns) -> String {
    netns
        .ok("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The packet counter of the rule in `chain` whose line contains `needle`, from `show`.
fn counter(show: &str, chain: &str, needle: &str) -> u64 {
    let block = show
        .split("\n\n")
        .find(|block| block.starts_with(&format!("Chain {chain} ")))
        .unwrap_or_else(|| panic!("no chain {chain} in\n{show}"));
    let line = block
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in\n{block}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn outbound_is_redirected_to_15001_with_its_original_destination_and_the_proxy_is_not() {
    let pair = Pair::new("cap-out");
    install(&pair.a, &[]);
    let _a = listeners(&pair.a, &[15001, 15006, APP_PORT]);
    let _b = listeners(&pair.b, &[9090]);
    let before = capture_ok(&["show", "--netns", pair.a.name()]);
    assert_eq!(counter(&before, "ISTIO_REDIRECT", "redir ports 15001"), 0);

    // The application's connection to b lands on the outbound port, original destination kept.
    let app = connect(&pair.a, addr(pair.b_ip, 9090), &[]);
    assert_eq!(app["port"], "15001", "{app:?}");
    assert_eq!(app["original_dst"], addr(pair.b_ip, 9090).to_string());

    // The proxy's own connection (its mark) goes to b itself; another mark does not help.
    let proxy = connect(
        &pair.a,
        addr(pair.b_ip, 9090),
        &[&format!("mark={PROXY_MARK}")],
    );
    assert_eq!(proxy["port"], "9090", "{proxy:?}");
    assert_eq!(proxy["local"], addr(pair.b_ip, 9090).to_string());
    let other = connect(&pair.a, addr(pair.b_ip, 9090), &["mark=7"]);
    assert_eq!(other["port"], "15001", "{other:?}");

    // Destinations that are already local are not redirected.
    let local = connect(&pair.a, addr(Ipv4Addr::LOCALHOST, APP_PORT), &[]);
    assert_eq!(local["port"], APP_PORT.to_string(), "{local:?}");

    // `show` prints the counters, and they moved: two captured connections.
    let after = capture_ok(&["show", "--netns", pair.a.name()]);
    assert_eq!(
        counter(&after, "ISTIO_REDIRECT", "redir ports 15001"),
        2,
        "{after}"
    );
    assert!(counter(&after, "OUTPUT", "ISTIO_OUTPUT") >= 4, "{after}");
}

#[test]
fn inbound_is_redirected_to_15006_except_excluded_ports() {
    let pair = Pair::new("cap-in");
    install(&pair.a, &["--exclude-inbound-ports", "8443"]);
    let _a = listeners(&pair.a, &[15001, 15006, APP_PORT, 8443, 15021]);

    let inbound = connect(&pair.b, addr(pair.a_ip, APP_PORT), &[]);
    assert_eq!(inbound["port"], "15006", "{inbound:?}");
    assert_eq!(
        inbound["original_dst"],
        addr(pair.a_ip, APP_PORT).to_string()
    );
    assert_eq!(
        inbound["peer"].split(':').next(),
        Some(pair.b_ip.to_string().as_str())
    );

    // The health port is always excluded, and so is a port given by flag.
    for port in [15021, 8443] {
        let direct = connect(&pair.b, addr(pair.a_ip, port), &[]);
        assert_eq!(direct["port"], port.to_string(), "{direct:?}");
    }
    let show = capture_ok(&["show", "--netns", pair.a.name()]);
    assert_eq!(
        counter(&show, "ISTIO_IN_REDIRECT", "redir ports 15006"),
        1,
        "{show}"
    );
    assert_eq!(counter(&show, "ISTIO_INBOUND", "dpt:15021"), 1, "{show}");
}

#[test]
fn loopback_traffic_follows_istios_rules() {
    let pair = Pair::new("cap-lo");
    install(&pair.a, &[]);
    let _a = listeners(&pair.a, &[15001, 15006, APP_PORT]);
    let mark = format!("mark={PROXY_MARK}");
    let own_address = addr(pair.a_ip, APP_PORT);

    // The inbound proxy forwarding to the application from 127.0.0.6 is not captured again.
    let forwarded = connect(&pair.a, own_address, &[&mark, "from=127.0.0.6"]);
    assert_eq!(forwarded["port"], APP_PORT.to_string(), "{forwarded:?}");
    assert_eq!(forwarded["peer"].split(':').next(), Some("127.0.0.6"));

    // The proxy reaching this pod's own address from anywhere else (the application called
    // itself through a service address and outbound picked this pod) goes through inbound.
    let self_call = connect(&pair.a, own_address, &[&mark]);
    assert_eq!(self_call["port"], "15006", "{self_call:?}");
    assert_eq!(self_call["original_dst"], own_address.to_string());

    // The application calling its own address directly is not captured (as in Istio).
    let app = connect(&pair.a, own_address, &[]);
    assert_eq!(app["port"], APP_PORT.to_string(), "{app:?}");
}

#[test]
fn install_is_idempotent_remove_is_complete_and_dry_run_changes_nothing() {
    let netns = Netns::new("cap-rules");
    let clean = nat_table(&netns);
    assert!(!clean.contains("ISTIO"), "{clean}");

    let dry = capture_ok(&["install", "--netns", netns.name(), "--dry-run"]);
    assert!(
        dry.starts_with("*nat\n") && dry.ends_with("COMMIT\n"),
        "{dry}"
    );
    assert!(dry.contains("-A OUTPUT -j ISTIO_OUTPUT\n"), "{dry}");
    assert_eq!(nat_table(&netns), clean, "--dry-run changed the rules");

    install(&netns, &["--redirect-dns"]);
    let once = nat_table(&netns);
    assert!(once.contains(":ISTIO_OUTPUT_DNS"), "{once}");
    install(&netns, &["--redirect-dns"]);
    assert_eq!(
        nat_table(&netns),
        once,
        "a second install changed the rules"
    );
    assert_eq!(once.matches("-A OUTPUT -j ISTIO_OUTPUT").count(), 1);
    assert_eq!(
        once.matches("-A PREROUTING -p tcp -j ISTIO_INBOUND")
            .count(),
        1
    );

    // Installing with other options replaces the rules, and drops the chain no longer needed.
    install(&netns, &[]);
    let replaced = nat_table(&netns);
    assert!(!replaced.contains("ISTIO_OUTPUT_DNS"), "{replaced}");
    assert_eq!(replaced.matches("-A OUTPUT -j ISTIO_OUTPUT").count(), 1);

    let dry_remove = capture_ok(&["remove", "--netns", netns.name(), "--dry-run"]);
    assert!(dry_remove.contains("-X ISTIO_OUTPUT\n"), "{dry_remove}");
    assert_eq!(
        nat_table(&netns),
        replaced,
        "remove --dry-run changed the rules"
    );

    capture_ok(&["remove", "--netns", netns.name()]);
    assert_eq!(nat_table(&netns), clean, "remove left something behind");
    let again = capture_ok(&["remove", "--netns", netns.name()]);
    assert!(again.contains("no capture rules installed"), "{again}");
    let show = capture_ok(&["show", "--netns", netns.name()]);
    assert!(show.contains("no capture rules installed"), "{show}");
}

#[test]
fn failures_name_the_command_and_its_error() {
    let failed = capture(&["install", "--netns", "strait-no-such-namespace"]);
    assert_eq!(failed.code, Some(2));
    assert!(
        failed
            .stderr
            .contains("ip netns exec strait-no-such-namespace iptables-save")
            && failed.stderr.contains("strait-no-such-namespace"),
        "{}",
        failed.stderr
    );
    let netns = Netns::new("cap-bad");
    let bad = capture(&[
        "install",
        "--netns",
        netns.name(),
        "--proxy-uid",
        "",
        "--proxy-gid",
        "",
        "--mark",
        "0",
    ]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("no proxy identity"), "{}", bad.stderr);
    assert!(!nat_table(&netns).contains("ISTIO"));
}

#[test]
fn install_warns_that_ipv6_is_not_captured_when_the_namespace_has_ipv6_addresses() {
    let netns = Netns::new("cap-v6");
    let quiet = capture(&["install", "--netns", netns.name()]);
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("IPv6"), "{}", quiet.stderr);
    netns.ok("ip", &["-6", "addr", "add", "fd00:5::1/64", "dev", "lo"]);
    let warned = capture(&["install", "--netns", netns.name()]);
    assert_eq!(warned.code, Some(0), "{}", warned.stderr);
    assert!(
        warned.stderr.contains("only IPv4 is captured") && warned.stderr.contains("fd00:5::1/64"),
        "{}",
        warned.stderr
    );
}

/// A copy of this test binary that any user can run (the build directory may not be).
fn binary_for_any_user(dir: &TempDir) -> String {
    let copy = dir.path().join("helper");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy.to_str().unwrap().to_owned()
}

#[test]
fn the_proxys_uid_or_gid_alone_keeps_its_traffic_out_of_capture() {
    let dir = TempDir::new("cap-owner");
    let exe = binary_for_any_user(&dir);
    let as_user = |uid: u32, gid: u32| format!("uid={uid},gid={gid},exe={exe}");
    let pair = Pair::new("cap-owner");
    let _a = listeners(&pair.a, &[15001, 15006, APP_PORT]);
    let _b = listeners(&pair.b, &[9090]);
    let b = addr(pair.b_ip, 9090);

    // Recognised by uid only (Istio's default way): the proxy's user reaches b directly.
    install(
        &pair.a,
        &["--proxy-uid", "1337", "--proxy-gid", "", "--mark", "0"],
    );
    let proxy = connect(&pair.a, b, &[&as_user(1337, 1000)]);
    assert_eq!(proxy["port"], "9090", "{proxy:?}");
    let app = connect(&pair.a, b, &[&as_user(1000, 1337)]);
    assert_eq!(
        app["port"], "15001",
        "the gid is not the proxy's here: {app:?}"
    );
    // ... and the proxy's user reaching this pod's own address goes through inbound.
    let own = addr(pair.a_ip, APP_PORT);
    let self_call = connect(&pair.a, own, &[&as_user(1337, 1000)]);
    assert_eq!(self_call["port"], "15006", "{self_call:?}");
    assert_eq!(self_call["original_dst"], own.to_string());

    // Recognised by gid only.
    install(
        &pair.a,
        &["--proxy-uid", "", "--proxy-gid", "1337", "--mark", "0"],
    );
    let proxy = connect(&pair.a, b, &[&as_user(1000, 1337)]);
    assert_eq!(proxy["port"], "9090", "{proxy:?}");
    let app = connect(&pair.a, b, &[&as_user(1337, 1000)]);
    assert_eq!(
        app["port"], "15001",
        "the uid is not the proxy's here: {app:?}"
    );
}

#[test]
fn dns_goes_to_the_dns_proxy_only_with_redirect_dns() {
    let pair = Pair::new("cap-dns");
    let ports = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    // A UDP server answers from the address it was reached at only when bound to it: a
    // redirected datagram arrives at 127.0.0.1, so the DNS proxy listens there (as Istio's does).
    let _a = listeners_on(&pair.a, &ports(&["15001", "15053", "127.0.0.1:15053/udp"]));
    let _b = listeners_on(&pair.b, &ports(&["53", "53/udp"]));
    let resolver = addr(pair.b_ip, 53);

    // Off by default: UDP DNS is untouched, TCP DNS is ordinary outbound traffic.
    install(&pair.a, &[]);
    assert_eq!(send_udp(&pair.a, resolver, &[])["port"], "53/udp");
    assert_eq!(connect(&pair.a, resolver, &[])["port"], "15001");

    install(&pair.a, &["--redirect-dns"]);
    let udp = send_udp(&pair.a, resolver, &[]);
    assert_eq!(udp["port"], "15053/udp", "{udp:?}");
    let tcp = connect(&pair.a, resolver, &[]);
    assert_eq!(tcp["port"], "15053", "{tcp:?}");
    assert_eq!(tcp["original_dst"], resolver.to_string());
    // The DNS proxy's own queries reach the resolver.
    let mark = format!("mark={PROXY_MARK}");
    assert_eq!(send_udp(&pair.a, resolver, &[&mark])["port"], "53/udp");
    assert_eq!(connect(&pair.a, resolver, &[&mark])["port"], "53");
    let show = capture_ok(&["show", "--netns", pair.a.name()]);
    assert_eq!(
        counter(&show, "ISTIO_OUTPUT_DNS", "udp dpt:53"),
        1,
        "{show}"
    );
}
