//! Small file-system helpers: copying trees and files (keeping modes and symlinks), and
//! matching paths against GitLab-style globs.

use anyhow::Result;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};

/// Copies one file or symlink, keeping the mode.
pub fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let meta = from.symlink_metadata()?;
    if to.symlink_metadata().is_ok() {
        if to.is_dir() && !meta.file_type().is_symlink() && meta.is_dir() {
            return Ok(());
        }
        let _ = std::fs::remove_file(to);
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        std::os::unix::fs::symlink(target, to)?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
    } else {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// Copies the relative paths `files` from `src` to `dst`, creating directories.
pub fn copy_paths(src: &Path, dst: &Path, files: &[PathBuf]) -> Result<()> {
    for rel in files {
        let to = dst.join(rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        copy_file(&src.join(rel), &to)?;
    }
    Ok(())
}

/// Every file (and symlink) below `root`, relative to it, sorted.
pub fn list_files(root: &Path) -> Vec<PathBuf> {
    walk_files(root, &[])
}

/// Like [`list_files`], without descending into directories named in `skip`.
pub fn walk_files(root: &Path, skip: &[&str]) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    if !skip.iter().any(|s| e.file_name() == *s) {
                        walk(root, &p, skip, out);
                    }
                }
                Ok(_) => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_path_buf());
                    }
                }
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, skip, &mut out);
    out.sort();
    out
}

/// A glob set with GitLab's path semantics: `*` stays within a directory, `**` crosses them,
/// and a pattern naming a directory matches everything below it.
pub fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.is_empty() {
            continue;
        }
        b.add(GlobBuilder::new(p).literal_separator(true).build()?);
        b.add(
            GlobBuilder::new(&format!("{p}/**"))
                .literal_separator(true)
                .build()?,
        );
    }
    Ok(b.build()?)
}

/// The files below `root` matched by `include` and not by `exclude`.
pub fn select(root: &Path, include: &[String], exclude: &[String]) -> Result<Vec<PathBuf>> {
    let inc = globs(include)?;
    let exc = globs(exclude)?;
    Ok(list_files(root)
        .into_iter()
        .filter(|f| inc.is_match(f) && !exc.is_match(f))
        .collect())
}
