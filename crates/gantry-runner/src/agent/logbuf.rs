//! A job's log on the agent until the server has stored it.
//!
//! Bytes are numbered from 0 (the offsets of [`gantry_api::agent::LogFrame`]). Three marks
//! move forward only: `acked` (the server stored everything below; those bytes are dropped),
//! `sent` (the next byte to send on the current connection) and `end` (everything written).
//! A new connection starts sending at the server's stored offset ([`LogBuffer::resume`]) —
//! never below it, never past a byte the server has not got. While the server is away, bytes
//! stay here: in memory up to `spill_limit`, then in a file (memory stays bounded however
//! long the server is gone); the file is deleted once the server has everything in it.
//! The server acknowledges what it stores at once; bytes still unacknowledged a heartbeat
//! after they went were not stored (its disk was full, say) and are sent again
//! ([`LogBuffer::rewind_stalled`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The default limit of unacknowledged bytes kept in memory per job.
pub const SPILL_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct LogBuffer {
    acked: u64,
    sent: u64,
    end: u64,
    /// `sent` at the last [`LogBuffer::rewind_stalled`].
    checked: u64,
    store: Store,
    spill_limit: usize,
    spill_path: PathBuf,
}

#[derive(Debug)]
enum Store {
    /// `buf[head..]` holds the bytes from `acked` to `end`.
    Mem { buf: Vec<u8>, head: usize },
    /// The file's byte 0 is offset `start`; it holds `start..end`.
    File { file: File, start: u64 },
}

impl LogBuffer {
    /// A buffer that spills to `spill_path` beyond `spill_limit` unacknowledged bytes.
    pub fn new(spill_path: PathBuf, spill_limit: usize) -> LogBuffer {
        LogBuffer {
            acked: 0,
            sent: 0,
            end: 0,
            checked: 0,
            store: Store::Mem {
                buf: Vec::new(),
                head: 0,
            },
            spill_limit,
            spill_path,
        }
    }

    /// Appends log bytes.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.store {
            Store::Mem { buf, head } => {
                buf.extend_from_slice(bytes);
                if buf.len() - *head > self.spill_limit {
                    let mut file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&self.spill_path)?;
                    file.write_all(&buf[*head..])?;
                    self.store = Store::File {
                        file,
                        start: self.acked,
                    };
                }
            }
            Store::File { file, start } => {
                file.write_all_at(bytes, self.end - *start)?;
            }
        }
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far (the log's length).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes the server has acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The next offset to send on this connection.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether bytes wait to be sent on this connection.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.end
    }

    /// Whether the log lives in a file now.
    pub fn spilled(&self) -> bool {
        matches!(self.store, Store::File { .. })
    }

    /// Unacknowledged bytes held in memory.
    pub fn in_memory(&self) -> usize {
        match &self.store {
            Store::Mem { buf, head } => buf.len() - head,
            Store::File { .. } => 0,
        }
    }

    /// The server stored everything below `offset`: drop it.
    pub fn ack(&mut self, offset: u64) {
        let offset = offset.min(self.end);
        if offset <= self.acked {
            return;
        }
        let n = (offset - self.acked) as usize;
        self.acked = offset;
        self.sent = self.sent.max(offset);
        match &mut self.store {
            Store::Mem { buf, head } => {
                *head += n;
                if *head == buf.len() {
                    buf.clear();
                    *head = 0;
                } else if *head > buf.len() / 2 {
                    buf.drain(..*head);
                    *head = 0;
                }
            }
            Store::File { .. } => {
                if self.acked == self.end {
                    self.store = Store::Mem {
                        buf: Vec::new(),
                        head: 0,
                    };
                    let _ = std::fs::remove_file(&self.spill_path);
                }
            }
        }
    }

    /// A new connection: the server has `offset` bytes. Sending restarts there (or at the
    /// acknowledged offset, if the server says less than it acknowledged before).
    pub fn resume(&mut self, offset: u64) {
        self.ack(offset);
        self.sent = offset.clamp(self.acked, self.end);
        self.checked = self.acked;
    }

    /// The connection is gone: the server may not have got what was sent and not acked.
    pub fn disconnected(&mut self) {
        self.sent = self.acked;
        self.checked = self.acked;
    }

    /// Called once a heartbeat: whether bytes sent before the previous call are still not
    /// acknowledged, i.e. the server did not store them (a write that failed on a full
    /// disk: it stores and acknowledges nothing past it). Then sending restarts at the
    /// acknowledged offset, and the caller sends everything again (the server skips the
    /// bytes it has, so a slow acknowledgement costs traffic, never a duplicate).
    pub fn rewind_stalled(&mut self) -> bool {
        let stalled = self.checked > self.acked;
        if stalled {
            self.sent = self.acked;
            // The caller sends up to the end now.
            self.checked = self.end;
        } else {
            self.checked = self.sent;
        }
        stalled
    }

    /// The next frame to send, at most `max` bytes from `sent`; advances `sent`.
    pub fn next_frame(&mut self, max: usize) -> io::Result<Option<(u64, Vec<u8>)>> {
        if self.sent >= self.end {
            return Ok(None);
        }
        let from = self.sent;
        let len = ((self.end - from) as usize).min(max.max(1));
        let data = match &self.store {
            Store::Mem { buf, head } => {
                let at = *head + (from - self.acked) as usize;
                buf[at..at + len].to_vec()
            }
            Store::File { file, start } => {
                let mut data = vec![0u8; len];
                file.read_exact_at(&mut data, from - start)?;
                data
            }
        };
        self.sent = from + len as u64;
        Ok(Some((from, data)))
    }
}

