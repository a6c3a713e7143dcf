//! Job logs: no size limit, bounded memory, stored compressed once a job ends.
//!
//! # On disk
//!
//! Under the store's directory:
//!
//! - `live/{job}.log`: the log of a running job, exactly the bytes received, in order. The
//!   agent sends `(offset, bytes)`; bytes below the stored length are a resend and are
//!   skipped, bytes past it would leave a gap and are refused. So the file's length *is* the
//!   stored offset the server reports to a reconnecting agent, and nothing else (no database
//!   row, no side file) has to agree with it.
//! - `done/{job}.zst`: a finished log, as independent zstd frames of [`FRAME`] bytes of log
//!   each (with checksums). Concatenated frames are a valid zstd stream, so
//!   `zstd -dc done/7.zst` prints the log.
//! - `done/{job}.idx`: the index of those frames: a 32-byte header (`GLOGIDX1`, the log's
//!   length, the compressed file's length, the frame size) and, per frame, its offset in the
//!   log and in the `.zst` (16 bytes; 16 KiB per GiB of log). A byte range is read by
//!   decompressing only the frames it touches, one at a time.
//!
//! A finished log is written as `*.tmp` files, synced, renamed into place (the index
//! first: a `.zst` is never visible without its index), the `done` folder synced, and only
//! then is the live file removed. A crash at any point leaves either the live file (the log
//! is still live; finishing again redoes the work) or the finished one (a live file left
//! next to it is removed at [`LogStore::open`]).
//!
//! # Memory
//!
//! Appends write straight to the file (`O_APPEND`); finishing reads, compresses and writes
//! one frame at a time; a reader holds one frame. Memory does not grow with a log's size;
//! what the store keeps per live job is a file handle and its length.
//!
//! # Durability
//!
//! Appends are not synced one by one: an agent sends many small chunks and an `fdatasync`
//! per chunk would cap a disk at a few hundred chunks a second. An append returns once the
//! bytes are in the page cache, so a server process that dies (`kill -9`, a panic) loses
//! nothing it acknowledged. A machine that dies (power, kernel) can lose the tail written
//! since the last sync: the live file comes back shorter, and since the agent drops what was
//! acknowledged, its resend starts past the stored end and is refused as a gap. Call
//! [`LogStore::sync`] on a timer (every second, say) to bound that window, or before
//! acknowledging if a log must never lose a byte. A finished log is always synced.
//!
//! # Full disk
//!
//! A write that fails (no space) returns [`StoreError::Full`] and is undone: the live file is
//! cut back to its length before the write, so the stored log stays readable, its length
//! stays the agent's resume point, and the next resend starts there. A finish that fails
//! removes its temporary files and leaves the live log as it was, still appendable and
//! readable; finishing again once space is free works.
//!
//! # Threads
//!
//! Every method except [`LogStore::subscribe`] and [`LogStore::len`] of a live log does
//! blocking file I/O: call them from `tokio::task::spawn_blocking`. Each live log has its
//! own lock, held for one `write` (appends to different jobs do not wait for each other);
//! finishing holds it only to mark the log as finishing, so readers are not blocked while a
//! large log is compressed.

use crate::{Result, StoreError};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Bytes of log per compressed frame: reading any range decompresses at most this much
/// more than it returns at either end.
pub const FRAME: usize = 1 << 20;
/// zstd's default level: ~300 MB/s per core on logs, 5-20x smaller.
const LEVEL: i32 = 3;
const MAGIC: &[u8; 8] = b"GLOGIDX1";
const HEADER: usize = 32;
const ENTRY: usize = 16;

/// What a follower of a log needs: how long it is, and whether more can come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogState {
    pub len: u64,
    pub finished: bool,
}

/// The job-log store. Cheap to clone: clones share the same state.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Logs that are live (or being finished, or followed before their first byte).
    /// Finished logs are not kept here: their length is in their index.
    jobs: Mutex<HashMap<i64, Arc<Job>>>,
}

#[derive(Debug)]
struct Job {
    state: Mutex<JobState>,
    /// Published under `state`'s lock, so followers never see the length go back.
    tx: watch::Sender<LogState>,
    /// Held for the whole of a finish: a second `finish` waits for the first.
    finish_lock: Mutex<()>,
}

