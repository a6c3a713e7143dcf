//! Caches: kept between runs under a local cache directory, one directory per key.
//!
//! `key` is expanded with the job's variables; `key:files` hashes the named files' contents
//! (GitLab uses the last commit that changed them: the content hash changes in the same
//! cases and also works for uncommitted files), with `prefix`. `fallback_keys` and
//! `CACHE_FALLBACK_KEY` are tried in order when the key has no cache yet. `policy` decides
//! pull and push; `when` decides whether a failed job saves.

use crate::fsutil::{copy_paths, list_files, select};
use anyhow::Result;
use gantry_pipeline::model::{ArtifactsWhen, Cache, CacheKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Computes the cache key for a job, as GitLab names it.
pub fn key(c: &Cache, workspace: &Path, expand: &dyn Fn(&str) -> String) -> String {
    let raw = match &c.key {
        CacheKey::Literal(k) => expand(k),
        CacheKey::Files { files, prefix } => {
            let mut h = Sha256::new();
            for f in files {
                let f = expand(f);
                h.update(f.as_bytes());
                h.update([0]);
                if let Ok(bytes) = std::fs::read(workspace.join(&f)) {
                    h.update(&bytes);
                }
            }
            let digest = h.finalize();
            let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
            match prefix {
                Some(p) => format!("{}-{hex}", expand(p)),
                None => hex,
            }
        }
    };
    sanitize(&raw)
}

/// Keys are directory names: no `/`, no `..`.
fn sanitize(k: &str) -> String {
    let k = k.replace(['/', '\\'], "-");
    match k.as_str() {
        "" | "." | ".." => "default".into(),
        _ => k,
    }
}

/// Restores the first cache found among the key and its fallbacks. Returns the key used.
pub fn restore(
    c: &Cache,
    key: &str,
    fallback: Option<&str>,
    root: &Path,
    workspace: &Path,
    expand: &dyn Fn(&str) -> String,
) -> Result<Option<String>> {
    for k in candidates(c, key, fallback, expand) {
        if restore_key(root, &k, workspace)? {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// The keys to try, in order: the key, `fallback_keys`, then `CACHE_FALLBACK_KEY`. None when
/// the policy is `push`.
pub fn candidates(
    c: &Cache,
    key: &str,
    fallback: Option<&str>,
    expand: &dyn Fn(&str) -> String,
) -> Vec<String> {
    if c.policy == "push" {
        return Vec::new();
    }
    let mut keys = vec![key.to_string()];
    keys.extend(c.fallback_keys.iter().map(|k| sanitize(&expand(k))));
    if let Some(f) = fallback {
        keys.push(sanitize(f));
    }
    keys
}

/// Copies the cache `key` under `root` into the workspace; `false` when there is none.
pub fn restore_key(root: &Path, key: &str, workspace: &Path) -> Result<bool> {
    let dir = root.join(key);
    if !dir.is_dir() {
        return Ok(false);
    }
    copy_paths(&dir, workspace, &list_files(&dir))?;
    Ok(true)
}

/// A name for a temporary directory next to `root/key`, unique within this machine.
pub fn temp_name(key: &str, what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{key}.{what}-{}-{n}", std::process::id())
}

/// Saves the cache's paths under its key when the policy and `when` allow. Returns the number
/// of files saved, or `None` when nothing was saved.
pub fn save(
    c: &Cache,
    key: &str,
    success: bool,
    root: &Path,
    workspace: &Path,
    checkout: &[PathBuf],
    expand: &dyn Fn(&str) -> String,
) -> Result<Option<usize>> {
    if c.policy == "pull" {
        return Ok(None);
    }
    let wanted = match c.when {
        ArtifactsWhen::OnSuccess => success,
        ArtifactsWhen::OnFailure => !success,
        ArtifactsWhen::Always => true,
    };
    if !wanted {
        return Ok(None);
    }
    let paths: Vec<String> = c.paths.iter().map(|p| expand(p)).collect();
    let mut files = select(workspace, &paths, &[])?;
    if c.untracked {
        for f in list_files(workspace) {
            if !checkout.contains(&f) && !files.contains(&f) {
                files.push(f);
            }
        }
    }
    // Write into a fresh directory and swap it in, so a cache is never half written.
    let dir = root.join(key);
    let tmp = root.join(temp_name(key, "tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    copy_paths(workspace, &tmp, &files)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(Some(files.len()))
}
