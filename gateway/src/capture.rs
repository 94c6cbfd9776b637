//! `strait capture install|remove|show`: transparent traffic capture for the sidecar role, the
//! way Istio's init container (`istio-iptables`) sets it up, with the same chain names.
//!
//! Owns the command line and running `iptables-save` / `iptables-restore` / `iptables` (inside
//! `ip netns exec NAME` with `--netns`); the rules themselves are computed by [`rules`]. Only
//! IPv4 is captured for now: install warns when the namespace has IPv6 addresses, whose
//! traffic then bypasses the proxy.

pub mod rules;

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, anyhow, bail};
use ipnet::{IpNet, Ipv4Net};

use rules::{CaptureOptions, InboundPorts, Installed, OutboundRanges, ProxyIdentity};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Install the capture rules (replaces an earlier install; running it twice is harmless).
    Install(Box<InstallArgs>),
    /// Remove every capture chain and the jumps into them.
    Remove(RemoveArgs),
    /// Print the installed capture rules with their packet and byte counters.
    Show(Target),
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Work inside this network namespace (`ip netns exec NAME`) instead of the current one.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RemoveArgs {
    #[command(flatten)]
    target: Target,
    /// Print the iptables-restore input instead of applying it.
    #[arg(long)]
    dry_run: bool,
}

/// Flags are named like `istio-iptables`'s; its short flags and long names are accepted too.
#[derive(Debug, clap::Args)]
struct InstallArgs {
    #[command(flatten)]
    target: Target,
    /// Print the iptables-restore input instead of applying it.
    #[arg(long)]
    dry_run: bool,
    /// Port outbound traffic is redirected to.
    #[arg(
        short = 'p',
        long,
        visible_alias = "envoy-port",
        default_value_t = 15001
    )]
    proxy_port: u16,
    /// Port inbound traffic is redirected to.
    #[arg(short = 'z', long, default_value_t = 15006)]
    inbound_capture_port: u16,
    /// The HBONE tunnel port, never captured.
    #[arg(long, default_value_t = 15008)]
    inbound_tunnel_port: u16,
    /// User ids the proxy runs as (comma-separated; empty for none): their traffic is not captured.
    #[arg(short = 'u', long, default_value = "1337")]
    proxy_uid: String,
    /// Group ids the proxy runs with (comma-separated; empty for none).
    #[arg(short = 'g', long, default_value = "1337")]
    proxy_gid: String,
    /// Socket mark (SO_MARK) the proxy sets on its own connections; 0 for none. A proxy running
    /// as root is recognised by this mark.
    #[arg(long, default_value_t = 1337)]
    mark: u32,
    /// Inbound ports to capture: `*` for all, a comma-separated list, or empty for none.
    #[arg(
        short = 'b',
        long,
        visible_alias = "istio-inbound-ports",
        default_value = "*"
    )]
    inbound_ports: String,
    /// Inbound ports never captured, added to 15000, 15020, 15021 and 15090.
    #[arg(
        short = 'd',
        long,
        visible_alias = "istio-local-exclude-ports",
        default_value = ""
    )]
    exclude_inbound_ports: String,
    /// Outbound IPv4 ranges to capture: `*` for all, comma-separated CIDRs, or empty for none.
    #[arg(
        short = 'i',
        long,
        visible_alias = "istio-service-cidr",
        default_value = "*"
    )]
    outbound_ip_ranges: String,
    /// Outbound IPv4 ranges never captured (comma-separated CIDRs).
    #[arg(
        short = 'x',
        long,
        visible_alias = "istio-service-exclude-cidr",
        default_value = ""
    )]
    exclude_outbound_ip_ranges: String,
    /// Outbound destination ports never captured (comma-separated).
    #[arg(
        short = 'o',
        long,
        visible_alias = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    exclude_outbound_ports: String,
    /// Outbound destination ports captured whatever the destination (comma-separated).
    #[arg(
        short = 'q',
        long,
        visible_alias = "istio-outbound-ports",
        default_value = ""
    )]
    outbound_ports: String,
    /// Redirect DNS (port 53, UDP and TCP) to the DNS proxy.
    #[arg(long)]
    redirect_dns: bool,
    /// The DNS proxy's port.
    #[arg(long, default_value_t = 15053)]
    dns_port: u16,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        Action::Install(install) => run_install(install),
        Action::Remove(remove) => run_remove(remove),
        Action::Show(target) => run_show(target),
    }
}

