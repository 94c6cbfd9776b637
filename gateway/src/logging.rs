//! The program's own log: `tracing` to standard error, as text or JSON, with a filter that the
//! admin endpoint can change while running.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::admin::SetLogLevel;
use crate::run::LogFormat;

/// The installed log, and the handle that changes its filter.
#[derive(Clone, Debug)]
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Logging {
    /// The log on standard error.
    pub fn init(format: LogFormat, level: &str) -> anyhow::Result<Logging> {
        Logging::init_to(
            format,
            level,
            std::io::stderr,
            std::io::stderr().is_terminal(),
        )
    }

    /// The log in a file (appended to), as text.
    pub fn init_file(level: &str, path: &Path) -> anyhow::Result<Logging> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the log {}", path.display()))?;
        Logging::init_to(LogFormat::Text, level, Mutex::new(file), false)
    }

    fn init_to<W>(format: LogFormat, level: &str, writer: W, ansi: bool) -> anyhow::Result<Logging>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let filter = EnvFilter::try_new(level).with_context(|| format!("--log-level {level:?}"))?;
        let (filter, handle) = reload::Layer::new(filter);
        let registry = tracing_subscriber::registry().with(filter);
        let result = match format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(writer),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(tracing_subscriber::fmt::layer().json().with_writer(writer))
                .try_init(),
        };
        result.context("installing the log")?;
        Ok(Logging { filter: handle })
    }

    /// A function that replaces the filter (`POST /logging?level=`).
    pub fn setter(&self) -> SetLogLevel {
        let handle = self.filter.clone();
        Box::new(move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}"))?;
            handle.reload(filter).map_err(|e| e.to_string())
        })
    }
}
