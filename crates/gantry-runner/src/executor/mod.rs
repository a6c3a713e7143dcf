//! Executors: where a job's script runs.
//!
//! # Lifecycle
//!
//! For every attempt of a job the runtime calls, in this order:
//!
//! 1. [`Executor::prepare`] — create what the job runs in (for Docker: check or pull the
//!    image, create a network, start service containers). May fail: the attempt then fails
//!    as `runner_system_failure` and step 3 still happens.
//! 2. [`Prepared::run`] with [`Step::Script`] (`before_script` + `script` in one shell), then
//!    [`Prepared::run`] with [`Step::AfterScript`] in a fresh shell, whatever the first
//!    step's outcome (`CI_JOB_STATUS` tells it), under its own timeout. A `run` future may be
//!    dropped at any await point (timeout, cancellation): it must leave nothing running that
//!    step 3 cannot find.
//! 3. [`Prepared::cleanup`] — remove everything `prepare` and `run` created: processes,
//!    containers, networks. Always called, also after a failed `prepare` (on what it managed
//!    to create), a timeout or Ctrl-C; must be safe to call twice and must not fail: it logs
//!    what it could not remove.
//!
//! The workspace directory belongs to the runtime: executors run in it (the shell executor
//! directly, the Docker executor through a bind mount at `CI_PROJECT_DIR`) but never create or
//! delete it.

pub mod docker;
pub mod shell;

use crate::log::LogSink;
use async_trait::async_trait;
use gantry_pipeline::model::{Image, Service};
use std::path::PathBuf;

/// Which step of a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Script,
    AfterScript,
}

impl Step {
    pub fn file_name(self) -> &'static str {
        match self {
            Step::Script => "script.sh",
            Step::AfterScript => "after_script.sh",
        }
    }
}

/// What an executor needs to know about a job attempt.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique per attempt, usable in container and network names.
    pub id: String,
    pub name: String,
    /// The checkout on the host.
    pub workspace: PathBuf,
    /// A host directory for the executor's own files (scripts), outside the workspace.
    pub scratch: PathBuf,
    /// `CI_PROJECT_DIR` inside the job (Docker); the shell executor uses `workspace`.
    pub project_dir: String,
    /// Expanded variables, in precedence order (later wins).
    pub env: Vec<(String, String)>,
    pub image: Option<Image>,
    pub services: Vec<Service>,
    /// Labels for what the executor creates (containers, networks), to find leftovers.
    pub labels: Vec<(String, String)>,
}

impl JobSpec {
    /// Writes a step's script into the scratch directory and returns its path.
    ///
    /// Synchronous on purpose: a file of a few hundred bytes is written faster than a trip to
    /// a blocking thread and back, and it is on the path from a job's arrival to its start.
    pub async fn write_script(&self, step: Step, script: &str) -> Result<PathBuf, ExecError> {
        let path = self.scratch.join(step.file_name());
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| ExecError::System(format!("creating {}: {e}", self.scratch.display())))?;
        std::fs::write(&path, script)
            .map_err(|e| ExecError::System(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }
}

/// Why an attempt failed before or outside the script: these are `runner_system_failure`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    System(String),
}

#[async_trait]
pub trait Executor: Send + Sync {
    /// A short name for logs: `shell`, `docker`.
    fn name(&self) -> &'static str;
    /// Step 1 of the lifecycle. On error, the returned handle (if any) is still cleaned up.
    async fn prepare(
        &self,
        job: &JobSpec,
        log: &LogSink,
    ) -> Result<Box<dyn Prepared>, (ExecError, Option<Box<dyn Prepared>>)>;
}

#[async_trait]
pub trait Prepared: Send {
    /// Step 2: runs `script` (a complete shell script) and returns its exit code.
    async fn run(
        &mut self,
        step: Step,
        script: &str,
        extra_env: &[(String, String)],
        log: &LogSink,
    ) -> Result<i32, ExecError>;
    /// Step 3: removes everything; idempotent, infallible.
    async fn cleanup(&mut self, log: &LogSink);
}

/// Renders the commands of a step as a POSIX shell script, as GitLab Runner does: stop at the
/// first failing command, print each command (in green) before running it.
pub fn render_script(commands: &[String], project_dir: &str) -> String {
    let mut s = String::new();
    // bash has pipefail: set it without the probe's fork; other shells are asked first (a
    // failing `set` would end a POSIX shell).
    s.push_str(
        "set -e\nif [ -n \"${BASH_VERSION:-}\" ]; then set -o pipefail; \
         elif (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\n",
    );
    s.push_str(&format!("cd {}\n", shell_quote(project_dir)));
    for cmd in commands {
        let shown = cmd.trim_end();
        s.push_str(&format!(
            "printf '\\033[32;1m$ %s\\033[0;m\\n' {}\n",
            shell_quote(shown)
        ));
        s.push_str(cmd);
        if !cmd.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// Quotes a string for POSIX shells.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Starts the first shell found: bash where it exists (for `pipefail` and the scripts people
/// write), else sh — the same detection GitLab Runner performs in containers.
pub const SHELL_DETECT: &str = "if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash \"$@\"; elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash \"$@\"; elif [ -x /bin/bash ]; then exec /bin/bash \"$@\"; else exec sh \"$@\"; fi";
