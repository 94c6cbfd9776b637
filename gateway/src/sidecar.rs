//! What `strait run --role sidecar` adds to the gateway's flags: the workload it fronts, its
//! capture ports, and the mesh identity it proxies with.
//!
//! The identity comes from the cluster's CA (`--ca-address`): the key is made here, a one-time
//! bootstrap token (`--bootstrap-token-file`, from `strait ca token`) gets the first
//! certificate, which is then renewed at half its lifetime (with jitter) by presenting itself,
//! and the CA's stream of trust bundles is followed. Or it comes from files (`--identity-dir`,
//! as `strait ca issue` or `strait ca request` write them: `key.pem`, `cert-chain.pem`,
//! `root-cert.pem`), read again on SIGHUP and when they change. Either way a renewed
//! certificate or a new root reaches new handshakes without a restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use strait_certs::service::{IdentityClient, RetryOptions, control_id};
use strait_certs::{IdentityCell, SpiffeId, Svid, TrustBundle, TrustBundleSet, TrustDomain};
use strait_discovery::compile::SidecarOptions;
use strait_proxy::tls::mesh::MeshIdentity;

/// The sidecar's flags.
#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// The workload this sidecar fronts, `NAMESPACE/NAME`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub workload: Option<String>,
    /// The workload's service account: its identity is
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// A folder with the workload's `key.pem`, `cert-chain.pem` and `root-cert.pem`.
    #[arg(long, value_name = "DIR", conflicts_with = "ca_address")]
    pub identity_dir: Option<PathBuf>,
    /// The CA service (`strait run --role control`) to get and renew the identity from.
    #[arg(long, value_name = "HOST:PORT", requires = "trust_bundle")]
    pub ca_address: Option<String>,
    /// A file holding a one-time bootstrap token for the first certificate.
    #[arg(long, value_name = "FILE", requires = "ca_address")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The mesh's trust domain (with `--ca-address`; from the certificate otherwise).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The trust bundle to start from (PEM, or SPIFFE bundle JSON); `root-cert.pem` of the
    /// identity folder when unset.
    #[arg(long, value_name = "FILE")]
    pub trust_bundle: Option<PathBuf>,
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
    /// 0.0.0.0:PORT` forwards.
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
            service_account: self.service_account.clone(),
            http_proxy: self
                .http_proxy_port
                .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            dns: Default::default(),
        }
    }

    /// The mesh identity: from the CA (and kept renewed by a task), or from the identity
    /// folder, checked against the workload's expected ID.
    pub async fn identity(
        &self,
        workload: &Workload,
        socket_mark: Option<u32>,
    ) -> anyhow::Result<MeshIdentity> {
        if let Some(address) = &self.ca_address {
            return self.identity_from_ca(address, workload, socket_mark).await;
        }
        let Some(dir) = &self.identity_dir else {
            bail!(
                "--role sidecar needs --ca-address (with --bootstrap-token-file) or --identity-dir"
            );
        };
        let (svid, bundle) = self.read_identity(dir)?;
        let expected = SpiffeId::istio(
            &svid.id().trust_domain(),
            &workload.namespace,
            &self.service_account,
        )
        .context("the workload's SPIFFE ID")?;
        if *svid.id() != expected {
            bail!(
                "{}: the certificate is for {}, but this workload runs as {expected} (--workload, --service-account)",
                dir.display(),
                svid.id()
            );
        }
        let bundles = TrustBundleSet::from_bundles([bundle])
            .context("the trust bundle")?
            .into_shared();
        Ok(MeshIdentity {
            cell: Arc::new(IdentityCell::new(svid)),
            bundles,
        })
    }

    async fn identity_from_ca(
        &self,
        address: &str,
        workload: &Workload,
        socket_mark: Option<u32>,
    ) -> anyhow::Result<MeshIdentity> {
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .with_context(|| format!("--trust-domain {}", self.trust_domain))?;
        let id = SpiffeId::istio(&trust_domain, &workload.namespace, &self.service_account)
            .context("the workload's SPIFFE ID")?;
        let bundle = self.read_bundle(&trust_domain)?;
        let server = control_id(&trust_domain).context("the CA's SPIFFE ID")?;
        let client = IdentityClient::connect_marked(address, bundle, server, socket_mark)
            .await
            .with_context(|| format!("the CA at {address}"))?;
        let Some(token_file) = &self.bootstrap_token_file else {
            bail!("--ca-address needs --bootstrap-token-file for the first certificate");
        };
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let svid = client
            .bootstrap(&id, token.trim())
            .await
            .with_context(|| format!("getting a certificate for {id} from {address}"))?;
        tracing::info!(%id, ca = %address, "certificate issued");
        let cell = Arc::new(IdentityCell::new(svid));
        let bundles = client.bundles();
        let renewing = client.clone();
        let renewed = cell.clone();
        tokio::spawn(async move {
            if let Err(error) = renewing
                .keep_renewed(renewed, RetryOptions::default())
                .await
            {
                tracing::error!(
                    "{error}; mesh mTLS handshakes fail until the proxy has a certificate again"
                );
            }
        });
        let following = bundles.clone();
        tokio::spawn(async move {
            client
                .follow_bundles(following, RetryOptions::default())
                .await;
        });
        Ok(MeshIdentity { cell, bundles })
    }

    /// The trust bundle file (`--trust-bundle`), PEM or SPIFFE bundle JSON.
    fn read_bundle(&self, trust_domain: &TrustDomain) -> anyhow::Result<TrustBundle> {
        let Some(path) = &self.trust_bundle else {
            bail!("--ca-address needs --trust-bundle (from `strait ca bundle`)");
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        TrustBundle::parse(trust_domain.clone(), &text)
            .with_context(|| format!("the trust bundle {}", path.display()))
    }

    /// Reads the identity files again and installs them when they changed.
    pub fn refresh(&self, identity: &MeshIdentity) -> anyhow::Result<()> {
        let Some(dir) = self
            .identity_dir
            .as_ref()
            .filter(|_| self.ca_address.is_none())
        else {
            return Ok(());
        };
        let (svid, bundle) = self.read_identity(dir)?;
        if identity
            .cell
            .current()
            .is_none_or(|c| c.leaf() != svid.leaf())
        {
            tracing::info!(identity = %svid.id(), "installing a renewed certificate");
            identity.cell.install(svid);
        }
        let bundles = TrustBundleSet::from_bundles([bundle]).context("the trust bundle")?;
        identity.bundles.store(Arc::new(bundles));
        Ok(())
    }

    fn read_identity(&self, dir: &Path) -> anyhow::Result<(Svid, TrustBundle)> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let chain = read(&dir.join("cert-chain.pem"))?;
        let key = read(&dir.join("key.pem"))?;
        let svid = Svid::from_pem(&chain, &key)
            .with_context(|| format!("the identity in {}", dir.display()))?;
        let bundle_path = self
            .trust_bundle
            .clone()
            .unwrap_or_else(|| dir.join("root-cert.pem"));
        let text = read(&bundle_path)?;
        let bundle = TrustBundle::parse(svid.id().trust_domain(), &text)
            .with_context(|| format!("the trust bundle {}", bundle_path.display()))?;
        Ok((svid, bundle))
    }
}
