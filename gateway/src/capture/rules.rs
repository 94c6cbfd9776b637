//! The capture rules themselves, as pure functions: options in, `iptables-restore` input out.
//!
//! The rules are the nat-table rules Istio's init container (`istio-iptables`) installs, with
//! Istio's chain names so that users recognise them:
//!
//! - `PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT` (REDIRECT to the inbound capture port,
//!   15006) for traffic arriving from the network;
//! - `OUTPUT -> ISTIO_OUTPUT -> ISTIO_REDIRECT` (REDIRECT to the outbound port, 15001) for
//!   traffic the workload sends;
//! - `ISTIO_OUTPUT -> ISTIO_OUTPUT_DNS` (REDIRECT of port 53 to the DNS proxy) when asked.
//!
//! Install and remove are computed against the namespace's current `iptables-save -t nat`
//! output, so that each is a single `iptables-restore --noflush` transaction: installing twice
//! leaves one set of rules, and removing leaves no chain and no jump behind.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";

/// Every chain this module owns, in the order they are declared.
pub const CHAINS: [&str; 5] = [
    ISTIO_INBOUND,
    ISTIO_REDIRECT,
    ISTIO_IN_REDIRECT,
    ISTIO_OUTPUT,
    ISTIO_OUTPUT_DNS,
];

/// The source address the inbound proxy uses to reach the application (Istio's
/// `InboundPassthroughClusterIpv4`), so that those connections are not captured again.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";
/// Destinations that are already local: never redirected.
pub const LOCALHOST: &str = "127.0.0.1/32";
/// Inbound ports never captured whatever the options say: admin (15000), metrics (15020),
/// health (15021) and Envoy's Prometheus port (15090), as Istio's injector excludes them.
pub const ALWAYS_EXCLUDED_INBOUND_PORTS: [u16; 4] = [15000, 15020, 15021, 15090];

/// Which inbound destination ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// `*`: every port except the excluded ones.
    All,
    /// Only these ports (an empty list captures no inbound traffic).
    Only(Vec<u16>),
}

/// Which outbound destinations are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    /// `*`: every destination except the excluded ranges.
    All,
    /// Only these ranges (an empty list captures by `outbound_ports` only).
    Only(Vec<Ipv4Net>),
}

/// How the proxy's own traffic is recognised, so that it is never captured (a loop otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyIdentity {
    /// `-m owner --uid-owner N`: the proxy runs as this user.
    Uid(u32),
    /// `-m owner --gid-owner N`: the proxy runs with this group.
    Gid(u32),
    /// `-m mark --mark N`: the proxy sets `SO_MARK` to N on its sockets (a proxy running as
    /// root, whose uid is shared with other processes).
    Mark(u32),
}

impl ProxyIdentity {
    fn matcher(self) -> String {
        match self {
            ProxyIdentity::Uid(uid) => format!("-m owner --uid-owner {uid}"),
            ProxyIdentity::Gid(gid) => format!("-m owner --gid-owner {gid}"),
            ProxyIdentity::Mark(mark) => format!("-m mark --mark {mark}"),
        }
    }
}

/// What `strait capture install` installs. Defaults are Istio's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Where outbound traffic is redirected (`ISTIO_REDIRECT`), Istio's 15001.
    pub proxy_port: u16,
    /// Where inbound traffic is redirected (`ISTIO_IN_REDIRECT`), Istio's 15006.
    pub inbound_capture_port: u16,
    /// The HBONE tunnel port (15008): never captured in either direction.
    pub inbound_tunnel_port: u16,
    /// How the proxy's own traffic is recognised; at least one is required.
    pub proxy_identities: Vec<ProxyIdentity>,
    pub inbound_ports: InboundPorts,
    /// Inbound ports never captured, on top of [`ALWAYS_EXCLUDED_INBOUND_PORTS`].
    pub exclude_inbound_ports: Vec<u16>,
    pub outbound_ip_ranges: OutboundRanges,
    pub exclude_outbound_ip_ranges: Vec<Ipv4Net>,
    /// Outbound destination ports never captured (TCP and UDP).
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination ports captured whatever the destination range.
    pub outbound_ports: Vec<u16>,
    /// Redirect DNS (port 53, UDP and TCP) to the DNS proxy.
    pub redirect_dns: bool,
    /// The DNS proxy's port, Istio's 15053.
    pub dns_port: u16,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_identities: vec![
                ProxyIdentity::Uid(1337),
                ProxyIdentity::Gid(1337),
                ProxyIdentity::Mark(1337),
            ],
            inbound_ports: InboundPorts::All,
            exclude_inbound_ports: Vec::new(),
            outbound_ip_ranges: OutboundRanges::All,
            exclude_outbound_ip_ranges: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            outbound_ports: Vec::new(),
            redirect_dns: false,
            dns_port: 15053,
        }
    }
}

