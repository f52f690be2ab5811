//! GraphQL over GET: `/graphql?query=...&operationName=...&variables=<json>&extensions=<json>`,
//! as Apollo clients send hashed queries (`useGETForHashedQueries`), so
//! that a CDN or proxy may cache them. Queries only: a GET must not change
//! anything (browsers prefetch, proxies repeat), so mutations are refused.

use async_graphql::parser::types::OperationType;
use axum::extract::Query;
use axum::http::Uri;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// The GraphQL request in the query string, or why it is malformed;
/// `None` when it holds none (neither `query` nor `extensions`: a browser
/// asking for GraphiQL).
pub(super) fn request(uri: &Uri) -> Option<Result<async_graphql::Request, String>> {
    let params = match Query::<Params>::try_from_uri(uri) {
        Ok(Query(params)) => params,
        Err(e) => return Some(Err(format!("the query string is malformed: {e}"))),
    };
    if params.query.is_none() && params.extensions.is_none() {
        return None;
    }
    Some(build(params))
}

fn build(params: Params) -> Result<async_graphql::Request, String> {
    let mut request = async_graphql::Request::new(params.query.unwrap_or_default());
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables {
        let variables = serde_json::from_str(&variables)
            .map_err(|e| format!("`variables` is not a JSON object: {e}"))?;
        request = request.variables(variables);
    }
    if let Some(extensions) = params.extensions {
        request.extensions = serde_json::from_str(&extensions)
            .map_err(|e| format!("`extensions` is not a JSON object: {e}"))?;
    }
    Ok(request)
}

/// Why a GET that is not a query is refused.
pub(super) const QUERIES_ONLY: &str =
    "only queries run over GET; send mutations and subscriptions with POST or a WebSocket";

/// Whether a GET may run: its operation is a query. Parses the document
/// (async-graphql keeps the parse and does not parse it again); a document
/// that does not parse, or an operation that cannot be chosen, is left to
/// the executor to report.
pub(super) fn is_query(request: &mut async_graphql::Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return true;
    };
    let mut operations = document.operations.iter();
    let chosen = match &name {
        Some(name) => operations.find(|(op_name, _)| op_name.is_some_and(|n| n.as_str() == name)),
        None => match (operations.next(), operations.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        },
    };
    chosen.is_none_or(|(_, op)| op.node.ty == OperationType::Query)
}
