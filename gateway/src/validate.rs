//! `strait validate PATH...`: reads Istio configuration and prints what Istio would reject, what
//! Strait ignores, and what looks wrong between objects, then a summary line. Exits 1 when any
//! finding is an error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::json;
use strait_discovery::findings::{Finding, Level, Tally};
use strait_discovery::resources::LoadOptions;
use strait_discovery::validation::{Report, ValidateOptions, validate_paths};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and directories to read (directories recursively: *.yaml, *.yml, *.json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The namespace of objects that name none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The suffix short host names resolve under.
    #[arg(long, default_value = "cluster.local")]
    domain_suffix: String,
    /// Labels of a gateway proxy that will run (as `strait run --labels`), e.g.
    /// `istio=ingressgateway`; repeat for several gateways.
    #[arg(long = "gateway-labels", value_name = "K=V,...")]
    gateway_labels: Vec<String>,
    /// The least severe level to print; the summary counts every finding.
    #[arg(long, value_enum, default_value_t = MinLevel::Info)]
    level: MinLevel,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MinLevel {
    Info,
    Warning,
    Error,
}

impl MinLevel {
    fn admits(self, level: Level) -> bool {
        match self {
            MinLevel::Info => true,
            MinLevel::Warning => level != Level::Info,
            MinLevel::Error => level == Level::Error,
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let gateway_labels = args
        .gateway_labels
        .iter()
        .map(|text| crate::args::parse_labels("--gateway-labels", text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load = LoadOptions {
        default_namespace: args.namespace.clone(),
    };
    let options = ValidateOptions {
        domain_suffix: args.domain_suffix.clone(),
        gateway_labels,
    };
    let report = validate_paths(&args.paths, &load, &options);
    let tally = Tally::of(&report.findings);
    let shown: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| args.level.admits(f.level))
        .collect();
    let mut out = io::stdout().lock();
    match args.format {
        Format::Text => print_text(&mut out, &report, &shown, tally),
        Format::Json => print_json(&mut out, &report, &shown, tally),
    }
    .context("writing the report")?;
    Ok(if tally.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(report: &Report, tally: Tally) -> String {
    let mut line = format!(
        "{} objects, {} errors, {} warnings",
        report.objects, tally.errors, tally.warnings
    );
    if tally.infos > 0 {
        line.push_str(&format!(", {} infos", tally.infos));
    }
    line
}

fn print_text(
    out: &mut impl Write,
    report: &Report,
    shown: &[&Finding],
    tally: Tally,
) -> io::Result<()> {
    for finding in shown {
        writeln!(out, "{finding}")?;
    }
    writeln!(out, "{}", summary(report, tally))
}

fn print_json(
    out: &mut impl Write,
    report: &Report,
    shown: &[&Finding],
    tally: Tally,
) -> io::Result<()> {
    let findings: Vec<serde_json::Value> = shown
        .iter()
        .map(|f| {
            json!({
                "level": f.level.as_str(),
                "code": f.code,
                "file": f.file.as_deref(),
                "line": f.position.is_known().then_some(f.position.line),
                "column": f.position.is_known().then_some(f.position.column),
                "kind": f.object.as_ref().map(|o| o.kind.as_str()),
                "namespace": f.object.as_ref().map(|o| o.namespace.as_str()).filter(|n| !n.is_empty()),
                "name": f.object.as_ref().map(|o| o.name.as_str()).filter(|n| !n.is_empty()),
                "field": (!f.field.is_empty()).then_some(f.field.as_str()),
                "message": f.message,
            })
        })
        .collect();
    let document = json!({
        "objects": report.objects,
        "errors": tally.errors,
        "warnings": tally.warnings,
        "infos": tally.infos,
        "findings": findings,
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}
