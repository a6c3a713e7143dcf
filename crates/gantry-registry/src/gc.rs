//! Garbage collection, online: it runs while clients push and pull, and never removes what
//! an upload or a manifest in progress needs.
//!
//! 1. Upload files untouched for a day (a client that went away) are removed.
//! 2. Links older than the grace period that no manifest of their repository uses are
//!    removed (layers pushed without a manifest, or left by a deleted one). A client that
//!    pushed a layer a moment ago and is about to put its manifest is within the grace
//!    period; one that found an old layer with `HEAD` made the link young again; and putting
//!    a manifest re-checks, in its transaction, that each blob it uses is still linked.
//! 3. Blobs recorded before the grace period and linked nowhere are forgotten, then their
//!    bytes deleted, each under the digest's lock that an upload of the same digest takes
//!    from "is it stored?" to "it is linked": a push of the same bytes either comes first
//!    (the blob is linked, so kept) or after (it stores the bytes again).
//!
//! The locks are the process's: with several servers on one database, run collection on
//! one of them (`--registry-gc-interval 0` on the others).

use crate::digest::Digest;
use crate::error::Result;
use crate::{Authority, Registry};
use std::time::{Duration, SystemTime};

/// Upload files older than this are abandoned.
pub const UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default grace period: what is younger is never collected.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub uploads_removed: u64,
    pub links_removed: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
}

impl<A: Authority> Registry<A> {
    /// What the server's collection task does: every project's retention rules, then a
    /// collection.
    pub async fn retention_and_collection(&self) -> Result<GcReport> {
        for project in self.inner.db.registry_projects_with_policy().await? {
            let r = self.apply_retention(project, false).await?;
            if !r.removed.is_empty() {
                tracing::info!(project, removed = ?r.removed, "registry retention");
            }
        }
        self.collect_garbage(self.inner.gc_grace).await
    }

    /// One collection with `grace` (see the module's description).
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport> {
        let mut report = GcReport::default();
        let dir = self.inner.uploads.dir().to_path_buf();
        report.uploads_removed = tokio::task::spawn_blocking(move || remove_old_files(&dir))
            .await
            .expect("upload sweep");
        let cutoff = gantry_store::db::now_ms() - grace.as_millis() as i64;
        let db = &self.inner.db;
        report.links_removed = db.gc_unreferenced_links(cutoff).await?;
        loop {
            let batch = db.gc_unlinked_blobs(cutoff, 500).await?;
            if batch.is_empty() {
                break;
            }
            let mut forgot_any = false;
            for (digest, size) in batch {
                let Some(d) = Digest::parse(&digest) else {
                    continue;
                };
                let _held = self.lock_digest(&d).await;
                if !db.gc_forget_blob(&digest, cutoff).await? {
                    continue; // linked again meanwhile
                }
                forgot_any = true;
                let (blobs, key) = (self.inner.blobs.clone(), d.blob_key());
                tokio::task::spawn_blocking(move || blobs.delete(&key))
                    .await
                    .expect("blob delete")?;
                report.blobs_removed += 1;
                report.bytes_freed += size.max(0) as u64;
            }
            if !forgot_any {
                break;
            }
        }
        if report != GcReport::default() {
            tracing::info!(
                uploads = report.uploads_removed,
                links = report.links_removed,
                blobs = report.blobs_removed,
                bytes = report.bytes_freed,
                "registry garbage collected"
            );
        }
        Ok(report)
    }
}

/// Removes upload files older than [`UPLOAD_TTL`]; how many.
fn remove_old_files(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut n = 0;
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > UPLOAD_TTL);
        if old && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}
