//! A long-lived `git cat-file --batch-command` process: resolving a rev or reading a blob is
//! one line written and one answer read (tens of microseconds) instead of a process start
//! (a millisecond or two).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// An object as `cat-file` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    pub oid: String,
    pub kind: String,
    pub size: u64,
}

/// What `contents` gave back.
#[derive(Debug)]
pub(crate) enum Contents {
    Data(Vec<u8>),
    /// The object was bigger than allowed and was skipped.
    TooLarge(u64),
}

#[derive(Debug)]
pub(crate) struct Batch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Batch {
    /// Starts the process from a prepared `git` command (environment set, no arguments).
    pub fn spawn(mut cmd: Command) -> io::Result<Batch> {
        cmd.args(["cat-file", "--batch-command"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::with_capacity(64 << 10, child.stdout.take().expect("piped stdout"));
        Ok(Batch {
            child,
            stdin,
            stdout,
        })
    }

    /// The object `name` (any rev expression without a newline) names, or `None`.
    pub fn info(&mut self, name: &str) -> io::Result<Option<Info>> {
        self.send("info", name)?;
        self.header(name)
    }

    /// The object's content, unless it is bigger than `max` bytes.
    pub fn contents(&mut self, name: &str, max: u64) -> io::Result<Option<(Info, Contents)>> {
        self.send("contents", name)?;
        self.read_contents(name, max)
    }

    /// Every path under the tree `root` names (files, symlinks and submodules; not
    /// directories) in git's order, `None` when `root` names no tree. Trees of one depth are
    /// asked for together, so a listing costs about one round trip per level.
    pub fn list_tree(&mut self, root: &str) -> io::Result<Option<Vec<String>>> {
        let Some(info) = self.info(root)? else {
            return Ok(None);
        };
        if info.kind != "tree" {
            return Ok(None);
        }
        let oid_len = info.oid.len() / 2;
        let mut files = Vec::new();
        let mut level = vec![(String::new(), info.oid)];
        while !level.is_empty() {
            let mut next = Vec::new();
            // Requests in flight stay far below a pipe's 64 KiB, so neither side blocks.
            for chunk in level.chunks(256) {
                for (_, oid) in chunk {
                    self.write_command("contents", oid)?;
                }
                self.stdin.flush()?;
                for (prefix, oid) in chunk {
                    let Some((info, Contents::Data(data))) = self.read_contents(oid, u64::MAX)?
                    else {
                        return Err(invalid(format!("cat-file: tree {oid} is missing")));
                    };
                    if info.kind != "tree" {
                        return Err(invalid(format!("cat-file: {oid} is not a tree")));
                    }
                    parse_tree(&data, oid_len, |mode, name, child| {
                        let path = format!("{prefix}{name}");
                        if mode == b"40000" {
                            next.push((path + "/", child));
                        } else {
                            files.push(path);
                        }
                    })?;
                }
            }
            level = next;
        }
        files.sort_unstable();
        Ok(Some(files))
    }

    fn read_contents(&mut self, name: &str, max: u64) -> io::Result<Option<(Info, Contents)>> {
        let Some(info) = self.header(name)? else {
            return Ok(None);
        };
        let body = if info.size > max {
            let skipped = io::copy(&mut (&mut self.stdout).take(info.size), &mut io::sink())?;
            if skipped != info.size {
                return Err(eof());
            }
            Contents::TooLarge(info.size)
        } else {
            let mut data = vec![0; usize::try_from(info.size).map_err(io::Error::other)?];
            self.stdout.read_exact(&mut data)?;
            Contents::Data(data)
        };
        let mut lf = [0u8; 1];
        self.stdout.read_exact(&mut lf)?;
        if lf[0] != b'\n' {
            return Err(invalid("cat-file: no newline after the object".into()));
        }
        Ok(Some((info, body)))
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, command: &str, name: &str) -> io::Result<()> {
        self.write_command(command, name)?;
        self.stdin.flush()
    }

    fn write_command(&mut self, command: &str, name: &str) -> io::Result<()> {
        let mut line = Vec::with_capacity(command.len() + name.len() + 2);
        line.extend_from_slice(command.as_bytes());
        line.push(b' ');
        line.extend_from_slice(name.as_bytes());
        line.push(b'\n');
        self.stdin.write_all(&line)
    }

    fn header(&mut self, name: &str) -> io::Result<Option<Info>> {
        let mut line = Vec::with_capacity(96);
        self.stdout.read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(eof());
        }
        let line = String::from_utf8_lossy(&line);
        if let Some(info) = parse_header(&line) {
            return Ok(Some(info));
        }
        if line == format!("{name} missing") || line == format!("{name} ambiguous") {
            return Ok(None);
        }
        Err(invalid(format!("cat-file: unexpected answer '{line}'")))
    }
}

fn parse_header(line: &str) -> Option<Info> {
    let mut parts = line.splitn(3, ' ');
    let oid = parts.next()?;
    let kind = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    let hex = matches!(oid.len(), 40 | 64) && oid.bytes().all(|b| b.is_ascii_hexdigit());
    let known = matches!(kind, "blob" | "tree" | "commit" | "tag");
    (hex && known).then(|| Info {
        oid: oid.to_string(),
        kind: kind.to_string(),
        size,
    })
}

/// Calls `f(mode, name, oid)` for each entry of a raw tree object.
fn parse_tree(
    mut data: &[u8],
    oid_len: usize,
    mut f: impl FnMut(&[u8], String, String),
) -> io::Result<()> {
    while !data.is_empty() {
        let bad = || invalid("cat-file: a malformed tree".into());
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let nul = sp + data[sp..].iter().position(|&b| b == 0).ok_or_else(bad)?;
        let end = nul + 1 + oid_len;
        if end > data.len() {
            return Err(bad());
        }
        let name = String::from_utf8_lossy(&data[sp + 1..nul]).into_owned();
        f(&data[..sp], name, hex::encode(&data[nul + 1..end]));
        data = &data[end..];
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "cat-file exited")
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let sha = "a".repeat(40);
        assert_eq!(
            parse_header(&format!("{sha} blob 12")),
            Some(Info {
                oid: sha.clone(),
                kind: "blob".into(),
                size: 12
            })
        );
        assert_eq!(parse_header("abc blob 12 missing"), None);
        assert_eq!(parse_header(&format!("{sha} thing 1")), None);
    }
}