fn run_install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let options = options(args)?;
    let netns = args.target.netns.as_deref();
    if args.dry_run {
        // Reading the current rules changes nothing; without them, show a fresh install.
        let current = match iptables_save(netns) {
            Ok(save) => Installed::parse(&save),
            Err(error) => {
                eprintln!(
                    "strait capture: cannot read the current rules ({error:#}); showing the rules for a namespace without capture"
                );
                Installed::default()
            }
        };
        print!("{}", rules::install_script(&options, &current)?);
        return Ok(ExitCode::SUCCESS);
    }
    warn_about_ipv6(netns);
    let current = Installed::parse(&iptables_save(netns)?);
    let script = rules::install_script(&options, &current)?;
    iptables_restore(netns, &script)?;
    println!(
        "capture installed{}: outbound -> {}, inbound -> {}{}; the proxy's own traffic is recognised by {}",
        where_(netns),
        options.proxy_port,
        options.inbound_capture_port,
        if options.redirect_dns {
            format!(", DNS -> {}", options.dns_port)
        } else {
            String::new()
        },
        describe_identities(&options.proxy_identities),
    );
    Ok(ExitCode::SUCCESS)
}

fn run_remove(args: &RemoveArgs) -> anyhow::Result<ExitCode> {
    let netns = args.target.netns.as_deref();
    let current = Installed::parse(&iptables_save(netns)?);
    let Some(script) = rules::remove_script(&current) else {
        if !args.dry_run {
            println!("no capture rules installed{}", where_(netns));
        }
        return Ok(ExitCode::SUCCESS);
    };
    if args.dry_run {
        print!("{script}");
        return Ok(ExitCode::SUCCESS);
    }
    iptables_restore(netns, &script)?;
    println!("capture removed{}", where_(netns));
    Ok(ExitCode::SUCCESS)
}

