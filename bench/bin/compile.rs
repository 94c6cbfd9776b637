//! How long a large ingress configuration takes to become a snapshot, and how much memory that
//! takes: writes [`strait_bench::config::gateway_files`] into a directory, then, as `strait run`
//! does at start and on every reload, reads and validates it (`DirectorySource::read`) and
//! compiles it (`compile_gateway`). Then, as a reload after one file changed does, reads it again
//! and compiles it again. Prints one line of `key=value` pairs; times are medians.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use strait_bench::config::{ROUTES_PER_SERVICE, gateway_files};
use strait_discovery::compile::{GatewayOptions, compile_gateway};
use strait_discovery::findings::Level;
use strait_discovery::resources::LoadOptions;
use strait_discovery::source::DirectorySource;
use strait_discovery::validation::ValidateOptions;

#[derive(Debug, Parser)]
#[command(
    name = "bench-compile",
    about = "Time compiling a large ingress configuration"
)]
struct Args {
    /// Services (a ServiceEntry and a VirtualService each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Services per file.
    #[arg(long, default_value_t = 100)]
    per_file: usize,
    /// The directory to write the configuration into (its YAML files are replaced).
    #[arg(long)]
    dir: PathBuf,
    /// Only write the configuration.
    #[arg(long)]
    write_only: bool,
    /// Times to read and compile it.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    for entry in std::fs::read_dir(&args.dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::remove_file(path)?;
        }
    }
    let files = gateway_files(args.services, args.per_file);
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    for (name, text) in &files {
        std::fs::write(args.dir.join(name), text)?;
    }
    if args.write_only {
        println!(
            "services={} files={} bytes={bytes}",
            args.services,
            files.len()
        );
        return Ok(());
    }
    drop(files);
    // What is measured starts here: the peak of generating the files is not Strait's.
    reset_peak_rss();

    let labels = BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]);
    let options = GatewayOptions::default();
    let (mut read_times, mut compile_times) = (Vec::new(), Vec::new());
    let mut summary = String::new();
    let mut last_source = None;
    for _ in 0..args.runs.max(1) {
        // Each run starts from nothing, as `strait run` does.
        drop(last_source.take());
        let start = Instant::now();
        let mut source = DirectorySource::new(
            vec![args.dir.clone()],
            LoadOptions::default(),
            ValidateOptions {
                domain_suffix: options.domain_suffix.clone(),
                gateway_labels: vec![labels.clone()],
            },
        );
        let revision = source.read();
        let read = start.elapsed();
        let compiled = compile_gateway(&revision.objects, &options, 1);
        let compile = start.elapsed() - read;
        read_times.push(read);
        compile_times.push(compile);

        let routes: usize = compiled
            .snapshot
            .route_tables
            .values()
            .flat_map(|table| &table.virtual_hosts)
            .map(|host| host.routes.len())
            .sum();
        let errors = revision
            .findings
            .iter()
            .chain(&compiled.findings)
            .filter(|f| f.level == Level::Error)
            .count();
        if errors > 0 {
            let first = revision
                .findings
                .iter()
                .chain(&compiled.findings)
                .find(|f| f.level == Level::Error);
            return Err(format!("the generated configuration has errors: {first:?}").into());
        }
        summary = format!(
            "services={} objects={} routes={routes} expected_routes={} clusters={} files={} bytes={bytes}",
            args.services,
            revision.objects.len(),
            args.services * ROUTES_PER_SERVICE,
            compiled.snapshot.clusters.len(),
            args.services.div_ceil(args.per_file.max(1)) + 1,
        );
        drop((revision, compiled));
        last_source = Some(source);
    }
    // A reload after one file changed: that file is read again, everything is compiled again.
    let (mut reread_times, mut recompile_times) = (Vec::new(), Vec::new());
    if let (Some(mut source), Some((name, _))) = (last_source, gateway_files(1, 1).get(1)) {
        let changed = args.dir.join(name);
        let original = std::fs::read_to_string(&changed)?;
        for run in 0..args.runs.max(1) {
            std::fs::write(&changed, format!("{original}\n# change {run}\n"))?;
            let start = Instant::now();
            let revision = source.read();
            let read = start.elapsed();
            let compiled = compile_gateway(&revision.objects, &options, 2);
            recompile_times.push(start.elapsed() - read);
            reread_times.push(read);
            drop((revision, compiled));
        }
        std::fs::write(&changed, original)?;
    }
    println!(
        "{summary} read_ms={:.0} compile_ms={:.0} total_ms={:.0} reread_ms={:.0} recompile_ms={:.0} peak_rss_mib={:.1}",
        ms(median(&read_times)),
        ms(median(&compile_times)),
        ms(median(&read_times) + median(&compile_times)),
        ms(median(&reread_times)),
        ms(median(&recompile_times)),
        peak_rss_kib()? as f64 / 1024.0,
    );
    Ok(())
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Starts `VmHWM` again from the current resident set (`/proc/self/clear_refs`); where that is
/// not allowed, the peak includes what came before, and the measurement overstates.
fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("bench-compile: the peak RSS includes generating the files ({error})");
    }
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("VmHWM has no value")?
        .parse()?)
}
