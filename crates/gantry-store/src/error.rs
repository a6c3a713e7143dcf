//! The one error type of the store.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the database's disk) is full: nothing was half-written.
    #[error(
        "{what}: no space left on the device; free some space (old logs and artifacts under {where_}) and retry"
    )]
    Full { what: String, where_: String },
    #[error("{0} not found")]
    NotFound(String),
    /// A write that contradicts what is stored (a log chunk past the end, a duplicate name).
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A sealed value that cannot be opened or sealed again (no key, or not its row).
    #[error("{what}: {source}")]
    Secret {
        what: String,
        #[source]
        source: crate::secrets::SecretError,
    },
    /// Object storage (the S3 blob store) failed or refused a request, after retries.
    #[error("{what}: {source}")]
    Remote {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// An I/O error while doing `what` under `where_`; a full disk becomes [`StoreError::Full`].
    pub fn io(what: impl Into<String>, where_: &std::path::Path, source: io::Error) -> StoreError {
        if is_disk_full(&source) {
            StoreError::Full {
                what: what.into(),
                where_: where_.display().to_string(),
            }
        } else {
            StoreError::Io {
                what: format!("{} ({})", what.into(), where_.display()),
                source,
            }
        }
    }

    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full { .. } => true,
            StoreError::Db(e) => {
                e.to_string().contains("database or disk is full")
                    || e.to_string().contains("No space left on device")
                    || e.to_string().contains("could not extend file")
            }
            _ => false,
        }
    }
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
