//! Helpers shared by the store's tests: deterministic content and a small tmpfs to fill.

#![allow(dead_code)]

use gantry_store::Db;
use std::path::Path;
use std::process::Command;

/// A fresh database per test and backend: SQLite always (its directory comes along), and
/// PostgreSQL when the test command has started one (`GANTRY_TEST_POSTGRES_URL`;
/// `GANTRY_REQUIRE_POSTGRES=1` makes its absence a failure instead of a skip).
pub async fn backends(test: &str) -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    let mut out = vec![(Db::connect(&url).await.unwrap(), Some(dir))];
    match std::env::var("GANTRY_TEST_POSTGRES_URL") {
        Ok(base) => out.push((fresh_postgres(&base, test).await, None)),
        Err(_) if std::env::var("GANTRY_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!(
                "GANTRY_REQUIRE_POSTGRES=1 but GANTRY_TEST_POSTGRES_URL is not set: run scripts/postgres start"
            )
        }
        Err(_) => eprintln!("skipping PostgreSQL: GANTRY_TEST_POSTGRES_URL is not set"),
    }
    out
}

/// Creates (or recreates) a database named after the test on the server at `base`.
pub async fn fresh_postgres(base: &str, test: &str) -> Db {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("gantry_{}_{}", test, std::process::id());
    let mut admin = sqlx::AnyConnection::connect(base).await.unwrap();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Db::connect(&format!("{prefix}/{name}")).await.unwrap()
}

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
