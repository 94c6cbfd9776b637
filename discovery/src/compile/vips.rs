//! Automatically allocated VIPs: the addresses the DNS proxy answers for ServiceEntry hosts that
//! declare no `addresses`, and that the sidecar's outbound listener recognizes as those hosts'
//! original destinations. Both read the same [`Vips`], so they always agree.
//!
//! As in Istio, only non-wildcard hosts whose resolution is not NONE get one, and only where
//! capture is on (a VIP means nothing to a workload whose traffic does not reach the proxy).
//! A host's VIP is derived from `namespace/host` alone: the 64-bit FNV-1a hash of that text
//! picks a slot among the 65 024 host addresses of 240.240.0.0/16 that do not end in .0 or
//! .255; a slot already taken moves on to the next one. Hosts are placed in sorted order, so
//! the result depends only on the set of hosts, never on file order, a restart or a rebuilt
//! store. The IPv6 VIP is the IPv4 one inside 2001:2::/48 (`2001:2::f0f0:XXYY`), so it is as
//! unique as the IPv4 one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::hosts;
use crate::resources::service_entry::Resolution;
use crate::resources::{Object, Spec};

/// The IPv4 range VIPs come from (Istio's).
pub const VIP_RANGE_V4: &str = "240.240.0.0/16";
/// The IPv6 range VIPs come from (Istio's).
pub const VIP_RANGE_V6: &str = "2001:2::/48";

/// Host parts per /24: .1 to .254.
const PER_BLOCK: u32 = 254;
/// The slots of 240.240.0.0/16 that do not end in .0 or .255.
const SLOTS: u32 = 256 * PER_BLOCK;

/// The VIPs of a configuration, by `(namespace, qualified host)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vips {
    by_host: BTreeMap<(String, String), Vip>,
}

