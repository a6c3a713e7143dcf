//! The engine's error type; the HTTP layer maps each case to a status and a JSON code.

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
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
            EngineError::Store(e) if e.is_full() => "storage_full",
            EngineError::Store(StoreError::NotFound(_)) => "not_found",
            EngineError::Store(StoreError::Conflict(_)) => "conflict",
            EngineError::Store(_) => "storage_error",
            EngineError::Git(_) => "git_error",
            EngineError::Internal(_) => "internal",
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
