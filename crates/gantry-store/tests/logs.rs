//! The job-log store as the server uses it: agents append by offset (resending after
//! reconnects), followers read live, jobs finish, the server restarts, the disk fills up.

mod support;

use gantry_store::StoreError;
use gantry_store::logs::{FRAME, LogState, LogStore};
use std::fs;
use std::io::Read;
use std::time::Instant;
use support::{Tmpfs, log_bytes, log_vec, noise, peak_rss};

fn read_all(s: &LogStore, job: i64, start: u64, end: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    s.read(job, start, end)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn append_all(s: &LogStore, job: i64, data: &[u8], chunk: usize) {
    for (i, c) in data.chunks(chunk).enumerate() {
        let at = (i * chunk) as u64;
        assert_eq!(s.append(job, at, c).unwrap(), at + c.len() as u64);
    }
}

#[test]
fn resends_are_stored_once_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    assert_eq!(s.append(1, 0, b"hello ").unwrap(), 6);
    assert_eq!(s.append(1, 0, b"hello ").unwrap(), 6, "a whole resend");
    assert_eq!(s.append(1, 2, b"ll").unwrap(), 6, "an old part");
    assert_eq!(
        s.append(1, 3, b"lo world").unwrap(),
        11,
        "an overlapping one"
    );
    assert_eq!(s.append(1, 11, b"").unwrap(), 11, "nothing");
    match s.append(1, 12, b"!") {
        Err(StoreError::Conflict(m)) => assert!(m.contains("resend from 11"), "{m}"),
        other => panic!("a gap must be refused: {other:?}"),
    }
    assert_eq!(s.len(1).unwrap(), 11, "a refused chunk stores nothing");
    assert_eq!(
        fs::read(dir.path().join("live/1.log")).unwrap(),
        b"hello world"
    );
    assert_eq!(read_all(&s, 1, 0, None), b"hello world");

    s.finish(1).unwrap();
    assert_eq!(
        s.append(1, 11, b"!").map_err(|e| e.to_string()),
        Err("the log of job 1 is finished; it takes no more bytes".into())
    );
    assert_eq!(
        s.append(1, 0, b"hello").ok(),
        None,
        "even a resend, once finished"
    );
    assert_eq!(read_all(&s, 1, 0, None), b"hello world");

    // A job nobody logged for.
    assert_eq!(s.len(2).unwrap(), 0);
    assert!(read_all(&s, 2, 0, None).is_empty());
    assert!(
        !dir.path().join("live/2.log").exists(),
        "reading creates nothing"
    );
}

/// Every range that matters around frame boundaries, on the live log and the finished one.
#[test]
fn range_reads_across_frames_live_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    let data = log_vec(0, 3 * FRAME + 12_345);
    append_all(&s, 7, &data, 50_000); // chunks that do not line up with frames
    let len = data.len() as u64;
    let f = FRAME as u64;
    let ranges = [
        (0, None),
        (0, Some(1)),
        (f - 1, Some(f + 1)),
        (f, Some(f)),
        (f, Some(2 * f)),
        (f - 10, Some(2 * f + 10)),
        (3 * f - 1, None),
        (len - 5, None),
        (len - 5, Some(len + 100)),
        (len, None),
        (len + 10, None),
        (5, Some(3)),
    ];
    let check = |what: &str| {
        for (start, end) in ranges {
            let want = {
                let e = end.unwrap_or(len).min(len) as usize;
                let b = (start as usize).min(e);
                &data[b..e]
            };
            assert!(
                read_all(&s, 7, start, end) == want,
                "{what}: {start}..{end:?}"
            );
        }
    };
    check("live");
    s.finish(7).unwrap();
    s.finish(7).unwrap(); // idempotent
    assert!(!dir.path().join("live/7.log").exists());
    assert_eq!(s.len(7).unwrap(), len);
    check("finished");
    let compressed = fs::metadata(dir.path().join("done/7.zst")).unwrap().len();
    assert!(compressed < len / 10, "{compressed} bytes for {len}");
    // A new process reads the same.
    let s2 = LogStore::open(dir.path()).unwrap();
    assert_eq!(s2.len(7).unwrap(), len);
    assert_eq!(
        read_all(&s2, 7, f - 3, Some(f + 3)),
        &data[FRAME - 3..FRAME + 3]
    );
}

/// Reading a range decompresses only its frames: with the first frame damaged, later
/// ranges still read, and the damage is reported (checksums), not returned as bytes.
#[test]
fn a_range_read_seeks_to_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    let data = log_vec(0, 3 * FRAME);
    append_all(&s, 4, &data, 64 * 1024);
    s.finish(4).unwrap();
    let zst = dir.path().join("done/4.zst");
    let mut bytes = fs::read(&zst).unwrap();
    bytes[100] ^= 0xff; // inside frame 0
    fs::write(&zst, bytes).unwrap();
    let f = FRAME as u64;
    assert!(read_all(&s, 4, 2 * f + 7, Some(2 * f + 70)) == data[2 * FRAME + 7..2 * FRAME + 70]);
    let mut out = Vec::new();
    let err = s.read(4, 10, Some(20)).unwrap().read_to_end(&mut out);
    assert!(err.is_err(), "a damaged frame must fail, got {out:?}");
}

