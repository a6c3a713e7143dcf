//! Replication: the tags a rule selects among a project's repositories, pushed to another
//! registry by digest with the [`client`](crate::client), read straight from this registry's
//! store (no HTTP to itself, no token).
//!
//! ```text
//! Selection (the project, a repository glob, a tag glob; or one pushed image)
//!   ─► repositories of the project whose name below the project's path matches
//!   ─► their tags that match (a tag gone since its push: nothing to do)
//!   ─► Copier::copy to DEST/NAME:TAG, NAME with the rule's namespace in place of the
//!      project's path: only the blobs the destination lacks, the same digest
//! ```
//!
//! The rules themselves, their schedule, queue and retries are the engine's
//! (`gantry_engine::engine::replication`); this is one run's work. A failure that would
//! fail every image (credentials, an unreachable destination) stops the run; another (one
//! image the destination refuses) is reported after the other images are copied.

use crate::client::{
    Blob, Copier, CopyError, CopyStats, Credentials, ErrorKind, Manifest, Remote, RemoteOptions,
    Source,
};
use crate::digest::Digest;
use crate::{Authority, Registry};
use bytes::Bytes;
use globset::{Glob, GlobBuilder, GlobMatcher};
use std::io::Read;
use std::time::Duration;

/// A rule's filters, ready to match.
#[derive(Debug, Clone)]
pub struct Filters {
    repositories: GlobMatcher,
    tags: GlobMatcher,
}

impl Filters {
    /// `repositories` matches names below the project's path (`*` stays within one `/`
    /// segment, `**` crosses them); `tags` matches tags. A bad glob is an error naming it.
    pub fn new(repositories: &str, tags: &str) -> Result<Filters, String> {
        let repositories = GlobBuilder::new(repositories)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("the repositories filter '{repositories}': {e}"))?
            .compile_matcher();
        let tags = Glob::new(tags)
            .map_err(|e| format!("the tags filter '{tags}': {e}"))?
            .compile_matcher();
        Ok(Filters { repositories, tags })
    }

    /// Whether the rule takes `repository` (its name below the project's path) and `tag`.
    pub fn matches(&self, repository: &str, tag: &str) -> bool {
        self.repositories.is_match(repository) && self.tags.is_match(tag)
    }
}

/// What a run replicates: a project's tags that match, or one pushed image.
#[derive(Debug, Clone)]
pub struct Selection {
    pub project_id: i64,
    pub project_path: String,
    pub repositories: String,
    pub tags: String,
    /// The pushed image (repository, tag), when the run is for one.
    pub image: Option<(String, String)>,
}

/// Where it goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    /// Replaces the project's path in the names; empty: names are kept.
    pub namespace: String,
    pub credentials: Option<Credentials>,
    /// Accept any TLS certificate.
    pub insecure: bool,
    pub timeout: Duration,
}

/// The name `repository` of project `project_path` gets at the destination.
pub fn destination_name(project_path: &str, namespace: &str, repository: &str) -> String {
    let namespace = namespace.trim_matches('/');
    if namespace.is_empty() {
        return repository.to_string();
    }
    match repository
        .strip_prefix(project_path)
        .and_then(|r| r.strip_prefix('/'))
    {
        Some(rest) => format!("{namespace}/{rest}"),
        None => format!("{namespace}/{repository}"),
    }
}

/// This registry as a [`Source`]: manifests and blobs from the database and the blob store.
struct Local<'a, A> {
    reg: &'a Registry<A>,
}

impl<A: Authority> Local<'_, A> {
    fn missing(what: String) -> CopyError {
        CopyError::new(ErrorKind::Gone, what)
    }

    async fn repo_id(&self, name: &str) -> Result<i64, CopyError> {
        match self.reg.inner.db.repository(name).await {
            Ok(Some(r)) => Ok(r.id),
            Ok(None) => Err(Self::missing(format!(
                "{name} is no longer in this registry"
            ))),
            Err(e) => Err(store_error(e)),
        }
    }
}

fn store_error(e: gantry_store::StoreError) -> CopyError {
    CopyError::new(
        ErrorKind::Unavailable,
        format!("this registry's store: {e}"),
    )
}

impl<A: Authority> Source for Local<'_, A> {
    async fn manifest(&self, name: &str, reference: &str) -> Result<Manifest, CopyError> {
        let db = &self.reg.inner.db;
        let id = self.repo_id(name).await?;
        let row = match Digest::parse(reference) {
            Some(d) => db.manifest(id, &d.to_string()).await,
            None => db.tagged_manifest(id, reference).await,
        }
        .map_err(store_error)?
        .ok_or_else(|| {
            Self::missing(format!("{name}:{reference} is no longer in this registry"))
        })?;
        let d = Digest::parse(&row.digest).ok_or_else(|| {
            Self::missing(format!(
                "{name}: a stored digest '{}' is not one",
                row.digest
            ))
        })?;
        let (blobs, key) = (self.reg.inner.blobs.clone(), d.blob_key());
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut v = Vec::new();
            blobs
                .open(&key)
                .map_err(std::io::Error::other)?
                .read_to_end(&mut v)?;
            Ok(v)
        })
        .await
        .map_err(|e| CopyError::new(ErrorKind::Unavailable, format!("reading a manifest: {e}")))?
        .map_err(|e| {
            CopyError::new(
                ErrorKind::Unavailable,
                format!("reading the manifest {name}@{}: {e}", row.digest),
            )
        })?;
        Manifest::checked(
            Bytes::from(bytes),
            Some(&row.media_type),
            &row.digest,
            None,
            &format!("{name}@{}", row.digest),
        )
    }

    async fn blob(&self, name: &str, digest: &str) -> Result<Blob, CopyError> {
        let id = self.repo_id(name).await?;
        let linked = self
            .reg
            .inner
            .db
            .linked_blob(id, digest)
            .await
            .map_err(store_error)?;
        let (Some(size), Some(d)) = (linked, Digest::parse(digest)) else {
            return Err(Self::missing(format!(
                "{name} has no blob {digest} any more"
            )));
        };
        let blobs = self.reg.inner.blobs.clone();
        let key = d.blob_key();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut r = match blobs.open(&key) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            loop {
                let mut buf = Vec::with_capacity(1 << 20);
                match (&mut r).take(1 << 20).read_to_end(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return; // the upload stopped
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Blob {
            size: Some(size as u64),
            body: reqwest::Body::wrap_stream(stream),
        })
    }
}

