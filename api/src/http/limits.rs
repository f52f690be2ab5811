//! Request bodies are bounded and every refusal is JSON with a code.
//!
//! The limit is enforced twice: a declared `Content-Length` above it is
//! refused before a byte of the body is read (middleware), and a body
//! without one (chunked) is read only up to the limit (`read_body` for
//! `/graphql`, axum's `DefaultBodyLimit` for the `Json` extractors of the
//! agent endpoints). Either way an unauthenticated 1 GB upload costs at most
//! the limit in memory.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::json;

use crate::errors::Code;

/// An error as clients of this path expect it: the agents' endpoints answer
/// `{"code", "message"}` (as `ApiError` does); everything else answers as
/// GraphQL does, `{"errors": [{"message", "extensions": {"code"}}]}`.
pub fn error_response(path: &str, status: StatusCode, code: Code, message: &str) -> Response {
    let body = if path.starts_with("/agent/") {
        json!({"code": code.as_str(), "message": message})
    } else {
        json!({"errors": [{"message": message, "extensions": {"code": code.as_str()}}]})
    };
    (status, axum::Json(body)).into_response()
}

fn too_large(path: &str, limit: usize) -> Response {
    error_response(
        path,
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::PayloadTooLarge,
        &format!("the request body is larger than {limit} bytes"),
    )
}

/// The largest body of each endpoint.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub(super) default: usize,
    /// `POST /agent/v1/events`: a final event carries a scan report.
    pub(super) agent_events: usize,
}

impl BodyLimits {
    pub(super) fn uniform(limit: usize) -> Self {
        Self {
            default: limit,
            agent_events: limit,
        }
    }

    pub(super) fn of(&self, path: &str) -> usize {
        if path == dcs_protocol::api_paths::EVENTS {
            self.agent_events
        } else {
            self.default
        }
    }
}

/// Refuses a declared body above the path's limit before reading it.
pub(super) async fn refuse_large_bodies(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let limit = limits.of(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    match declared {
        Some(Ok(length)) if length > limit as u64 => too_large(request.uri().path(), limit),
        Some(Err(_)) => error_response(
            request.uri().path(),
            StatusCode::BAD_REQUEST,
            Code::BadUserInput,
            "the Content-Length header is not a number",
        ),
        _ => next.run(request).await,
    }
}

/// Unknown paths.
pub(super) async fn not_found(uri: Uri) -> Response {
    error_response(
        uri.path(),
        StatusCode::NOT_FOUND,
        Code::NotFound,
        &format!("no such endpoint: {}", uri.path()),
    )
}

/// A known path with a method it does not serve.
pub(super) async fn method_not_allowed(uri: Uri) -> Response {
    error_response(
        uri.path(),
        StatusCode::METHOD_NOT_ALLOWED,
        Code::BadUserInput,
        &format!("{} does not accept this method", uri.path()),
    )
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    TooLarge,
    /// The connection failed while the body was read.
    Broken,
}

/// The whole body, if it is at most `limit` bytes; stops reading at once
/// when it is not.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if bytes.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The response to a body `read_body` refused.
pub(super) fn body_error(path: &str, error: BodyError, limit: usize) -> Response {
    match error {
        BodyError::TooLarge => too_large(path, limit),
        BodyError::Broken => error_response(
            path,
            StatusCode::BAD_REQUEST,
            Code::BadUserInput,
            "the request body could not be read",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_read_up_to_the_limit_only() {
        let chunks =
            futures::stream::iter((0..1000).map(|_| Ok::<_, std::io::Error>(bytes_of(1024))));
        let body = Body::from_stream(chunks);
        assert_eq!(read_body(body, 10 * 1024).await, Err(BodyError::TooLarge));
        let small = Body::from("{\"query\":\"{ me { sub } }\"}");
        assert_eq!(read_body(small, 1024).await.unwrap().len(), 26);
    }

    fn bytes_of(n: usize) -> Vec<u8> {
        vec![b' '; n]
    }

    #[tokio::test]
    async fn errors_have_the_shape_of_their_endpoint() {
        let graphql = error_response(
            "/graphql",
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::PayloadTooLarge,
            "big",
        );
        let body = axum::body::to_bytes(graphql.into_body(), 1024)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["errors"][0]["extensions"]["code"],
            "PAYLOAD_TOO_LARGE"
        );
        let agent = error_response(
            "/agent/v1/events",
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::PayloadTooLarge,
            "big",
        );
        let body = axum::body::to_bytes(agent.into_body(), 1024).await.unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "PAYLOAD_TOO_LARGE");
    }
}
