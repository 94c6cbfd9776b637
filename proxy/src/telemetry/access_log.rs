//! The access log: one line per request (and per TCP connection) with Envoy's usual fields, the
//! response flags and a plain-language reason, as text or JSON. Lines are written off the
//! request path by a task fed through a bounded channel; when the writer falls behind, lines
//! are dropped and counted rather than slowing traffic.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// One request or connection, as logged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AccessLogEntry {
    #[serde(serialize_with = "rfc3339")]
    pub start_time: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    /// Why the proxy did what it did, when it made the response itself or something failed.
    pub reason: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    #[serde(rename = "duration")]
    pub duration_ms: u64,
    pub upstream_service_time: Option<u64>,
    pub x_forwarded_for: String,
    pub user_agent: String,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: String,
    pub downstream_local_address: Option<SocketAddr>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub requested_server_name: String,
    /// The verified SPIFFE ID of a mesh mTLS peer (Envoy's `DOWNSTREAM_PEER_URI_SAN`).
    pub downstream_peer_principal: String,
    pub route_name: String,
}

fn rfc3339<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&format_time(*time)),
        None => serializer.serialize_none(),
    }
}

/// `2026-11-22T09:15:04.123Z`.
pub fn format_time(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since.as_secs();
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl AccessLogEntry {
    /// Envoy's default text format, with the reason at the end.
    pub fn to_text(&self) -> String {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let address = |a: &Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}reason=\"{}\"",
            self.start_time
                .map(format_time)
                .unwrap_or_else(|| "-".to_owned()),
            or_dash(&self.method),
            or_dash(&self.path),
            or_dash(&self.protocol),
            self.response_code,
            or_dash(&self.response_flags),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            self.upstream_service_time
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            or_dash(&self.x_forwarded_for),
            or_dash(&self.user_agent),
            or_dash(&self.request_id),
            or_dash(&self.authority),
            address(&self.upstream_host),
            or_dash(&self.upstream_cluster),
            address(&self.downstream_local_address),
            address(&self.downstream_remote_address),
            or_dash(&self.requested_server_name),
            or_dash(&self.route_name),
            if self.downstream_peer_principal.is_empty() {
                String::new()
            } else {
                format!("peer=\"{}\" ", self.downstream_peer_principal)
            },
            self.reason.replace('"', "'"),
        )
    }
}

/// Lines waiting to be written; beyond this they are dropped.
const QUEUE: usize = 8192;

/// The access log's sending end. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    sender: Option<mpsc::Sender<AccessLogEntry>>,
    format: AccessLogFormat,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// An access log that writes nothing.
    pub fn disabled() -> AccessLog {
        AccessLog {
            sender: None,
            format: AccessLogFormat::Text,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the writer task; needs a Tokio runtime.
    pub fn start(target: AccessLogTarget, format: AccessLogFormat) -> std::io::Result<AccessLog> {
        let mut writer: Box<dyn Write + Send> = match &target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, mut receiver) = mpsc::channel::<AccessLogEntry>(QUEUE);
        tokio::task::spawn_blocking(move || {
            while let Some(entry) = receiver.blocking_recv() {
                let line = match format {
                    AccessLogFormat::Text => entry.to_text(),
                    AccessLogFormat::Json => serde_json::to_string(&entry).unwrap_or_default(),
                };
                if writeln!(writer, "{line}").is_err() {
                    break;
                }
                if receiver.is_empty() {
                    let _ = writer.flush();
                }
            }
            let _ = writer.flush();
        });
        Ok(AccessLog {
            sender: Some(sender),
            format,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether lines are written at all (when not, callers skip building them).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    pub fn format(&self) -> AccessLogFormat {
        self.format
    }

    /// Queues an entry; never waits.
    pub fn log(&self, entry: AccessLogEntry) {
        if let Some(sender) = &self.sender
            && sender.try_send(entry).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_time(time), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn text_lines_carry_flags_and_reason() {
        let entry = AccessLogEntry {
            method: "GET".into(),
            path: "/x".into(),
            protocol: "HTTP/1.1".into(),
            response_code: 404,
            response_flags: "NR".into(),
            reason: "no route for \"/x\"".into(),
            ..AccessLogEntry::default()
        };
        let line = entry.to_text();
        assert!(line.contains("\"GET /x HTTP/1.1\" 404 NR"), "{line}");
        assert!(line.ends_with("reason=\"no route for '/x'\""), "{line}");
    }
}
