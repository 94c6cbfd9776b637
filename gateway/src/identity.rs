//! The proxy's mesh identity (its SVID and trust bundles), shared by the sidecar and the
//! gateways: a gateway with an identity terminates `ISTIO_MUTUAL` servers and its peers see
//! its SPIFFE ID, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
//!
//! The identity comes from the cluster's CA (`--ca-address`): the key is made here, a one-time
//! bootstrap token (`--bootstrap-token-file`, from `strait ca token`) gets the first
//! certificate, which is then renewed at half its lifetime (with jitter) by presenting itself,
//! and the CA's stream of trust bundles is followed. Or it comes from files (`--identity-dir`,
//! as `strait ca issue` or `strait ca request` write them: `key.pem`, `cert-chain.pem`,
//! `root-cert.pem`, and the bundles of federated trust domains as `federated/TRUST_DOMAIN.json`
//! or `.pem`, the layout of the CA's own federated folder), read again on SIGHUP and when they
//! change. Either way a renewed
//! certificate or a new root reaches new handshakes without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use strait_certs::service::{IdentityClient, RetryOptions, control_id};
use strait_certs::{IdentityCell, SpiffeId, Svid, TrustBundle, TrustBundleSet, TrustDomain};
use strait_proxy::tls::mesh::MeshIdentity;

/// How long a proxy of the CA service waits at start for the CA's first bundle snapshot.
const FIRST_BUNDLES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The identity flags.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// The service account the proxy runs as (the sidecar's workload, or the gateway): its
    /// identity is
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// A folder with the proxy's `key.pem`, `cert-chain.pem` and `root-cert.pem`, and
    /// optionally `federated/TRUST_DOMAIN.json` (SPIFFE bundle JSON, or PEM in `.pem`): the
    /// bundles of other trust domains whose identities the proxy accepts.
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
}

impl IdentityArgs {
    /// Whether an identity is configured (`--ca-address` or `--identity-dir`).
    pub fn configured(&self) -> bool {
        self.ca_address.is_some() || self.identity_dir.is_some()
    }

    /// The mesh identity of a proxy in `namespace` running as `--service-account`: from the CA
    /// (and kept renewed by a task), or from the identity folder, checked against that ID.
    pub async fn identity(
        &self,
        namespace: &str,
        socket_mark: Option<u32>,
    ) -> anyhow::Result<MeshIdentity> {
        if let Some(address) = &self.ca_address {
            return self.identity_from_ca(address, namespace, socket_mark).await;
        }
        let Some(dir) = &self.identity_dir else {
            bail!(
                "a mesh identity needs --ca-address (with --bootstrap-token-file) or --identity-dir"
            );
        };
        let (svid, bundles) = self.read_identity(dir)?;
        let expected = SpiffeId::istio(&svid.id().trust_domain(), namespace, &self.service_account)
            .context("the proxy's SPIFFE ID")?;
        if *svid.id() != expected {
            bail!(
                "{}: the certificate is for {}, but this proxy runs as {expected} (its namespace, --service-account)",
                dir.display(),
                svid.id()
            );
        }
        let bundles = TrustBundleSet::from_bundles(bundles)
            .context("the trust bundles")?
            .into_shared();
        Ok(MeshIdentity {
            cell: Arc::new(IdentityCell::new(svid)),
            bundles,
        })
    }

