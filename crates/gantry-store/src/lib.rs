//! # gantry-store
//!
//! Everything the server keeps:
//! - [`db`]: [`db::Db`], SQLite (the embedded default) or PostgreSQL with the same schema and
//!   queries; every job state change is a conditional update.
//! - [`blob`]: the [`blob::BlobStore`] trait (artifacts, caches, sources, registry blobs),
//!   its file-system implementation, the embedded default, and [`blob::s3`], objects in an
//!   S3-compatible bucket.
//! - [`logs`]: job logs: appended by offset while a job runs (resends are stored once),
//!   compressed when it ends, read whole or by byte range, followed live.
//! - [`secrets`]: secrets at rest: the [`Keyring`] that seals values (XChaCha20-Poly1305,
//!   a key id, bound to their row) and its key file, with rotation.
//! - [`outbox`]: commit statuses and notifications: a project's forge, its notification
//!   channels and the outbox that queues what to send (once per event, retried).
//! - [`error`]: [`StoreError`], with a full disk as its own case.

pub mod blob;
pub mod db;
pub mod error;
pub mod logs;
pub mod secrets;

pub use db::Db;
pub use error::{Result, StoreError};
pub use secrets::{Keyring, SecretError, is_sealed};
