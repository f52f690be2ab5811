//! Why the gate turns a request away: a stable code and a sentence,
//! answered before anything is parsed.

use axum::http::StatusCode;

use crate::errors::Code;

/// A request the gate turns away, answered before anything is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: Code::BadUserInput,
            message: message.into(),
        }
    }

    /// The message is the one Apollo's clients look for, beside the code.
    pub(super) fn not_found() -> Self {
        Self {
            code: Code::PersistedQueryNotFound,
            message: "PersistedQueryNotFound".into(),
        }
    }

    pub(super) fn not_allowed() -> Self {
        Self {
            code: Code::PersistedQueryNotAllowed,
            message: "this server runs registered queries only, and this query is not registered"
                .into(),
        }
    }

    pub(super) fn unavailable() -> Self {
        Self {
            code: Code::Unavailable,
            message: "the persisted query store cannot be reached; try again".into(),
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        self.code.http_status()
    }
}
