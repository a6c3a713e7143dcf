//! The blob store: artifacts, caches, sources and other archives, by key
//! (`artifacts/12.tar`, `caches/3/deps-1a2b.tar`, `sources/5/4f2c….tar`).
//!
//! # Why a synchronous trait
//!
//! [`BlobStore`] is synchronous and object-safe: the server holds an `Arc<dyn BlobStore>`
//! (so that object storage, [`s3::S3BlobStore`], replaces the directory without touching
//! callers) and runs its calls on blocking threads (`tokio::task::spawn_blocking`), which is
//! where file I/O belongs anyway. Async methods in a trait (`-> impl Future`) are not
//! object-safe, and boxing every future (`Pin<Box<dyn Future>>`) would buy nothing here:
//! the file system has no async API underneath, tokio's own `fs` runs on the same blocking
//! threads. (The S3 store bridges to its async client from those threads: see [`s3`].)
//!
//! # On disk
//!
//! [`FsBlobStore`] keeps a blob as the file `{root}/{key}`. A put writes a new file under
//! `{root}/.tmp/` (the same file system, so the rename below is atomic), syncs it, renames it
//! over the target and syncs the target's folder: a reader sees the old blob or the new one,
//! never half of one, and a failed put (a full disk, a broken upload) leaves the old blob as
//! it was and no partial file anywhere a key can name. `.tmp/` is emptied when a store opens
//! (what a crash left there) and is not a valid first segment of a key. Folders are never
//! removed (a delete racing a put into the same folder would break the put's rename); they
//! are few: one per kind of blob and per project.

pub mod s3;

use crate::{Result, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where puts write before they rename; not a valid key.
const TMP: &str = ".tmp";

/// Blobs by key. Every method blocks: call from `spawn_blocking`.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores everything `data` yields under `key`, replacing any blob there, and returns the
    /// size. Atomic: on any error the previous blob (or its absence) is as it was.
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64>;

    /// Stores the file at `path` under `key` (see [`BlobStore::put`]); the file is left
    /// where it is.
    fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        let mut f = File::open(path).map_err(|e| StoreError::Io {
            what: format!("opening {} to store it as {key}", path.display()),
            source: e,
        })?;
        self.put(key, &mut f)
    }

    /// Stores the file at `path` under `key` and removes the file: for a store on the same
    /// file system, a rename (no byte copied). Atomic as [`BlobStore::put`] is. `durable`:
    /// the bytes are on disk when it returns (fsync), not only in the page cache (which a
    /// killed process does not lose, a power cut does).
    fn put_moved(&self, key: &str, path: &Path, durable: bool) -> Result<u64> {
        let _ = durable; // a copy through put() is always synced
        let size = self.put_file(key, path)?;
        let _ = fs::remove_file(path);
        Ok(size)
    }

    /// Reads a blob; [`StoreError::NotFound`] when there is none.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;

    /// Reads a blob from byte `offset` on (a range request).
    fn open_at(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        let mut r = self.open(key)?;
        io::copy(&mut (&mut r).take(offset), &mut io::sink()).map_err(|e| StoreError::Io {
            what: format!("reading the blob {key}"),
            source: e,
        })?;
        Ok(r)
    }

    /// The blob's size, `None` when there is none.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Removes a blob; removing a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// The keys that start with `prefix` (such as `caches/3/`, or `""` for all), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Checks that a key is a relative path of plain names separated by `/`: not empty, no
/// `..` or `.` segment, no leading or doubled `/`, no NUL or backslash, and not under the
/// store's own `.tmp/`.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.contains(['\0', '\\'])
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || key.split('/').next() == Some(TMP);
    if bad {
        return Err(StoreError::Conflict(format!(
            "{key:?} is not a valid blob key: use relative names separated by '/', without '..'"
        )));
    }
    Ok(())
}

/// The embedded blob store: one file per blob under a folder.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    /// Names temporary files uniquely within this process (the pid covers the others).
    counter: AtomicU64,
}

