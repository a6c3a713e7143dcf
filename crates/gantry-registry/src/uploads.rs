//! Uploads in progress: a file per upload under the registry's upload folder, hashed while
//! its bytes arrive (on a blocking thread, a megabyte at a time, while the next megabyte is
//! read from the socket), and moved into the blob store by a rename once its digest checks.
//! Nothing of an upload is visible as a blob before that rename: a killed server leaves an
//! upload file that a later PATCH resumes or garbage collection removes.

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Code, RegistryError, Result};
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What is known of an upload between requests.
#[derive(Debug)]
pub(crate) struct Upload {
    pub size: u64,
    /// The SHA-256 of the bytes so far; `None` after a restart or a failed write (then the
    /// file is read again when the upload completes).
    hasher: Option<Hasher>,
}

/// Each upload's state, locked while a request writes to it.
pub(crate) type Slot = Arc<tokio::sync::Mutex<Upload>>;

#[derive(Debug)]
pub(crate) struct Uploads {
    dir: PathBuf,
    open: Mutex<HashMap<String, Slot>>,
}

/// Bytes read from a file at a time.
const CHUNK: usize = 1 << 20;
/// Bytes of received frames handed to the writer and the hasher at a time.
const BATCH: usize = 512 << 10;
/// Frames shared by the writer and the hasher.
type Batch = Arc<Vec<Bytes>>;

pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system's random numbers");
    hex::encode(b)
}

/// Upload files are named `<repository id>-<32 hex digits>`.
fn valid_key(key: &str) -> bool {
    let Some((repo, id)) = key.split_once('-') else {
        return false;
    };
    !repo.is_empty()
        && repo.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn storage_error(what: &str, e: io::Error) -> RegistryError {
    RegistryError::from(gantry_store::StoreError::io(
        what,
        Path::new("registry uploads"),
        e,
    ))
}

impl Uploads {
    pub fn open(dir: PathBuf) -> io::Result<Uploads> {
        fs::create_dir_all(&dir)?;
        Ok(Uploads {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts an upload (an empty file named `prefix` + a new id); returns the id.
    pub async fn create_for(&self, prefix: &str) -> Result<String> {
        let id = new_id();
        let key = format!("{prefix}{id}");
        let path = self.path(&key);
        tokio::task::spawn_blocking(move || File::create_new(path).map(drop))
            .await
            .expect("create upload")
            .map_err(|e| storage_error("starting an upload", e))?;
        self.open.lock().expect("uploads").insert(
            key,
            Arc::new(tokio::sync::Mutex::new(Upload {
                size: 0,
                hasher: Some(Algorithm::Sha256.hasher()),
            })),
        );
        Ok(id)
    }

    /// An upload's state, from memory or (after a restart) from its file.
    pub fn get(&self, id: &str) -> Option<Slot> {
        if !valid_key(id) {
            return None;
        }
        let mut open = self.open.lock().expect("uploads");
        if let Some(s) = open.get(id) {
            return Some(s.clone());
        }
        let size = fs::metadata(self.path(id)).ok()?.len();
        let slot = Arc::new(tokio::sync::Mutex::new(Upload { size, hasher: None }));
        open.insert(id.to_string(), slot.clone());
        Some(slot)
    }

    /// Forgets an upload and removes its file.
    pub fn remove(&self, id: &str) {
        self.open.lock().expect("uploads").remove(id);
        let _ = fs::remove_file(self.path(id));
    }

    /// Appends a request body to the upload, hashing it on the way. The socket is read on
    /// the runtime; the frames (not copied: `Bytes` are shared) go in batches to two
    /// blocking threads, one writing the file and one hashing, so that reading, writing and
    /// hashing overlap.
    pub async fn append(&self, id: &str, up: &mut Upload, body: Body) -> Result<()> {
        let path = self.path(id);
        let start = up.size;
        let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Batch>(2);
        let writer = tokio::task::spawn_blocking(move || {
            let mut written = 0u64;
            let result = (|| {
                let mut f = OpenOptions::new().append(true).open(&path)?;
                while let Some(batch) = wrx.blocking_recv() {
                    for b in batch.iter() {
                        f.write_all(b)?;
                        written += b.len() as u64;
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                // Part of a frame may be in the file: cut it back to what was counted.
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(start + written);
                }
            }
            (written, result)
        });
        let (htx, hasher) = match up.hasher.take() {
            Some(mut h) => {
                let (htx, mut hrx) = tokio::sync::mpsc::channel::<Batch>(2);
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(batch) = hrx.blocking_recv() {
                        for b in batch.iter() {
                            h.update(b);
                        }
                    }
                    h
                });
                (Some(htx), Some(task))
            }
            None => (None, None),
        };
        let mut stream = body.into_data_stream();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        let mut body_error = None;
        let mut writer_failed = false;
        loop {
            let frame = stream.next().await;
            let end = match frame {
                Some(Ok(b)) => {
                    batched += b.len();
                    batch.push(b);
                    false
                }
                Some(Err(e)) => {
                    body_error = Some(e);
                    true
                }
                None => true,
            };
            if (batched >= BATCH || end) && !batch.is_empty() {
                let b: Batch = Arc::new(std::mem::take(&mut batch));
                batched = 0;
                if let Some(h) = &htx {
                    let _ = h.send(b.clone()).await;
                }
                if wtx.send(b).await.is_err() {
                    writer_failed = true;
                }
            }
            if end || writer_failed {
                break; // a writer that failed says why below
            }
        }
        drop((wtx, htx));
        let (written, result) = writer.await.expect("upload writer");
        let hasher = match hasher {
            Some(t) => Some(t.await.expect("upload hasher")),
            None => None,
        };
        up.size = start + written;
        // The hash covers what was written only when every batch was.
        up.hasher = if result.is_ok() { hasher } else { None };
        result.map_err(|e| storage_error("writing an upload", e))?;
        if let Some(e) = body_error {
            // What arrived is kept: the client may resume from `Range`.
            return Err(RegistryError::new(
                Code::BlobUploadInvalid,
                format!(
                    "the upload's body broke off after {written} bytes ({e}); resume from the offset the upload's status gives"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a complete upload against `expected`; the file to move into the blob store.
    pub async fn verify(&self, id: &str, up: &mut Upload, expected: &Digest) -> Result<PathBuf> {
        let path = self.path(id);
        let got = match up.hasher.take() {
            Some(h) if h.algorithm() == expected.algorithm() => h.finish(),
            _ => {
                let (p, alg) = (path.clone(), expected.algorithm());
                tokio::task::spawn_blocking(move || hash_file(&p, alg))
                    .await
                    .expect("hash upload")
                    .map_err(|e| storage_error("reading an upload", e))?
            }
        };
        if &got != expected {
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!(
                    "the upload's {} bytes have digest {got}, not {expected}: the upload was corrupted on its way; push again",
                    up.size
                ),
            ));
        }
        Ok(path)
    }
}

/// The digest of a file.
pub(crate) fn hash_file(path: &Path, alg: Algorithm) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = alg.hasher();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