fn run_show(target: &Target) -> anyhow::Result<ExitCode> {
    let netns = target.netns.as_deref();
    let listing = output(
        command(
            netns,
            "iptables",
            &["-w", "-t", "nat", "-L", "-v", "-n", "-x"],
        ),
        None,
    )?;
    let shown = capture_chains(&listing);
    if shown.is_empty() {
        println!("no capture rules installed{}", where_(netns));
    } else {
        print!("{shown}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The blocks of an `iptables -L` listing that belong to capture: our chains, and the
/// built-in chains' rules that jump into them.
fn capture_chains(listing: &str) -> String {
    let mut shown = String::new();
    for block in listing.split("\n\n") {
        let block = block.trim_end_matches('\n');
        let Some(header) = block.lines().next() else {
            continue;
        };
        let name = header
            .strip_prefix("Chain ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        if rules::CHAINS.contains(&name) {
            shown.push_str(block);
            shown.push_str("\n\n");
            continue;
        }
        // A built-in chain: show its header, the column titles and only the jumps to ours.
        let mut lines = block.lines();
        let kept: Vec<&str> = lines
            .by_ref()
            .skip(2)
            .filter(|line| {
                line.split_whitespace()
                    .nth(2)
                    .is_some_and(|target| rules::CHAINS.contains(&target))
            })
            .collect();
        if !kept.is_empty() {
            for line in block.lines().take(2).chain(kept) {
                shown.push_str(line);
                shown.push('\n');
            }
            shown.push('\n');
        }
    }
    shown
}

fn options(args: &InstallArgs) -> anyhow::Result<CaptureOptions> {
    let mut proxy_identities = Vec::new();
    for uid in list(&args.proxy_uid) {
        let uid = uid
            .parse()
            .map_err(|e| anyhow!("--proxy-uid: {uid:?} is not a user id: {e}"))?;
        proxy_identities.push(ProxyIdentity::Uid(uid));
    }
    for gid in list(&args.proxy_gid) {
        let gid = gid
            .parse()
            .map_err(|e| anyhow!("--proxy-gid: {gid:?} is not a group id: {e}"))?;
        proxy_identities.push(ProxyIdentity::Gid(gid));
    }
    if args.mark != 0 {
        proxy_identities.push(ProxyIdentity::Mark(args.mark));
    }
    let inbound_ports = if args.inbound_ports.trim() == "*" {
        InboundPorts::All
    } else {
        InboundPorts::Only(ports("--inbound-ports", &args.inbound_ports)?)
    };
    let outbound_ip_ranges = if args.outbound_ip_ranges.trim() == "*" {
        OutboundRanges::All
    } else {
        OutboundRanges::Only(ranges("--outbound-ip-ranges", &args.outbound_ip_ranges)?)
    };
    Ok(CaptureOptions {
        proxy_port: args.proxy_port,
        inbound_capture_port: args.inbound_capture_port,
        inbound_tunnel_port: args.inbound_tunnel_port,
        proxy_identities,
        inbound_ports,
        exclude_inbound_ports: ports("--exclude-inbound-ports", &args.exclude_inbound_ports)?,
        outbound_ip_ranges,
        exclude_outbound_ip_ranges: ranges(
            "--exclude-outbound-ip-ranges",
            &args.exclude_outbound_ip_ranges,
        )?,
        exclude_outbound_ports: ports("--exclude-outbound-ports", &args.exclude_outbound_ports)?,
        outbound_ports: ports("--outbound-ports", &args.outbound_ports)?,
        redirect_dns: args.redirect_dns,
        dns_port: args.dns_port,
    })
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn ports(flag: &str, text: &str) -> anyhow::Result<Vec<u16>> {
    list(text)
        .map(|port| match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(anyhow!("{flag}: {port:?} is not a port (1-65535)")),
            Ok(port) => Ok(port),
        })
        .collect()
}

fn ranges(flag: &str, text: &str) -> anyhow::Result<Vec<Ipv4Net>> {
    list(text)
        .map(|range| {
            let net = range
                .parse::<IpNet>()
                .or_else(|_| range.parse::<IpAddr>().map(IpNet::from))
                .map_err(|e| anyhow!("{flag}: {range:?} is not a CIDR such as 10.0.0.0/8: {e}"))?;
            match net {
                IpNet::V4(net) => Ok(net.trunc()),
                IpNet::V6(_) => Err(anyhow!(
                    "{flag}: {range:?} is IPv6, and only IPv4 traffic is captured for now"
                )),
            }
        })
        .collect()
}

fn describe_identities(identities: &[ProxyIdentity]) -> String {
    identities
        .iter()
        .map(|identity| match identity {
            ProxyIdentity::Uid(uid) => format!("uid {uid}"),
            ProxyIdentity::Gid(gid) => format!("gid {gid}"),
            ProxyIdentity::Mark(mark) => format!("mark {mark}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn where_(netns: Option<&str>) -> String {
    netns.map(|n| format!(" in netns {n}")).unwrap_or_default()
}

/// IPv6 traffic is not captured yet; say so when it matters.
fn warn_about_ipv6(netns: Option<&str>) {
    let addresses = output(
        command(
            netns,
            "ip",
            &["-6", "-o", "addr", "show", "scope", "global"],
        ),
        None,
    );
    if let Ok(addresses) = addresses {
        let found: Vec<&str> = addresses
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3))
            .collect();
        if !found.is_empty() {
            eprintln!(
                "strait capture: warning: only IPv4 is captured for now; IPv6 traffic to and from {} bypasses the proxy",
                found.join(", ")
            );
        }
    }
}

fn iptables_save(netns: Option<&str>) -> anyhow::Result<String> {
    output(command(netns, "iptables-save", &["-t", "nat"]), None)
}

fn iptables_restore(netns: Option<&str>, script: &str) -> anyhow::Result<()> {
    output(
        command(netns, "iptables-restore", &["-w", "--noflush"]),
        Some(script),
    )
    .map(drop)
}

/// `program args`, or `ip netns exec NAME program args` inside a namespace.
fn command(netns: Option<&str>, program: &str, args: &[&str]) -> Command {
    match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, program]).args(args);
            command
        }
        None => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }
}

