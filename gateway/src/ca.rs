//! `strait ca`: the cluster's certificate authority from the command line. `init` creates it
//! (or takes Istio's plug-in CA files), `token` mints a one-time bootstrap token for a
//! workload, `sign` signs a CSR made elsewhere (the normal path for a VM or another proxy),
//! `issue` makes a key and certificate for a workload that cannot make its own CSR (the one
//! case where a key travels), `bundle` prints the trust bundle proxies start from, and
//! `request` bootstraps a workload over gRPC from a running CA service with a one-time token
//! (what a VM runs once: the key is made here and written only here). `rotate` replaces the
//! root with two overlapping anchors: `prepare` (publish the new root beside the old one),
//! `switch` (sign with the new intermediate; a running control role picks it up and proxies
//! renew onto it at once), `finish` (withdraw the old root), and `status`.
//!
//! The CA lives in `DATA/ca` as files (key files readable by their owner only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use strait_certs::authority::files;
use strait_certs::authority::root_rotation::{self, RotationStatus};
use strait_certs::bundle::certs_to_pem;
use strait_certs::service::{IdentityClient, control_id};
use strait_certs::{
    Authority, AuthorityOptions, CertificateRequest, SpiffeId, TokenLedger, TrustBundle,
    TrustDomain, fs,
};

