//! Reading a mirror's objects in process, with gix: resolving a rev, reading a blob or a
//! commit, listing a tree. No process per mirror and no pipe round trips; the `git` program
//! stays in charge of everything that talks to a remote or writes (fetch, archive, diff).

use gix::bstr::ByteSlice;
use std::path::Path;

/// An object as git describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub oid: String,
    pub kind: String,
    pub size: u64,
}

/// What [`Objects::contents`] gave back.
#[derive(Debug)]
pub(crate) enum Contents {
    Data(Vec<u8>),
    /// The object was bigger than allowed and was not read.
    TooLarge(u64),
}

/// Why a read failed (not "no such object": that is `None`).
pub(crate) type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// An open handle on a bare repository's objects and refs. It sees refs as they are on
/// disk at each call, and packs added by a fetch once it is reopened (the mirror drops it
/// after every fetch).
pub(crate) struct Objects {
    repo: gix::Repository,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("git_dir", &self.repo.git_dir())
            .finish()
    }
}

impl Objects {
    /// Opens the repository at `git_dir`, reading no configuration but its own (not the
    /// system's, the user's or the environment's), as the mirror's git commands do.
    pub fn open(git_dir: &Path) -> Result<Objects, ReadError> {
        let repo = gix::open_opts(git_dir, gix::open::Options::isolated())?;
        Ok(Objects { repo })
    }

    /// The object `name` (a rev expression: `sha`, `ref`, `rev^{commit}`, `rev:path`)
    /// names, or `None`.
    pub fn info(&self, name: &str) -> Result<Option<Info>, ReadError> {
        let Some(id) = self.lookup(name) else {
            return Ok(None);
        };
        let header = self.repo.find_header(id)?;
        Ok(Some(Info {
            oid: id.to_string(),
            kind: header.kind().to_string(),
            size: header.size(),
        }))
    }

    /// The object's content, unless it is bigger than `max` bytes.
    pub fn contents(&self, name: &str, max: u64) -> Result<Option<(Info, Contents)>, ReadError> {
        let Some(info) = self.info(name)? else {
            return Ok(None);
        };
        if info.size > max {
            let size = info.size;
            return Ok(Some((info, Contents::TooLarge(size))));
        }
        let id = gix::ObjectId::from_hex(info.oid.as_bytes())?;
        let object = self.repo.find_object(id)?.detach();
        Ok(Some((info, Contents::Data(object.data))))
    }

    /// Every path under the tree `root` names (files, symlinks and submodules; not
    /// directories), sorted, or `None` when `root` names no tree.
    pub fn list_tree(&self, root: &str) -> Result<Option<Vec<String>>, ReadError> {
        let Some(id) = self.lookup(root) else {
            return Ok(None);
        };
        let object = self.repo.find_object(id)?;
        if object.kind != gix::object::Kind::Tree {
            return Ok(None);
        }
        let mut files = Vec::new();
        let mut level = vec![(String::new(), id)];
        while let Some((prefix, tree_id)) = level.pop() {
            let tree = self.repo.find_object(tree_id)?.try_into_tree()?;
            for entry in tree.iter() {
                let entry = entry?;
                let path = format!("{prefix}{}", entry.filename().to_str_lossy());
                if entry.mode().is_tree() {
                    level.push((path + "/", entry.oid().to_owned()));
                } else {
                    files.push(path);
                }
            }
        }
        files.sort_unstable();
        Ok(Some(files))
    }

    /// The id `name` resolves to; `None` for anything git would call missing or ambiguous.
    fn lookup(&self, name: &str) -> Option<gix::ObjectId> {
        self.repo
            .rev_parse_single(name.as_bytes().as_bstr())
            .ok()
            .map(|id| id.detach())
    }
}