/// The load: a 300 MiB log in 64 KiB chunks, finished, read whole and by range,
/// with every byte checked and memory that does not grow with the log.
#[test]
fn a_300_mib_log_streams_in_bounded_memory() {
    big_log(300 << 20);
}

/// The same with the 1 GiB (about 10 s in a debug build, and 1 GiB of disk):
/// `cargo test -p gantry-store --test logs -- --ignored --nocapture`.
#[test]
#[ignore = "1 GiB of disk and ~10 s; the 300 MiB variant runs by default"]
fn a_1_gib_log_streams_in_bounded_memory() {
    big_log(1 << 30);
}

fn big_log(total: u64) {
    const CHUNK: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    let rss_before = peak_rss();
    let t = Instant::now();
    let mut chunk = vec![0u8; CHUNK];
    let mut at = 0;
    while at < total {
        log_bytes(at, &mut chunk);
        // Every 100th chunk is sent twice, as after a reconnect.
        if (at / CHUNK as u64) % 100 == 99 {
            s.append(9, at - 1000, &log_vec(at - 1000, 1000)).unwrap();
        }
        assert_eq!(s.append(9, at, &chunk).unwrap(), at + CHUNK as u64);
        at += CHUNK as u64;
    }
    let appended = t.elapsed();
    let t = Instant::now();
    s.finish(9).unwrap();
    let finished = t.elapsed();
    assert_eq!(s.len(9).unwrap(), total);
    let compressed = fs::metadata(dir.path().join("done/9.zst")).unwrap().len();

    let t = Instant::now();
    let mut reader = s.read(9, 0, None).unwrap();
    let (mut got, mut want) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    let mut at = 0u64;
    loop {
        let n = reader.read(&mut got).unwrap();
        if n == 0 {
            break;
        }
        log_bytes(at, &mut want[..n]);
        assert!(got[..n] == want[..n], "byte {at} and on");
        at += n as u64;
    }
    assert_eq!(at, total);
    let read_whole = t.elapsed();

    let t = Instant::now();
    for (start, len) in [
        (0, 10),
        (total / 2 - 3, 100_000),
        (total - 77, 77),
        (123_456_789, 3 << 20),
    ] {
        assert!(
            read_all(&s, 9, start, Some(start + len)) == log_vec(start, len as usize),
            "{start}+{len}"
        );
    }
    let ranges = t.elapsed();
    eprintln!(
        "{} MiB log: append {appended:?}, finish {finished:?} ({compressed} bytes compressed), \
         read whole {read_whole:?}, 4 ranges {ranges:?}",
        total >> 20
    );
    if let (Some(before), Some(after)) = (rss_before, peak_rss()) {
        let grown = after.saturating_sub(before);
        eprintln!("peak memory grew by {} KiB", grown / 1024);
        assert!(
            grown < 64 << 20,
            "memory grew by {grown} bytes for a 300 MiB log"
        );
    }
}

/// The server dies without finishing (a crash or `kill -9`): a new process takes over the
/// live logs at their lengths, and the agent's resends continue them.
#[test]
fn a_restart_keeps_live_logs_and_cleans_up_interrupted_finishes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open(dir.path()).unwrap();
        s.append(3, 0, b"before the crash\n").unwrap();
        s.append(5, 0, b"finished").unwrap();
        s.finish(5).unwrap();
        s.append(6, 0, b"six").unwrap();
        // Dropped without finishing or syncing.
    }
    // An interrupted finish of 3, and a finish of 6 that stopped after its renames.
    fs::write(dir.path().join("done/3.zst.tmp"), b"half").unwrap();
    fs::write(dir.path().join("done/3.idx.tmp"), b"half").unwrap();
    fs::write(dir.path().join("live/5.log"), b"finished").unwrap();

    let s = LogStore::open(dir.path()).unwrap();
    assert!(!dir.path().join("done/3.zst.tmp").exists());
    assert!(!dir.path().join("done/3.idx.tmp").exists());
    assert!(!dir.path().join("live/5.log").exists());
    assert_eq!(s.live_jobs(), [3, 6]);
    assert_eq!(s.len(3).unwrap(), 17);
    assert_eq!(s.len(5).unwrap(), 8);
    assert_eq!(
        s.append(3, 0, b"before").unwrap(),
        17,
        "a resend from the start"
    );
    assert!(matches!(
        s.append(3, 30, b"x"),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.append(3, 17, b"after\n").unwrap(), 23);
    s.finish(3).unwrap();
    assert_eq!(read_all(&s, 3, 0, None), b"before the crash\nafter\n");
    assert_eq!(s.live_jobs(), [6]);
    s.sync().unwrap();
}