#[derive(Debug)]
struct JobState {
    /// Opened at the first append; `None` also after a failed write could not be undone
    /// (the next append reopens it and takes the file's length as the truth).
    file: Option<Arc<File>>,
    len: u64,
    /// Bytes written since the last [`LogStore::sync`].
    dirty: bool,
    /// The file was opened (maybe created) since the last sync: its folder entry needs a
    /// sync too.
    opened: bool,
    /// Being compressed: appends are refused, reads still go to the live file.
    finishing: bool,
    finished: bool,
}

/// Where a job's log is.
enum Where {
    Live(Arc<Job>),
    Done,
    Nowhere,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves the data as consistent as any error would (each
    // critical section updates the length only after its write succeeded).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Job {
    fn new(len: u64) -> Arc<Job> {
        Arc::new(Job {
            state: Mutex::new(JobState {
                file: None,
                len,
                dirty: false,
                opened: false,
                finishing: false,
                finished: false,
            }),
            tx: watch::Sender::new(LogState {
                len,
                finished: false,
            }),
            finish_lock: Mutex::new(()),
        })
    }
}

impl LogStore {
    /// Opens (or creates) a store in `dir` and takes over what a previous process left: the
    /// length of every live log is read from its file, temporary files of an interrupted
    /// finish are removed, and live files whose finished log is complete are removed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<LogStore> {
        let dir = dir.into();
        for sub in ["live", "done"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| StoreError::io("creating the log store", &d, e))?;
        }
        let store = LogStore {
            inner: Arc::new(Inner {
                dir,
                jobs: Mutex::new(HashMap::new()),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<()> {
        let done = self.inner.dir.join("done");
        for entry in read_dir(&done)? {
            let (path, name) = entry;
            if name.ends_with(".tmp") {
                remove_if_present(&path).map_err(|e| StoreError::io("cleaning up", &path, e))?;
            }
        }
        let live = self.inner.dir.join("live");
        let mut jobs = lock(&self.inner.jobs);
        for (path, name) in read_dir(&live)? {
            let Some(job) = name
                .strip_suffix(".log")
                .and_then(|j| j.parse::<i64>().ok())
            else {
                continue;
            };
            if self.done_path(job).exists() {
                // Finished, but the process stopped before it removed the live file.
                remove_if_present(&path).map_err(|e| StoreError::io("cleaning up", &path, e))?;
                continue;
            }
            let len = fs::metadata(&path)
                .map_err(|e| StoreError::io("reading a live log", &path, e))?
                .len();
            jobs.insert(job, Job::new(len));
        }
        Ok(())
    }

    /// Jobs with a live (unfinished) log, sorted: after a restart, the server finishes the
    /// logs of jobs that ended while it was away.
    pub fn live_jobs(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = lock(&self.inner.jobs).keys().copied().collect();
        // Entries also exist for logs only followed so far; a live log has a file.
        ids.retain(|id| self.live_path(*id).exists() && !self.done_path(*id).exists());
        ids.sort_unstable();
        ids
    }

    fn live_path(&self, job: i64) -> PathBuf {
        self.inner.dir.join("live").join(format!("{job}.log"))
    }

    fn done_path(&self, job: i64) -> PathBuf {
        self.inner.dir.join("done").join(format!("{job}.zst"))
    }

    fn index_path(&self, job: i64) -> PathBuf {
        self.inner.dir.join("done").join(format!("{job}.idx"))
    }

    /// Finds a job's log; with `create`, a job with none gets an (empty) live entry.
    fn lookup(&self, job: i64, create: bool) -> Result<Where> {
        let mut jobs = lock(&self.inner.jobs);
        if let Some(j) = jobs.get(&job) {
            return Ok(Where::Live(j.clone()));
        }
        if self.done_path(job).exists() {
            return Ok(Where::Done);
        }
        let path = self.live_path(job);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => 0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Where::Nowhere),
            Err(e) => return Err(StoreError::io("reading a live log", &path, e)),
        };
        let j = Job::new(len);
        jobs.insert(job, j.clone());
        Ok(Where::Live(j))
    }

    /// Stored bytes of a job's log, live or finished; 0 when there is none. Live logs answer
    /// from memory; finished ones from their index (16 bytes per MiB of log).
    pub fn len(&self, job: i64) -> Result<u64> {
        match self.lookup(job, false)? {
            Where::Live(j) => Ok(lock(&j.state).len),
            Where::Done => Ok(self.read_index(job)?.len),
            Where::Nowhere => Ok(0),
        }
    }

    /// Stores `data`, which starts at `offset` of the job's log, and returns the stored
    /// length. Bytes below the stored length are a resend and are skipped; an `offset` past
    /// it is refused ([`StoreError::Conflict`], saying where to resend from), as is any byte
    /// for a finished log. A failed write (a full disk) is undone before the error returns.
    pub fn append(&self, job: i64, offset: u64, data: &[u8]) -> Result<u64> {
        let j = match self.lookup(job, true)? {
            Where::Live(j) => j,
            Where::Done | Where::Nowhere => return Err(finished_conflict(job)),
        };
        let mut st = lock(&j.state);
        if st.finished || st.finishing {
            return Err(finished_conflict(job));
        }
        let path = self.live_path(job);
        let file = match &st.file {
            Some(f) => f.clone(),
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("opening a live log", &path, e))?;
                st.len = f
                    .metadata()
                    .map_err(|e| StoreError::io("opening a live log", &path, e))?
                    .len();
                let f = Arc::new(f);
                st.file = Some(f.clone());
                st.opened = true;
                f
            }
        };
        if offset > st.len {
            return Err(StoreError::Conflict(format!(
                "log of job {job}: bytes at offset {offset}, but {} bytes are stored; resend from {}",
                st.len, st.len
            )));
        }
        let skip = st.len - offset;
        let new = match usize::try_from(skip).ok().and_then(|s| data.get(s..)) {
            Some(new) if !new.is_empty() => new,
            _ => return Ok(st.len), // stored already
        };
        if let Err(e) = (&*file).write_all(new) {
            // Cut off what part of the chunk went in, so the file ends where `len` says. If
            // even that fails, the bytes that went in are still the right bytes at the right
            // offsets: forget the handle, and the next append takes the file's length.
            if file.set_len(st.len).is_err() {
                st.file = None;
            }
            return Err(StoreError::io(
                format!("writing the log of job {job}"),
                &self.inner.dir,
                e,
            ));
        }
        st.len += new.len() as u64;
        st.dirty = true;
        let len = st.len;
        j.tx.send_replace(LogState {
            len,
            finished: false,
        });
        Ok(len)
    }

    /// Flushes every live log written since the last call to the disk (`fdatasync`), so that
    /// a machine crash cannot lose what was stored before the call. Meant for a timer.
    pub fn sync(&self) -> Result<()> {
        let jobs: Vec<(i64, Arc<Job>)> = lock(&self.inner.jobs)
            .iter()
            .map(|(id, j)| (*id, j.clone()))
            .collect();
        let mut first_error = None;
        let mut sync_folder = false;
        for (id, j) in jobs {
            let file = {
                let mut st = lock(&j.state);
                if !st.dirty {
                    continue;
                }
                st.dirty = false;
                sync_folder |= std::mem::take(&mut st.opened);
                st.file.clone()
            };
            let Some(file) = file else { continue };
            if let Err(e) = file.sync_data() {
                lock(&j.state).dirty = true;
                let path = self.live_path(id);
                first_error.get_or_insert(StoreError::io("syncing a live log", &path, e));
            }
        }
        if sync_folder {
            // New files exist only once their folder entry is on the disk too.
            let live = self.inner.dir.join("live");
            if let Err(e) = File::open(&live).and_then(|d| d.sync_all()) {
                first_error.get_or_insert(StoreError::io("syncing the live logs", &live, e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Follows a job's log: the receiver holds its current [`LogState`] and changes on every
    /// append and when it finishes. After the finished state, the channel closes
    /// (`changed()` fails) and `borrow()` keeps the final state. Works before the job's
    /// first byte arrives, and for a log that is already finished (closed at once).
    pub fn subscribe(&self, job: i64) -> Result<watch::Receiver<LogState>> {
        match self.lookup(job, true)? {
            Where::Live(j) => {
                let rx = j.tx.subscribe();
                self.forget_idle(job);
                Ok(rx)
            }
            Where::Done | Where::Nowhere => {
                let len = self.read_index(job)?.len;
                Ok(watch::Sender::new(LogState {
                    len,
                    finished: true,
                })
                .subscribe())
            }
        }
    }

    /// Drops entries that only exist because someone subscribed before any byte arrived and
    /// then went away (no file, no followers, nobody holding them), so that a follower of a
    /// job that never logs does not cost memory forever.
    fn forget_idle(&self, except: i64) {
        let mut jobs = lock(&self.inner.jobs);
        jobs.retain(|id, j| {
            if *id == except || Arc::strong_count(j) > 1 || j.tx.receiver_count() > 0 {
                return true;
            }
            match j.state.try_lock() {
                Ok(st) => st.file.is_some() || st.len > 0 || st.finishing,
                Err(_) => true,
            }
        });
    }

    /// Compresses a job's log into `done/` and removes its live file; from then on appends
    /// are refused. A job that logged nothing gets an empty log. Idempotent, streaming
    /// (memory does not depend on the log's size), and all-or-nothing: on failure (a full
    /// disk) the live log is untouched and still takes appends.
    pub fn finish(&self, job: i64) -> Result<()> {
        let j = match self.lookup(job, true)? {
            Where::Live(j) => j,
            Where::Done | Where::Nowhere => {
                // Finished before; a crash may have left the live file behind.
                let live = self.live_path(job);
                return remove_if_present(&live)
                    .map_err(|e| StoreError::io("removing a live log", &live, e));
            }
        };
        let _one_at_a_time = lock(&j.finish_lock);
        let len = {
            let mut st = lock(&j.state);
            if st.finished {
                return Ok(());
            }
            st.finishing = true;
            st.len
        };
        if let Err(e) = self.compress(job, len) {
            lock(&j.state).finishing = false;
            return Err(e);
        }
        {
            let mut st = lock(&j.state);
            st.finished = true;
            st.file = None;
            j.tx.send_replace(LogState {
                len,
                finished: true,
            });
        }
        // From here on the finished log answers; dropping the entry (and with the last
        // clone, its sender) closes the followers' channels after the final state.
        lock(&self.inner.jobs).remove(&job);
        let live = self.live_path(job);
        remove_if_present(&live).map_err(|e| StoreError::io("removing a live log", &live, e))
    }

    /// Writes `done/{job}.zst` and `.idx` from the first `len` bytes of the live file.
    fn compress(&self, job: i64, len: u64) -> Result<()> {
        let done = self.inner.dir.join("done");
        let (zst, idx) = (self.done_path(job), self.index_path(job));
        let (zst_tmp, idx_tmp) = (
            done.join(format!("{job}.zst.tmp")),
            done.join(format!("{job}.idx.tmp")),
        );
        let result = (|| -> io::Result<()> {
            let live = match File::open(self.live_path(job)) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound && len == 0 => None,
                Err(e) => return Err(e),
            };
            let mut out = File::create(&zst_tmp)?;
            let mut index = Vec::with_capacity(HEADER + ENTRY * (len as usize).div_ceil(FRAME));
            index.extend_from_slice(MAGIC);
            index.extend_from_slice(&len.to_le_bytes());
            index.extend_from_slice(&[0; 8]); // the compressed length, below
            index.extend_from_slice(&(FRAME as u64).to_le_bytes());
            let mut compressor = zstd::bulk::Compressor::new(LEVEL)?;
            compressor.include_checksum(true)?;
            let mut input = vec![0u8; FRAME];
            let mut output = Vec::with_capacity(zstd::zstd_safe::compress_bound(FRAME));
            let (mut at, mut zst_len) = (0u64, 0u64);
            let mut source: Box<dyn Read> = match live {
                Some(f) => Box::new(f.take(len)),
                None => Box::new(io::empty()),
            };
            while at < len {
                let n = read_full(&mut source, &mut input)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the live log ends at {at}, before its length {len}"),
                    ));
                }
                compressor.compress_to_buffer(&input[..n], &mut output)?;
                out.write_all(&output)?;
                index.extend_from_slice(&at.to_le_bytes());
                index.extend_from_slice(&zst_len.to_le_bytes());
                at += n as u64;
                zst_len += output.len() as u64;
            }
            index[16..24].copy_from_slice(&zst_len.to_le_bytes());
            out.sync_all()?;
            let mut f = File::create(&idx_tmp)?;
            f.write_all(&index)?;
            f.sync_all()?;
            // The index first: a `.zst` is never visible without its index.
            fs::rename(&idx_tmp, &idx)?;
            fs::rename(&zst_tmp, &zst)?;
            File::open(&done)?.sync_all()
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&zst_tmp);
            let _ = fs::remove_file(&idx_tmp);
            StoreError::io(
                format!("compressing the log of job {job}"),
                &self.inner.dir,
                e,
            )
        })
    }

    fn read_index(&self, job: i64) -> Result<Index> {
        let path = self.index_path(job);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(StoreError::io("reading a log index", &path, e)),
        };
        Index::parse(&bytes).ok_or_else(|| {
            StoreError::io(
                "reading a log index",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, "the index is damaged"),
            )
        })
    }

    /// The bytes `[start, end)` of a job's log, live or finished; `end` defaults to (and is
    /// cut at) the stored length, and `start` past it gives nothing. A live log is read up to
    /// its length at the time of the call; a finished one frame by frame from the frame
    /// holding `start`. Memory: one frame.
    pub fn read(&self, job: i64, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>> {
        if let Where::Live(j) = self.lookup(job, false)? {
            let len = lock(&j.state).len;
            let path = self.live_path(job);
            match File::open(&path) {
                Ok(mut f) => {
                    let end = end.unwrap_or(len).min(len);
                    let start = start.min(end);
                    f.seek(SeekFrom::Start(start))
                        .map_err(|e| StoreError::io("reading a live log", &path, e))?;
                    return Ok(Box::new(f.take(end - start)));
                }
                // Nothing written yet, or finished since the lookup.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !self.done_path(job).exists() {
                        return Ok(Box::new(io::empty()));
                    }
                }
                Err(e) => return Err(StoreError::io("reading a live log", &path, e)),
            }
        }
        let index = self.read_index(job)?;
        let end = end.unwrap_or(index.len).min(index.len);
        let start = start.min(end);
        if start == end {
            return Ok(Box::new(io::empty()));
        }
        let path = self.done_path(job);
        let file = File::open(&path).map_err(|e| StoreError::io("reading a log", &path, e))?;
        let next = index
            .frames
            .partition_point(|f| f.0 <= start)
            .saturating_sub(1);
        let decompressor = zstd::bulk::Decompressor::new()
            .map_err(|e| StoreError::io("reading a log", &path, e))?;
        Ok(Box::new(FrameReader {
            file,
            index,
            next,
            decompressor,
            compressed: Vec::new(),
            frame: Vec::with_capacity(FRAME),
            pos: 0,
            offset: start,
            end,
        }))
    }
}

