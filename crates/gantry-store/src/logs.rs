//! Job logs, with no size limit and bounded memory.
//!
//! On disk, under the store's directory:
//! - `live/{job}.log`: the log of a running job, exactly the bytes received, appended at
//!   their offsets. Its length is the truth: after a crash the agent resends from there.
//! - `done/{job}.zst` + `done/{job}.idx`: a finished log, compressed as independent zstd
//!   frames of 1 MiB of log each, and the index of the frames (for each: where it starts in
//!   the log and in the compressed file). A byte range is read by decompressing only the
//!   frames it touches, never the log from its start.
//!
//! Appends are not synced one by one (an agent sends many small chunks): the server
//! acknowledges what it wrote to the file, and if the machine (not just the process) dies
//! before the page cache reaches the disk, the live file is shorter after the restart and the
//! agent resends the rest: bytes are re-sent, never duplicated nor skipped. A finished log is
//! synced before it replaces the live file.
//!
//! A write that fails (a full disk) is undone: the live file is cut back to its length
//! before the write, so what was stored stays readable and the next resend starts there.

use crate::{Result, StoreError};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Bytes of log per compressed frame.
pub const FRAME: usize = 1 << 20;
const LEVEL: i32 = 3;

/// What a follower of a log needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogState {
    pub len: u64,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    live: Mutex<HashMap<i64, Live>>,
    done_len: Mutex<HashMap<i64, u64>>,
    watchers: Mutex<HashMap<i64, watch::Sender<LogState>>>,
}

#[derive(Debug)]
struct Live {
    file: File,
    len: u64,
}

/// One frame of a finished log.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: u64,
    len: u64,
    at: u64,
    size: u64,
}

