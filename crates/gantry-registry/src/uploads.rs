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
    /// hashing overlap. A body that ends within its first batch (a small blob, a config, the
    /// empty body of docker's closing PUT) is written and hashed by one blocking task, or by
    /// none when it is empty: two threads per request would cost more than the bytes.
    pub async fn append(&self, id: &str, up: &mut Upload, body: Body) -> Result<()> {
        let mut stream = body.into_data_stream();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        let mut body_error = None;
        let mut pipe: Option<Pipe> = None;
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
            if batched >= BATCH || (end && pipe.is_some()) {
                let p = pipe.get_or_insert_with(|| Pipe::start(self.path(id), up));
                batched = 0;
                if !p.send(Arc::new(std::mem::take(&mut batch))).await {
                    break; // the writer failed: it says why below
                }
            }
            if end {
                break;
            }
        }
        let (written, result) = match pipe {
            Some(p) => p.finish(up).await,
            None if batch.is_empty() => (0, Ok(())),
            None => self.append_small(id, up, batch).await,
        };
        up.size += written;
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

    /// Writes and hashes a body that fit in one batch, on one blocking thread.
    async fn append_small(
        &self,
        id: &str,
        up: &mut Upload,
        frames: Vec<Bytes>,
    ) -> (u64, io::Result<()>) {
        let path = self.path(id);
        let start = up.size;
        let mut hasher = up.hasher.take();
        let (written, result, hasher) = tokio::task::spawn_blocking(move || {
            let (written, result) = write_frames(&path, start, std::iter::once(&frames));
            if let (Some(h), Ok(())) = (&mut hasher, &result) {
                frames.iter().for_each(|b| h.update(b));
            }
            (written, result, hasher)
        })
        .await
        .expect("upload write");
        // The hash covers what was written only when all of it was.
        up.hasher = if result.is_ok() { hasher } else { None };
        (written, result)
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

/// The writer and hasher threads of a large body, fed the same batches.
struct Pipe {
    writer: tokio::task::JoinHandle<(u64, io::Result<()>)>,
    wtx: tokio::sync::mpsc::Sender<Batch>,
    hasher: Option<(
        tokio::sync::mpsc::Sender<Batch>,
        tokio::task::JoinHandle<Hasher>,
    )>,
}

impl Pipe {
    fn start(path: PathBuf, up: &mut Upload) -> Pipe {
        let start = up.size;
        let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Batch>(2);
        let writer = tokio::task::spawn_blocking(move || {
            write_frames(&path, start, std::iter::from_fn(|| wrx.blocking_recv()))
        });
        let hasher = up.hasher.take().map(|mut h| {
            let (htx, mut hrx) = tokio::sync::mpsc::channel::<Batch>(2);
            let task = tokio::task::spawn_blocking(move || {
                while let Some(batch) = hrx.blocking_recv() {
                    batch.iter().for_each(|b| h.update(b));
                }
                h
            });
            (htx, task)
        });
        Pipe {
            writer,
            wtx,
            hasher,
        }
    }

    /// Hands a batch to both threads; false when the writer has stopped (it failed).
    async fn send(&self, batch: Batch) -> bool {
        if let Some((htx, _)) = &self.hasher {
            let _ = htx.send(batch.clone()).await;
        }
        self.wtx.send(batch).await.is_ok()
    }

    /// Waits for both threads; the bytes written and the write's outcome. The upload keeps
    /// the hash only when every batch was written.
    async fn finish(self, up: &mut Upload) -> (u64, io::Result<()>) {
        let Pipe {
            writer,
            wtx,
            hasher,
        } = self;
        drop(wtx);
        let hasher = match hasher {
            Some((htx, task)) => {
                drop(htx);
                Some(task.await.expect("upload hasher"))
            }
            None => None,
        };
        let (written, result) = writer.await.expect("upload writer");
        up.hasher = if result.is_ok() { hasher } else { None };
        (written, result)
    }
}

/// Appends batches of frames to the upload file that has `start` bytes; on an error, cuts
/// the file back to what was counted as written (part of a frame may be in it).
fn write_frames<B>(
    path: &Path,
    start: u64,
    batches: impl IntoIterator<Item = B>,
) -> (u64, io::Result<()>)
where
    B: std::ops::Deref<Target = Vec<Bytes>>,
{
    let mut written = 0u64;
    let result = (|| {
        let mut f = OpenOptions::new().append(true).open(path)?;
        for batch in batches {
            for b in batch.iter() {
                f.write_all(b)?;
                written += b.len() as u64;
            }
        }
        Ok(())
    })();
    if result.is_err()
        && let Ok(f) = OpenOptions::new().write(true).open(path)
    {
        let _ = f.set_len(start + written);
    }
    (written, result)
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