fn finished_conflict(job: i64) -> StoreError {
    StoreError::Conflict(format!(
        "the log of job {job} is finished; it takes no more bytes"
    ))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A folder's files, as paths and (UTF-8) names.
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("reading the log store", dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| StoreError::io("reading the log store", dir, e))?;
        if let Some(name) = e.file_name().to_str() {
            out.push((e.path(), name.to_owned()));
        }
    }
    Ok(out)
}

/// Reads until `buf` is full or the source ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A finished log's index: its length, and `(log offset, compressed offset)` per frame.
#[derive(Debug, Default)]
struct Index {
    len: u64,
    zst_len: u64,
    frames: Vec<(u64, u64)>,
}

impl Index {
    /// Checks everything a reader relies on: frames in order, none longer than a frame size
    /// the reader can allocate, the last ending at the ends.
    fn parse(bytes: &[u8]) -> Option<Index> {
        let u64_at = |i: usize| Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
        if bytes.len() < HEADER
            || &bytes[..8] != MAGIC
            || !(bytes.len() - HEADER).is_multiple_of(ENTRY)
        {
            return None;
        }
        let (len, zst_len, frame) = (u64_at(8)?, u64_at(16)?, u64_at(24)?);
        if frame == 0 || frame > 64 << 20 {
            return None;
        }
        let mut frames = Vec::with_capacity((bytes.len() - HEADER) / ENTRY);
        let mut i = HEADER;
        while i < bytes.len() {
            frames.push((u64_at(i)?, u64_at(i + 8)?));
            i += ENTRY;
        }
        let mut ends = frames.iter().skip(1).copied().chain([(len, zst_len)]);
        let mut at = (0, 0);
        for &(start, zst_start) in &frames {
            let (end, zst_end) = ends.next()?;
            if (start, zst_start) != at
                || end <= start
                || end - start > frame
                || zst_end <= zst_start
            {
                return None;
            }
            at = (end, zst_end);
        }
        (at == (len, zst_len)).then_some(Index {
            len,
            zst_len,
            frames,
        })
    }

