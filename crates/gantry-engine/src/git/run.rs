//! Running one `git` process for a mirror: a clean environment, credentials for network
//! commands, a timeout that kills the whole process group, and errors classified from git's
//! stderr (which `LC_ALL=C` keeps in English).

use super::error::{GitError, redact, summarize_stderr};
use super::remote::{Remote, Transport};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Variables passed through from the server's environment; everything else is dropped.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Where a mirror's own state lives next to the objects: the private HOME and `known_hosts`.
pub(crate) const STATE_DIR: &str = "gantry";

/// Most bytes of stderr kept from one command.
const MAX_STDERR: usize = 64 << 10;

/// What git needs to run for one mirror.
#[derive(Debug)]
pub(crate) struct Runner {
    pub git_dir: PathBuf,
    pub remote: Remote,
}

/// Keeps the askpass helper and the ssh key on disk while a network command runs.
pub(crate) struct NetFiles {
    _dir: Option<tempfile::TempDir>,
}

impl Runner {
    /// A `git` command with no inherited configuration, prompt or locale surprise.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for k in PASSED_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        cmd.env("GIT_DIR", &self.git_dir)
            .env("HOME", self.git_dir.join(STATE_DIR))
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
            .env("GIT_HTTP_LOW_SPEED_TIME", "60")
            .args(["-c", "credential.helper=", "-c", "core.fsmonitor=false"])
            .current_dir(&self.git_dir)
            .stdin(Stdio::null());
        cmd
    }

    /// Adds credentials to a command that talks to the remote; the returned guard keeps the
    /// helper files alive (a private 0700 temp dir) until the command has finished.
    pub fn with_credentials(&self, cmd: &mut Command) -> Result<NetFiles, GitError> {
        let r = &self.remote;
        let needs_http =
            r.transport() == Transport::Http && (r.username.is_some() || r.password.is_some());
        let is_ssh = r.transport() == Transport::Ssh;
        if !needs_http && !is_ssh {
            return Ok(NetFiles { _dir: None });
        }
        let tmp = tempfile::Builder::new()
            .prefix("gantry-git-")
            .tempdir()
            .map_err(|e| GitError::io("cannot create a private temporary directory", e))?;
        if needs_http {
            let askpass = tmp.path().join("askpass");
            write_private(
                &askpass,
                b"#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$GANTRY_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$GANTRY_GIT_PASSWORD\" ;;\nesac\n",
                0o700,
            )?;
            let user = r.username.clone().unwrap_or_else(|| "oauth2".into());
            cmd.env("GIT_ASKPASS", &askpass)
                .env("GANTRY_GIT_USERNAME", user)
                .env("GANTRY_GIT_PASSWORD", r.password.as_deref().unwrap_or(""));
        }
        if is_ssh {
            let known_hosts = self.git_dir.join(STATE_DIR).join("known_hosts");
            let mut ssh = format!(
                "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none \
                 -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30 -o UserKnownHostsFile={}",
                shell_quote(&known_hosts.to_string_lossy())
            );
            match &r.ssh_key {
                Some(key) => {
                    let path = tmp.path().join("id");
                    let mut text = key.trim_end().replace("\r\n", "\n");
                    text.push('\n');
                    write_private(&path, text.as_bytes(), 0o600)?;
                    ssh.push_str(&format!(" -i {}", shell_quote(&path.to_string_lossy())));
                }
                None => ssh.push_str(" -o IdentityFile=none"),
            }
            cmd.env("GIT_SSH_COMMAND", ssh)
                .env("GIT_SSH_VARIANT", "ssh");
        }
        Ok(NetFiles { _dir: Some(tmp) })
    }

    /// Runs `cmd` (from [`Runner::command`], arguments added), copying its stdout into `out`,
    /// and fails with a classified error on a non-zero exit or after `timeout`.
    pub fn exec(
        &self,
        op: &'static str,
        mut cmd: Command,
        timeout: Duration,
        out: &mut dyn Write,
    ) -> Result<u64, GitError> {
        let started = Instant::now();
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| GitError::Spawn { source })?;
        let pid = child.id();
        let watchdog = Watchdog::start(pid, timeout);
        let mut stderr = child.stderr.take().expect("piped stderr");
        let err_reader = thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR as u64).read_to_end(&mut kept);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            kept
        });
        let mut stdout = child.stdout.take().expect("piped stdout");
        let copied = std::io::copy(&mut stdout, out);
        if copied.is_err() {
            kill_group(pid);
        }
        drop(stdout);
        let status = child.wait();
        let timed_out = watchdog.stop();
        let stderr = err_reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        tracing::debug!(
            op,
            mirror = %self.remote.url,
            elapsed_us = started.elapsed().as_micros() as u64,
            "git"
        );
        if timed_out {
            return Err(GitError::Timeout {
                url: self.remote.url.clone(),
                op,
                after: timeout,
            });
        }
        let copied =
            copied.map_err(|e| GitError::io(format!("git {op}: writing its output"), e))?;
        let status = status.map_err(|e| GitError::io(format!("git {op}: waiting for it"), e))?;
        if !status.success() {
            return Err(self.classify(op, status, &stderr));
        }
        Ok(copied)
    }

    /// Runs and returns stdout.
    pub fn output<S: AsRef<OsStr>>(
        &self,
        op: &'static str,
        args: &[S],
        timeout: Duration,
    ) -> Result<Vec<u8>, GitError> {
        let mut cmd = self.command();
        cmd.args(args);
        let mut out = Vec::new();
        self.exec(op, cmd, timeout, &mut out)?;
        Ok(out)
    }

    /// Runs a command that talks to the remote, with credentials.
    pub fn output_net<S: AsRef<OsStr>>(
        &self,
        op: &'static str,
        args: &[S],
        timeout: Duration,
    ) -> Result<Vec<u8>, GitError> {
        let mut cmd = self.command();
        let _files = self.with_credentials(&mut cmd)?;
        cmd.args(args);
        let mut out = Vec::new();
        self.exec(op, cmd, timeout, &mut out)?;
        Ok(out)
    }

    fn classify(&self, op: &'static str, status: ExitStatus, stderr: &str) -> GitError {
        let url = self.remote.url.clone();
        let clean = redact(stderr, &self.remote.secrets());
        let detail = summarize_stderr(&clean);
        let low = clean.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| low.contains(n));
        if has(&[
            "host key verification failed",
            "remote host identification has changed",
        ]) {
            return GitError::HostKey {
                url,
                known_hosts: self
                    .git_dir
                    .join(STATE_DIR)
                    .join("known_hosts")
                    .display()
                    .to_string(),
            };
        }
        if has(&[
            "authentication failed",
            "could not read username",
            "could not read password",
            "permission denied (publickey",
            "permission denied, please try again",
            "http basic: access denied",
            "returned error: 401",
            "returned error: 403",
            "invalid username or password",
            "load key",
            "invalid format",
        ]) {
            let hint = match self.remote.transport() {
                Transport::Ssh => "check the project's ssh key and that it has read access",
                _ if self.remote.password.is_none() => {
                    "the repository needs credentials: set the project's username and password (or token)"
                }
                _ => "check the project's username and password (or token)",
            };
            return GitError::Auth { url, hint };
        }
        if let Some(i) = low.find("couldn't find remote ref ") {
            let refname = clean[i + "couldn't find remote ref ".len()..]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            return GitError::RefNotFound { url, refname };
        }
        if has(&[
            "does not appear to be a git repository",
            "repository not found",
            "returned error: 404",
            "not a git repository",
            "no such file or directory",
            "project you were looking for could not be found",
        ]) {
            return GitError::RepoNotFound { url, detail };
        }
        if has(&[
            "could not resolve host",
            "failed to connect",
            "connection refused",
            "connection timed out",
            "could not connect",
            "network is unreachable",
            "no route to host",
            "name or service not known",
            "temporary failure in name resolution",
            "operation too slow",
            "connection reset",
            "ssl certificate problem",
            "server certificate verification failed",
        ]) {
            return GitError::Unreachable { url, detail };
        }
        let stderr = if detail == "git printed nothing" {
            format!("it exited with {status}")
        } else {
            detail
        };
        GitError::Command { url, op, stderr }
    }
}

/// Kills a process group after a timeout unless stopped first.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(pgid: u32, timeout: Duration) -> Watchdog {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || match rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pgid);
                true
            }
            _ => false,
        });
        Watchdog { stop, thread }
    }

    /// Stops the watchdog; true when it had fired.
    fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(false)
    }
}

pub(crate) fn kill_group(pgid: u32) {
    if let Ok(p) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
    }
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), GitError> {
    let ctx = || format!("cannot write {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| GitError::io(ctx(), e))?;
    f.write_all(bytes).map_err(|e| GitError::io(ctx(), e))?;
    // The umask may have narrowed the mode; make it exact.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| GitError::io(ctx(), e))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