impl<A: Authority> Registry<A> {
    /// Copies what `sel` selects to `dest`. The counters say what was done, also when it
    /// failed part of the way.
    pub async fn replicate(
        &self,
        sel: &Selection,
        dest: &Destination,
    ) -> (CopyStats, Result<(), CopyError>) {
        let filters = match Filters::new(&sel.repositories, &sel.tags) {
            Ok(f) => f,
            Err(e) => {
                return (
                    CopyStats::default(),
                    Err(CopyError::new(ErrorKind::Refused, e)),
                );
            }
        };
        let remote = match Remote::new(
            &dest.url,
            dest.credentials.clone(),
            RemoteOptions {
                insecure: dest.insecure,
                timeout: dest.timeout,
            },
        ) {
            Ok(r) => r,
            Err(e) => return (CopyStats::default(), Err(e)),
        };
        let images = match self.selected(sel, &filters).await {
            Ok(i) => i,
            Err(e) => return (CopyStats::default(), Err(store_error(e))),
        };
        let local = Local { reg: self };
        let mut copier = Copier::new(&local, &remote);
        let mut failed: Vec<CopyError> = Vec::new();
        for (repository, tag) in &images {
            let to = destination_name(&sel.project_path, &dest.namespace, repository);
            match copier.copy(repository, tag, &to, tag).await {
                Ok(_) => {}
                // Deleted since it was listed (or pushed): nothing to replicate.
                Err(e) if e.kind == ErrorKind::Gone => {}
                Err(e) => {
                    let e = CopyError::new(
                        e.kind,
                        format!(
                            "{repository}:{tag} → {}/{to}:{tag}: {}",
                            remote.host(),
                            e.message
                        ),
                    );
                    // Every other image would fail alike.
                    if matches!(e.kind, ErrorKind::Auth | ErrorKind::Unreachable) {
                        return (copier.stats(), Err(e));
                    }
                    failed.push(e);
                }
            }
        }
        let stats = copier.stats();
        match failed.len() {
            0 => (stats, Ok(())),
            1 => (stats, Err(failed.remove(0))),
            n => {
                let first = failed.remove(0);
                let kind = if failed.iter().chain([&first]).all(CopyError::retryable) {
                    first.kind
                } else {
                    ErrorKind::Refused
                };
                (
                    stats,
                    Err(CopyError::new(
                        kind,
                        format!(
                            "{n} of {} images failed; the first: {}",
                            images.len(),
                            first.message
                        ),
                    )),
                )
            }
        }
    }

    /// The (repository, tag) pairs a selection names, as they are now.
    async fn selected(
        &self,
        sel: &Selection,
        filters: &Filters,
    ) -> gantry_store::Result<Vec<(String, String)>> {
        let db = &self.inner.db;
        let below = |name: &str| {
            name.strip_prefix(&sel.project_path)
                .and_then(|r| r.strip_prefix('/'))
                .map(String::from)
        };
        let mut out = Vec::new();
        if let Some((repository, tag)) = &sel.image {
            let ours = db
                .repository(repository)
                .await?
                .is_some_and(|r| r.project_id == sel.project_id);
            if ours && below(repository).is_some_and(|n| filters.matches(&n, tag)) {
                out.push((repository.clone(), tag.clone()));
            }
            return Ok(out);
        }
        for repo in db.repositories_of(sel.project_id).await? {
            let Some(short) = below(&repo.name) else {
                continue;
            };
            let mut last: Option<String> = None;
            loop {
                let tags = db.tags(repo.id, last.as_deref(), 1000).await?;
                let done = tags.len() < 1000;
                for t in &tags {
                    if filters.matches(&short, &t.name) {
                        out.push((repo.name.clone(), t.name.clone()));
                    }
                }
                last = tags.last().map(|t| t.name.clone());
                if done {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_the_destination() {
        assert_eq!(destination_name("dev", "", "dev/app"), "dev/app");
        assert_eq!(
            destination_name("dev", "team", "dev/app/web"),
            "team/app/web"
        );
        assert_eq!(
            destination_name("team/dev", "/mirror/", "team/dev/app"),
            "mirror/app"
        );
    }

    #[test]
    fn filters() {
        let f = Filters::new("**", "*").unwrap();
        assert!(f.matches("app", "1.0") && f.matches("tools/web", "latest"));
        let f = Filters::new("app*", "v*").unwrap();
        assert!(f.matches("app", "v1") && f.matches("app-web", "v2"));
        assert!(!f.matches("app/web", "v1"), "* stays within a segment");
        assert!(!f.matches("app", "1.0"));
        let f = Filters::new("tools/**", "{v*,latest}").unwrap();
        assert!(f.matches("tools/a/b", "latest") && !f.matches("app", "latest"));
        let e = Filters::new("[", "*").unwrap_err();
        assert!(e.contains("repositories filter '['"), "{e}");
    }
}
