//! The file-system blob store: atomic replacement, checked keys, failures that keep the old
//! blob, a full disk.

mod support;

use gantry_store::StoreError;
use gantry_store::blob::{BlobStore, FsBlobStore};
use std::fs;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{Tmpfs, noise};

fn get(s: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    s.open(key).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// Files under the store's temporary folder.
fn temporaries(root: &std::path::Path) -> usize {
    fs::read_dir(root.join(".tmp")).unwrap().count()
}

#[test]
fn put_open_size_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let s = FsBlobStore::open(&root).unwrap();
    let s: &dyn BlobStore = &s;
    assert_eq!(s.put("artifacts/1.tar", &mut &b"one"[..]).unwrap(), 3);
    assert_eq!(s.put("artifacts/1.tar", &mut &b"second"[..]).unwrap(), 6);
    assert_eq!(get(s, "artifacts/1.tar"), b"second");
    assert_eq!(s.size("artifacts/1.tar").unwrap(), Some(6));
    assert!(s.exists("artifacts/1.tar").unwrap());
    assert_eq!(s.size("artifacts/2.tar").unwrap(), None);
    assert_eq!(s.size("artifacts").unwrap(), None, "a folder is no blob");
    assert!(matches!(
        s.open("artifacts/2.tar"),
        Err(StoreError::NotFound(_))
    ));

    let src = dir.path().join("upload");
    fs::write(&src, b"from a file").unwrap();
    assert_eq!(s.put_file("caches/3/deps.tar", &src).unwrap(), 11);
    assert!(src.exists(), "the source stays");
    s.put("caches/3/deps-b.tar", &mut &b""[..]).unwrap();
    s.put("caches/30/x.tar", &mut &b"x"[..]).unwrap();
    s.put("sources/5/abc/def.tar", &mut &b"x"[..]).unwrap();

    assert_eq!(
        s.list("caches/3/").unwrap(),
        ["caches/3/deps-b.tar", "caches/3/deps.tar"]
    );
    assert_eq!(
        s.list("caches/3").unwrap(),
        [
            "caches/3/deps-b.tar",
            "caches/3/deps.tar",
            "caches/30/x.tar"
        ]
    );
    assert_eq!(s.list("caches/3/deps-").unwrap(), ["caches/3/deps-b.tar"]);
    assert_eq!(s.list("sources/").unwrap(), ["sources/5/abc/def.tar"]);
    assert!(s.list("nothing/").unwrap().is_empty());
    assert_eq!(s.list("").unwrap().len(), 5, "{:?}", s.list(""));

    s.delete("caches/3/deps.tar").unwrap();
    s.delete("caches/3/deps.tar").unwrap();
    assert_eq!(s.list("caches/3/").unwrap(), ["caches/3/deps-b.tar"]);
    assert_eq!(temporaries(&root), 0);
}

#[test]
fn keys_that_escape_the_store_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let s = FsBlobStore::open(&root).unwrap();
    for key in [
        "../outside",
        "a/../../outside",
        "/tmp/outside",
        "a\0b",
        "",
        "a//b",
        ".tmp/x",
    ] {
        let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
        assert!(
            conflict(s.put(key, &mut &b"x"[..]).map(drop)),
            "put {key:?}"
        );
        assert!(conflict(s.open(key).map(drop)), "open {key:?}");
        assert!(conflict(s.size(key).map(drop)), "size {key:?}");
        assert!(conflict(s.delete(key)), "delete {key:?}");
    }
    assert!(s.list("../").is_err());
    assert!(!dir.path().join("outside").exists());
    assert!(s.list("").unwrap().is_empty(), "{:?}", s.list(""));
}

/// A reader that fails half-way, as a broken upload does.
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
fn a_failed_put_keeps_the_old_blob() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsBlobStore::open(dir.path()).unwrap();
    s.put("k/a.tar", &mut &b"old"[..]).unwrap();
    let err = s.put("k/a.tar", &mut Broken(1 << 20)).unwrap_err();
    assert!(!err.is_full());
    assert!(
        err.to_string()
            .contains("reading the data for the blob k/a.tar"),
        "{err}"
    );
    assert_eq!(get(&s, "k/a.tar"), b"old");
    assert!(s.put("k/new.tar", &mut Broken(10)).is_err());
    assert!(!s.exists("k/new.tar").unwrap());
    assert_eq!(s.list("").unwrap(), ["k/a.tar"]);
    assert_eq!(temporaries(dir.path()), 0);
}

#[test]
fn a_restart_removes_interrupted_puts() {
    let dir = tempfile::tempdir().unwrap();
    drop(FsBlobStore::open(dir.path()).unwrap());
    fs::write(dir.path().join(".tmp/123-0"), b"half an upload").unwrap();
    let s = FsBlobStore::open(dir.path()).unwrap();
    assert_eq!(temporaries(dir.path()), 0);
    assert!(s.list("").unwrap().is_empty());
}

/// Readers racing a replacing writer see one whole version or the other, never a mix; a
/// reader that opened the old version reads it to its end.
#[test]
fn readers_see_whole_versions_while_a_put_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FsBlobStore::open(dir.path()).unwrap());
    let (a, b) = (vec![b'a'; 300_000], vec![b'b'; 200_000]);
    s.put("x", &mut &a[..]).unwrap();
    let mut early = s.open("x").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop, a, b) = (s.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return i;
                }
                let v = if i % 2 == 0 { &b } else { &a };
                s.put("x", &mut &v[..]).unwrap();
            }
            unreachable!()
        })
    };
    for _ in 0..200 {
        let got = get(&*s, "x");
        assert!(got == a || got == b, "a torn read of {} bytes", got.len());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    let mut old = Vec::new();
    early.read_to_end(&mut old).unwrap();
    assert!(old == a);
}

/// A real full disk (a 1 MiB tmpfs): the put fails with `Full`, the old blob and the
/// store's listing are as before, and nothing half-written is left.
#[test]
fn a_full_disk_fails_the_put_and_keeps_the_old_blob() {
    let Some(fs_) = Tmpfs::mount("1m", "a_full_disk_fails_the_put_and_keeps_the_old_blob") else {
        return;
    };
    let root = fs_.path().join("blobs");
    let s = FsBlobStore::open(&root).unwrap();
    let old = noise(1, 100_000);
    s.put("artifacts/1.tar", &mut &old[..]).unwrap();
    let err = s
        .put("artifacts/1.tar", &mut &noise(2, 2 << 20)[..])
        .unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(
        err.to_string().contains(&root.display().to_string()),
        "{err}"
    );
    assert!(get(&s, "artifacts/1.tar") == old);
    assert_eq!(s.list("").unwrap(), ["artifacts/1.tar"]);
    assert_eq!(temporaries(&root), 0);
    // The space of the failed put is free again.
    s.put("artifacts/2.tar", &mut &noise(3, 500_000)[..])
        .unwrap();
}
