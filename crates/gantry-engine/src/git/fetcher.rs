//! [`MirrorFetcher`]: the pipeline resolver's [`Fetcher`] on the server. Local includes come
//! from the pipeline's own mirror at the pipeline's commit; `project` includes from other
//! projects' mirrors, found through a lookup the caller gives (which is also where it decides
//! who may include whom); remote includes are refused, the server has no network.

use super::{GitError, Mirror};
use gantry_pipeline::resolve::{FetchError, Fetched, Fetcher};
use std::fmt;
use std::sync::Arc;

/// Largest include file read, as `gantry run` allows.
pub const MAX_INCLUDE_BYTES: u64 = 4 << 20;

/// Finds the mirror of a project by its path (`group/name`); `None` when it is not
/// registered or the including project may not read it.
pub type ProjectLookup<'a> = &'a dyn Fn(&str) -> Option<Arc<Mirror>>;

/// Reads include files for one pipeline: `mirror` at `sha`.
pub struct MirrorFetcher<'a> {
    mirror: &'a Mirror,
    sha: String,
    projects: ProjectLookup<'a>,
}

impl fmt::Debug for MirrorFetcher<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorFetcher")
            .field("mirror", &self.mirror.url())
            .field("sha", &self.sha)
            .finish_non_exhaustive()
    }
}

impl<'a> MirrorFetcher<'a> {
    /// `sha` is the pipeline's commit (a full sha, so every include sees one tree).
    pub fn new(mirror: &'a Mirror, sha: impl Into<String>, projects: ProjectLookup<'a>) -> Self {
        MirrorFetcher {
            mirror,
            sha: sha.into(),
            projects,
        }
    }
}

fn failed(e: GitError) -> FetchError {
    FetchError::Failed(e.to_string())
}

fn read_text(mirror: &Mirror, sha: &str, path: &str) -> Result<String, FetchError> {
    match mirror.read_file_limited(sha, path, MAX_INCLUDE_BYTES) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map_err(|_| FetchError::Failed(format!("'{path}' is not UTF-8 text"))),
        Ok(None) => Err(FetchError::NotFound),
        Err(e) => Err(failed(e)),
    }
}

impl Fetcher for MirrorFetcher<'_> {
    fn local(&self, path: &str) -> Result<Fetched, FetchError> {
        read_text(self.mirror, &self.sha, path).map(|text| Fetched {
            name: path.to_string(),
            text,
        })
    }

    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        self.mirror.list_files(&self.sha).map_err(failed)
    }

    fn project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<Fetched, FetchError> {
        let Some(other) = (self.projects)(project) else {
            return Err(FetchError::Failed(format!(
                "project '{project}' is not registered on this server, or this project may not read it: check the path (group/name) and register the project"
            )));
        };
        let rev = match git_ref {
            Some(r) => r.to_string(),
            None => other.default_branch().map_err(failed)?.ok_or_else(|| {
                FetchError::Failed(format!(
                    "project '{project}' has no default branch yet: it has not been fetched, or its repository is empty"
                ))
            })?,
        };
        let sha = match other.resolve(&rev) {
            Ok(Some(sha)) => sha,
            Ok(None) | Err(GitError::Invalid { .. }) => {
                return Err(FetchError::Failed(format!(
                    "project '{project}' has no branch, tag or commit '{rev}'"
                )));
            }
            Err(e) => return Err(failed(e)),
        };
        let text = read_text(&other, &sha, path)?;
        Ok(Fetched {
            name: format!(
                "{project}:{path}{}",
                git_ref.map(|r| format!("@{r}")).unwrap_or_default()
            ),
            text,
        })
    }

    fn remote(&self, url: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::Unsupported(format!(
            "the server does not fetch remote includes ({}): copy the file into this repository and use `include: local`, or into a project on this server and use `include: project`",
            super::error::redact_urls(url)
        )))
    }
}
