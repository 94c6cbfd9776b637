//! The names the DNS proxy answers itself, and their addresses: built with the sidecar's
//! snapshot from the services its outbound side sees, and replaced whole on every change.
//!
//! What a known name answers, in order:
//! - the ServiceEntry's `addresses` (single IPs; CIDRs are not addresses to answer);
//! - else its automatically allocated VIP (`compile::vips`), which exists only where capture
//!   is on;
//! - else, for `STATIC` services (inline endpoints or WorkloadEntries), the IPs of their
//!   endpoints, as Istio answers for headless services: without capture the workload then
//!   connects to an endpoint directly.
//!
//! `DNS` services without addresses and without capture, and `NONE` services without
//! addresses, are not known here: their names go to the upstream resolvers, as they would
//! without the proxy. Wildcard hosts are never known.
//!
//! Names are matched case-insensitively. A name not found as asked is tried under the
//! workload's Kubernetes search domains, `NS.svc.SUFFIX`, `svc.SUFFIX`, `SUFFIX` in that
//! order, so `reviews`, `reviews.NS` and `reviews.NS.svc` find
//! `reviews.NS.svc.cluster.local`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The addresses of one known name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// The names a sidecar's DNS proxy answers itself (kept with the last-known-good snapshot, so
/// that a sidecar serving it answers the VIPs its listeners expect).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameTable {
    /// Lowercase, without the trailing dot.
    names: HashMap<String, NameEntry>,
    /// The search domains short names are tried under, in order.
    search: Vec<String>,
}

impl NameTable {
    /// An empty table for a workload in `namespace`, short names under `domain_suffix`.
    pub fn new(namespace: &str, domain_suffix: &str) -> NameTable {
        NameTable {
            names: HashMap::new(),
            search: vec![
                format!("{namespace}.svc.{domain_suffix}"),
                format!("svc.{domain_suffix}"),
                domain_suffix.to_owned(),
            ]
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        }
    }

    /// Adds `addresses` to `name` (a name is known once added, even with no address).
    pub fn insert(&mut self, name: &str, addresses: impl IntoIterator<Item = IpAddr>) {
        let entry = self.names.entry(normalize(name)).or_default();
        for address in addresses {
            match address {
                IpAddr::V4(v4) if !entry.v4.contains(&v4) => entry.v4.push(v4),
                IpAddr::V6(v6) if !entry.v6.contains(&v6) => entry.v6.push(v6),
                _ => {}
            }
        }
    }

    /// The entry for `name` (any case, with or without the trailing dot): as asked, then
    /// under each search domain.
    pub fn lookup(&self, name: &str) -> Option<&NameEntry> {
        let name = normalize(name);
        if name.is_empty() {
            return None;
        }
        if let Some(entry) = self.names.get(&name) {
            return Some(entry);
        }
        self.search
            .iter()
            .find_map(|domain| self.names.get(&format!("{name}.{domain}")))
    }

    /// Every known name with its addresses, sorted by name.
    pub fn entries(&self) -> Vec<(&str, &NameEntry)> {
        let mut entries: Vec<(&str, &NameEntry)> =
            self.names.iter().map(|(n, e)| (n.as_str(), e)).collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table() -> NameTable {
        let mut table = NameTable::new("shop", "cluster.local");
        table.insert(
            "cart.shop.svc.cluster.local",
            [
                "240.240.0.7".parse().unwrap(),
                "2001:2::f0f0:7".parse().unwrap(),
            ],
        );
        table.insert("api.example.com", ["10.1.2.3".parse().unwrap()]);
        table.insert(
            "orders.billing.svc.cluster.local",
            ["10.4.4.4".parse().unwrap()],
        );
        table
    }

    #[test]
    fn short_names_expand_like_kubernetes_search_domains() {
        let table = table();
        let cart = table.lookup("cart.shop.svc.cluster.local").unwrap();
        for name in [
            "cart",
            "cart.shop",
            "cart.shop.svc",
            "CART.Shop.",
            "cart.shop.svc.cluster.local.",
        ] {
            assert_eq!(table.lookup(name), Some(cart), "{name}");
        }
        // Another namespace's service needs its namespace.
        assert!(table.lookup("orders").is_none());
        assert!(table.lookup("orders.billing").is_some());
        assert!(table.lookup("orders.billing.svc").is_some());
        assert!(table.lookup("API.example.COM").is_some());
        assert!(table.lookup("example.com").is_none());
        assert!(table.lookup("").is_none());
        assert!(table.lookup(".").is_none());
    }

    #[test]
    fn families_are_kept_apart() {
        let table = table();
        let api = table.lookup("api.example.com").unwrap();
        assert_eq!(api.v4, vec!["10.1.2.3".parse::<Ipv4Addr>().unwrap()]);
        assert!(api.v6.is_empty());
        let cart = table.lookup("cart").unwrap();
        assert_eq!(cart.v6, vec!["2001:2::f0f0:7".parse::<Ipv6Addr>().unwrap()]);
    }
}
