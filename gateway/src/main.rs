//! The `strait` binary: the appliance's command line.
//!
//! Owns the command line, process lifecycle and how roles are assembled from the crates below;
//! the work itself lives in those crates. `anyhow` is used here, at the edge, and nowhere below.

mod admin;
mod args;
mod ca;
mod capture;
mod control;
mod demo;
mod eastwest;
mod exports;
mod federation;
mod identity;
mod last_good;
mod logging;
mod peer;
mod proxy_config;
mod reload;
mod run;
mod sidecar;
mod trunk;
mod validate;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Strait: a multi-cluster gateway appliance for service meshes.
#[derive(Debug, Parser)]
#[command(name = "strait", version = version(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Two clusters linked into one mesh, in this process, on loopback: prints the curl
    /// commands that show a cross-cluster call, failover and egress.
    Demo(demo::Args),
    /// Run a role: serve Istio configuration as a gateway.
    Run(Box<run::Args>),
    /// Install, remove or show the iptables rules that capture a workload's traffic (sidecar).
    Capture(capture::Args),
    /// Show what a running instance serves: listeners, routes, clusters or endpoints.
    ProxyConfig(proxy_config::Args),
    /// Validate Istio configuration files and directories with Istio's rules.
    Validate(validate::Args),
    /// The cluster's certificate authority: create it, mint bootstrap tokens, sign and issue.
    Ca(ca::Args),
    /// Print the Peer document another cluster applies to federate with this one.
    Link(peer::LinkArgs),
    /// The peer clusters: apply a Peer document, list, remove, reset a bundle sequence.
    Peer(peer::PeerArgs),
    /// The trust exchange on its own: serve the bundle endpoint, poll the peers' endpoints.
    Federation(federation::Args),
    /// Print the version and the git commit this binary was built from.
    Version,
}

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("STRAIT_GIT_COMMIT"),
        ")"
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(*args),
        Command::Capture(args) => capture::run(&args),
        Command::ProxyConfig(args) => proxy_config::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Ca(args) => ca::run(&args),
        Command::Link(args) => peer::link(&args),
        Command::Peer(args) => peer::run(&args),
        Command::Federation(args) => federation::run(&args),
        Command::Version => {
            println!("strait {}", version());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("strait: {error:#}");
            ExitCode::from(2)
        }
    }
}
