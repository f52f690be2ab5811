//! A small OpenTelemetry collector for the tests: an OTLP/HTTP receiver on
//! a loopback port that decodes every `ExportTraceServiceRequest` (protobuf,
//! with the official wire types of `opentelemetry-proto`) and keeps its
//! spans. No collector package is available here, and decoding the wire
//! format ourselves checks what a real collector would be sent.
//!
//! Also [`ConnectionCounter`]: a port that counts the connections made to
//! it, to show that nothing tries to send traces when none are configured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::net::TcpListener;

/// Removes the OpenTelemetry endpoint variables the test itself may have
/// from a process of the stack: a developer's collector must not receive
/// the tests' spans, and a test that wants traces sets them explicitly.
pub fn forget_inherited_endpoints(command: &mut std::process::Command) {
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        command.env_remove(name);
    }
}

/// One span as a collector received it, ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for the root of a trace.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Export requests, decoded or not.
    requests: usize,
    /// Why requests were refused (not protobuf, not decodable).
    refused: Vec<String>,
}

/// A running OTLP/HTTP receiver.
#[derive(Clone, Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let address = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Received::default()));
        let router = Router::new()
            .route("/v1/traces", post(export))
            .with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { address, received }
    }

    /// The base URL, as `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// take it (the exporters add `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Requests refused, with the reason: every export must decode.
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    /// Waits until `done` holds for the spans received; returns them.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        crate::poll(
            timeout,
            Duration::from_millis(100),
            async || {
                let spans = self.spans();
                if done(&spans) { Ok(spans) } else { Err(spans) }
            },
            |spans| {
                format!(
                    "{what}: not received in {timeout:?}; got {}",
                    describe(&spans)
                )
            },
        )
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The spans one per line (service, name, ids, attributes), for failures.
pub fn describe(spans: &[ReceivedSpan]) -> String {
    let lines: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "  {} {:?} trace={} span={} parent={} {:?}",
                s.service, s.name, s.trace_id, s.span_id, s.parent_span_id, s.attributes
            )
        })
        .collect();
    format!("{} spans\n{}", spans.len(), lines.join("\n"))
}

async fn export(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
    received.requests += 1;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        received
            .refused
            .push(format!("content type {content_type:?}"));
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => {
            received.refused.push(format!("undecodable: {e}"));
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    // An empty `ExportTraceServiceResponse` is zero bytes of protobuf.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::new(),
    )
        .into_response()
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(pair.value.as_ref())))
        .collect()
}

/// An attribute's value as text (strings bare, others as they print).
fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A port that accepts and counts connections (and closes them at once).
#[derive(Debug)]
pub struct ConnectionCounter {
    count: Arc<AtomicUsize>,
}

impl ConnectionCounter {
    pub async fn bind(address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Ok(Self { count })
    }

    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
