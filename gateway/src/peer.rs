//! `strait link` and `strait peer`: peering made explicit.
//!
//! `strait link`, run in the cluster to be peered with, prints the Peer document the other
//! cluster applies: this cluster's name, trust domain, network, east-west address, bundle
//! endpoint and its SPIFFE ID (all given, nothing inferred), and this cluster's current bundle
//! for first contact (from the CA in `--data`, or `--trust-bundle`). `strait peer apply -f FILE`
//! stores it under `DATA/peers` (refusing a peer of the local trust domain, or whose bundle
//! speaks for another), `list` shows the peers with their latest bundle, `remove` forgets one,
//! and `reset-sequence` makes the next bundle fetched from a peer be accepted whatever its
//! sequence (after that peer legitimately started its sequence over).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use strait_certs::authority::files;
use strait_certs::{Authority, TrustBundle, TrustDomain, published_trust_bundle};
use strait_federation::peer::{Peer, PeerFields, parse_peer};
use strait_federation::peer_store::{Applied, PeerStore};

/// `strait link`'s flags.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// This cluster's name, as the other side will know it (a DNS label).
    #[arg(long)]
    name: String,
    /// This cluster's trust domain.
    #[arg(long)]
    trust_domain: String,
    /// This cluster's network (Istio's network name).
    #[arg(long)]
    network: String,
    /// This cluster's east-west gateway as the other side reaches it, `HOST:PORT` (15443).
    #[arg(long, value_name = "HOST:PORT")]
    eastwest: String,
    /// This cluster's SPIFFE bundle endpoint, `https://HOST:15446`.
    #[arg(long, value_name = "URL")]
    bundle_endpoint: String,
    /// The SPIFFE ID the bundle endpoint presents (in this cluster's trust domain); the
    /// east-west gateway serves it, so it is also the ID the gateway's QUIC trunk presents.
    #[arg(long, value_name = "SPIFFE_ID")]
    bundle_endpoint_id: String,
    /// Ask the other side's east-west gateways to keep a QUIC trunk to this cluster's (UDP on
    /// the `--eastwest` address).
    #[arg(long)]
    trunk: bool,
    /// The bundle to hand over (SPIFFE bundle JSON, or PEM roots); the CA's in `--data` when
    /// unset.
    #[arg(long, value_name = "FILE")]
    trust_bundle: Option<PathBuf>,
    /// Where Strait keeps its state; the CA is in its `ca` folder.
    #[arg(long, default_value = ".strait")]
    data: PathBuf,
}

/// `strait peer`'s flags.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    command: PeerCommand,
    /// Where Strait keeps its state; peers are in its `peers` folder.
    #[arg(long, global = true, default_value = ".strait")]
    data: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum PeerCommand {
    /// Store a Peer document (as `strait link` printed it in the other cluster).
    Apply {
        /// The Peer document.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// The local trust domain (a peer may not have it); the CA's in `--data` when unset.
        #[arg(long)]
        local_trust_domain: Option<String>,
        /// Take the document's bundle even when a newer one is stored (the operator's override
        /// after the peer reset its CA).
        #[arg(long)]
        replace_bundle: bool,
    },
    /// List the peers and their latest bundles.
    List,
    /// Forget a peer: its definition and bundles (its trust domain is no longer trusted).
    Remove { name: String },
    /// Accept the next bundle fetched from a peer whatever its sequence (once).
    ResetSequence { name: String },
}

pub fn link(args: &LinkArgs) -> Result<ExitCode> {
    let trust_domain = TrustDomain::new(&args.trust_domain)
        .with_context(|| format!("--trust-domain {}", args.trust_domain))?;
    let bundle = match &args.trust_bundle {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            TrustBundle::parse(trust_domain.clone(), &text)
                .with_context(|| format!("the trust bundle {}", path.display()))?
        }
        None => {
            let dir = ca_dir(&args.data)?;
            let bundle = published_trust_bundle(&dir)
                .with_context(|| format!("reading the CA's bundle in {}", dir.display()))?;
            if bundle.trust_domain != trust_domain {
                bail!(
                    "--trust-domain {trust_domain}: the CA in {} is for trust domain {}",
                    dir.display(),
                    bundle.trust_domain
                );
            }
            bundle
        }
    };
    let peer = Peer::from_fields(PeerFields {
        name: args.name.clone(),
        trust_domain: args.trust_domain.clone(),
        network: args.network.clone(),
        eastwest_address: args.eastwest.clone(),
        bundle_endpoint_url: args.bundle_endpoint.clone(),
        bundle_endpoint_id: args.bundle_endpoint_id.clone(),
        trust_bundle: bundle.to_spiffe_json()?,
        trunk: args.trunk,
    })?;
    crate::ca::emit(&peer.to_yaml()?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: &PeerArgs) -> Result<ExitCode> {
    let store = PeerStore::new(&args.data);
    match &args.command {
        PeerCommand::Apply {
            file,
            local_trust_domain,
            replace_bundle,
        } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let peer = parse_peer(&text, &file.display().to_string())?;
            let local = match local_trust_domain {
                Some(td) => {
                    TrustDomain::new(td).with_context(|| format!("--local-trust-domain {td}"))?
                }
                None => {
                    let dir = ca_dir(&args.data)
                        .context("the local trust domain is needed: give --local-trust-domain")?;
                    Authority::load(&dir)
                        .with_context(|| format!("loading the CA in {}", dir.display()))?
                        .trust_domain()
                        .clone()
                }
            };
            let applied = store
                .apply(&peer, &local, *replace_bundle)
                .with_context(|| format!("applying {}", file.display()))?;
            let latest = store.get(&peer.name)?.latest;
            let what = match applied {
                Applied::Created => "created",
                Applied::UpdatedBundle => "updated",
                Applied::KeptLatest(_) => {
                    "updated (the stored bundle is at least as new and stays)"
                }
            };
            println!(
                "peer {} (trust domain {}) {what}; bundle sequence {} with {} root(s) in {}",
                peer.name,
                peer.trust_domain,
                latest.sequence,
                latest.roots.len(),
                store.bundle_path(&peer.name).display()
            );
        }
        PeerCommand::List => {
            let peers = store.list()?;
            let mut out = String::from(
                "NAME\tTRUST DOMAIN\tNETWORK\tEAST-WEST\tBUNDLE ENDPOINT\tENDPOINT ID\tSEQUENCE\tROOTS\n",
            );
            for stored in peers {
                let p = &stored.peer;
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}{}\n",
                    p.name,
                    p.trust_domain,
                    p.network,
                    p.eastwest_address,
                    p.bundle_endpoint.url,
                    p.bundle_endpoint.spiffe_id,
                    stored.latest.sequence,
                    stored.latest.roots.len(),
                    if store.sequence_reset_requested(&p.name) {
                        "\t(sequence reset pending)"
                    } else {
                        ""
                    }
                ));
            }
            crate::ca::emit(&out)?;
        }
        PeerCommand::Remove { name } => {
            let removed = store.remove(name)?;
            println!(
                "peer {name} removed; trust domain {} is no longer trusted",
                removed.peer.trust_domain
            );
        }
        PeerCommand::ResetSequence { name } => {
            store.request_sequence_reset(name)?;
            println!("the next bundle fetched from peer {name} is accepted whatever its sequence");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `DATA/ca`, when it holds a CA.
fn ca_dir(data: &Path) -> Result<PathBuf> {
    let dir = data.join("ca");
    if !dir.join(files::AUTHORITY).exists() {
        bail!(
            "no CA in {}: create one with `strait ca init --trust-domain TD`",
            dir.display()
        );
    }
    Ok(dir)
}
