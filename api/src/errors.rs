//! Errors as clients see them: a stable code and a sentence.

use async_graphql::ErrorExtensions as _;

/// Codes clients can rely on (`extensions.code` in GraphQL errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    Unavailable,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// Too many attempts; try again later.
    RateLimited,
    /// The request ran past its deadline and was stopped.
    Timeout,
    /// A query sent by its hash alone that this server does not hold: an
    /// Apollo client sends it again with its text (`persisted` module).
    PersistedQueryNotFound,
    /// This server runs only registered queries, and this one is not.
    PersistedQueryNotAllowed,
    /// A speaker's quota (snapshots in flight, per day, bytes kept) is
    /// used up; the message names the limit.
    QuotaExceeded,
    /// A registry refused what the API server asked of it (a manifest
    /// delete): its credentials, or an answer it gave; the message says
    /// which. An unreachable registry is `UNAVAILABLE`.
    RegistryRefused,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::Unavailable => "UNAVAILABLE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::Timeout => "TIMEOUT",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotAllowed => "PERSISTED_QUERY_NOT_ALLOWED",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::RegistryRefused => "REGISTRY_REFUSED",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Deliberately not `Display`: async-graphql converts any `Display` error
/// into a GraphQL error *without* a code, so this type converts only
/// through the `From` below, which always sets `extensions.code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Code::BadUserInput, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// An internal failure: logged here with its detail, reported to the
    /// client without it.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(Code::Internal, "internal error; it has been logged")
    }
}

impl From<sea_orm::DbErr> for ApiError {
    /// A statement Postgres cancelled at the statement timeout is a
    /// `TIMEOUT`, and a database the pool cannot reach is `UNAVAILABLE`:
    /// both are worth a retry, unlike an `INTERNAL` error.
    fn from(error: sea_orm::DbErr) -> Self {
        use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
        let sqlx_error = match &error {
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
            _ => None,
        };
        let cancelled = sqlx_error
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code())
            .is_some_and(|code| code == QUERY_CANCELED);
        if cancelled {
            tracing::warn!(%error, "a database statement was cancelled at the statement timeout");
            return Self::new(
                Code::Timeout,
                "a database statement took longer than the statement timeout and was cancelled",
            );
        }
        let unreachable = matches!(
            error,
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed)
        ) || matches!(
            sqlx_error,
            Some(
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
            )
        );
        if unreachable {
            tracing::warn!(%error, "the database is out of reach");
            return Self::unavailable("the database is out of reach; retry shortly");
        }
        Self::internal("database error", &error)
    }
}

/// SQLSTATE `query_canceled`: what Postgres answers when a statement runs
/// past `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        async_graphql::Error::new(error.message)
            .extend_with(|_, e| e.set("code", error.code.as_str()))
    }
}

impl Code {
    pub fn http_status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadUserInput => StatusCode::BAD_REQUEST,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            // Part of the protocol, not a failure: Apollo's clients (some
            // versions) stop sending hashes after a 400 or 500, and read
            // the error from a 200 body in all versions.
            Self::PersistedQueryNotFound => StatusCode::OK,
            Self::PersistedQueryNotAllowed => StatusCode::FORBIDDEN,
            Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::RegistryRefused => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        (self.code.http_status(), axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
