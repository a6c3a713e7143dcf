//! A clean workspace per job, made from the working tree.
//!
//! By default a job sees the committed state (`git archive HEAD`), as a CI server would; with
//! `dirty` it sees the working tree as it is, tracked and untracked-but-not-ignored files
//! alike. Outside git the directory is copied whole (without `.git`, `target` and
//! `node_modules`).
//!
//! The tree is taken once per run ([`Source::snapshot`]) and each job's workspace is a copy
//! of that [`Snapshot`]: every job of a run sees the same files, even if the working tree
//! changes meanwhile, and no job pays for `git` again.

use crate::fsutil::{copy_file, copy_paths, list_files, walk_files};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Folders a copy of a tree outside git leaves out.
pub const SKIPPED_DIRS: &[&str] = &[".git", "target", "node_modules", ".gantry-cache"];

/// The project's files as one run sees them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dir: PathBuf,
    /// Relative paths of every file, sorted.
    pub files: Vec<PathBuf>,
}

impl Snapshot {
    /// Fills a job's empty workspace with the snapshot's files.
    pub fn checkout(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        copy_paths(&self.dir, dest, &self.files)
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub is_git: bool,
    pub dirty: bool,
}

impl Source {
    pub fn new(root: &Path, dirty: bool) -> Source {
        let is_git = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "--is-inside-work-tree"])
            .output()
            .is_ok_and(|o| o.status.success());
        Source {
            root: root.to_path_buf(),
            is_git,
            dirty,
        }
    }

    /// Takes the project's files into `dest` once, for every job of a run.
    pub fn snapshot(&self, dest: &Path) -> Result<Snapshot> {
        self.checkout(dest)?;
        Ok(Snapshot {
            dir: dest.to_path_buf(),
            files: list_files(dest),
        })
    }

    /// Fills the empty directory `dest` with the project's files.
    fn checkout(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        if self.is_git && !self.dirty {
            let has_head = Command::new("git")
                .arg("-C")
                .arg(&self.root)
                .args(["rev-parse", "--verify", "-q", "HEAD"])
                .output()?
                .status
                .success();
            if !has_head {
                bail!(
                    "the repository at {} has no commit yet: commit first, or run with --dirty to use the working tree",
                    self.root.display()
                );
            }
            // The project may be a folder of a larger repository: archive just that tree.
            let prefix = Command::new("git")
                .arg("-C")
                .arg(&self.root)
                .args(["rev-parse", "--show-prefix"])
                .output()
                .context("running git rev-parse")?;
            let prefix = String::from_utf8_lossy(&prefix.stdout)
                .trim()
                .trim_end_matches('/')
                .to_string();
            let top = Command::new("git")
                .arg("-C")
                .arg(&self.root)
                .args(["rev-parse", "--show-toplevel"])
                .output()
                .context("running git rev-parse")?;
            let top = String::from_utf8_lossy(&top.stdout).trim().to_string();
            let tree = if prefix.is_empty() {
                "HEAD".to_string()
            } else {
                format!("HEAD:{prefix}")
            };
            let archive = Command::new("git")
                .arg("-C")
                .arg(&top)
                .args(["archive", "--format=tar", &tree])
                .output()
                .context("running git archive")?;
            if !archive.status.success() {
                bail!(
                    "git archive failed: {}",
                    String::from_utf8_lossy(&archive.stderr).trim()
                );
            }
            let mut child = Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(dest)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("running tar")?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(&archive.stdout)?;
            let st = child.wait()?;
            if !st.success() {
                bail!("unpacking the checkout failed");
            }
            return Ok(());
        }
        for rel in self.files()? {
            let from = self.root.join(&rel);
            let to = dest.join(&rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if from.symlink_metadata().is_ok() {
                copy_file(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            }
        }
        Ok(())
    }

    /// Relative paths of the files a dirty checkout copies.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        if self.is_git {
            let o = Command::new("git")
                .arg("-C")
                .arg(&self.root)
                .args([
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ])
                .output()?;
            return Ok(o
                .stdout
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| PathBuf::from(String::from_utf8_lossy(s).to_string()))
                .collect());
        }
        Ok(walk_files(&self.root, SKIPPED_DIRS))
    }
}