impl Drop for LogBuffer {
    fn drop(&mut self) {
        if self.spilled() {
            let _ = std::fs::remove_file(&self.spill_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut LogBuffer, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = b.next_frame(max).unwrap() {
            out.push(f);
        }
        out
    }

    fn buffer(limit: usize) -> (tempfile::TempDir, LogBuffer) {
        let dir = tempfile::tempdir().unwrap();
        let b = LogBuffer::new(dir.path().join("job.log"), limit);
        (dir, b)
    }

    #[test]
    fn offsets_and_ack_trimming() {
        let (_d, mut b) = buffer(1 << 20);
        b.push(b"hello ").unwrap();
        b.push(b"world\n").unwrap();
        let frames = drain(&mut b, 4);
        assert_eq!(
            frames,
            vec![
                (0, b"hell".to_vec()),
                (4, b"o wo".to_vec()),
                (8, b"rld\n".to_vec())
            ]
        );
        assert_eq!((b.acked(), b.sent(), b.end()), (0, 12, 12));
        b.ack(5);
        assert_eq!(b.in_memory(), 7);
        b.ack(3); // an old ack changes nothing
        assert_eq!(b.acked(), 5);
        b.ack(100); // beyond the end: everything
        assert_eq!((b.acked(), b.in_memory()), (12, 0));
        b.push(b"more").unwrap();
        assert_eq!(drain(&mut b, 100), vec![(12, b"more".to_vec())]);
    }

    #[test]
    fn resend_after_reconnect_without_loss_or_duplication() {
        let (_d, mut b) = buffer(1 << 20);
        let mut server: Vec<u8> = Vec::new();
        let mut expected: Vec<u8> = Vec::new();
        for round in 0..50u32 {
            let line = format!("line {round}\n");
            b.push(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
            // The server receives frames but loses the last one of every third round, and
            // the connection drops every fifth round.
            let frames = drain(&mut b, 3);
            let n = frames.len();
            for (i, (off, data)) in frames.into_iter().enumerate() {
                if round % 3 == 0 && i == n - 1 {
                    break;
                }
                assert_eq!(off, server.len() as u64, "a gap or an overlap");
                server.extend_from_slice(&data);
            }
            if round % 5 == 4 {
                b.disconnected();
                b.resume(server.len() as u64);
            } else if round % 3 == 0 {
                // The lost frame is only noticed on the next connection.
                b.disconnected();
                b.resume(server.len() as u64);
            } else {
                b.ack(server.len() as u64);
            }
        }
        for (off, data) in drain(&mut b, 7) {
            assert_eq!(off, server.len() as u64);
            server.extend_from_slice(&data);
        }
        assert_eq!(server, expected);
    }

    #[test]
    fn bytes_the_server_did_not_store_are_sent_again_a_heartbeat_later() {
        let (_d, mut b) = buffer(1 << 20);
        b.push(b"0123456789").unwrap();
        assert_eq!(drain(&mut b, 4).len(), 3);
        // The server stored 4 bytes and refused the rest (its disk was full).
        b.ack(4);
        assert!(
            !b.rewind_stalled(),
            "sent since the last beat: not stalled yet"
        );
        assert_eq!(b.next_frame(100).unwrap(), None);
        assert!(b.rewind_stalled(), "a beat later, still not acknowledged");
        assert_eq!(drain(&mut b, 100), vec![(4, b"456789".to_vec())]);
        // Refused again; then stored.
        assert!(b.rewind_stalled());
        assert_eq!(drain(&mut b, 100), vec![(4, b"456789".to_vec())]);
        b.ack(10);
        assert!(!b.rewind_stalled());
        assert!(!b.rewind_stalled());
        // Acknowledged in time: nothing is sent twice.
        b.push(b"ab").unwrap();
        assert_eq!(drain(&mut b, 100), vec![(10, b"ab".to_vec())]);
        assert!(!b.rewind_stalled());
        b.ack(12);
        assert!(!b.rewind_stalled());
        assert_eq!(b.next_frame(100).unwrap(), None);
    }

    #[test]
    fn resume_never_goes_below_the_stored_offset_nor_past_the_end() {
        let (_d, mut b) = buffer(1 << 20);
        b.push(b"0123456789").unwrap();
        drain(&mut b, 100);
        b.disconnected();
        b.resume(6);
        assert_eq!(drain(&mut b, 100), vec![(6, b"6789".to_vec())]);
        b.disconnected();
        b.resume(2); // less than acknowledged: from the acknowledged offset
        assert_eq!(b.next_frame(100).unwrap(), Some((6, b"6789".to_vec())));
        b.disconnected();
        b.resume(50);
        assert_eq!(b.next_frame(100).unwrap(), None);
        assert_eq!(b.acked(), 10);
    }

    #[test]
    fn spills_to_disk_beyond_the_limit_and_cleans_up() {
        let (d, mut b) = buffer(16);
        let path = d.path().join("job.log");
        let mut all = Vec::new();
        for i in 0..10u8 {
            let chunk = vec![b'a' + i; 5];
            b.push(&chunk).unwrap();
            all.extend_from_slice(&chunk);
        }
        assert!(b.spilled());
        assert!(path.exists());
        assert_eq!(b.in_memory(), 0);
        let mut got = Vec::new();
        for (off, data) in drain(&mut b, 7) {
            assert_eq!(off, got.len() as u64);
            got.extend_from_slice(&data);
        }
        assert_eq!(got, all);
        // A reconnect while spilled resends from the file.
        b.ack(20);
        b.disconnected();
        b.resume(20);
        let again: Vec<u8> = drain(&mut b, 100)
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect();
        assert_eq!(again, all[20..]);
        b.ack(50);
        assert!(!b.spilled());
        assert!(!path.exists());
        b.push(b"tail").unwrap();
        assert_eq!(drain(&mut b, 100), vec![(50, b"tail".to_vec())]);
        // Dropping a spilled buffer removes its file.
        for _ in 0..10 {
            b.push(b"xxxxx").unwrap();
        }
        assert!(path.exists());
        drop(b);
        assert!(!path.exists());
    }
}
