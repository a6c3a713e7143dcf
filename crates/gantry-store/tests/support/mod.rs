//! Helpers shared by the store's tests: deterministic content and a small tmpfs to fill.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Log-like content, the same for the same offset whoever generates it: 64-byte lines,
/// `{line number:012} ...text...\n`. Fills `buf` with the log's bytes from `offset`.
pub fn log_bytes(offset: u64, buf: &mut [u8]) {
    const TEXT: &[u8; 52] = b" $ cargo build --release Compiling gantry v0.1.0 ok\n";
    let mut line = offset / 64;
    let mut col = (offset % 64) as usize;
    let mut i = 0;
    while i < buf.len() {
        let mut full = [0u8; 64];
        let mut n = line;
        for d in full[..12].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        full[12..].copy_from_slice(TEXT);
        let take = (64 - col).min(buf.len() - i);
        buf[i..i + take].copy_from_slice(&full[col..col + take]);
        i += take;
        col = 0;
        line += 1;
    }
}

pub fn log_vec(offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    log_bytes(offset, &mut v);
    v
}

/// Incompressible bytes (splitmix64).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tmpfs of a few MiB mounted on a temporary folder, to run out of space for real;
/// unmounted when dropped. Mounting needs root: without it the caller skips its test (or
/// fails, with `GANTRY_TEST_REQUIRE_TMPFS=1`, so that CI cannot skip silently).
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var_os("GANTRY_TEST_REQUIRE_TMPFS").is_some() {
                    panic!("{test}: cannot mount a tmpfs ({why})");
                }
                eprintln!("SKIPPED {test}: cannot mount a tmpfs to fill ({why}); run as root");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of `len` bytes (to take space).
    pub fn fill(&self, name: &str, len: usize) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, vec![7u8; len]).expect("a filler file fits");
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Peak resident memory of this process so far, in bytes (Linux), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