/// Options that cannot produce working rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error(
        "no proxy identity: give --proxy-uid, --proxy-gid or a non-zero --mark, else the proxy's own connections would be captured and loop back to it"
    )]
    NoProxyIdentity,
}

impl CaptureOptions {
    /// The inbound ports that are never captured: the fixed ones, then the user's, without
    /// duplicates.
    pub fn excluded_inbound_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = ALWAYS_EXCLUDED_INBOUND_PORTS.to_vec();
        for port in &self.exclude_inbound_ports {
            if !ports.contains(port) {
                ports.push(*port);
            }
        }
        ports
    }

    fn captures_inbound(&self) -> bool {
        !matches!(&self.inbound_ports, InboundPorts::Only(ports) if ports.is_empty())
    }

    /// The chains these options need.
    pub fn chains(&self) -> Vec<&'static str> {
        CHAINS
            .into_iter()
            .filter(|chain| *chain != ISTIO_OUTPUT_DNS || self.redirect_dns)
            .collect()
    }

    /// The `-A` rules, in order, for a namespace with none of our chains.
    pub fn rules(&self) -> Result<Vec<String>, RulesError> {
        if self.proxy_identities.is_empty() {
            return Err(RulesError::NoProxyIdentity);
        }
        let mut rules = Vec::new();
        let mut add = |chain: &str, spec: String| rules.push(format!("-A {chain} {spec}"));

        add(
            ISTIO_INBOUND,
            format!("-p tcp --dport {} -j RETURN", self.inbound_tunnel_port),
        );
        add(
            ISTIO_REDIRECT,
            format!("-p tcp -j REDIRECT --to-ports {}", self.proxy_port),
        );
        add(
            ISTIO_IN_REDIRECT,
            format!(
                "-p tcp -j REDIRECT --to-ports {}",
                self.inbound_capture_port
            ),
        );

        // Inbound: what arrives from the network goes to the inbound capture port.
        if self.captures_inbound() {
            add("PREROUTING", format!("-p tcp -j {ISTIO_INBOUND}"));
            for port in self.excluded_inbound_ports() {
                add(ISTIO_INBOUND, format!("-p tcp --dport {port} -j RETURN"));
            }
            match &self.inbound_ports {
                InboundPorts::All => add(ISTIO_INBOUND, format!("-p tcp -j {ISTIO_IN_REDIRECT}")),
                InboundPorts::Only(ports) => {
                    for port in ports {
                        add(
                            ISTIO_INBOUND,
                            format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}"),
                        );
                    }
                }
            }
        }

        // Outbound. Every packet the workload sends enters ISTIO_OUTPUT (UDP too, for DNS).
        add("OUTPUT", format!("-j {ISTIO_OUTPUT}"));
        for port in &self.exclude_outbound_ports {
            add(ISTIO_OUTPUT, format!("-p tcp --dport {port} -j RETURN"));
            add(ISTIO_OUTPUT, format!("-p udp --dport {port} -j RETURN"));
        }
        // The inbound proxy reaches the application from 127.0.0.6 over lo: not captured again.
        add(
            ISTIO_OUTPUT,
            format!("-o lo -s {INBOUND_PASSTHROUGH_SOURCE} -j RETURN"),
        );
        // The proxy reaching this workload's own address over lo (the application called
        // itself through a service address, so outbound chose this very pod): send it through
        // inbound capture, as a call from any other workload would be.
        let skip_ports = if self.redirect_dns {
            format!("-m multiport ! --dports 53,{}", self.inbound_tunnel_port)
        } else {
            format!("! --dport {}", self.inbound_tunnel_port)
        };
        for identity in &self.proxy_identities {
            add(
                ISTIO_OUTPUT,
                format!(
                    "-o lo ! -d {LOCALHOST} -p tcp {skip_ports} {} -j {ISTIO_IN_REDIRECT}",
                    identity.matcher()
                ),
            );
        }
        // Anything else the proxy sends is never captured: that would loop back to itself.
        for identity in &self.proxy_identities {
            add(ISTIO_OUTPUT, format!("{} -j RETURN", identity.matcher()));
        }
        // The application talking to itself over lo (localhost or its own address) is not
        // captured, as in Istio; unless loopback was asked for explicitly.
        if !self.includes_loopback() {
            if self.redirect_dns {
                add(
                    ISTIO_OUTPUT,
                    "-o lo -p tcp ! --dport 53 -j RETURN".to_owned(),
                );
            } else {
                add(ISTIO_OUTPUT, "-o lo -j RETURN".to_owned());
            }
        }
        if self.redirect_dns {
            add(ISTIO_OUTPUT, format!("-j {ISTIO_OUTPUT_DNS}"));
            for protocol in ["tcp", "udp"] {
                add(
                    ISTIO_OUTPUT_DNS,
                    format!(
                        "-p {protocol} --dport 53 -j REDIRECT --to-ports {}",
                        self.dns_port
                    ),
                );
            }
        }
        add(ISTIO_OUTPUT, format!("-d {LOCALHOST} -j RETURN"));
        for range in &self.exclude_outbound_ip_ranges {
            add(ISTIO_OUTPUT, format!("-d {range} -j RETURN"));
        }
        for port in &self.outbound_ports {
            add(
                ISTIO_OUTPUT,
                format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}"),
            );
        }
        match &self.outbound_ip_ranges {
            OutboundRanges::All => add(ISTIO_OUTPUT, format!("-j {ISTIO_REDIRECT}")),
            OutboundRanges::Only(ranges) => {
                for range in ranges {
                    add(ISTIO_OUTPUT, format!("-d {range} -j {ISTIO_REDIRECT}"));
                }
            }
        }
        Ok(rules)
    }

    fn includes_loopback(&self) -> bool {
        match &self.outbound_ip_ranges {
            OutboundRanges::All => false,
            OutboundRanges::Only(ranges) => ranges.iter().any(|r| r.addr().is_loopback()),
        }
    }
}