/// A follower (an SSE handler) that resumes from its last offset, against a writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_every_byte_once_and_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    let data = log_vec(0, 2 * FRAME + 999);

    // Following starts before the first byte.
    let mut rx = s.subscribe(9).unwrap();
    assert_eq!(*rx.borrow(), LogState::default());
    let follower = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let state = *rx.borrow_and_update();
                let s2 = s.clone();
                let from = got.len() as u64;
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut b = Vec::new();
                    s2.read(9, from, Some(state.len))?
                        .read_to_end(&mut b)
                        .map_err(|e| StoreError::Io {
                            what: "reading".into(),
                            source: e,
                        })?;
                    Ok::<_, StoreError>(b)
                })
                .await
                .unwrap()
                .unwrap();
                got.extend_from_slice(&bytes);
                if state.finished {
                    break;
                }
                if rx.changed().await.is_err() {
                    // Closed after the final state: one more round reads it.
                    assert!(rx.borrow().finished);
                }
            }
            got
        })
    };
    let writer = {
        let (s, data) = (s.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            for (i, c) in data.chunks(4096).enumerate() {
                s.append(9, (i * 4096) as u64, c).unwrap();
                if i % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            s.finish(9).unwrap();
        })
    };
    writer.await.unwrap();
    let got = follower.await.unwrap();
    assert!(
        got == data,
        "{} bytes followed of {}",
        got.len(),
        data.len()
    );

    // A finished log: the final state at once, and a closed channel.
    let mut rx = s.subscribe(9).unwrap();
    assert_eq!(
        *rx.borrow(),
        LogState {
            len: data.len() as u64,
            finished: true
        }
    );
    assert!(rx.changed().await.is_err());

    // A job with no log finishes with an empty one.
    s.finish(10).unwrap();
    assert_eq!(s.len(10).unwrap(), 0);
    assert!(s.subscribe(10).unwrap().borrow().finished);
}

/// Appends racing a finish: every append that returned is in the finished log; the ones
/// after it are refused.
#[test]
fn appends_racing_a_finish_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStore::open(dir.path()).unwrap();
    s.append(2, 0, &log_vec(0, 3 * FRAME)).unwrap();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut acked = 3 * FRAME as u64;
            loop {
                match s.append(2, acked, &log_vec(acked, 1000)) {
                    Ok(n) => acked = n,
                    Err(StoreError::Conflict(_)) => return acked,
                    Err(e) => panic!("{e}"),
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.finish(2).unwrap();
    let acked = writer.join().unwrap();
    assert_eq!(s.len(2).unwrap(), acked);
    assert!(read_all(&s, 2, 0, None) == log_vec(0, acked as usize));
}

/// A real full disk (a 4 MiB tmpfs): a failed append is undone, the log stays readable and
/// resumable; a failed finish leaves the live log as it was; both work once space is free.
#[test]
fn a_full_disk_fails_cleanly_and_recovers() {
    let Some(fs_) = Tmpfs::mount("4m", "a_full_disk_fails_cleanly_and_recovers") else {
        return;
    };
    let small = fs_.fill("small", 256 << 10);
    let big = fs_.fill("big", (2 << 20) + (768 << 10));
    let s = LogStore::open(fs_.path().join("logs")).unwrap();
    let data = noise(1, 4 << 20); // incompressible
    let chunk = 60_000;
    let mut acked = 0u64;
    let err = loop {
        let end = (acked as usize + chunk).min(data.len());
        match s.append(8, acked, &data[acked as usize..end]) {
            Ok(n) => acked = n,
            Err(e) => break e,
        }
    };
    assert!(err.is_full(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no space left") && msg.contains("logs"),
        "{msg}"
    );
    assert!(acked > 512 << 10, "{acked} bytes before the disk was full");
    let live = fs_.path().join("logs/live/8.log");
    assert_eq!(
        fs::metadata(&live).unwrap().len(),
        acked,
        "the failed write is undone"
    );
    assert_eq!(s.len(8).unwrap(), acked);
    assert!(read_all(&s, 8, 0, None) == data[..acked as usize]);

    // Space again: the agent resends from an older offset, and more.
    fs::remove_file(&small).unwrap();
    let resend_from = acked - 1000;
    let to = acked + 100_000;
    assert_eq!(
        s.append(8, resend_from, &data[resend_from as usize..to as usize])
            .unwrap(),
        to
    );
    let acked = to;

    // Finishing needs as much again as the log: it fails, and changes nothing.
    let err = s.finish(8).unwrap_err();
    assert!(err.is_full(), "{err}");
    let done: Vec<_> = fs::read_dir(fs_.path().join("logs/done"))
        .unwrap()
        .collect();
    assert!(
        done.is_empty(),
        "a failed finish leaves nothing in done/: {done:?}"
    );
    assert_eq!(fs::metadata(&live).unwrap().len(), acked);
    assert!(read_all(&s, 8, 0, None) == data[..acked as usize]);
    assert!(!s.subscribe(8).unwrap().borrow().finished);
    assert_eq!(
        s.append(8, acked, &data[acked as usize..acked as usize + 10])
            .unwrap(),
        acked + 10
    );
    let acked = acked + 10;

    fs::remove_file(&big).unwrap();
    s.finish(8).unwrap();
    assert!(!live.exists());
    assert!(read_all(&s, 8, 0, None) == data[..acked as usize]);
    assert!(read_all(&s, 8, 1 << 20, Some((1 << 20) + 10)) == data[1 << 20..(1 << 20) + 10]);
}
