//! The server's git mirrors: one bare repository per registered project, kept in sync with
//! the project's remote by the `git` program, and read when a pipeline is triggered (its
//! pipeline file and includes at the pipeline's commit, the commit's facts, the files a push
//! changed) and when an agent asks for the commit's files (a tar stream).
//!
//! # Layout
//!
//! ```text
//! <dir>/                  a bare repository (`git init --bare`), branches in refs/heads,
//!   HEAD                  tags in refs/tags, exactly as on the remote; HEAD follows the
//!   config                remote's default branch. The config holds `remote.origin.url`
//!   objects/ refs/        with credentials removed, and nothing else of ours.
//!   info/attributes       `* -export-ignore -export-subst`: archives hold every file, as a
//!                         clone would (GitLab jobs see a clone), whatever .gitattributes says
//!   gantry/               the private HOME of git commands and ssh's known_hosts
//! ```
//!
//! # Choices
//!
//! - **The `git` program** for everything that talks to a remote or writes (fetch, archive,
//!   diff): it is what remotes are tested against (auth, protocol v2, partial packs) and it
//!   keeps the server free of C bindings.
//! - **Reads in process, with gix** (`objects.rs`): resolving a ref, reading a file and
//!   reading a commit are calls into the object database, behind a mutex per mirror: no
//!   process per mirror (each `git cat-file --batch` we used before held about 4 MiB) and
//!   no pipe round trips (about 70 µs each here). The reader is opened without any
//!   configuration but the repository's own, dropped after every fetch (so it sees new packs
//!   and refs for certain) and after a while unused, and reopened and retried once when a
//!   read fails. Listing a commit's files walks its trees. `changed_files` and `archive`
//!   start a git process each.
//! - **Nothing inherited**: every git process starts with an empty environment plus `PATH`,
//!   `TMPDIR`, proxy and CA variables; `HOME` is the mirror's private dir,
//!   `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`, `LC_ALL=C` (so stderr can be
//!   classified), `GIT_TERMINAL_PROMPT=0`, `credential.helper` emptied, and
//!   `GIT_ALLOW_PROTOCOL=file:git:http:https:ssh` (no `ext::` helpers).
//! - **Credentials never touch argv, config files or messages.** For http(s), `GIT_ASKPASS`
//!   points to a script in a private 0700 temp dir that prints `$GANTRY_GIT_USERNAME` or
//!   `$GANTRY_GIT_PASSWORD`, variables set only in that fetch's environment. For ssh,
//!   the key is written 0600 in such a dir for the duration of the command, and
//!   `GIT_SSH_COMMAND` is `ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes
//!   -o IdentityAgent=none -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=<dir>/gantry/known_hosts -i <key>`
//!   (no key: `-o IdentityFile=none`, so the server's own keys are never offered).
//!   Credentials written in an http(s) URL are moved out of it; every message is scrubbed of
//!   `user:pass@` and of the secrets themselves.
//! - **Timeouts** kill the whole process group (git, its remote helper, ssh): 10 minutes for
//!   network commands and archives by default, 1 minute for local ones ([`Timeouts`]).
//!   HTTP transfers slower than 1 kB/s for 60 s are also abandoned by git itself.
//! - **Fetches are serialized per mirror**; reads run alongside them (git updates refs
//!   atomically after the objects are in place).
//! - `fetch(&[])` also asks the remote for its HEAD (`ls-remote --symref`) to follow the
//!   default branch; targeted fetches (a webhook's ref) skip that round trip.

mod commit;
mod error;
mod fetcher;
mod objects;
mod remote;
mod run;

pub use commit::CommitInfo;
pub use error::{GitError, redact_urls};
pub use fetcher::{MAX_INCLUDE_BYTES, MirrorFetcher, ProjectLookup};
pub use remote::{Remote, Transport};

use objects::{Contents, Objects};
use run::{Runner, STATE_DIR};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long git commands may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Commands that talk to the remote (fetch, ls-remote), and archives (whose reader may
    /// be slow).
    pub network: Duration,
    /// Commands on the mirror alone.
    pub local: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            network: Duration::from_secs(600),
            local: Duration::from_secs(60),
        }
    }
}

