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
//! - [`client`]: a client of other registries (Docker's token flow, Basic) and the copy of
//!   an image by digest, only the blobs the destination lacks; [`replicate`]: a replication
//!   rule's run, from this registry's store to another registry.
//! - [`token`]: Docker's token flow: scopes, short-lived HS256 tokens carrying what the
//!   [`token::Authority`] granted.
//!
//! Metadata (repositories, blob links, manifests, tags) lives in `gantry_store::Db`
//! (migration 0008); bytes in the `gantry_store::blob::BlobStore` under
//! `registry/<algorithm>/<xx>/<hex>`. A repository `team/app/web` belongs to the project
//! whose path is its longest prefix (`team/app`).

pub mod browse;
pub mod client;
pub mod digest;
pub mod error;
pub mod gc;
pub mod http;
pub mod manifest;
pub mod names;
pub mod policy;
pub mod promote;
pub mod replicate;
pub mod token;
mod uploads;

pub use http::router;
pub use promote::{ImageRef, Promoted};
pub use token::{Actions, Authority, Refusal, TokenKeys};

use gantry_store::Db;
use gantry_store::blob::BlobStore;
use gantry_store::db::RepositoryRow;
use std::collections::HashMap;
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
    /// Repositories by name, as found in the store. A repository row never changes and is
    /// never deleted once made, so an entry cannot go stale; it saves a query per request.
    repositories: std::sync::Mutex<HashMap<String, RepositoryRow>>,
    /// Writes this process made lately that would change nothing if made again (a tag's
    /// last pull, a blob link kept young): each pull and HEAD would otherwise take the
    /// store's write lock.
    recent: Recent,
}

/// Keys written at most this long ago, by when.
#[derive(Default)]
struct Recent(std::sync::Mutex<HashMap<String, std::time::Instant>>);

impl Recent {
    /// True when `key` was recorded less than `within` ago; records it otherwise.
    fn seen(&self, key: String, within: std::time::Duration) -> bool {
        let now = std::time::Instant::now();
        let mut map = self.0.lock().expect("recent writes");
        if map
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < within)
        {
            return true;
        }
        if map.len() >= RECENT_KEPT {
            map.retain(|_, t| now.duration_since(*t) < within);
            if map.len() >= RECENT_KEPT {
                map.clear();
            }
        }
        map.insert(key, now);
        false
    }

    fn forget(&self, key: &str) {
        self.0.lock().expect("recent writes").remove(key);
    }
}

/// Recent writes remembered at most.
const RECENT_KEPT: usize = 65_536;

/// Repositories remembered at most; past it the memory starts again.
const REPOSITORIES_CACHED: usize = 4096;

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
                repositories: std::sync::Mutex::new(HashMap::new()),
                recent: Recent::default(),
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

    /// The repository `name`, from memory when it was seen before.
    pub(crate) async fn repository(
        &self,
        name: &str,
    ) -> gantry_store::Result<Option<RepositoryRow>> {
        if let Some(r) = self
            .inner
            .repositories
            .lock()
            .expect("repositories")
            .get(name)
        {
            return Ok(Some(r.clone()));
        }
        let found = self.inner.db.repository(name).await?;
        if let Some(r) = &found {
            let mut cache = self.inner.repositories.lock().expect("repositories");
            if cache.len() >= REPOSITORIES_CACHED {
                cache.clear();
            }
            cache.insert(name.to_string(), r.clone());
        }
        Ok(found)
    }

    /// Records that `tag` (pointing at `digest`) of a repository was pulled, at most once
    /// per interval of the store's (later pulls would not change the row), in a task.
    pub(crate) fn record_pull(&self, repository_id: i64, tag: &str, digest: &str) {
        let key = format!("pull {repository_id} {tag} {digest}");
        if self
            .inner
            .recent
            .seen(key.clone(), gantry_store::db::PULL_RECORD_INTERVAL)
        {
            return;
        }
        let (this, tag) = (self.clone(), tag.to_string());
        tokio::spawn(async move {
            if let Err(e) = this.inner.db.record_pull(repository_id, &tag).await {
                tracing::warn!("recording a pull: {e}");
                this.inner.recent.forget(&key);
            }
        });
    }

    /// Keeps a repository's link to a blob young (collection spares it for a grace), with
    /// one write per quarter of the grace at most: the link is then at most half a grace
    /// old (a write skipped a quarter after one that found the link a quarter old), so the
    /// blob a client found stays for at least half a grace (30 minutes by default).
    pub(crate) async fn keep_link(
        &self,
        repository_id: i64,
        digest: &str,
    ) -> gantry_store::Result<()> {
        let every = self.inner.gc_grace / 4;
        let key = format!("link {repository_id} {digest}");
        if self.inner.recent.seen(key.clone(), every) {
            return Ok(());
        }
        let r = self
            .inner
            .db
            .touch_link(repository_id, digest, every.as_millis() as i64)
            .await;
        if r.is_err() {
            self.inner.recent.forget(&key);
        }
        r
    }

    /// The lock of a digest's stripe.
    pub(crate) async fn lock_digest(&self, d: &digest::Digest) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = u8::from_str_radix(&d.hex()[..2], 16).unwrap_or(0) as usize;
        self.inner.locks[stripe % self.inner.locks.len()]
            .lock()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn recent_writes_are_skipped_within_their_window_only() {
        let r = Recent::default();
        let long = Duration::from_secs(60);
        assert!(!r.seen("a".into(), long), "a first write is made");
        assert!(
            r.seen("a".into(), long),
            "the same write within the window is skipped"
        );
        assert!(!r.seen("b".into(), long), "another key is its own");
        r.forget("a");
        assert!(
            !r.seen("a".into(), long),
            "a forgotten write (it failed) is made again"
        );
        let short = Duration::from_millis(5);
        assert!(!r.seen("c".into(), short));
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            !r.seen("c".into(), short),
            "past the window the write is made again"
        );
    }
}
