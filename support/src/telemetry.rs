//! Logs and traces of a process, set up once at start-up.
//!
//! Traces are the program's own `tracing` spans, exported to an
//! OpenTelemetry collector over OTLP/HTTP (protobuf) when an endpoint is
//! configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). Without one no exporter is built:
//! nothing is sent, nothing connects, and no span costs more than before.
//! That holds for the spans that exist for traces alone (a GraphQL request,
//! a dispatch, the commit phases, a webhook delivery) because they are at
//! DEBUG: only the trace layer takes DEBUG spans, so without it they are
//! never created (unless `RUST_LOG` asks for debug logs).
//!
//! The SDK reads the other standard variables itself: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*` (batching) and
//! `OTEL_TRACES_SAMPLER`.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::logging::{self, LogFormat};

/// How long `shutdown` waits for the last spans to be sent: well inside
/// a pod's termination grace, and a collector that is down costs no more.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The process's tracer provider, kept for `shutdown`.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where traces go (a flag and its standard environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TraceArgs {
    /// Send traces to this OpenTelemetry collector: the base URL of its
    /// OTLP/HTTP receiver (e.g. `http://otel-collector:4318`); spans are
    /// posted to `<URL>/v1/traces` as protobuf. Unset or empty: no traces
    /// are exported and nothing connects.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL",
        global = true
    )]
    pub otlp_endpoint: Option<String>,
}

impl TraceArgs {
    /// The URL spans are posted to; `None` when no endpoint is set.
    pub fn traces_url(&self) -> anyhow::Result<Option<String>> {
        let Some(base) = self
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|base| !base.is_empty())
        else {
            return Ok(None);
        };
        // A typo must not turn tracing off without a word.
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("the OTLP endpoint {base:?} is not an http:// or https:// URL");
        }
        Ok(Some(format!("{}/v1/traces", base.trim_end_matches('/'))))
    }
}

/// Who a process is in its traces.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// `service.name`, unless `OTEL_SERVICE_NAME` names it otherwise.
    pub name: &'static str,
    /// The crates whose spans and events are exported (targets `name` and
    /// `name::...`). Not the others: the HTTP clients', the database
    /// driver's, nor what the exporter itself logs while it sends.
    pub crates: &'static [&'static str],
}

/// Installs the process's subscriber: log lines (see `logging`), and the
/// trace export to `traces_url` (from `TraceArgs::traces_url`) if any.
pub fn init(
    format: LogFormat,
    default_filter: &str,
    traces_url: Option<&str>,
    service: Service,
) -> anyhow::Result<()> {
    let mut layers = vec![logging::layer(format, default_filter)];
    if let Some(url) = traces_url {
        let provider = provider(url, service)?;
        layers.push(trace_layer(&provider, service));
        let _ = PROVIDER.set(provider);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("installing the log and trace subscriber")
}

/// Sends the spans still buffered, then stops the export; spans that end
/// later are dropped. Call once, as the process exits. It blocks (at most
/// `SHUTDOWN_WAIT`): from async code, call it in `spawn_blocking`.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_WAIT)
    {
        tracing::warn!(error = %e, "the last spans may not have reached the collector");
    }
}

fn provider(url: &str, service: Service) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .with_context(|| format!("setting up the trace export to {url}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.name);
    }
    // The batch processor sends from a thread of its own: no request or
    // job waits for the collector.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The layer that turns our crates' spans into OpenTelemetry spans: spans
/// down to DEBUG, events (which become span events) down to INFO.
fn trace_layer(
    provider: &SdkTracerProvider,
    service: Service,
) -> Box<dyn Layer<Registry> + Send + Sync> {
    let crates = service.crates;
    let ours = filter_fn(move |meta| {
        let finest = if meta.is_span() {
            Level::DEBUG
        } else {
            Level::INFO
        };
        *meta.level() <= finest && crates.iter().any(|c| is_target_of(meta.target(), c))
    })
    .with_max_level_hint(LevelFilter::DEBUG);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.name))
        .with_filter(ours)
        .boxed()
}

/// Whether `target` is crate `name` or one of its modules.
fn is_target_of(target: &str, name: &str) -> bool {
    target
        .strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// A subscriber like the one `init` installs for an exporting process,
/// for tests: spans go to `provider`.
#[cfg(test)]
pub(crate) fn test_subscriber(
    provider: &SdkTracerProvider,
    service: Service,
) -> impl tracing::Subscriber + Send + Sync {
    Registry::default().with(trace_layer(provider, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoint: Option<&str>) -> TraceArgs {
        TraceArgs {
            otlp_endpoint: endpoint.map(String::from),
        }
    }

    #[test]
    fn the_traces_path_is_added_to_the_base_url() {
        let url = |e| args(e).traces_url().unwrap();
        assert_eq!(
            url(Some("http://collector:4318")).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url(Some(" https://c.example/otlp/ ")).as_deref(),
            Some("https://c.example/otlp/v1/traces")
        );
    }

    #[test]
    fn no_endpoint_or_an_empty_one_means_no_traces() {
        assert_eq!(args(None).traces_url().unwrap(), None);
        assert_eq!(args(Some("")).traces_url().unwrap(), None);
        assert_eq!(args(Some("  ")).traces_url().unwrap(), None);
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        for bad in ["collector:4318", "grpc://c:4317", "file:///tmp/x"] {
            assert!(args(Some(bad)).traces_url().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_our_crates_are_traced() {
        assert!(is_target_of("api", "api"));
        assert!(is_target_of("api::dispatch", "api"));
        assert!(!is_target_of("apiary", "api"));
        assert!(!is_target_of("hyper::client", "api"));
    }
}