/// One project's bare mirror. Blocking: call it from `spawn_blocking`. Share it in an `Arc`;
/// every method takes `&self`.
pub struct Mirror {
    runner: Runner,
    timeouts: Timeouts,
    /// The in-process reader, opened on first use and dropped after a fetch (so that it
    /// sees new packs) and when idle (it maps pack files).
    objects: Mutex<Option<Objects>>,
    /// When the reader was last used (for [`Mirror::release_idle`]).
    last_used: Mutex<std::time::Instant>,
    fetching: Mutex<()>,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.runner.git_dir)
            .field("remote", &self.runner.remote)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Opens the mirror in `dir`, creating a bare repository there if there is none, and
    /// points its `origin` at `remote` (credentials are kept in memory only).
    pub fn open(dir: PathBuf, remote: Remote) -> Result<Mirror, GitError> {
        let remote = remote.normalized()?;
        std::fs::create_dir_all(dir.join(STATE_DIR)).map_err(|e| {
            GitError::io(format!("cannot create the mirror dir {}", dir.display()), e)
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| GitError::io(format!("cannot open {}", dir.display()), e))?;
        let mirror = Mirror {
            runner: Runner {
                git_dir: dir,
                remote,
            },
            timeouts: Timeouts::default(),
            objects: Mutex::new(None),
            last_used: Mutex::new(std::time::Instant::now()),
            fetching: Mutex::new(()),
        };
        let t = mirror.timeouts.local;
        let dir = &mirror.runner.git_dir;
        if !dir.join("HEAD").is_file() {
            mirror.runner.output(
                "init",
                &["init", "--bare", "--quiet", "--initial-branch=main"],
                t,
            )?;
        }
        let url = &mirror.runner.remote.url;
        let current = mirror
            .runner
            .output("config", &["config", "--get", "remote.origin.url"], t)
            .unwrap_or_default();
        if current.strip_suffix(b"\n").unwrap_or(&current) != url.as_bytes() {
            mirror
                .runner
                .output("config", &["config", "remote.origin.url", url.as_str()], t)?;
        }
        let attributes = dir.join("info").join("attributes");
        let wanted = "* -export-ignore -export-subst\n";
        if std::fs::read_to_string(&attributes).ok().as_deref() != Some(wanted) {
            std::fs::create_dir_all(dir.join("info"))
                .and_then(|()| std::fs::write(&attributes, wanted))
                .map_err(|e| GitError::io(format!("cannot write {}", attributes.display()), e))?;
        }
        Ok(mirror)
    }

    /// Replaces the default timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Mirror {
        self.timeouts = timeouts;
        self
    }

    /// The bare repository's directory.
    pub fn dir(&self) -> &Path {
        &self.runner.git_dir
    }

    /// The remote's URL without credentials, for display.
    pub fn url(&self) -> &str {
        &self.runner.remote.url
    }

    /// Fetches branches and tags from the remote, removing the ones deleted there. With
    /// `refs` empty, everything (and the remote's default branch); otherwise just those:
    /// full ref names (`refs/heads/main`, `refs/tags/v1`), branch names, or commit shas.
    pub fn fetch(&self, refs: &[&str]) -> Result<(), GitError> {
        let _one_at_a_time = lock(&self.fetching);
        let mut args: Vec<String> = [
            "fetch",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "origin",
        ]
        .map(String::from)
        .to_vec();
        if refs.is_empty() {
            args.push("+refs/heads/*:refs/heads/*".into());
            args.push("+refs/tags/*:refs/tags/*".into());
        } else {
            for r in refs {
                args.push(refspec(r)?);
            }
        }
        let result = self
            .runner
            .output_net("fetch", &args, self.timeouts.network);
        // Whatever happened, the next read opens a reader that sees the new state.
        *self.objects_guard() = None;
        result?;
        if refs.is_empty() {
            self.follow_remote_head()?;
        }
        Ok(())
    }

    /// The remote's branches and tags (`git ls-remote`), as full ref names and commit shas
    /// (an annotated tag's commit, not the tag object), sorted by name. Nothing is fetched.
    pub fn list_remote(&self) -> Result<Vec<(String, String)>, GitError> {
        let out =
            self.runner
                .output_net("ls-remote", &["ls-remote", "origin"], self.timeouts.network)?;
        let mut refs = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out).lines() {
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) {
                continue;
            }
            match name.strip_suffix("^{}") {
                // The commit an annotated tag points at wins over the tag object.
                Some(tag) => {
                    refs.insert(tag.to_string(), sha.to_string());
                }
                None => {
                    refs.entry(name.to_string())
                        .or_insert_with(|| sha.to_string());
                }
            }
        }
        Ok(refs.into_iter().collect())
    }

    /// Points HEAD at the remote's default branch.
    fn follow_remote_head(&self) -> Result<(), GitError> {
        let out = self.runner.output_net(
            "ls-remote",
            &["ls-remote", "--symref", "origin", "HEAD"],
            self.timeouts.network,
        )?;
        let out = String::from_utf8_lossy(&out);
        let target = out.lines().find_map(|l| {
            l.strip_prefix("ref: ")?
                .strip_suffix("\tHEAD")
                .filter(|r| r.starts_with("refs/heads/"))
        });
        let Some(target) = target else {
            return Ok(());
        };
        let current = self.runner.output(
            "symbolic-ref",
            &["symbolic-ref", "-q", "HEAD"],
            self.timeouts.local,
        );
        if current.ok().as_deref() != Some(format!("{target}\n").as_bytes()) {
            self.runner.output(
                "symbolic-ref",
                &["symbolic-ref", "HEAD", target],
                self.timeouts.local,
            )?;
        }
        Ok(())
    }

    /// The full sha of the commit a branch, tag, sha (or any rev) names, `None` if the mirror
    /// has no such commit. Like `rev-parse --verify --quiet <rev>^{commit}`.
    pub fn resolve(&self, rev: &str) -> Result<Option<String>, GitError> {
        check_rev(rev)?;
        let name = format!("{rev}^{{commit}}");
        self.with_objects(|o| o.info(&name))
            .map(|o| o.map(|info| info.oid))
    }

    /// True when `name` (without `refs/heads/`) is a branch of the mirror.
    pub fn is_branch(&self, name: &str) -> Result<bool, GitError> {
        self.ref_exists("refs/heads/", name)
    }

    /// True when `name` (without `refs/tags/`) is a tag of the mirror.
    pub fn is_tag(&self, name: &str) -> Result<bool, GitError> {
        self.ref_exists("refs/tags/", name)
    }

    fn ref_exists(&self, prefix: &str, name: &str) -> Result<bool, GitError> {
        check_rev(name)?;
        let full = format!("{prefix}{}", name.strip_prefix(prefix).unwrap_or(name));
        self.with_objects(|o| o.info(&full)).map(|o| o.is_some())
    }

    /// The remote's default branch (the mirror's HEAD), `None` before the first fetch or
    /// when the repository is empty.
    pub fn default_branch(&self) -> Result<Option<String>, GitError> {
        let head = std::fs::read_to_string(self.dir().join("HEAD"))
            .map_err(|e| GitError::io(format!("cannot read {}/HEAD", self.dir().display()), e))?;
        let Some(branch) = head.trim().strip_prefix("ref: refs/heads/") else {
            return Ok(None);
        };
        Ok(self.is_branch(branch)?.then(|| branch.to_string()))
    }

    /// The file at `path` in commit `sha`; `None` when there is no file there (or it is a
    /// directory or a submodule).
    pub fn read_file(&self, sha: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        self.read_file_limited(sha, path, u64::MAX)
    }

    /// Like [`Mirror::read_file`], failing with [`GitError::TooLarge`] above `max` bytes
    /// without reading the file into memory.
    pub fn read_file_limited(
        &self,
        sha: &str,
        path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, GitError> {
        check_rev(sha)?;
        let path = clean_path(path)?;
        let name = format!("{sha}:{path}");
        match self.with_objects(|o| o.contents(&name, max))? {
            Some((info, Contents::Data(data))) if info.kind == "blob" => Ok(Some(data)),
            Some((info, Contents::TooLarge(size))) if info.kind == "blob" => {
                Err(GitError::TooLarge {
                    url: self.url().to_string(),
                    path,
                    size,
                    max,
                })
            }
            _ => Ok(None),
        }
    }

    /// Every file of commit `sha` (paths from the root, symlinks and submodules included),
    /// in git's order, as `git ls-tree -r --name-only` lists them.
    pub fn list_files(&self, sha: &str) -> Result<Vec<String>, GitError> {
        check_rev(sha)?;
        let root = format!("{sha}^{{tree}}");
        self.with_objects(|o| o.list_tree(&root))?
            .ok_or_else(|| GitError::UnknownRevision {
                url: self.url().to_string(),
                rev: sha.to_string(),
            })
    }

    /// The facts of commit `sha` for the `CI_COMMIT_*` variables.
    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo, GitError> {
        check_rev(sha)?;
        let name = format!("{sha}^{{commit}}");
        let found = self.with_objects(|o| o.contents(&name, 64 << 20))?;
        let unknown = || GitError::UnknownRevision {
            url: self.url().to_string(),
            rev: sha.to_string(),
        };
        match found {
            Some((info, Contents::Data(raw))) => {
                commit::parse(&info.oid, &raw).ok_or_else(|| GitError::Command {
                    url: self.url().to_string(),
                    op: "cat-file",
                    stderr: format!("commit {} cannot be parsed", info.oid),
                })
            }
            _ => Err(unknown()),
        }
    }

    /// Files that differ between commits `from` and `to` (`from` is a push's before-sha),
    /// renames as their old and new paths, as GitLab lists them for `rules:changes`.
    /// [`GitError::UnknownRevision`] when the mirror lacks either commit (a force-push can
    /// leave `from` unreachable): the caller then treats the changes as unknown.
    pub fn changed_files(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        let from = self.must_resolve(from)?;
        let to = self.must_resolve(to)?;
        let out = self.runner.output(
            "diff-tree",
            &[
                "diff-tree",
                "-r",
                "-z",
                "--name-only",
                "--no-renames",
                "--no-commit-id",
                &from,
                &to,
            ],
            self.timeouts.local,
        )?;
        Ok(split_z(&out))
    }

    /// Writes a tar of commit `sha`'s files to `out` as git produces it (bounded memory),
    /// returning the bytes written. Every file is there: `export-ignore` is overridden.
    pub fn archive(&self, sha: &str, out: &mut dyn Write) -> Result<u64, GitError> {
        let sha = self.must_resolve(sha)?;
        let mut cmd = self.runner.command();
        cmd.args(["archive", "--format=tar", &sha]);
        self.runner.exec("archive", cmd, self.timeouts.network, out)
    }

    /// Closes the reader when it has not been used for `idle` (it maps pack files and keeps
    /// caches); the next read opens it again. Returns whether it closed one.
    pub fn release_idle(&self, idle: Duration) -> bool {
        if lock(&self.last_used).elapsed() < idle {
            return false;
        }
        // Never wait for a mirror in use: try, and leave it for the next round.
        match self.objects.try_lock() {
            Ok(mut g) if g.is_some() => {
                *g = None;
                true
            }
            _ => false,
        }
    }

    /// Whether the reader is open (for tests and diagnostics).
    pub fn reader_open(&self) -> bool {
        self.objects_guard().is_some()
    }

    fn must_resolve(&self, rev: &str) -> Result<String, GitError> {
        self.resolve(rev)?.ok_or_else(|| GitError::UnknownRevision {
            url: self.url().to_string(),
            rev: rev.to_string(),
        })
    }

    fn objects_guard(&self) -> MutexGuard<'_, Option<Objects>> {
        lock(&self.objects)
    }

    /// Runs `f` on the reader, opening it if needed; on a failure the reader is reopened and
    /// `f` tried once more (a pack replaced under it by a concurrent fetch, say).
    fn with_objects<T>(
        &self,
        f: impl Fn(&Objects) -> Result<T, objects::ReadError>,
    ) -> Result<T, GitError> {
        let mut guard = self.objects_guard();
        let mut last = None;
        for _ in 0..2 {
            if guard.is_none() {
                let o = Objects::open(self.dir()).map_err(|e| GitError::Command {
                    url: self.url().to_string(),
                    op: "open",
                    stderr: e.to_string(),
                })?;
                *guard = Some(o);
            }
            match f(guard.as_ref().expect("opened above")) {
                Ok(v) => {
                    *lock(&self.last_used) = std::time::Instant::now();
                    return Ok(v);
                }
                Err(e) => {
                    tracing::warn!(mirror = %self.url(), error = %e, "reading the mirror failed; reopening it");
                    *guard = None;
                    last = Some(e);
                }
            }
        }
        Err(GitError::Command {
            url: self.url().to_string(),
            op: "read",
            stderr: last.map(|e| e.to_string()).unwrap_or_default(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A rev that is safe in argv and in the cat-file protocol.
fn check_rev(rev: &str) -> Result<(), GitError> {
    if rev.is_empty() {
        return Err(GitError::invalid("revision", rev, "it is empty"));
    }
    if rev.starts_with('-') {
        return Err(GitError::invalid("revision", rev, "it starts with '-'"));
    }
    if rev.chars().any(|c| c.is_control() || c == ':') {
        return Err(GitError::invalid(
            "revision",
            rev,
            "it contains ':' or a control character",
        ));
    }
    Ok(())
}

/// A path inside a tree: no leading `/`, no `.` or empty parts; `..` and newlines refused.
fn clean_path(path: &str) -> Result<String, GitError> {
    if path.chars().any(|c| c == '\n' || c == '\0') {
        return Err(GitError::invalid("path", path, "it contains a newline"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(GitError::invalid("path", path, "it contains '..'")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(GitError::invalid("path", path, "it names no file"));
    }
    Ok(parts.join("/"))
}

/// The refspec fetching `r` into the same name.
fn refspec(r: &str) -> Result<String, GitError> {
    let bad = r.is_empty()
        || r.starts_with('-')
        || r.contains("..")
        || r.ends_with('/')
        || r.ends_with(".lock")
        || r.chars()
            .any(|c| c.is_control() || c.is_whitespace() || ":*?[\\^~".contains(c));
    if bad {
        return Err(GitError::invalid(
            "ref",
            r,
            "it is not a valid branch, tag or ref name",
        ));
    }
    let is_sha = matches!(r.len(), 40 | 64) && r.bytes().all(|b| b.is_ascii_hexdigit());
    Ok(if is_sha {
        r.to_string()
    } else if r.starts_with("refs/") {
        format!("+{r}:{r}")
    } else {
        format!("+refs/heads/{r}:refs/heads/{r}")
    })
}

fn split_z(out: &[u8]) -> Vec<String> {
    out.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("/ci/./a.yml").unwrap(), "ci/a.yml");
        assert!(clean_path("../etc/passwd").is_err());
        assert!(clean_path("a\nb").is_err());
        assert!(clean_path("/").is_err());
    }

    #[test]
    fn revs_are_checked() {
        assert!(check_rev("main").is_ok());
        assert!(check_rev("v1.0^{commit}").is_ok());
        for bad in ["", "--upload-pack=x", "a:b", "a\nb"] {
            assert!(check_rev(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refspecs() {
        assert_eq!(refspec("main").unwrap(), "+refs/heads/main:refs/heads/main");
        assert_eq!(
            refspec("refs/tags/v1").unwrap(),
            "+refs/tags/v1:refs/tags/v1"
        );
        let sha = "ab".repeat(20);
        assert_eq!(refspec(&sha).unwrap(), sha);
        for bad in ["", "-x", "a..b", "a:b", "a b", "refs/heads/*"] {
            assert!(refspec(bad).is_err(), "{bad:?}");
        }
    }
}