    /// Where frame `i` is: `(log start, log end, compressed start, compressed end)`.
    fn frame(&self, i: usize) -> Option<(u64, u64, u64, u64)> {
        let &(start, at) = self.frames.get(i)?;
        let (end, zst_end) = self
            .frames
            .get(i + 1)
            .copied()
            .unwrap_or((self.len, self.zst_len));
        Some((start, end, at, zst_end))
    }
}

/// Decompresses the frames of a range one at a time.
struct FrameReader {
    file: File,
    index: Index,
    /// The next frame to decompress.
    next: usize,
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    /// The current frame, decompressed, and where in it the next byte is.
    frame: Vec<u8>,
    pos: usize,
    /// The log offset of the next byte to return, and where to stop.
    offset: u64,
    end: u64,
}

impl FrameReader {
    fn load_next(&mut self) -> io::Result<()> {
        let damaged =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("damaged log: {what}"));
        let (start, end, at, zst_end) = self
            .index
            .frame(self.next)
            .ok_or_else(|| damaged("a frame is missing"))?;
        self.next += 1;
        self.compressed.resize((zst_end - at) as usize, 0);
        self.file.seek(SeekFrom::Start(at))?;
        self.file.read_exact(&mut self.compressed)?;
        self.frame.clear();
        self.frame.reserve((end - start) as usize);
        let n = self
            .decompressor
            .decompress_to_buffer(&self.compressed, &mut self.frame)?;
        if n as u64 != end - start {
            return Err(damaged("a frame has the wrong length"));
        }
        self.pos = (self.offset - start) as usize;
        Ok(())
    }
}

