//! The W3C `traceparent` that carries a trace from one process, or one
//! task, to the next: the API's job request to an agent
//! (`JobRequest.traceparent`), the agent's event posts (the `traceparent`
//! header), and rows a worker picks up later (a snapshot for its dispatch,
//! a webhook delivery for its attempts). Only `traceparent` travels: no
//! `tracestate`, which nothing here sets.
//!
//! A value from elsewhere is untrusted input. One longer than
//! [`MAX_TRACEPARENT`] or not of the W3C form is ignored, and the span
//! starts a trace of its own: never an error. Without a trace export
//! (see `telemetry`) spans have no trace context, nothing is produced
//! here and parents are not set.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header, and the key in the propagator's carrier.
pub const TRACEPARENT: &str = "traceparent";

/// Longest `traceparent` read. Version 00 is 55 characters; later
/// versions may append fields, so some room is left, but a header of
/// kilobytes is not parsed at all.
pub const MAX_TRACEPARENT: usize = 512;

/// The `traceparent` naming `span`, when spans are exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the span the caller is in.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Makes `span` a child of the span `traceparent` names (from another
/// process, or stored with a row). Call it before the span is first
/// entered; an absent, oversized or malformed value changes nothing.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    let Some(parent) = traceparent.and_then(parse) else {
        return;
    };
    // Refused only without a trace layer (nothing to link then) or for a
    // span already entered (it keeps the parent it started with).
    let _ = span.set_parent(parent);
}

/// Renames `span` in its trace, once it is known what it did (a GraphQL
/// request, once its operation is read). Nothing without a trace export.
pub fn rename(span: &Span, name: String) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        context.span().update_name(name);
    }
}

/// The parent for work now that belongs to the trace of `home` (the
/// traceparent stored with a row): the current span if it is in that trace
/// (the more precise cause), else `home` itself, else the current span.
pub fn current_traceparent_within(home: Option<&str>) -> Option<String> {
    let current = current_traceparent();
    let Some(home_trace) = home.and_then(trace_id) else {
        return current;
    };
    match current {
        Some(current) if trace_id(&current) == Some(home_trace) => Some(current),
        _ => home.map(str::to_string),
    }
}

/// The trace a `traceparent` belongs to, if it is a valid one.
pub fn trace_id(traceparent: &str) -> Option<TraceId> {
    parse(traceparent).map(|context| context.span().span_context().trace_id())
}

fn parse(traceparent: &str) -> Option<opentelemetry::Context> {
    if traceparent.len() > MAX_TRACEPARENT {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

    use super::*;
    use crate::telemetry::{Service, test_subscriber};

    const SERVICE: Service = Service {
        name: "test",
        crates: &["dcs_support"],
    };
    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` with spans exported to memory; the spans it ended.
    fn traced(f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        tracing::subscriber::with_default(test_subscriber(&provider, SERVICE), f);
        provider.force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    }

    #[test]
    fn a_span_continues_the_trace_it_is_given_and_names_itself_to_the_next() {
        let mut handed_on = None;
        let spans = traced(|| {
            let span = tracing::info_span!("job");
            set_remote_parent(&span, Some(REMOTE));
            span.in_scope(|| {
                let child = tracing::debug_span!("phase");
                child.in_scope(|| handed_on = current_traceparent());
            });
        });
        let job = named(&spans, "job");
        let phase = named(&spans, "phase");
        assert_eq!(
            job.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(job.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(phase.parent_span_id, job.span_context.span_id());
        assert_eq!(
            handed_on,
            Some(format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                phase.span_context.span_id()
            ))
        );
    }

    #[test]
    fn hostile_traceparents_are_ignored_and_the_span_starts_a_new_trace() {
        let huge = format!("00-{}-00f067aa0ba902b7-01", "4".repeat(100_000));
        // Over the limit, although the parser would take them (it trims
        // spaces, and a later version may append fields).
        let padded = format!("{REMOTE}{}", " ".repeat(600));
        let long_future_version = format!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "a".repeat(600)
        );
        let hostile = [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\u{1F600}",
            "00-\u{e9}bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            huge.as_str(),
            padded.as_str(),
            long_future_version.as_str(),
        ];
        for value in hostile {
            let spans = traced(|| {
                let span = tracing::info_span!("job");
                set_remote_parent(&span, Some(value));
                span.in_scope(|| {});
            });
            let job = named(&spans, "job");
            let shown: String = value.chars().take(80).collect();
            assert!(
                !job.parent_span_id.to_string().ends_with("0ba902b7"),
                "{shown:?} was taken as a parent"
            );
            assert_eq!(
                job.parent_span_id,
                opentelemetry::trace::SpanId::INVALID,
                "{shown:?}: a new root"
            );
            assert_ne!(
                job.span_context.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{shown:?}"
            );
            assert_eq!(trace_id(value), None, "{shown:?}");
        }
    }

    #[test]
    fn without_a_trace_layer_nothing_is_produced_or_parsed() {
        let span = tracing::info_span!("job");
        set_remote_parent(&span, Some(REMOTE));
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(span.in_scope(current_traceparent), None);
        assert_eq!(current_traceparent_within(None), None);
    }

    #[test]
    fn a_span_renamed_after_it_started_is_exported_under_its_new_name() {
        let spans = traced(|| {
            let span = tracing::debug_span!("graphql");
            span.in_scope(|| rename(&tracing::Span::current(), "mutation Create".into()));
        });
        named(&spans, "mutation Create");
    }

    #[test]
    fn work_for_a_stored_trace_stays_in_that_trace() {
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        let mut inside = None;
        let mut outside = None;
        let mut unknown = None;
        traced(|| {
            let span = tracing::info_span!("event");
            set_remote_parent(&span, Some(REMOTE));
            span.in_scope(|| {
                inside = current_traceparent_within(Some(REMOTE));
                outside = current_traceparent_within(Some(other));
                unknown = current_traceparent_within(None);
            });
        });
        let inside = inside.expect("a parent");
        assert_eq!(trace_id(&inside), trace_id(REMOTE));
        assert_ne!(inside, REMOTE, "the current span, more precise");
        assert_eq!(outside.as_deref(), Some(other), "the stored trace wins");
        assert_eq!(unknown, Some(inside), "nothing stored: the current span");
    }
}
