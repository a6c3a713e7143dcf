//! The repository a local command works on: finding the pipeline file, reading includes from
//! the working tree, and the commit facts that go into a [`Trigger`].

use anyhow::{Context, Result, bail};
use gantry_pipeline::resolve::{FetchError, Fetched, Fetcher};
use gantry_pipeline::trigger::{CommitInfo, ProjectInfo, Trigger};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pipeline file names, in the order they are looked for.
pub const PIPELINE_FILES: &[&str] = &[".gantry.yml", ".gitlab-ci.yml"];

#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
    pub is_git: bool,
}

impl Repo {
    /// The repository containing `dir`: the git top level, or `dir` itself outside git.
    ///
    /// A folder holding a pipeline file is a project of its own even inside a larger
    /// repository (like `examples/hello`).
    pub fn discover(dir: &Path) -> Repo {
        if PIPELINE_FILES.iter().any(|f| dir.join(f).is_file()) {
            let is_git = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["rev-parse", "--is-inside-work-tree"])
                .output()
                .is_ok_and(|o| o.status.success());
            let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            return Repo { root, is_git };
        }
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--show-toplevel"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let root = String::from_utf8_lossy(&o.stdout).trim().to_string();
                Repo {
                    root: PathBuf::from(root),
                    is_git: true,
                }
            }
            _ => Repo {
                root: dir.to_path_buf(),
                is_git: false,
            },
        }
    }

    /// Finds the pipeline file: `--file` if given, else `.gantry.yml`, else `.gitlab-ci.yml`.
    pub fn pipeline_file(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(f) = explicit {
            if !f.exists() {
                bail!("{} does not exist", f.display());
            }
            return Ok(f.to_path_buf());
        }
        for name in PIPELINE_FILES {
            let p = self.root.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        bail!(
            "no pipeline file in {}: create .gantry.yml or .gitlab-ci.yml, or pass --file",
            self.root.display()
        )
    }

    /// The file's name relative to the repository root, for diagnostics.
    pub fn display_name(&self, file: &Path) -> String {
        let abs = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        let root = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        abs.strip_prefix(&root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file.display().to_string())
    }

    fn git(&self, args: &[&str]) -> Option<String> {
        if !self.is_git {
            return None;
        }
        let o = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(args)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    }

    /// Files changed between `git_ref` and HEAD (`git diff --name-only REF...HEAD`, from
    /// their merge base, as GitLab compares), relative to the project; `None` when the ref is
    /// unknown or this is not a git repository.
    pub fn changed_since(&self, git_ref: &str) -> Option<Vec<String>> {
        let out = self.git(&[
            "diff",
            "--name-only",
            "--relative",
            &format!("{git_ref}...HEAD"),
        ])?;
        Some(out.lines().map(str::to_string).collect())
    }

    /// Every file in the working tree (tracked and untracked-but-not-ignored in git).
    pub fn files(&self) -> Vec<String> {
        if let Some(out) = self.git(&["ls-files", "--cached", "--others", "--exclude-standard"]) {
            return out.lines().map(str::to_string).collect();
        }
        gantry_runner::fsutil::walk_files(&self.root, gantry_runner::workspace::SKIPPED_DIRS)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Facts about HEAD for the trigger, with safe defaults outside git.
    pub fn trigger_base(&self) -> Trigger {
        let mut t = Trigger::default();
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "project".into());
        t.project = ProjectInfo {
            path: format!("local/{name}"),
            title: name.clone(),
            dir: self.root.display().to_string(),
            ..ProjectInfo::default()
        };
        t.ref_name = self
            .git(&["symbolic-ref", "--short", "-q", "HEAD"])
            .unwrap_or_else(|| "main".into());
        if let Some(default) =
            self.git(&["symbolic-ref", "--short", "-q", "refs/remotes/origin/HEAD"])
        {
            t.project.default_branch = default.trim_start_matches("origin/").to_string();
        } else {
            t.project.default_branch = t.ref_name.clone();
        }
        let mut c = CommitInfo::default();
        if let Some(log) = self.git(&["log", "-1", "--format=%H%x00%an%x00%ae%x00%aI%x00%B"]) {
            let parts: Vec<&str> = log.splitn(5, '\0').collect();
            if let [sha, an, ae, ts, msg] = parts[..] {
                c = CommitInfo {
                    sha: sha.into(),
                    before_sha: "0".repeat(40),
                    message: msg.trim_end().into(),
                    author_name: an.into(),
                    author_email: ae.into(),
                    timestamp: ts.into(),
                };
            }
        }
        t.commit = c;
        t.files = Some(self.files());
        t
    }
}

/// Reads includes from the working tree. `project` includes are looked up in directories
/// given with `--project NAME=DIR`; remote includes are fetched with a timeout and size cap.
#[derive(Debug)]
pub struct FsFetcher {
    pub repo: Repo,
    pub projects: Vec<(String, PathBuf)>,
}

/// Largest include file read from anywhere.
const MAX_INCLUDE_BYTES: u64 = 4 << 20;

impl Fetcher for FsFetcher {
    fn local(&self, path: &str) -> Result<Fetched, FetchError> {
        read_under(&self.repo.root, path).map(|text| Fetched {
            name: path.to_string(),
            text,
        })
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        Ok(self.repo.files())
    }

    fn project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<Fetched, FetchError> {
        let Some((_, dir)) = self.projects.iter().find(|(n, _)| n == project) else {
            return Err(FetchError::Unsupported(format!(
                "project '{project}' is not known here; pass --project {project}=DIR to read it from a local checkout"
            )));
        };
        let text = match git_ref {
            Some(r) => {
                let o = Command::new("git")
                    .arg("-C")
                    .arg(dir)
                    .args(["show", &format!("{r}:{path}")])
                    .output()
                    .map_err(|e| FetchError::Failed(e.to_string()))?;
                if !o.status.success() {
                    return Err(FetchError::NotFound);
                }
                String::from_utf8(o.stdout)
                    .map_err(|_| FetchError::Failed("the file is not UTF-8".into()))?
            }
            None => read_under(dir, path)?,
        };
        Ok(Fetched {
            name: format!(
                "{project}:{path}{}",
                git_ref.map(|r| format!("@{r}")).unwrap_or_default()
            ),
            text,
        })
    }

    fn remote(&self, url: &str) -> Result<Fetched, FetchError> {
        crate::cmd::remote::fetch(url, MAX_INCLUDE_BYTES).map(|text| Fetched {
            name: url.to_string(),
            text,
        })
    }
}

fn read_under(root: &Path, path: &str) -> Result<String, FetchError> {
    if path.split('/').any(|c| c == "..") {
        return Err(FetchError::Failed(
            "include paths cannot contain '..'".into(),
        ));
    }
    let p = root.join(path);
    let meta = std::fs::metadata(&p).map_err(|_| FetchError::NotFound)?;
    if meta.len() > MAX_INCLUDE_BYTES {
        return Err(FetchError::Failed(format!(
            "the file is larger than {MAX_INCLUDE_BYTES} bytes"
        )));
    }
    std::fs::read_to_string(&p).map_err(|e| FetchError::Failed(e.to_string()))
}

/// Reads a pipeline file with a clear error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
