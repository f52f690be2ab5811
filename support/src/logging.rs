//! Log lines: `tracing` to stderr, filtered by `RUST_LOG`, as text for
//! people or JSON for collectors. Installed by `telemetry::init`, beside
//! the trace export when there is one.

use tracing_subscriber::{Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The layer that writes log lines. `default_filter` applies when
/// `RUST_LOG` is unset or invalid (the API logs `info`, the agent, whose
/// CLI prints JSON on stdout, only `warn`). The filter is this layer's
/// own, so spans exported as traces do not depend on what is logged.
pub(crate) fn layer(
    format: LogFormat,
    default_filter: &str,
) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => lines.json().with_filter(filter).boxed(),
        LogFormat::Text => lines.with_filter(filter).boxed(),
    }
}
