//! Two clusters on separate networks, joined only through a router, as multi-network meshes
//! are: a `router` namespace forwards between two routed /24s, one per cluster (`east`
//! 10.61.1.0/24 and `west` 10.61.2.0/24, the router .254 on each). Each cluster is a namespace
//! (`east`, `west`) holding a Linux bridge, joined to the router by its own veth; its hosts
//! (pods, gateways) are namespaces on that bridge with an address on the routed /24 and a default
//! route through the router. Each host's workload address sits on its loopback interface, on its
//! cluster's own range (`east` 172.16.1.0/24, `west` 172.16.2.0/24), which only the hosts of the
//! same cluster have routes to (through the host's routed address): the router has no route
//! there, so a connection from one cluster to the other's workload address fails by routing,
//! and the only way in is an address on the routed /24, such as the east-west gateway's.
//!
//! The addresses are fixed: they exist only inside one topology's namespaces, which are named
//! uniquely, so topologies running in parallel never see each other. Only the router forwards.
//! Every namespace is deleted on drop, also when the test panics. [`Router::delay`] adds a
//! one-way delay on the router's links (netem), for a wide-area path.

use std::net::Ipv4Addr;

use super::netns::Netns;

/// One host of a cluster.
#[derive(Debug)]
pub struct Host {
    /// The name the test gave it.
    pub name: String,
    pub netns: Netns,
    /// Its address on the cluster's routed /24: reachable from the other cluster.
    pub ip: Ipv4Addr,
    /// Its workload address, on the cluster's unrouted range: reachable from its cluster only.
    pub workload_ip: Ipv4Addr,
}

/// One cluster's network: a bridge namespace and its hosts. Hosts are deleted before the bridge.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub hosts: Vec<Host>,
    /// The router's address on this cluster's /24.
    pub router_ip: Ipv4Addr,
    bridge: Netns,
}

impl Cluster {
    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in cluster {}", self.name))
    }
}

/// The router and the two clusters. The clusters go before the router.
#[derive(Debug)]
pub struct Router {
    pub east: Cluster,
    pub west: Cluster,
    router: Netns,
}

/// The router's link to each cluster, in the router's namespace.
const LINKS: [&str; 2] = ["east0", "west0"];

impl Router {
    /// The router, cluster `east` with hosts `east_hosts` and cluster `west` with `west_hosts`
    /// (the first host of a cluster is .1 on both of its ranges, the next .2, and so on).
    pub fn new(label: &str, east_hosts: &[&str], west_hosts: &[&str]) -> Router {
        let router = Netns::new(&format!("{label}-router"));
        router.ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        let east = cluster(label, &router, "east", 1, east_hosts);
        let west = cluster(label, &router, "west", 2, west_hosts);
        Router { east, west, router }
    }

    /// The host named `name`, in either cluster.
    pub fn host(&self, name: &str) -> &Host {
        self.east
            .hosts
            .iter()
            .chain(&self.west.hosts)
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in either cluster"))
    }

    /// The router's namespace.
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// Delays every packet the router sends into either cluster by `millis` ms (netem on both
    /// links), so a round trip between the clusters takes at least twice that; 0 removes it.
    /// For benchmarks of a wide-area path: it needs `tc` and the kernel's `sch_netem` module,
    /// which not every machine (or container) has, so the tests do not depend on it.
    pub fn delay(&self, millis: u32) {
        for link in LINKS {
            if millis == 0 {
                let _ = self
                    .router
                    .run("tc", &["qdisc", "del", "dev", link, "root"]);
                continue;
            }
            let delay = format!("{millis}ms");
            self.router.ok(
                "tc",
                &[
                    "qdisc", "replace", "dev", link, "root", "netem", "delay", &delay,
                ],
            );
        }
    }
}

/// Cluster `name`: its bridge namespace, joined to `router` on 10.61.N.0/24, and its hosts,
/// with workload addresses on 172.16.N.0/24.
fn cluster(label: &str, router: &Netns, name: &str, n: u8, names: &[&str]) -> Cluster {
    assert!(names.len() < 250, "a /24 holds at most 250 hosts here");
    let bridge = Netns::new(&format!("{label}-{name}"));
    bridge.ok("ip", &["link", "add", "br0", "type", "bridge"]);
    bridge.ok("ip", &["link", "set", "br0", "up"]);
    let router_ip = Ipv4Addr::new(10, 61, n, 254);
    let link = format!("{name}0");
    bridge.veth_into("uplink", router, &link);
    bridge.ok("ip", &["link", "set", "uplink", "master", "br0", "up"]);
    router.address(&link, router_ip);

    let mut hosts = Vec::new();
    for (i, host) in names.iter().enumerate() {
        let netns = Netns::new(&format!("{label}-{host}"));
        let port = format!("p{i}");
        bridge.veth_into(&port, &netns, "eth0");
        bridge.ok("ip", &["link", "set", &port, "master", "br0", "up"]);
        let ip = Ipv4Addr::new(10, 61, n, (i + 1) as u8);
        let workload_ip = Ipv4Addr::new(172, 16, n, (i + 1) as u8);
        netns.address("eth0", ip);
        // Only the router forwards (a new namespace may inherit forwarding from the machine's).
        netns.ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=0"]);
        // Every other address, a service VIP included, is routed (and so reaches the capture
        // rules) through the router.
        netns.ok(
            "ip",
            &["route", "add", "default", "via", &router_ip.to_string()],
        );
        // On loopback (the dummy driver is not always there): a local address that no link
        // announces.
        netns.ok(
            "ip",
            &["addr", "add", &format!("{workload_ip}/32"), "dev", "lo"],
        );
        hosts.push(Host {
            name: (*host).to_owned(),
            netns,
            ip,
            workload_ip,
        });
    }
    // Within the cluster, each workload address is reached through its host's routed address.
    for host in &hosts {
        for other in hosts.iter().filter(|o| o.name != host.name) {
            host.netns.ok(
                "ip",
                &[
                    "route",
                    "add",
                    &format!("{}/32", other.workload_ip),
                    "via",
                    &other.ip.to_string(),
                ],
            );
        }
    }
    Cluster {
        name: name.to_owned(),
        hosts,
        router_ip,
        bridge,
    }
}

/// Python: connect to `IP PORT` from a socket with SO_MARK `MARK` (0: none, so capture lets
/// it pass with the sidecars' mark) and print `connected` or the error.
const PROBE: &str = r#"
import socket, sys
ip, port, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
s.settimeout(5)
try:
    s.connect((ip, port))
    print("connected")
except OSError as error:
    print("failed:", error)
"#;

/// Whether a TCP connection from `netns` to `ip:port` (with socket mark `mark`) is made; the
/// error when not.
pub fn connect(netns: &Netns, ip: Ipv4Addr, port: u16, mark: &str) -> Result<(), String> {
    let out = netns.ok(
        "python3",
        &["-c", PROBE, &ip.to_string(), &port.to_string(), mark],
    );
    match out.trim() {
        "connected" => Ok(()),
        other => Err(other.to_owned()),
    }
}