/// One host's VIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Vip {
    /// Both addresses.
    pub fn addresses(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

impl Vips {
    /// Allocates a VIP to every `(namespace, host)`; the order they come in does not matter.
    /// Hosts beyond the range's 65 024 addresses get none.
    pub fn allocate(keys: impl IntoIterator<Item = (String, String)>) -> Vips {
        let keys: BTreeSet<(String, String)> = keys.into_iter().collect();
        let mut taken = vec![false; SLOTS as usize];
        let mut by_host = BTreeMap::new();
        for (index, key) in keys.into_iter().enumerate() {
            if index >= SLOTS as usize {
                break;
            }
            let mut slot = (fnv1a(&format!("{}/{}", key.0, key.1)) % u64::from(SLOTS)) as u32;
            while taken[slot as usize] {
                slot = (slot + 1) % SLOTS;
            }
            taken[slot as usize] = true;
            by_host.insert(key, vip_of(slot));
        }
        Vips { by_host }
    }

    /// The VIPs of the ServiceEntry hosts in `objects` that get one (see the module doc).
    pub fn of_service_entries(objects: &[&Object], domain_suffix: &str) -> Vips {
        Vips::allocate(eligible_hosts(objects, domain_suffix))
    }

    /// The VIP of `host` (qualified, lowercase) declared in `namespace`.
    pub fn get(&self, namespace: &str, host: &str) -> Option<Vip> {
        self.by_host
            .get(&(namespace.to_owned(), host.to_owned()))
            .copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// The `(namespace, qualified host)` of every ServiceEntry host that gets a VIP: not a
/// wildcard, resolution not NONE (the default), and no `addresses` of its own.
fn eligible_hosts(objects: &[&Object], domain_suffix: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for object in objects {
        let Spec::ServiceEntry(entry) = &object.spec else {
            continue;
        };
        let resolution = entry.resolution.unwrap_or(Resolution::None);
        if resolution == Resolution::None || entry.addresses.iter().flatten().next().is_some() {
            continue;
        }
        for host in entry.hosts.iter().flatten() {
            if host.contains('*') {
                continue;
            }
            let host = hosts::qualify(host, &object.namespace, domain_suffix).to_ascii_lowercase();
            keys.push((object.namespace.clone(), host));
        }
    }
    keys
}

/// The VIP in `slot` (0 .. SLOTS).
fn vip_of(slot: u32) -> Vip {
    let block = (slot / PER_BLOCK) as u8;
    let host = (slot % PER_BLOCK + 1) as u8;
    let v4 = Ipv4Addr::new(240, 240, block, host);
    let v6 = Ipv6Addr::new(
        0x2001,
        0x2,
        0,
        0,
        0,
        0,
        0xf0f0,
        u16::from_be_bytes([block, host]),
    );
    Vip { v4, v6 }
}

/// 64-bit FNV-1a: stable across processes and releases (unlike std's randomized hasher).
fn fnv1a(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::resources::Loaded;

    fn load(yaml: &str) -> Loaded {
        crate::resources::load_clean(&[("test.yaml", yaml)])
    }

    fn key(ns: &str, host: &str) -> (String, String) {
        (ns.to_owned(), host.to_owned())
    }

    #[test]
    fn the_hash_is_the_published_fnv1a() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn vips_are_stable_and_independent_of_order() {
        let hosts = [
            key("default", "a.example.com"),
            key("default", "b.example.com"),
            key("other", "a.example.com"),
        ];
        let forward = Vips::allocate(hosts.clone());
        let mut reversed = hosts.to_vec();
        reversed.reverse();
        assert_eq!(forward, Vips::allocate(reversed));
        // The same text always gives the same address (this value is part of the contract:
        // changing the hash would move every workload's VIPs).
        let vip = forward.get("default", "a.example.com").unwrap();
        let slot = (fnv1a("default/a.example.com") % u64::from(SLOTS)) as u32;
        assert_eq!(vip, vip_of(slot));
        assert_ne!(vip, forward.get("other", "a.example.com").unwrap());
        let range: ipnet::Ipv4Net = VIP_RANGE_V4.parse().unwrap();
        let range6: ipnet::Ipv6Net = VIP_RANGE_V6.parse().unwrap();
        assert!(range.contains(&vip.v4) && range6.contains(&vip.v6));
    }

    #[test]
    fn a_collision_probes_to_the_next_free_slot_in_sorted_order() {
        // Find two keys whose hashes land in the same slot.
        let slot_of = |text: &str| (fnv1a(text) % u64::from(SLOTS)) as u32;
        let mut seen: std::collections::HashMap<u32, String> = Default::default();
        let (first, second) = (0..)
            .find_map(|i| {
                let host = format!("h{i}.example.com");
                let slot = slot_of(&format!("ns/{host}"));
                seen.insert(slot, host.clone())
                    .map(|earlier| (earlier, host))
            })
            .unwrap();
        let (low, high) = match first < second {
            true => (first, second),
            false => (second, first),
        };
        let slot = slot_of(&format!("ns/{low}"));
        for order in [[low.clone(), high.clone()], [high.clone(), low.clone()]] {
            let vips = Vips::allocate(order.iter().map(|h| key("ns", h)));
            assert_eq!(vips.get("ns", &low).unwrap(), vip_of(slot));
            assert_eq!(vips.get("ns", &high).unwrap(), vip_of((slot + 1) % SLOTS));
        }
    }

    #[test]
    fn no_address_ends_in_0_or_255() {
        for slot in [0, 253, 254, SLOTS - 1] {
            let octets = vip_of(slot).v4.octets();
            assert!(octets[3] != 0 && octets[3] != 255, "{:?}", octets);
        }
        assert_eq!(vip_of(0).v4, Ipv4Addr::new(240, 240, 0, 1));
        assert_eq!(vip_of(SLOTS - 1).v4, Ipv4Addr::new(240, 240, 255, 254));
        assert_eq!(vip_of(0).v6, "2001:2::f0f0:1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn only_non_wildcard_hosts_without_addresses_and_not_none_get_one() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [api.example.com, "*.wild.example.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: default}
spec:
  hosts: [none.example.com]
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed, namespace: default}
spec:
  hosts: [fixed.example.com]
  addresses: [10.9.9.9]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: shop}
spec:
  hosts: [cart]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
"#;
        let loaded = load(yaml);
        let objects: Vec<&Object> = loaded.objects.iter().collect();
        let vips = Vips::of_service_entries(&objects, "cluster.local");
        assert!(vips.get("default", "api.example.com").is_some());
        assert!(vips.get("shop", "cart.shop.svc.cluster.local").is_some());
        assert!(vips.get("default", "*.wild.example.com").is_none());
        assert!(vips.get("default", "none.example.com").is_none());
        assert!(vips.get("default", "fixed.example.com").is_none());
        assert_eq!(vips.by_host.len(), 2);
    }
}
