//! Parsers for command-line values shared by several commands: label sets, port maps and
//! durations written the way Istio writes them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};

/// `k=v,k2=v2` into a label map.
pub fn parse_labels(flag: &str, text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("{flag}: {pair:?} is not key=value");
        };
        labels.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(labels)
}

/// `SERVER_PORT=LISTEN_PORT`, e.g. `80=8080`.
pub fn parse_port_map(text: &str) -> anyhow::Result<(u32, u16)> {
    let (server, listen) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("--port: {text:?} is not SERVER_PORT=LISTEN_PORT"))?;
    let server = server
        .trim()
        .parse::<u32>()
        .map_err(|e| anyhow!("--port: server port {server:?}: {e}"))?;
    let listen = listen
        .trim()
        .parse::<u16>()
        .map_err(|e| anyhow!("--port: listen port {listen:?}: {e}"))?;
    Ok((server, listen))
}

/// A duration as Istio writes one (`100ms`, `5s`, `1m30s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    strait_discovery::resources::common::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 100ms, 5s or 1m30s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ports_parse_and_say_what_is_wrong() {
        let labels = parse_labels("--labels", "istio=ingressgateway, app=web").unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let error = parse_labels("--labels", "istio").unwrap_err().to_string();
        assert!(
            error.contains("--labels") && error.contains("key=value"),
            "{error}"
        );
        assert_eq!(parse_port_map("80=8080").unwrap(), (80, 8080));
        assert!(parse_port_map("80").is_err());
        assert!(parse_port_map("80=70000").is_err());
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert!(parse_duration("soon").is_err());
    }
}
