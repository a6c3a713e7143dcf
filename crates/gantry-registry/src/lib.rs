//! # gantry-registry
//!
//! Gantry's OCI registry: the Distribution Specification 1.1 under `/v2/`, served by
//! `gantry server` beside the API (and alone by `gantry registry`).
//!
//! - [`Registry`]: the service (database, blob store, uploads, token keys, the
//!   [`token::Authority`] that knows users) and [`router`], its axum routes.
//! - [`http`]: the endpoints: blobs (ranges, delete), uploads (monolithic, chunked with
//!   `Content-Range`, resumable, cross-repository mounts), manifests (OCI and Docker schema 2,
//!   indexes, by tag or digest, `OCI-Subject`), referrers, tags, the catalog, the token
//!   endpoint.
//! - [`uploads`]: upload files hashed while they stream in, moved into the blob store by a
//!   rename once their digest checks.
//! - [`manifest`]: what a manifest references; [`digest`]: sha256/sha512 digests;
//!   [`names`]: repository and tag grammar; [`error`]: the spec's error codes.
//! - [`gc`]: online garbage collection (unused links, then unlinked blobs, after a grace
//!   period, under the digest locks uploads take).
//! - [`policy`]: tag immutability and retention rules of a project.
//! - [`promote`]: promotion by digest between repositories (links, no bytes).
//! - [`browse`]: what the web UI shows of a manifest (layers, config, platforms, the bytes it
//!   holds) and its deletion of a tag (the checks and the event of the API's `DELETE`).
//! - [`token`]: Docker's token flow: scopes, short-lived HS256 tokens carrying what the
//!   [`token::Authority`] granted.
//!
//! Metadata (repositories, blob links, manifests, tags) lives in `gantry_store::Db`
//! (migration 0008); bytes in the `gantry_store::blob::BlobStore` under
//! `registry/<algorithm>/<xx>/<hex>`. A repository `team/app/web` belongs to the project
//! whose path is its longest prefix (`team/app`).

pub mod browse;
pub mod digest;
pub mod error;
pub mod gc;
pub mod http;
pub mod manifest;
pub mod names;
pub mod policy;
pub mod promote;
pub mod token;
mod uploads;

pub use http::router;
pub use promote::{ImageRef, Promoted};
pub use token::{Actions, Authority, Refusal, TokenKeys};

use gantry_store::Db;
use gantry_store::blob::BlobStore;
use std::path::PathBuf;
use std::sync::Arc;

/// How the registry is set up.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where uploads in progress are written (on the blob store's file system, so that a
    /// finished upload is a rename).
    pub uploads_dir: PathBuf,
    /// The address clients reach the server at (`https://gantry.example.com`), for the
    /// token realm; by default the request's `Host`.
    pub public_url: Option<String>,
    /// The secret registry tokens are signed with (32 bytes or more).
    pub token_secret: Vec<u8>,
    /// fsync blobs before they are acknowledged (survive a power cut, not only a crash of
    /// the process); costs several milliseconds per blob on common disks.
    pub durable: bool,
    /// What garbage collection never touches: links and blobs younger than this.
    pub gc_grace: std::time::Duration,
}

/// The registry service. Cheap to clone.
pub struct Registry<A> {
    inner: Arc<Inner<A>>,
}

impl<A> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Registry {
            inner: self.inner.clone(),
        }
    }
}

impl<A> std::fmt::Debug for Registry<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("uploads", &self.inner.uploads.dir())
            .finish_non_exhaustive()
    }
}

struct Inner<A> {
    db: Db,
    blobs: Arc<dyn BlobStore>,
    uploads: uploads::Uploads,
    keys: TokenKeys,
    authority: A,
    public_url: Option<String>,
    durable: bool,
    gc_grace: std::time::Duration,
    /// Digest locks (striped): an upload holds its digest's from "is it stored?" to "it is
    /// linked"; garbage collection from "forgotten" to "bytes deleted".
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// What happened to an image, for the server's notifications (webhooks, chats, email).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `image_pushed`, `image_pulled` or `image_deleted`.
    pub kind: &'static str,
    pub project_id: i64,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    /// Who did it, as their token names them (empty: anonymous).
    pub actor: String,
}

/// The service name in tokens and challenges.
pub const SERVICE: &str = "gantry-registry";

impl<A: Authority> Registry<A> {
    pub fn new(
        db: Db,
        blobs: Arc<dyn BlobStore>,
        authority: A,
        config: RegistryConfig,
    ) -> std::io::Result<Registry<A>> {
        Ok(Registry {
            inner: Arc::new(Inner {
                db,
                blobs,
                uploads: uploads::Uploads::open(config.uploads_dir)?,
                keys: TokenKeys::new(&config.token_secret, SERVICE),
                authority,
                public_url: config.public_url,
                durable: config.durable,
                gc_grace: config.gc_grace,
                locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            }),
        })
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn authority(&self) -> &A {
        &self.inner.authority
    }

    /// Tells the authority of an event, in a task of its own.
    pub(crate) fn emit(&self, event: Event) {
        let this = self.clone();
        tokio::spawn(async move { this.inner.authority.event(event).await });
    }

    pub fn gc_grace(&self) -> std::time::Duration {
        self.inner.gc_grace
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.inner.keys
    }

    /// The lock of a digest's stripe.
    pub(crate) async fn lock_digest(&self, d: &digest::Digest) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = u8::from_str_radix(&d.hex()[..2], 16).unwrap_or(0) as usize;
        self.inner.locks[stripe % self.inner.locks.len()]
            .lock()
            .await
    }
}
