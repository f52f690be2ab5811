//! One span per GraphQL request over HTTP, named after its operation as
//! OpenTelemetry's GraphQL conventions name it (`mutation CreateSnapshot`,
//! or `query` for an anonymous one). One per request and none per field: a
//! span per resolved field costs more than the query itself. The service
//! operations the resolvers call have spans of their own, children of this
//! one.
//!
//! It exists for traces: at DEBUG it is created only when they are
//! exported (see `dcs_support::telemetry`), and the operation is read only
//! then.

use async_graphql::parser::types::{DocumentOperations, OperationType};
use tracing::Span;
use tracing::field::Empty;

/// Operation names are client text: long ones are cut in the span.
const MAX_NAME: usize = 128;

/// The request's span, before anything is known about it.
pub(super) fn start() -> Span {
    tracing::debug_span!(
        "graphql",
        graphql.operation.type = Empty,
        graphql.operation.name = Empty,
        otel.status_code = Empty,
    )
}

/// Names the current span (from `start`) after the request's operation.
/// Called once the request has its turn: the document is parsed here, and
/// the executor takes it as it is instead of parsing it again.
pub(super) fn name_after_operation(request: &mut async_graphql::Request) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    let Some((kind, name)) = operation(request) else {
        return;
    };
    let kind = match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    span.record("graphql.operation.type", kind);
    let full_name = match name {
        Some(name) => {
            let name: String = name.chars().take(MAX_NAME).collect();
            span.record("graphql.operation.name", name.as_str());
            format!("{kind} {name}")
        }
        None => kind.to_string(),
    };
    dcs_support::trace_context::rename(&span, full_name);
}

/// Marks the current span (from `start`) as failed: the response has errors.
pub(super) fn failed() {
    Span::current().record("otel.status_code", "ERROR");
}

/// The type and name of the operation the request runs; `None` when the
/// document does not parse or does not say (the executor reports why).
fn operation(request: &mut async_graphql::Request) -> Option<(OperationType, Option<String>)> {
    let wanted = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    match &document.operations {
        DocumentOperations::Single(operation) => Some((operation.node.ty, None)),
        DocumentOperations::Multiple(operations) => match wanted {
            Some(name) => operations
                .get(name.as_str())
                .map(|operation| (operation.node.ty, Some(name))),
            None if operations.len() == 1 => operations
                .iter()
                .next()
                .map(|(name, operation)| (operation.node.ty, Some(name.to_string()))),
            None => None,
        },
    }
}