use crate::args::parse_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Where Strait keeps its state; the CA is in its `ca` folder.
    #[arg(long, global = true, default_value = ".strait")]
    data: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create the CA: a root and an online issuing intermediate, or Istio's plug-in CA files.
    Init {
        /// The trust domain the CA issues identities in.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// A folder with Istio's plug-in CA files (`ca-cert.pem`, `ca-key.pem`,
        /// `root-cert.pem`, `cert-chain.pem`): a shared root with this cluster's intermediate.
        #[arg(long, value_name = "DIR")]
        plug_in: Option<PathBuf>,
        /// How long the workload certificates it issues live by default.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        workload_ttl: Duration,
    },
    /// Print a one-time bootstrap token that entitles its holder to one identity.
    Token {
        /// The identity, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
        #[arg(long)]
        identity: String,
        /// How long the token may be redeemed.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        ttl: Duration,
    },
    /// Sign a certificate signing request (PEM or DER) for an identity; prints the chain (PEM).
    Sign {
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        #[arg(long)]
        spiffe_id: String,
        /// The certificate's lifetime; the CA's default when unset.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Make a key and a certificate for an identity and write `key.pem`, `cert-chain.pem` and
    /// `root-cert.pem` (the trust bundle) to a folder.
    Issue {
        #[arg(long)]
        spiffe_id: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Print the CA's trust bundle: PEM, or the SPIFFE bundle JSON.
    Bundle {
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
    },
    /// Ask a running CA service for a certificate with a one-time bootstrap token; writes
    /// `key.pem`, `cert-chain.pem` and `root-cert.pem` to a folder.
    Request {
        /// The CA service, `HOST:PORT` (the control role's `--ca-listen`).
        #[arg(long, value_name = "HOST:PORT")]
        ca_address: String,
        /// The trust bundle to verify the CA with (PEM, or SPIFFE bundle JSON).
        #[arg(long, value_name = "FILE")]
        trust_bundle: PathBuf,
        /// The identity the token was minted for.
        #[arg(long)]
        spiffe_id: String,
        /// A file holding the bootstrap token (`strait ca token`).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA service's identity; `spiffe://TD/ns/istio-system/sa/strait-control` when
        /// unset.
        #[arg(long)]
        ca_identity: Option<String>,
        /// The lifetime asked for; the CA's default when unset.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Replace the CA's root without a failed request: `prepare`, `switch`, then `finish`.
    Rotate {
        #[command(subcommand)]
        step: RotateStep,
    },
}

#[derive(Debug, clap::Subcommand)]
enum RotateStep {
    /// Make a new root and intermediate (in `DATA/ca/next`) and add the new root to the
    /// published trust bundle: proxies following the CA then trust both roots.
    Prepare,
    /// Sign with the new intermediate from now on (the replaced files wait in
    /// `DATA/ca/previous`); a running control role loads it and proxies renew onto it at once.
    /// Run it once every proxy has the two-root bundle.
    Switch,
    /// Remove the old root from the published trust bundle. Refused while certificates issued
    /// under the old root may still be valid.
    Finish {
        /// Finish although certificates issued under the old root may still be valid (every
        /// workload has renewed since the switch).
        #[arg(long)]
        force: bool,
        /// The longest lifetime the CA granted (the control role's `--workload-ttl`); the
        /// CA's own maximum when unset.
        #[arg(long, value_parser = parse_duration)]
        max_workload_ttl: Option<Duration>,
    },
    /// Show where a rotation stands and the roots published.
    Status,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BundleFormat {
    Pem,
    Spiffe,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let dir = args.data.join("ca");
    match &args.command {
        Command::Init {
            trust_domain,
            plug_in,
            workload_ttl,
        } => {
            let trust_domain = TrustDomain::new(trust_domain)
                .with_context(|| format!("--trust-domain {trust_domain}"))?;
            let options = AuthorityOptions {
                default_workload_ttl: *workload_ttl,
                ..AuthorityOptions::default()
            };
            let authority = match plug_in {
                Some(source) => Authority::plug_in(trust_domain, source, &dir, &options),
                None => Authority::init(trust_domain, &dir, &options),
            }
            .with_context(|| format!("creating the CA in {}", dir.display()))?;
            println!(
                "CA for trust domain {} in {}",
                authority.trust_domain(),
                dir.display()
            );
        }
        Command::Token { identity, ttl } => {
            let authority = load(&dir)?;
            let id = workload_id(identity, &authority)?;
            let ledger = TokenLedger::open_in(&dir)
                .with_context(|| format!("opening the token ledger in {}", dir.display()))?;
            emit(&format!("{}\n", ledger.mint(&id, *ttl)?))?;
        }
        Command::Sign {
            csr,
            spiffe_id,
            ttl,
        } => {
            let authority = load(&dir)?;
            let id = workload_id(spiffe_id, &authority)?;
            let bytes = std::fs::read(csr).with_context(|| format!("reading {}", csr.display()))?;
            let der = match CertificateSigningRequestDer::from_pem_slice(&bytes) {
                Ok(der) => der.as_ref().to_vec(),
                Err(_) => bytes,
            };
            let issued = authority
                .sign_csr(&der, &id, ttl.unwrap_or(Duration::ZERO))
                .with_context(|| format!("signing {}", csr.display()))?;
            emit(&issued.chain_pem)?;
        }
        Command::Issue {
            spiffe_id,
            out,
            ttl,
        } => {
            let authority = load(&dir)?;
            let id = workload_id(spiffe_id, &authority)?;
            let lifetime = issue_into(&authority, &id, ttl.unwrap_or(Duration::ZERO), out)?;
            println!(
                "{id}: key.pem, cert-chain.pem and root-cert.pem in {} (valid for {} s)",
                out.display(),
                lifetime.as_secs()
            );
        }
        Command::Request {
            ca_address,
            trust_bundle,
            spiffe_id,
            token_file,
            out,
            ca_identity,
            ttl,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(request(&Request {
                ca_address,
                trust_bundle,
                spiffe_id,
                token_file,
                out,
                ca_identity: ca_identity.as_deref(),
                ttl: ttl.unwrap_or(Duration::ZERO),
            }))?;
        }
        Command::Rotate { step } => {
            // Not `load`: a switch interrupted half-way does not load, and running it again is
            // how it completes.
            if !dir.join(files::AUTHORITY).exists() {
                bail!(
                    "no CA in {}: create one with `strait ca init --trust-domain TD`",
                    dir.display()
                );
            }
            let status = match step {
                RotateStep::Prepare => root_rotation::prepare(&dir, &AuthorityOptions::default())
                    .context("rotate prepare")?,
                RotateStep::Switch => root_rotation::switch(&dir).context("rotate switch")?,
                RotateStep::Finish {
                    force,
                    max_workload_ttl,
                } => root_rotation::finish(&dir, *force, *max_workload_ttl)
                    .context("rotate finish")?,
                RotateStep::Status => root_rotation::status(&dir)?,
            };
            println!("{}", describe(&status, !matches!(step, RotateStep::Status)));
        }
        Command::Bundle { format } => {
            let bundle = load(&dir)?.trust_bundle();
            match format {
                BundleFormat::Pem => emit(&bundle.to_pem())?,
                BundleFormat::Spiffe => emit(&format!("{}\n", bundle.to_spiffe_json()?))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Request<'a> {
    ca_address: &'a str,
    trust_bundle: &'a Path,
    spiffe_id: &'a str,
    token_file: &'a Path,
    out: &'a Path,
    ca_identity: Option<&'a str>,
    ttl: Duration,
}

/// Bootstraps over gRPC; writes nothing unless the CA issued a chain that matches the key.
async fn request(args: &Request<'_>) -> Result<()> {
    let id: SpiffeId = args
        .spiffe_id
        .parse()
        .with_context(|| format!("--spiffe-id {}", args.spiffe_id))?;
    let trust_domain = id.trust_domain();
    let text = std::fs::read_to_string(args.trust_bundle)
        .with_context(|| format!("reading {}", args.trust_bundle.display()))?;
    let bundle = TrustBundle::parse(trust_domain.clone(), &text)
        .with_context(|| format!("reading the trust bundle {}", args.trust_bundle.display()))?;
    let token = std::fs::read_to_string(args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let server_id = match args.ca_identity {
        Some(text) => text
            .parse()
            .with_context(|| format!("--ca-identity {text}"))?,
        None => control_id(&trust_domain)?,
    };
    let client = IdentityClient::connect(args.ca_address, bundle.clone(), server_id).await?;
    let request = CertificateRequest::new(&id)?;
    let issued = client
        .create_certificate(&request, Some(token.trim()), args.ttl)
        .await
        .with_context(|| format!("asking the CA at {} for {id}", args.ca_address))?;
    let key_pem = request.private_key_pem();
    let svid = request
        .into_svid(issued.chain.clone(), issued.issued_at)
        .context("the CA's answer")?;

    let out = args.out;
    fs::create_private_dir(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str, mode: u32| {
        let path = out.join(name);
        fs::write_atomic(&path, text.as_bytes(), mode)
            .with_context(|| format!("writing {}", path.display()))
    };
    write("key.pem", &key_pem, 0o600)?;
    write("cert-chain.pem", &certs_to_pem(svid.chain()), 0o644)?;
    write("root-cert.pem", &bundle.to_pem(), 0o644)?;
    let lifetime = svid
        .not_after()
        .duration_since(svid.issued_at())
        .unwrap_or_default();
    println!(
        "{}: key.pem, cert-chain.pem and root-cert.pem in {} (valid for {} s)",
        svid.id(),
        out.display(),
        lifetime.as_secs()
    );
    Ok(())
}

/// Makes a key and a certificate for `id` (the CA's default lifetime for a zero `ttl`) and
/// writes `key.pem` (owner-only), `cert-chain.pem` and `root-cert.pem` into `out`, the layout
/// `--identity-dir` reads; returns the certificate's lifetime.
pub(crate) fn issue_into(
    authority: &Authority,
    id: &SpiffeId,
    ttl: Duration,
    out: &Path,
) -> Result<Duration> {
    let (key, issued) = authority.issue(id, ttl)?;
    fs::create_private_dir(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str, mode: u32| {
        let path = out.join(name);
        fs::write_atomic(&path, text.as_bytes(), mode)
            .with_context(|| format!("writing {}", path.display()))
    };
    write("key.pem", &key, 0o600)?;
    write("cert-chain.pem", &issued.chain_pem, 0o644)?;
    write("root-cert.pem", &authority.trust_bundle().to_pem(), 0o644)?;
    Ok(issued
        .not_after
        .duration_since(issued.issued_at)
        .unwrap_or_default())
}

fn load(dir: &Path) -> Result<Authority> {
    if !dir.exists() {
        bail!(
            "no CA in {}: create one with `strait ca init --trust-domain TD`",
            dir.display()
        );
    }
    Authority::load(dir).with_context(|| format!("loading the CA in {}", dir.display()))
}

/// One line on where a rotation stands (after a step when `step`).
fn describe(status: &RotationStatus, step: bool) -> String {
    let phase = status
        .phase
        .map_or("no rotation".to_owned(), |p| format!("rotation {p}"));
    let mut line = format!(
        "{phase}: {} root(s) published, bundle sequence {}",
        status.bundle.roots.len(),
        status.bundle.sequence
    );
    if step && !status.changed {
        line.push_str(" (nothing changed)");
    }
    if let Some(until) = status.old_leaves_valid_until {
        let secs = until
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        line.push_str(&format!(
            "; certificates under the old root may be valid until {secs} (Unix time)"
        ));
    }
    line
}

/// A workload identity in the CA's own trust domain.
fn workload_id(text: &str, authority: &Authority) -> Result<SpiffeId> {
    let id: SpiffeId = text.parse().with_context(|| format!("SPIFFE ID {text}"))?;
    if &id.trust_domain() != authority.trust_domain() {
        bail!(
            "{id} is not in this CA's trust domain {}",
            authority.trust_domain()
        );
    }
    Ok(id)
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("writing to standard output")
        }
        _ => Ok(()),
    }
}
