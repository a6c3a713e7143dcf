//! The shell executor: runs the job on this host, in its workspace, in a process group of its
//! own so that cleanup can end everything the script started.

use super::{ExecError, Executor, JobSpec, Prepared, Step};
use crate::log::LogSink;
use async_trait::async_trait;
use std::process::Stdio;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

#[derive(Debug, Default)]
pub struct ShellExecutor;

#[async_trait]
impl Executor for ShellExecutor {
    fn name(&self) -> &'static str {
        "shell"
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        log: &LogSink,
    ) -> Result<Box<dyn Prepared>, (ExecError, Option<Box<dyn Prepared>>)> {
        if !job.services.is_empty() {
            log.info(
                "The shell executor cannot start `services`: use the docker executor for this job",
            );
        }
        Ok(Box::new(ShellJob {
            spec: job.clone(),
            groups: Vec::new(),
        }))
    }
}

struct ShellJob {
    spec: JobSpec,
    /// Process groups started, killed at cleanup.
    groups: Vec<u32>,
}

#[async_trait]
impl Prepared for ShellJob {
    async fn run(
        &mut self,
        step: Step,
        script: &str,
        extra_env: &[(String, String)],
        log: &LogSink,
    ) -> Result<i32, ExecError> {
        let path = self.spec.write_script(step, script).await?;
        let mut cmd = Command::new(host_shell());
        cmd.arg(&path);
        cmd.current_dir(&self.spec.workspace);
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0);
        cmd.kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| ExecError::System(format!("starting the shell: {e}")))?;
        if let Some(pid) = child.id() {
            self.groups.push(pid);
        }
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let l1 = log.clone();
        let l2 = log.clone();
        let t1 = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                l1.write(&buf[..n]);
            }
        });
        let t2 = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                l2.write(&buf[..n]);
            }
        });
        let status = child
            .wait()
            .await
            .map_err(|e| ExecError::System(format!("waiting for the shell: {e}")))?;
        // Background processes may hold the pipes open; the group is killed at cleanup,
        // so don't wait for them here beyond a moment.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            let _ = t1.await;
            let _ = t2.await;
        })
        .await;
        use std::os::unix::process::ExitStatusExt as _;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(9)))
    }

    async fn cleanup(&mut self, _log: &LogSink) {
        for pgid in self.groups.drain(..) {
            kill_group(pgid).await;
        }
    }
}

/// bash when the host has it (for `pipefail` and the scripts people write), else sh; the same
/// choice the Docker executor makes inside containers, looked up once.
fn host_shell() -> &'static str {
    static SHELL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    SHELL.get_or_init(|| {
        ["/usr/local/bin/bash", "/usr/bin/bash", "/bin/bash"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("sh")
    })
}

/// Sends SIGKILL to a whole process group (a no-op when it is gone).
pub(crate) async fn kill_group(pgid: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
}
