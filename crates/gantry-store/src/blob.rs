//! The blob store: artifacts, caches and other archives, by key (`artifacts/12.tar`,
//! `caches/3/deps-1a2b.tar`).
//!
//! [`BlobStore`] is synchronous and object-safe: callers run it on blocking threads
//! (`spawn_blocking`), which is where file and object-storage I/O belongs anyway, and the
//! server holds an `Arc<dyn BlobStore>` so that an S3 implementation can replace the
//! directory one without touching callers.
//!
//! [`FsBlobStore`], the embedded default, keeps a blob as a file under its directory. A put
//! writes a temporary file next to the target, syncs it and renames it over the target: a
//! reader sees the old blob or the new one, never half of one, and a failed put (a full
//! disk) leaves the old blob as it was.

use crate::{Result, StoreError};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores everything `data` yields under `key`, replacing any blob there; returns its size.
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64>;
    /// Reads a blob; `StoreError::NotFound` when there is none.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// The blob's size, `None` when there is none.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Removes a blob; removing a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Keys that start with `prefix` (a folder such as `caches/3/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

/// Checks that a key is a relative path of plain names: no `..`, no absolute paths, no NUL,
/// no empty segments.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.contains('\0')
        || key.starts_with('/')
        || key.ends_with('/')
        || key.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || Path::new(key)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)));
    if bad {
        return Err(StoreError::Conflict(format!(
            "'{key}' is not a valid blob key: use relative names separated by '/'"
        )));
    }
    Ok(())
}

impl FsBlobStore {
    /// A store in `root`, created if missing. Left-over temporary files of puts that were
    /// interrupted (a crash) are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| StoreError::io("creating the blob store", &root, e))?;
        let store = FsBlobStore { root };
        store.remove_temporaries(&store.root.clone());
        Ok(store)
    }

    fn remove_temporaries(&self, dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                self.remove_temporaries(&p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp-"))
            {
                let _ = fs::remove_file(&p);
            }
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64> {
        let target = self.path(key)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating a blob folder", &dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io("creating a blob", &dir, e))?;
        let size = io::copy(data, tmp.as_file_mut()).map_err(|e| {
            StoreError::io(format!("writing the blob {key}"), &self.root, e)
        })?;
        tmp.as_file_mut()
            .flush()
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| StoreError::io(format!("writing the blob {key}"), &self.root, e))?;
        tmp.persist(&target)
            .map_err(|e| StoreError::io(format!("storing the blob {key}"), &self.root, e.error))?;
        Ok(size)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(key)?;
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(format!("blob {key}")))
            }
            Err(e) => Err(StoreError::io(format!("reading the blob {key}"), &self.root, e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("reading the blob {key}"), &self.root, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing the blob {key}"), &self.root, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("listing blobs", &dir, e)),
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if key.starts_with(prefix)
                    && !rel
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".tmp-"))
                {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for bad in ["", "/abs", "../x", "a/../b", "a//b", "a/", "./a", "a\0b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "artifacts/12.tar", "caches/3/k-1.tar"] {
            check_key(good).unwrap();
        }
    }

    #[test]
    fn put_replaces_atomically_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(s.put("a/x.tar", &mut &b"one"[..]).unwrap(), 3);
        assert_eq!(s.put("a/x.tar", &mut &b"second"[..]).unwrap(), 6);
        let mut got = String::new();
        s.open("a/x.tar").unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "second");
        assert_eq!(s.size("a/x.tar").unwrap(), Some(6));
        assert_eq!(s.size("a/none").unwrap(), None);
        assert!(matches!(s.open("a/none"), Err(StoreError::NotFound(_))));
        s.put("b/y", &mut &b""[..]).unwrap();
        assert_eq!(s.list("a/").unwrap(), ["a/x.tar"]);
        assert_eq!(s.list("").unwrap(), ["a/x.tar", "b/y"]);
        s.delete("a/x.tar").unwrap();
        s.delete("a/x.tar").unwrap();
        assert!(s.list("a/").unwrap().is_empty());
    }

    /// A reader that fails half-way, as a broken upload or a full disk would.
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_failed_put_keeps_the_old_blob_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::open(dir.path()).unwrap();
        s.put("k", &mut &b"old"[..]).unwrap();
        assert!(s.put("k", &mut Broken(100_000)).is_err());
        let mut got = String::new();
        s.open("k").unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }
}