    async fn identity_from_ca(
        &self,
        address: &str,
        namespace: &str,
        socket_mark: Option<u32>,
    ) -> anyhow::Result<MeshIdentity> {
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .with_context(|| format!("--trust-domain {}", self.trust_domain))?;
        let id = SpiffeId::istio(&trust_domain, namespace, &self.service_account)
            .context("the proxy's SPIFFE ID")?;
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
        let follower = client.clone();
        tokio::spawn(async move {
            follower
                .follow_bundles(following, RetryOptions::default())
                .await;
        });
        // Start from what the CA publishes (its sequence, the federated bundles), not only
        // from --trust-bundle, unless the stream is slow to come.
        if !client.first_bundles(FIRST_BUNDLES_WAIT).await {
            tracing::warn!(
                wait = ?FIRST_BUNDLES_WAIT,
                "no trust bundles from the CA yet: starting from --trust-bundle; the stream's bundles apply when they come"
            );
        }
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
        let (svid, bundles) = self.read_identity(dir)?;
        if identity
            .cell
            .current()
            .is_none_or(|c| c.leaf() != svid.leaf())
        {
            tracing::info!(identity = %svid.id(), "installing a renewed certificate");
            identity.cell.install(svid);
        }
        let bundles = TrustBundleSet::from_bundles(bundles).context("the trust bundles")?;
        let current = identity.bundles.load_full();
        for bundle in bundles.bundles() {
            if current.get(&bundle.trust_domain) != Some(bundle) {
                tracing::info!(
                    trust_domain = %bundle.trust_domain,
                    sequence = bundle.sequence,
                    roots = bundle.roots.len(),
                    "trust bundle applied from the identity files"
                );
            }
        }
        identity.bundles.store(Arc::new(bundles));
        Ok(())
    }

    /// The identity in `dir`, and the trust bundles: its own trust domain's first.
    fn read_identity(&self, dir: &Path) -> anyhow::Result<(Svid, Vec<TrustBundle>)> {
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
        let mut bundles = vec![bundle];
        bundles.extend(read_federated(
            &dir.join(FEDERATED_DIR),
            &svid.id().trust_domain(),
        )?);
        Ok((svid, bundles))
    }
}

/// The folder of an identity folder holding other trust domains' bundles.
const FEDERATED_DIR: &str = "federated";

/// The bundles in `folder` (none if it does not exist): `TRUST_DOMAIN.json` or
/// `TRUST_DOMAIN.pem` each, in order of name. A file that does not parse, or that names `own`,
/// is an error naming the file.
fn read_federated(folder: &Path, own: &TrustDomain) -> anyhow::Result<Vec<TrustBundle>> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", folder.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "pem"))
        .collect();
    paths.sort();
    let mut bundles = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let trust_domain = TrustDomain::new(name)
            .with_context(|| format!("{}: the file name must be a trust domain", path.display()))?;
        if trust_domain == *own {
            bail!(
                "{}: names the proxy's own trust domain, whose bundle is root-cert.pem",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let bundle = TrustBundle::parse(trust_domain, &text)
            .with_context(|| format!("the federated bundle {}", path.display()))?;
        bundles.push(bundle);
    }
    Ok(bundles)
}

#[cfg(test)]
mod federated_tests {
    use super::*;

    #[test]
    fn federated_bundles_are_read_by_trust_domain_and_the_own_domain_is_refused() {
        let dir = std::env::temp_dir().join(format!("strait-federated-{}", std::process::id()));
        let folder = dir.join(FEDERATED_DIR);
        std::fs::create_dir_all(&folder).unwrap();
        let own = TrustDomain::new("east.mesh").unwrap();
        assert!(
            read_federated(&dir.join("absent"), &own)
                .unwrap()
                .is_empty()
        );
        let west = strait_certs::Authority::init(
            TrustDomain::new("west.mesh").unwrap(),
            &dir.join("west-ca"),
            &strait_certs::AuthorityOptions::default(),
        )
        .unwrap();
        std::fs::write(folder.join("west.mesh.pem"), west.trust_bundle().to_pem()).unwrap();
        std::fs::write(folder.join("notes.txt"), "ignored").unwrap();
        let bundles = read_federated(&folder, &own).unwrap();
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0].trust_domain.as_str(), "west.mesh");
        std::fs::write(folder.join("east.mesh.pem"), west.trust_bundle().to_pem()).unwrap();
        let error = read_federated(&folder, &own).unwrap_err();
        assert!(
            format!("{error:#}").contains("own trust domain"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
