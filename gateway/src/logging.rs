//! The program's own log: `tracing` to standard error, as text or JSON, with a filter that the
//! admin endpoint can change while running.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::admin::SetLogLevel;
use crate::run::LogFormat;

/// The installed log, and the handle that changes its filter.
#[derive(Debug)]
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Logging {
    pub fn init(format: LogFormat, level: &str) -> anyhow::Result<Logging> {
        let filter = EnvFilter::try_new(level).with_context(|| format!("--log-level {level:?}"))?;
        let (filter, handle) = reload::Layer::new(filter);
        let registry = tracing_subscriber::registry().with(filter);
        let result = match format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr),
                )
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