impl Read for FrameReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.end || out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.frame.len() {
            self.load_next()?;
        }
        let avail = &self.frame[self.pos..];
        let want = (self.end - self.offset).min(out.len() as u64) as usize;
        let n = want.min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(len: u64, zst_len: u64, frames: &[(u64, u64)]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        for n in [len, zst_len, FRAME as u64] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        for (a, z) in frames {
            b.extend_from_slice(&a.to_le_bytes());
            b.extend_from_slice(&z.to_le_bytes());
        }
        b
    }

    #[test]
    fn followers_that_leave_before_any_byte_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        s.append(1, 0, b"live").unwrap();
        for job in 100..200 {
            drop(s.subscribe(job).unwrap());
        }
        let kept = s.subscribe(200).unwrap();
        let mut ids: Vec<i64> = lock(&s.inner.jobs).keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 200], "the live log and the followed one stay");
        s.append(200, 0, b"x").unwrap();
        assert_eq!(kept.borrow().len, 1);
        assert_eq!(s.live_jobs(), [1, 200]);
    }

    #[test]
    fn indexes_are_checked() {
        let f = FRAME as u64;
        let ok = Index::parse(&index(f + 5, 90, &[(0, 0), (f, 80)])).unwrap();
        assert_eq!(ok.frame(1), Some((f, f + 5, 80, 90)));
        assert_eq!(ok.frame(2), None);
        assert_eq!(Index::parse(&index(0, 0, &[])).unwrap().len, 0);
        for bad in [
            index(f + 5, 90, &[(0, 0), (f + 1, 80)]), // a frame too long
            index(f + 5, 90, &[(f, 80), (0, 0)]),     // out of order
            index(f + 5, 90, &[(0, 0)]),              // a frame missing
            index(5, 0, &[(0, 0)]),                   // an empty compressed frame
            index(0, 0, &[(0, 0)]),                   // an empty frame
        ] {
            assert!(Index::parse(&bad).is_none(), "{bad:?}");
        }
        assert!(Index::parse(b"GLOGIDX1").is_none());
        assert!(Index::parse(b"").is_none());
    }
}
