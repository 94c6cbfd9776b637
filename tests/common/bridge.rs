//! A switched network of several namespaces, for tests with more than two hosts: a namespace
//! acting as the switch holds a Linux bridge, and each member namespace is joined to it by a
//! veth pair (`eth0` in the member, `pN` on the bridge), on a per-test /24 of 10.x.y derived as
//! [`super::netns::Pair`] derives its own. Each member also gets a default route through `eth0`,
//! as a pod has, so that a connection to any address (a service VIP included) is routed and so
//! reaches the capture rules. Every namespace is deleted on drop, also when the test panics.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One namespace on the bridge.
#[derive(Debug)]
pub struct Member {
    /// The name the test gave it.
    pub name: String,
    pub netns: Netns,
    /// Its address on the bridge's /24.
    pub ip: Ipv4Addr,
}

/// Namespaces joined by one bridge. Members are deleted before the switch.
#[derive(Debug)]
pub struct Bridge {
    pub members: Vec<Member>,
    switch: Netns,
}

impl Bridge {
    /// A switch namespace with a bridge, and one member namespace per name in `names`, the
    /// first at 10.x.y.1, the next at 10.x.y.2, and so on.
    pub fn new(label: &str, names: &[&str]) -> Bridge {
        assert!(names.len() < 250, "a /24 holds at most 250 members here");
        let switch = Netns::new(&format!("{label}-switch"));
        switch.ok("ip", &["link", "add", "br0", "type", "bridge"]);
        switch.ok("ip", &["link", "set", "br0", "up"]);
        // 10.x.y.0/24 from the pid and a counter, away from the range pairs use first.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let slot = (std::process::id().wrapping_mul(13).wrapping_add(n)) % (200 * 256);
        let (x, y) = (20 + slot / 256, slot % 256);
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let netns = Netns::new(&format!("{label}-{name}"));
            let port = format!("p{i}");
            switch.veth_into(&port, &netns, "eth0");
            switch.ok("ip", &["link", "set", &port, "master", "br0", "up"]);
            let ip = Ipv4Addr::new(10, x as u8, y as u8, (i + 1) as u8);
            netns.address("eth0", ip);
            netns.ok("ip", &["route", "add", "default", "dev", "eth0"]);
            members.push(Member {
                name: (*name).to_owned(),
                netns,
                ip,
            });
        }
        Bridge { members, switch }
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name} on the bridge"))
    }

    /// The switch's namespace.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }
}
