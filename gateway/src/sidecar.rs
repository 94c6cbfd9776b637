//! What `strait run --role sidecar` adds to the gateway's flags: the workload it fronts and its
//! capture ports. Its mesh identity (which it must have) comes from `identity`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use strait_discovery::compile::SidecarOptions;

/// The sidecar's flags.
#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// The workload this sidecar fronts, `NAMESPACE/NAME`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub workload: Option<String>,
    /// Where captured outbound connections arrive (iptables REDIRECT).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Where captured inbound connections arrive.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// How the workload's traffic reaches the sidecar (Istio's interception mode): `REDIRECT`
    /// (iptables, `strait capture install`) or `NONE` (no capture: Sidecar resource listeners
    /// with `captureMode: DEFAULT` bind their own ports).
    #[arg(long, default_value = "REDIRECT", value_parser = ["REDIRECT", "NONE"], ignore_case = true)]
    pub interception_mode: String,
    /// The workload's own IP: where a Sidecar ingress listener's `defaultEndpoint:
    /// 0.0.0.0:PORT` forwards. For the egress gateway: one of its own addresses, so that a
    /// route back to it is refused as a loop.
    #[arg(long, value_name = "IP")]
    pub instance_ip: Option<IpAddr>,
    /// Serve an explicit HTTP proxy on 127.0.0.1:PORT for applications that set `HTTP_PROXY`
    /// (absolute-form requests and CONNECT tunnels to the services the outbound side sees), as
    /// a Sidecar egress listener of protocol `HTTP_PROXY` does.
    #[arg(long, value_name = "PORT")]
    pub http_proxy_port: Option<u16>,
    /// The DNS proxy's address (UDP and TCP): it answers the mesh's names (and, under
    /// capture, the VIPs of address-less ServiceEntry hosts) and forwards the rest to the
    /// upstream resolvers (`--dns-server`, else /etc/resolv.conf); `off` disables it.
    #[arg(long, value_name = "ADDR|off", default_value = strait_discovery::dns_proxy::DEFAULT_DNS_PROXY)]
    pub dns_proxy: String,
}

/// The workload a sidecar fronts.
#[derive(Clone, Debug)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
}

impl SidecarArgs {
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let Some(text) = &self.workload else {
            bail!("--role sidecar needs --workload NAMESPACE/NAME");
        };
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(Workload {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            _ => bail!("--workload {text:?} is not NAMESPACE/NAME"),
        }
    }

    /// Where the DNS proxy listens; `None` when it is off.
    pub fn dns_proxy(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.dns_proxy.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.dns_proxy
            .parse()
            .map(Some)
            .with_context(|| format!("--dns-proxy {:?} is not IP:PORT or off", self.dns_proxy))
    }

    /// What the sidecar's snapshot is compiled for.
    pub fn options(
        &self,
        workload: &Workload,
        labels: BTreeMap<String, String>,
        domain_suffix: &str,
        service_account: &str,
    ) -> SidecarOptions {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        SidecarOptions {
            namespace: workload.namespace.clone(),
            labels,
            domain_suffix: domain_suffix.to_owned(),
            outbound: SocketAddr::new(any, self.outbound_port),
            inbound: SocketAddr::new(any, self.inbound_port),
            captured: !self.interception_mode.eq_ignore_ascii_case("NONE"),
            instance_ip: self.instance_ip,
            workload_name: workload.name.clone(),
            service_account: service_account.to_owned(),
            http_proxy: self
                .http_proxy_port
                .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            dns: Default::default(),
            network: None,
            locality: None,
        }
    }
}
