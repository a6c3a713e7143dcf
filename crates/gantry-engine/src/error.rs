//! The engine's error type; the HTTP layer answers each case with [`EngineError::http_status`]
//! and a JSON error carrying [`EngineError::code`].

use crate::forge::HookError;
use crate::git::GitError;
use gantry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, or holding a credential, that does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts (failed sign-ins): wait.
    #[error("{0}")]
    TooManyRequests(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// A webhook request refused (unsigned, forged, replayed, malformed, too large).
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn not_found(what: impl std::fmt::Display) -> EngineError {
        EngineError::NotFound(format!("{what} not found"))
    }

    /// The stable code of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::NotFound(_) => "not_found",
            EngineError::BadRequest(_) => "bad_request",
            EngineError::Conflict(_) => "conflict",
            EngineError::Unauthorized(_) => "unauthorized",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::TooManyRequests(_) => "too_many_requests",
            EngineError::Store(e) if e.is_full() => "storage_full",
            EngineError::Store(StoreError::NotFound(_)) => "not_found",
            EngineError::Store(StoreError::Conflict(_)) => "conflict",
            EngineError::Store(_) => "storage_error",
            EngineError::Git(_) => "git_error",
            EngineError::Hook(h) => h.code(),
            EngineError::Internal(_) => "internal",
        }
    }

    /// The HTTP status that answers it (the server's, and what webhook deliveries record).
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::NotFound(_) => 404,
            EngineError::BadRequest(_) => 400,
            EngineError::Conflict(_) => 409,
            EngineError::Unauthorized(_) => 401,
            EngineError::Forbidden(_) => 403,
            EngineError::TooManyRequests(_) => 429,
            EngineError::Git(_) => 502,
            EngineError::Store(s) if s.is_full() => 507,
            EngineError::Store(StoreError::NotFound(_)) => 404,
            EngineError::Store(StoreError::Conflict(_)) => 409,
            // Object storage failed after its retries: worth trying again later.
            EngineError::Store(StoreError::Remote { .. }) => 503,
            EngineError::Hook(h) => h.status(),
            EngineError::Store(_) | EngineError::Internal(_) => 500,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