impl LogStore {
    /// Opens (or creates) a store in `dir`, taking over what a previous process left: live
    /// logs keep their length, half-written finished logs are removed (their live file is
    /// still there).
    pub fn open(dir: impl Into<PathBuf>) -> Result<LogStore> {
        let dir = dir.into();
        for sub in ["live", "done"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| StoreError::io("creating the log store", &d, e))?;
        }
        let store = LogStore {
            inner: Arc::new(Inner {
                dir,
                live: Mutex::new(HashMap::new()),
                done_len: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<()> {
        let done = self.inner.dir.join("done");
        let entries = fs::read_dir(&done).map_err(|e| StoreError::io("reading logs", &done, e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn live_path(&self, job: i64) -> PathBuf {
        self.inner.dir.join("live").join(format!("{job}.log"))
    }

    fn done_paths(&self, job: i64) -> (PathBuf, PathBuf) {
        let d = self.inner.dir.join("done");
        (d.join(format!("{job}.zst")), d.join(format!("{job}.idx")))
    }

    fn is_done(&self, job: i64) -> bool {
        self.done_paths(job).0.exists()
    }

    /// Stored bytes of a job's log (live or finished); 0 for none.
    pub fn len(&self, job: i64) -> u64 {
        if let Some(l) = self.inner.live.lock().expect("logs").get(&job) {
            return l.len;
        }
        if let Some(n) = self.inner.done_len.lock().expect("logs").get(&job) {
            return *n;
        }
        if let Ok(m) = fs::metadata(self.live_path(job)) {
            return m.len();
        }
        match self.index(job) {
            Ok(frames) => {
                let n = frames.last().map_or(0, |f| f.start + f.len);
                self.inner.done_len.lock().expect("logs").insert(job, n);
                n
            }
            Err(_) => 0,
        }
    }

    /// Writes `data`, which starts at `offset` of the job's log. Bytes already stored are
    /// skipped (a resend); a gap after the stored end is refused. Returns the new length.
    pub fn append(&self, job: i64, offset: u64, data: &[u8]) -> Result<u64> {
        let mut live = self.inner.live.lock().expect("logs");
        if !live.contains_key(&job) {
            if self.is_done(job) {
                return Err(StoreError::Conflict(format!(
                    "the log of job {job} is finished; no more bytes are accepted"
                )));
            }
            let path = self.live_path(job);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)
                .map_err(|e| StoreError::io("opening a log", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| StoreError::io("opening a log", &path, e))?
                .len();
            live.insert(job, Live { file, len });
        }
        let l = live.get_mut(&job).expect("just inserted");
        if offset > l.len {
            return Err(StoreError::Conflict(format!(
                "log of job {job}: bytes at offset {offset} but only {} stored; resend from {}",
                l.len, l.len
            )));
        }
        let skip = (l.len - offset) as usize;
        if skip < data.len() {
            let new = &data[skip..];
            if let Err(e) = l.file.write_all(new) {
                // Undo a partial write so that the file ends where the length says.
                let _ = l.file.set_len(l.len);
                return Err(StoreError::io(
                    format!("writing the log of job {job}"),
                    &self.inner.dir,
                    e,
                ));
            }
            l.len += new.len() as u64;
        }
        let len = l.len;
        drop(live);
        self.notify(job, LogState {
            len,
            finished: false,
        });
        Ok(len)
    }

    fn notify(&self, job: i64, state: LogState) {
        let w = self.inner.watchers.lock().expect("logs");
        if let Some(tx) = w.get(&job) {
            tx.send_replace(state);
        }
    }

    /// Follows a job's log: the receiver changes on every append and when it finishes.
    pub fn subscribe(&self, job: i64) -> watch::Receiver<LogState> {
        let state = LogState {
            len: self.len(job),
            finished: self.is_done(job),
        };
        let mut w = self.inner.watchers.lock().expect("logs");
        w.entry(job)
            .or_insert_with(|| watch::channel(state).0)
            .subscribe()
    }

    /// Compresses a finished job's log and drops its live file. Bounded memory (one frame at
    /// a time); idempotent; a job with no log gets an empty one.
    pub fn finish(&self, job: i64) -> Result<()> {
        let (zst, idx) = self.done_paths(job);
        let live_path = self.live_path(job);
        if zst.exists() {
            self.inner.live.lock().expect("logs").remove(&job);
            let _ = fs::remove_file(&live_path);
            self.finished(job);
            return Ok(());
        }
        // Hold the job's live entry out of the map while compressing: late appends fail
        // with "finished" only after the swap below.
        let mut source = match File::open(&live_path) {
            Ok(f) => Some(BufReader::with_capacity(FRAME, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io("reading a log", &live_path, e)),
        };
        let zst_tmp = zst.with_extension("zst.tmp");
        let idx_tmp = idx.with_extension("idx.tmp");
        let mut write = || -> io::Result<u64> {
            let mut out = io::BufWriter::new(File::create(&zst_tmp)?);
            let mut index = Vec::new();
            let (mut start, mut at) = (0u64, 0u64);
            let mut buf = vec![0u8; FRAME];
            if let Some(src) = source.as_mut() {
                loop {
                    let n = read_full(src, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    let frame = zstd::bulk::compress(&buf[..n], LEVEL)?;
                    out.write_all(&frame)?;
                    index.extend_from_slice(&start.to_le_bytes());
                    index.extend_from_slice(&(n as u64).to_le_bytes());
                    index.extend_from_slice(&at.to_le_bytes());
                    index.extend_from_slice(&(frame.len() as u64).to_le_bytes());
                    start += n as u64;
                    at += frame.len() as u64;
                }
            }
            let out = out.into_inner().map_err(|e| e.into_error())?;
            out.sync_all()?;
            let mut f = File::create(&idx_tmp)?;
            f.write_all(&index)?;
            f.sync_all()?;
            Ok(start)
        };
        let total = match write() {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&zst_tmp);
                let _ = fs::remove_file(&idx_tmp);
                return Err(StoreError::io(
                    format!("compressing the log of job {job}"),
                    &self.inner.dir,
                    e,
                ));
            }
        };
        // The index first: a `.zst` is only ever visible with its index.
        fs::rename(&idx_tmp, &idx).map_err(|e| StoreError::io("storing a log", &idx, e))?;
        fs::rename(&zst_tmp, &zst).map_err(|e| StoreError::io("storing a log", &zst, e))?;
        self.inner.live.lock().expect("logs").remove(&job);
        self.inner.done_len.lock().expect("logs").insert(job, total);
        let _ = fs::remove_file(&live_path);
        self.finished(job);
        Ok(())
    }

    fn finished(&self, job: i64) {
        let len = self.len(job);
        let mut w = self.inner.watchers.lock().expect("logs");
        if let Some(tx) = w.get(&job) {
            tx.send_replace(LogState {
                len,
                finished: true,
            });
        }
        // Forget followers of finished logs nobody follows any more.
        w.retain(|_, tx| tx.receiver_count() > 0 || !tx.borrow().finished);
    }

    fn index(&self, job: i64) -> io::Result<Vec<Frame>> {
        let (_, idx) = self.done_paths(job);
        let bytes = fs::read(idx)?;
        let mut frames = Vec::with_capacity(bytes.len() / 32);
        for c in bytes.chunks_exact(32) {
            let n = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
            frames.push(Frame {
                start: n(0),
                len: n(8),
                at: n(16),
                size: n(24),
            });
        }
        Ok(frames)
    }

    /// The bytes [start, end) of a job's log (`end` past the log's end is cut).
    pub fn read(&self, job: i64, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>> {
        let live_path = self.live_path(job);
        let in_live = self.inner.live.lock().expect("logs").contains_key(&job)
            || (live_path.exists() && !self.is_done(job));
        if in_live {
            match File::open(&live_path) {
                Ok(mut f) => {
                    let len = f
                        .metadata()
                        .map_err(|e| StoreError::io("reading a log", &live_path, e))?
                        .len();
                    let end = end.unwrap_or(len).min(len);
                    let start = start.min(end);
                    f.seek(SeekFrom::Start(start))
                        .map_err(|e| StoreError::io("reading a log", &live_path, e))?;
                    return Ok(Box::new(f.take(end - start)));
                }
                // Finished between the check and the open: read the compressed one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("reading a log", &live_path, e)),
            }
        }
        if !self.is_done(job) {
            return Ok(Box::new(io::empty()));
        }
        let frames = self
            .index(job)
            .map_err(|e| StoreError::io("reading a log index", &self.inner.dir, e))?;
        let total = frames.last().map_or(0, |f| f.start + f.len);
        let end = end.unwrap_or(total).min(total);
        let start = start.min(end);
        let first = frames.partition_point(|f| f.start + f.len <= start);
        let (zst, _) = self.done_paths(job);
        let file = File::open(&zst).map_err(|e| StoreError::io("reading a log", &zst, e))?;
        Ok(Box::new(FrameReader {
            file,
            frames,
            next: first,
            buf: Vec::new(),
            pos: 0,
            offset: start,
            end,
        }))
    }
}

/// Reads until `buf` is full or the source ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Decompresses the frames of a range one at a time.
struct FrameReader {
    file: File,
    frames: Vec<Frame>,
    next: usize,
    /// The current frame, decompressed.
    buf: Vec<u8>,
    pos: usize,
    /// The log offset of the next byte to return.
    offset: u64,
    end: u64,
}

impl Read for FrameReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.end {
            return Ok(0);
        }
        if self.pos >= self.buf.len() {
            let Some(f) = self.frames.get(self.next).copied() else {
                return Ok(0);
            };
            self.next += 1;
            let mut compressed = vec![0u8; f.size as usize];
            self.file.seek(SeekFrom::Start(f.at))?;
            self.file.read_exact(&mut compressed)?;
            self.buf = zstd::bulk::decompress(&compressed, f.len as usize)?;
            self.pos = (self.offset.saturating_sub(f.start)) as usize;
        }
        let avail = &self.buf[self.pos..];
        let want = (self.end - self.offset).min(out.len() as u64) as usize;
        let n = want.min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Whether the log store under `dir` exists (for tools).
pub fn exists(dir: &Path) -> bool {
    dir.join("live").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn read_all(s: &LogStore, job: i64, start: u64, end: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        s.read(job, start, end).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn resends_are_stored_once_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.append(1, 0, b"hello ").unwrap(), 6);
        assert_eq!(s.append(1, 0, b"hello ").unwrap(), 6, "a whole resend");
        assert_eq!(s.append(1, 3, b"lo world").unwrap(), 11, "an overlapping one");
        assert!(matches!(s.append(1, 20, b"x"), Err(StoreError::Conflict(_))));
        assert_eq!(read_all(&s, 1, 0, None), b"hello world");
        assert_eq!(read_all(&s, 1, 6, Some(9)), b"wor");
        assert_eq!(s.len(1), 11);
        assert_eq!(s.len(2), 0);
        assert!(read_all(&s, 2, 0, None).is_empty());
    }

    #[test]
    fn finished_logs_read_by_range_across_frames() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        let data = content(3 * FRAME + 12345);
        for (i, chunk) in data.chunks(64 * 1024).enumerate() {
            s.append(7, (i * 64 * 1024) as u64, chunk).unwrap();
        }
        s.finish(7).unwrap();
        s.finish(7).unwrap();
        assert!(!dir.path().join("live/7.log").exists());
        assert_eq!(s.len(7), data.len() as u64);
        assert_eq!(read_all(&s, 7, 0, None), data);
        let (a, b) = (FRAME as u64 - 10, 2 * FRAME as u64 + 10);
        assert_eq!(read_all(&s, 7, a, Some(b)), &data[a as usize..b as usize]);
        let tail = data.len() as u64 - 5;
        assert_eq!(read_all(&s, 7, tail, None), &data[tail as usize..]);
        assert!(matches!(s.append(7, 0, b"x"), Err(StoreError::Conflict(_))));
        // Reopened: the length comes from the index.
        let s2 = LogStore::open(dir.path()).unwrap();
        assert_eq!(s2.len(7), data.len() as u64);
        let compressed = fs::metadata(dir.path().join("done/7.zst")).unwrap().len();
        assert!(compressed < data.len() as u64 / 10, "{compressed}");
    }

    #[test]
    fn a_crash_keeps_live_logs_and_drops_half_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(dir.path()).unwrap();
            s.append(3, 0, b"before the crash\n").unwrap();
        }
        fs::write(dir.path().join("done/3.zst.tmp"), b"half").unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.len(3), 17);
        assert!(!dir.path().join("done/3.zst.tmp").exists());
        assert_eq!(s.append(3, 17, b"after\n").unwrap(), 23);
        s.finish(3).unwrap();
        assert_eq!(read_all(&s, 3, 0, None), b"before the crash\nafter\n");
    }

    #[tokio::test]
    async fn followers_see_appends_and_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        let mut rx = s.subscribe(9);
        assert_eq!(*rx.borrow(), LogState::default());
        s.append(9, 0, b"abc").unwrap();
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().len, 3);
        s.finish(9).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(
            *rx.borrow(),
            LogState {
                len: 3,
                finished: true
            }
        );
        // A job with no log finishes with an empty one.
        s.finish(10).unwrap();
        assert_eq!(s.len(10), 0);
        assert!(s.subscribe(10).borrow().finished);
    }
}
