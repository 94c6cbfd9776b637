//! `strait proxy-config listeners|routes|clusters|endpoints`: what a running Strait serves, read
//! from its admin endpoint's `/config_dump` and printed as tables (as `istioctl proxy-config`
//! prints Envoy's) or as JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::ValueEnum;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum)]
    section: Section,
    /// The admin endpoint of the running instance.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let dump = runtime.block_on(fetch(args.admin))?;
    let (json, table) = match args.section {
        Section::Listeners => (&dump["snapshot"]["listeners"], listeners(&dump)),
        Section::Routes => (&dump["snapshot"]["route_tables"], routes(&dump)),
        Section::Clusters => (&dump["snapshot"]["clusters"], clusters(&dump)),
        Section::Endpoints => (&dump["endpoints"], endpoints(&dump)),
    };
    let text = match args.output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(json)?),
        Output::Table => table,
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing the output")?;
    Ok(ExitCode::SUCCESS)
}

async fn fetch(admin: SocketAddr) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| {
            format!("connecting to the admin endpoint {admin} (is strait running?)")
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get("/config_dump")
        .header(http::header::HOST, admin.to_string())
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("{admin}/config_dump answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("reading /config_dump")
}

/// Fixed-width columns, each as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// An externally tagged enum's variant name (`"plaintext"` or `{"terminate": ...}`).
fn variant(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) => map.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

fn listeners(dump: &Value) -> String {
    let mut rows = Vec::new();
    for listener in dump["snapshot"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for chain in listener["filter_chains"].as_array().into_iter().flatten() {
            let names: Vec<String> = chain["server_names"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let destination = match &chain["application"] {
                Value::Object(app) if app.contains_key("http") => {
                    format!("Route: {}", text(&app["http"]["route_table"]))
                }
                Value::Object(app) => {
                    let routes = app["tcp"]["routes"].as_array().map_or(0, Vec::len);
                    format!("TCP: {routes} routes")
                }
                _ => "-".to_owned(),
            };
            rows.push(vec![
                text(&listener["name"]),
                text(&chain["name"]),
                if names.is_empty() {
                    "*".to_owned()
                } else {
                    names.join(",")
                },
                variant(&chain["transport"]),
                destination,
            ]);
        }
    }
    table(
        &["LISTENER", "CHAIN", "SNI", "TRANSPORT", "DESTINATION"],
        rows,
    )
}

fn routes(dump: &Value) -> String {
    let mut rows = Vec::new();
    for (name, route_table) in dump["snapshot"]["route_tables"]
        .as_object()
        .into_iter()
        .flatten()
    {
        for host in route_table["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let domains: Vec<String> = host["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            for route in host["routes"].as_array().into_iter().flatten() {
                rows.push(vec![
                    name.clone(),
                    domains.join(","),
                    match_summary(&route["matches"]),
                    text(&route["name"]),
                    action_summary(&route["action"]),
                ]);
            }
            if host["routes"].as_array().is_none_or(Vec::is_empty) {
                let action = if host["require_tls"] == Value::Bool(true) {
                    "redirect to https"
                } else {
                    "404"
                };
                rows.push(vec![
                    name.clone(),
                    domains.join(","),
                    "*".to_owned(),
                    "-".to_owned(),
                    action.to_owned(),
                ]);
            }
        }
    }
    table(
        &["ROUTE TABLE", "DOMAINS", "MATCH", "ROUTE", "ACTION"],
        rows,
    )
}

fn match_summary(matches: &Value) -> String {
    let blocks: Vec<String> = matches
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match &m["path"] {
            Value::Object(path) => path
                .iter()
                .next()
                .map(|(kind, value)| format!("{} ({kind})", text(value)))
                .unwrap_or_default(),
            _ => "/*".to_owned(),
        })
        .collect();
    if blocks.is_empty() {
        "/*".to_owned()
    } else {
        blocks.join(" | ")
    }
}

fn action_summary(action: &Value) -> String {
    let Value::Object(action) = action else {
        return "-".to_owned();
    };
    if let Some(forward) = action.get("forward") {
        let clusters: Vec<String> = forward["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {}%", text(&c["cluster"]), text(&c["weight"])))
            .collect();
        return clusters.join(", ");
    }
    if let Some(redirect) = action.get("redirect") {
        return format!("redirect {}", text(&redirect["status"]));
    }
    if let Some(direct) = action.get("direct_response") {
        return format!("direct response {}", text(&direct["status"]));
    }
    "-".to_owned()
}

fn clusters(dump: &Value) -> String {
    let mut rows = Vec::new();
    for (name, cluster) in dump["snapshot"]["clusters"]
        .as_object()
        .into_iter()
        .flatten()
    {
        rows.push(vec![
            name.clone(),
            variant(&cluster["lb"]),
            cluster["endpoints"]
                .as_array()
                .map_or(0, Vec::len)
                .to_string(),
            variant(&cluster["tls"]),
            text(&cluster["protocol"]),
        ]);
    }
    table(&["CLUSTER", "LB", "ENDPOINTS", "TLS", "PROTOCOL"], rows)
}

fn endpoints(dump: &Value) -> String {
    let mut rows = Vec::new();
    for (cluster, list) in dump["endpoints"].as_object().into_iter().flatten() {
        for endpoint in list.as_array().into_iter().flatten() {
            rows.push(vec![
                text(&endpoint["address"]),
                text(&endpoint["health"]),
                text(&endpoint["active_requests"]),
                text(&endpoint["priority"]),
                text(&endpoint["locality"]),
                cluster.clone(),
            ]);
        }
    }
    table(
        &[
            "ENDPOINT", "STATUS", "ACTIVE", "PRIORITY", "LOCALITY", "CLUSTER",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_summaries_read_the_dump() {
        let dump = serde_json::json!({
            "snapshot": {
                "listeners": [{"name": "0.0.0.0_8080", "filter_chains": [
                    {"name": "http", "server_names": [], "transport": "plaintext",
                     "application": {"http": {"route_table": "http.80"}}}]}],
                "route_tables": {"http.80": {"virtual_hosts": [{"domains": ["a.com"], "routes": [
                    {"name": "r", "matches": [{"path": {"prefix": "/api"}}],
                     "action": {"forward": {"clusters": [{"cluster": "outbound|80||a", "weight": 100}]}}}]}]}},
                "clusters": {}
            },
            "endpoints": {"outbound|80||a": [{"address": "10.0.0.1:80", "health": "HEALTHY", "active_requests": 0, "priority": 1, "locality": "us-east/a"}]}
        });
        let listeners = listeners(&dump);
        assert!(
            listeners.contains("0.0.0.0_8080  http   *    plaintext  Route: http.80"),
            "{listeners}"
        );
        let routes = routes(&dump);
        assert!(
            routes.contains("/api (prefix)") && routes.contains("outbound|80||a 100%"),
            "{routes}"
        );
        let endpoints = endpoints(&dump);
        assert!(
            endpoints.contains("10.0.0.1:80  HEALTHY") && endpoints.contains("1         us-east/a"),
            "{endpoints}"
        );
    }
}