/// Runs a command to completion (feeding it `stdin`) and returns its stdout; a failure names
/// the command and carries its stderr.
fn output(mut command: Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("`{shown}` could not be started (is iptables installed?)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("`{shown}`: writing its input"))?;
    }
    let result = child
        .wait_with_output()
        .with_context(|| format!("`{shown}`: waiting for it"))?;
    if !result.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_options_and_bad_values_name_the_flag() {
        let list = ports("--exclude-inbound-ports", " 8080, 9090,").unwrap();
        assert_eq!(list, vec![8080, 9090]);
        let error = ports("--exclude-inbound-ports", "80,http")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--exclude-inbound-ports") && error.contains("http"),
            "{error}"
        );
        assert!(ports("--outbound-ports", "0").is_err());
        let nets = ranges("--exclude-outbound-ip-ranges", "10.1.2.3/8,192.168.1.1").unwrap();
        assert_eq!(
            nets,
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        let error = ranges("--outbound-ip-ranges", "fd00::/8")
            .unwrap_err()
            .to_string();
        assert!(error.contains("IPv6"), "{error}");
    }

    #[test]
    fn show_keeps_only_capture_chains_and_jumps() {
        let listing = "\
Chain PREROUTING (policy ACCEPT 3 packets, 180 bytes)
    pkts      bytes target     prot opt in     out     source               destination
       3      180 ISTIO_INBOUND  6    --  *      *       0.0.0.0/0            0.0.0.0/0

Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination

Chain OUTPUT (policy ACCEPT 1 packets, 60 bytes)
    pkts      bytes target     prot opt in     out     source               destination
       1       60 KUBE-X     0    --  *      *       0.0.0.0/0            0.0.0.0/0
       5      300 ISTIO_OUTPUT  0    --  *      *       0.0.0.0/0            0.0.0.0/0

Chain ISTIO_REDIRECT (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       2      120 REDIRECT   6    --  *      *       0.0.0.0/0            0.0.0.0/0            redir ports 15001
";
        let shown = capture_chains(listing);
        assert!(shown.contains("Chain PREROUTING") && shown.contains("ISTIO_INBOUND"));
        assert!(!shown.contains("Chain INPUT"), "{shown}");
        assert!(!shown.contains("KUBE-X"), "{shown}");
        assert!(shown.contains("       5      300 ISTIO_OUTPUT"), "{shown}");
        assert!(shown.contains("redir ports 15001"), "{shown}");
        assert_eq!(capture_chains("Chain INPUT (policy ACCEPT)\n  pkts\n"), "");
    }

    #[test]
    fn commands_run_inside_the_namespace_when_asked() {
        let inside = command(Some("pod-a"), "iptables-save", &["-t", "nat"]);
        assert_eq!(inside.get_program(), "ip");
        let args: Vec<_> = inside.get_args().collect();
        assert_eq!(
            args,
            ["netns", "exec", "pod-a", "iptables-save", "-t", "nat"]
        );
        let failing = command(None, "sh", &["-c", "echo no such chain >&2; exit 3"]);
        let error = output(failing, None).unwrap_err().to_string();
        assert!(error.starts_with("`sh -c echo"), "{error}");
        assert!(
            error.contains("exit status: 3") && error.contains("no such chain"),
            "{error}"
        );
        let missing = command(None, "strait-no-such-program", &[]);
        let error = output(missing, None).unwrap_err().to_string();
        assert!(error.contains("could not be started"), "{error}");
    }
}