/// What a namespace's `iptables-save -t nat` says about our chains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Our chains that exist.
    pub chains: BTreeSet<String>,
    /// Rules in other chains that jump to ours, as `iptables-save` printed them (`-A ...`).
    pub jumps: Vec<String>,
}

impl Installed {
    /// Reads the nat table section of `iptables-save` output.
    pub fn parse(save: &str) -> Installed {
        let mut installed = Installed::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
                continue;
            }
            if !in_nat {
                continue;
            }
            if let Some(declaration) = line.strip_prefix(':') {
                let name = declaration.split_whitespace().next().unwrap_or_default();
                if CHAINS.contains(&name) {
                    installed.chains.insert(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = rule.split_whitespace();
                let chain = words.next().unwrap_or_default();
                if CHAINS.contains(&chain) {
                    continue;
                }
                let mut target = None;
                while let Some(word) = words.next() {
                    if word == "-j" || word == "-g" {
                        target = words.next();
                    }
                }
                if target.is_some_and(|t| CHAINS.contains(&t)) {
                    installed.jumps.push(line.to_owned());
                }
            }
        }
        installed
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// The one `iptables-restore --noflush` transaction that installs `options` over what is
/// there: our chains are (re)declared, which flushes them; old jumps into them are deleted;
/// chains these options no longer need are deleted; then the rules are appended.
pub fn install_script(options: &CaptureOptions, current: &Installed) -> Result<String, RulesError> {
    let rules = options.rules()?;
    let wanted = options.chains();
    let stale: Vec<&String> = current
        .chains
        .iter()
        .filter(|chain| !wanted.contains(&chain.as_str()))
        .collect();
    let mut script = String::from("*nat\n");
    for chain in &wanted {
        script.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for chain in &stale {
        script.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in &current.jumps {
        script.push_str(&format!("-D {}\n", &jump["-A ".len()..]));
    }
    for chain in &stale {
        script.push_str(&format!("-X {chain}\n"));
    }
    for rule in rules {
        script.push_str(&rule);
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    Ok(script)
}

/// The transaction that removes every chain of ours and every jump into them, or `None` when
/// there is nothing to remove.
pub fn remove_script(current: &Installed) -> Option<String> {
    if current.is_empty() {
        return None;
    }
    let mut script = String::from("*nat\n");
    for chain in &current.chains {
        script.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in &current.jumps {
        script.push_str(&format!("-D {}\n", &jump["-A ".len()..]));
    }
    for chain in &current.chains {
        script.push_str(&format!("-X {chain}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(rules: &[String], needle: &str) -> usize {
        rules
            .iter()
            .position(|r| r == needle)
            .unwrap_or_else(|| panic!("no rule {needle:?} in\n{}", rules.join("\n")))
    }

    #[test]
    fn defaults_are_istios_chains_and_ports() {
        let rules = CaptureOptions::default().rules().unwrap();
        for rule in [
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            "-A OUTPUT -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ] {
            position(&rules, rule);
        }
        // Health, metrics, admin and Prometheus ports are excluded before the catch-all.
        let redirect = position(&rules, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
        for port in [15000, 15020, 15021, 15090] {
            let exclude = position(
                &rules,
                &format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"),
            );
            assert!(exclude < redirect, "port {port} excluded too late");
        }
        assert!(
            !rules.iter().any(|r| r.contains("15053")),
            "DNS is off by default"
        );
        assert_eq!(
            CaptureOptions::default().chains(),
            vec![
                ISTIO_INBOUND,
                ISTIO_REDIRECT,
                ISTIO_IN_REDIRECT,
                ISTIO_OUTPUT
            ]
        );
    }

    #[test]
    fn the_proxys_own_traffic_returns_before_any_redirect() {
        let rules = CaptureOptions::default().rules().unwrap();
        let catch_all = position(&rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
        for matcher in [
            "-m owner --uid-owner 1337",
            "-m owner --gid-owner 1337",
            "-m mark --mark 1337",
        ] {
            let ret = position(&rules, &format!("-A ISTIO_OUTPUT {matcher} -j RETURN"));
            assert!(ret < catch_all, "{matcher} returns after the redirect");
            // Only the proxy reaching this pod's own address over lo goes to inbound capture.
            let self_call = position(
                &rules,
                &format!(
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 {matcher} -j ISTIO_IN_REDIRECT"
                ),
            );
            assert!(self_call < ret);
        }
        // The rules for one identity never short-circuit another's (Istio emits
        // `-o lo ! --uid-owner X -j RETURN` per uid, which hides a second uid's self-calls):
        // the application's own lo traffic returns only after every proxy rule.
        let app_lo = position(&rules, "-A ISTIO_OUTPUT -o lo -j RETURN");
        let last_proxy_rule = rules
            .iter()
            .rposition(|r| r.contains("--mark 1337") || r.contains("-owner 1337"))
            .unwrap();
        assert!(app_lo > last_proxy_rule);
    }

    #[test]
    fn passthrough_source_and_localhost_are_not_captured() {
        let rules = CaptureOptions::default().rules().unwrap();
        let passthrough = position(&rules, "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN");
        let first_in_redirect = rules
            .iter()
            .position(|r| r.starts_with("-A ISTIO_OUTPUT") && r.ends_with("ISTIO_IN_REDIRECT"))
            .unwrap();
        assert!(
            passthrough < first_in_redirect,
            "127.0.0.6 must return before the proxy's lo traffic is sent to inbound"
        );
        let localhost = position(&rules, "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN");
        assert!(localhost < position(&rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
    }

    #[test]
    fn ranges_ports_and_exclusions_follow_the_options() {
        let options = CaptureOptions {
            proxy_identities: vec![ProxyIdentity::Uid(7), ProxyIdentity::Uid(8)],
            inbound_ports: InboundPorts::Only(vec![8080, 9090]),
            exclude_inbound_ports: vec![9090, 15021],
            outbound_ip_ranges: OutboundRanges::Only(vec!["10.96.0.0/12".parse().unwrap()]),
            exclude_outbound_ip_ranges: vec!["10.100.0.0/16".parse().unwrap()],
            exclude_outbound_ports: vec![5432],
            outbound_ports: vec![443],
            ..CaptureOptions::default()
        };
        let rules = options.rules().unwrap();
        assert!(!rules.contains(&"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".to_owned()));
        position(
            &rules,
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
        );
        // An excluded port listed for capture stays excluded: its RETURN comes first.
        assert!(
            position(&rules, "-A ISTIO_INBOUND -p tcp --dport 9090 -j RETURN")
                < position(
                    &rules,
                    "-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT"
                )
        );
        assert_eq!(
            options.excluded_inbound_ports(),
            vec![15000, 15020, 15021, 15090, 9090]
        );
        let include = position(&rules, "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT");
        assert!(position(&rules, "-A ISTIO_OUTPUT -d 10.100.0.0/16 -j RETURN") < include);
        assert!(position(&rules, "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN") < include);
        position(&rules, "-A ISTIO_OUTPUT -p udp --dport 5432 -j RETURN");
        position(
            &rules,
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j ISTIO_REDIRECT",
        );
        assert!(!rules.contains(&"-A ISTIO_OUTPUT -j ISTIO_REDIRECT".to_owned()));
        position(&rules, "-A ISTIO_OUTPUT -m owner --uid-owner 8 -j RETURN");
        assert!(!rules.iter().any(|r| r.contains("-m mark")));
    }

    #[test]
    fn no_inbound_ports_means_no_inbound_capture() {
        let options = CaptureOptions {
            inbound_ports: InboundPorts::Only(Vec::new()),
            ..CaptureOptions::default()
        };
        let rules = options.rules().unwrap();
        assert!(!rules.iter().any(|r| r.starts_with("-A PREROUTING")));
        position(&rules, "-A OUTPUT -j ISTIO_OUTPUT");
    }

    #[test]
    fn dns_redirect_sends_port_53_to_the_dns_proxy_but_not_the_proxys_own_queries() {
        let options = CaptureOptions {
            redirect_dns: true,
            ..CaptureOptions::default()
        };
        let rules = options.rules().unwrap();
        let jump = position(&rules, "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS");
        position(
            &rules,
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053",
        );
        position(
            &rules,
            "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
        );
        assert!(
            position(
                &rules,
                "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
            ) < jump
        );
        // The application's TCP DNS to a resolver on lo is still redirected.
        assert!(
            position(
                &rules,
                "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -j RETURN"
            ) < jump
        );
        position(
            &rules,
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m mark --mark 1337 -j ISTIO_IN_REDIRECT",
        );
        assert!(options.chains().contains(&ISTIO_OUTPUT_DNS));
    }

    #[test]
    fn loopback_in_the_outbound_ranges_keeps_lo_traffic_capturable() {
        let options = CaptureOptions {
            outbound_ip_ranges: OutboundRanges::Only(vec!["127.0.0.0/8".parse().unwrap()]),
            ..CaptureOptions::default()
        };
        let rules = options.rules().unwrap();
        assert!(!rules.contains(&"-A ISTIO_OUTPUT -o lo -j RETURN".to_owned()));
    }

    #[test]
    fn without_a_proxy_identity_nothing_is_generated() {
        let options = CaptureOptions {
            proxy_identities: Vec::new(),
            ..CaptureOptions::default()
        };
        assert_eq!(options.rules(), Err(RulesError::NoProxyIdentity));
        assert!(install_script(&options, &Installed::default()).is_err());
    }

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
COMMIT
*filter
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
COMMIT
";

    #[test]
    fn installed_state_is_read_from_the_nat_table_only() {
        let installed = Installed::parse(SAVED);
        assert_eq!(
            installed
                .chains
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec![ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_OUTPUT_DNS]
        );
        assert_eq!(
            installed.jumps,
            vec![
                "-A PREROUTING -p tcp -j ISTIO_INBOUND".to_owned(),
                "-A OUTPUT -j ISTIO_OUTPUT".to_owned()
            ]
        );
        assert!(Installed::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").is_empty());
    }

    #[test]
    fn install_over_an_old_install_replaces_it_in_one_transaction() {
        let script = install_script(&CaptureOptions::default(), &Installed::parse(SAVED)).unwrap();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        assert_eq!(script.matches("COMMIT").count(), 1);
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| *l == needle)
                .unwrap_or_else(|| panic!("no {needle:?} in\n{script}"))
        };
        // The old jumps go before the new ones are added, so exactly one of each remains.
        assert!(
            at("-D PREROUTING -p tcp -j ISTIO_INBOUND")
                < at("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        );
        assert!(at("-D OUTPUT -j ISTIO_OUTPUT") < at("-A OUTPUT -j ISTIO_OUTPUT"));
        // The DNS chain is no longer wanted: flushed, then deleted.
        assert!(at(":ISTIO_OUTPUT_DNS - [0:0]") < at("-X ISTIO_OUTPUT_DNS"));
        assert!(
            !script.contains("KUBE-SERVICES"),
            "other chains are left alone"
        );
    }

    #[test]
    fn remove_deletes_every_jump_and_chain_and_nothing_else() {
        let script = remove_script(&Installed::parse(SAVED)).unwrap();
        assert_eq!(
            script,
            "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_OUTPUT_DNS - [0:0]\n\
             -D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -j ISTIO_OUTPUT\n\
             -X ISTIO_INBOUND\n-X ISTIO_OUTPUT\n-X ISTIO_OUTPUT_DNS\nCOMMIT\n"
        );
        assert_eq!(remove_script(&Installed::default()), None);
    }
}