impl FsBlobStore {
    /// A store in `root`, created if missing. Temporary files of puts that a crash
    /// interrupted are removed, so open one store per folder, once, at start-up.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore> {
        let root = root.into();
        let tmp = root.join(TMP);
        fs::create_dir_all(&tmp)
            .map_err(|e| StoreError::io("creating the blob store", &root, e))?;
        let entries =
            fs::read_dir(&tmp).map_err(|e| StoreError::io("opening the blob store", &tmp, e))?;
        for e in entries {
            let e = e.map_err(|e| StoreError::io("opening the blob store", &tmp, e))?;
            match fs::remove_file(e.path()) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(StoreError::io("cleaning up the blob store", &e.path(), err));
                }
                _ => {}
            }
        }
        Ok(FsBlobStore {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// The folder the store keeps its blobs in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Opens a blob as a file (for `tokio::fs::File::from_std`, or to learn its length and
    /// read it in one go).
    pub fn open_file(&self, key: &str) -> Result<File> {
        let p = self.path(key)?;
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(format!("blob {key}")),
            _ => StoreError::io(format!("reading the blob {key}"), &self.root, e),
        })
    }

    /// Writes `data` into a new temporary file; returns its size.
    fn write_temporary(&self, key: &str, tmp: &Path, data: &mut dyn Read) -> Result<u64> {
        let written = |e| StoreError::io(format!("storing the blob {key}"), &self.root, e);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(written)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The source failed (a broken upload): not the store's disk.
                Err(e) => {
                    return Err(StoreError::Io {
                        what: format!("reading the data for the blob {key}"),
                        source: e,
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(written)?;
            size += n as u64;
        }
        file.sync_all().map_err(written)?;
        Ok(size)
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64> {
        let target = self.path(key)?;
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)
            .map_err(|e| StoreError::io("creating a blob folder", &self.root, e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(TMP)
            .join(format!("{}-{n}", std::process::id()));
        let result = self.write_temporary(key, &tmp, data).and_then(|size| {
            fs::rename(&tmp, &target)
                .and_then(|()| File::open(dir)?.sync_all())
                .map_err(|e| StoreError::io(format!("storing the blob {key}"), &self.root, e))?;
            Ok(size)
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn put_moved(&self, key: &str, path: &Path, durable: bool) -> Result<u64> {
        let target = self.path(key)?;
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)
            .map_err(|e| StoreError::io("creating a blob folder", &self.root, e))?;
        let size = fs::metadata(path)
            .map_err(|e| StoreError::io(format!("storing the blob {key}"), path, e))?
            .len();
        if durable {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io(format!("storing the blob {key}"), path, e))?;
        }
        match fs::rename(path, &target) {
            Ok(()) => {
                if durable {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| StoreError::io(format!("storing the blob {key}"), dir, e))?;
                }
                Ok(size)
            }
            // Another file system: copy (atomically), then remove.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let size = self.put_file(key, path)?;
                let _ = fs::remove_file(path);
                Ok(size)
            }
            Err(e) => Err(StoreError::io(
                format!("storing the blob {key}"),
                &self.root,
                e,
            )),
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_file(key)?))
    }

    fn open_at(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        use std::io::Seek;
        let mut f = self.open_file(key)?;
        f.seek(io::SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(format!("reading the blob {key}"), &self.root, e))?;
        Ok(Box::new(f))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None), // a folder: `caches/3` when `caches/3/x.tar` exists
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(
                format!("reading the blob {key}"),
                &self.root,
                e,
            )),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(
                format!("removing the blob {key}"),
                &self.root,
                e,
            )),
            _ => Ok(()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // Walk only the folder the prefix names (`caches/3/` of `caches/3/de`).
        let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !folder.is_empty() {
            check_key(folder)?;
        }
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(folder), folder.to_owned())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("listing blobs", &dir, e)),
            };
            for e in entries {
                let e = e.map_err(|e| StoreError::io("listing blobs", &dir, e))?;
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue; // not a name a key can have
                };
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                if child == TMP {
                    continue;
                }
                let ty = e
                    .file_type()
                    .map_err(|e| StoreError::io("listing blobs", &dir, e))?;
                if ty.is_dir() {
                    if prefix.starts_with(&format!("{child}/")) || child.starts_with(prefix) {
                        stack.push((e.path(), child));
                    }
                } else if ty.is_file() && child.starts_with(prefix) {
                    out.push(child);
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
        for bad in [
            "", "/abs", "../x", "a/../b", "a//b", "a/", "./a", "a/.", "a\0b", "a\\b", ".tmp/x",
            ".tmp",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for good in [
            "a",
            "artifacts/12.tar",
            "caches/3/k-1.tar",
            "caches/.tmp",
            "a/..b",
            ".a",
        ] {
            check_key(good).unwrap();
        }
    }
}
