//! One attempt of one job: the path `gantry run` and the agent share.
//!
//! [`run_attempt`] takes a [`JobDefinition`] and does, in order: the workspace (the commit's
//! files), the artifacts of the jobs it depends on (and their dotenv), the variables (GitLab's
//! precedence: predefined, the definition's, dependencies' dotenv, pipeline variables,
//! secrets), the caches, the executor's lifecycle (prepare → script → after_script →
//! cleanup), then caches and artifacts saved. What differs between a local run and an agent —
//! where files come from and where results go — is behind [`JobIo`]: the local scheduler
//! copies a snapshot and keeps artifacts in memory, the agent downloads and uploads tars
//! from and to the server ([`crate::agent`]).
//!
//! Retries, `when`, `allow_failure` and delays are not decided here: an attempt only reports
//! its [`Outcome`]; the local scheduler ([`crate::runtime`]) or the server decides the rest.

use crate::artifacts::{self, JunitSummary, Stored};
use crate::cache;
use crate::executor::{Executor, JobSpec, Step, render_script};
use crate::log::LogSink;
use async_trait::async_trait;
use gantry_api::FailureReason;
use gantry_api::agent::JobVariable;
use gantry_api::job::JobDefinition;
use gantry_pipeline::model::When;
use gantry_pipeline::trigger::Trigger;
use gantry_pipeline::vars::{self, JobContext, Layer, RunnerInfo, Var, VarSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The inputs and outputs of an attempt that differ between a local run and an agent.
#[async_trait]
pub trait JobIo: Send + Sync {
    /// Fills the empty `workspace` with the commit's files and returns their relative paths
    /// (what `untracked` leaves out). `git_strategy` is the job's `GIT_STRATEGY`, if set.
    async fn checkout(
        &self,
        workspace: &Path,
        git_strategy: Option<&str>,
        log: &LogSink,
    ) -> anyhow::Result<Vec<PathBuf>>;

    /// Restores the artifacts of the jobs this one depends on into `workspace`, in order, and
    /// returns their dotenv variables (earlier jobs first).
    async fn restore_dependencies(
        &self,
        workspace: &Path,
        log: &LogSink,
    ) -> anyhow::Result<Vec<(String, String)>>;

    /// Makes the cache `key` available as the directory `root/key` when there is a copy to
    /// fetch (the agent: from the server). Not finding one is `Ok`: the local copy, if any,
    /// is used.
    async fn fetch_cache(&self, _key: &str, _root: &Path, _log: &LogSink) -> anyhow::Result<()> {
        Ok(())
    }

    /// The cache `key` was just saved as the directory `root/key` (the agent: uploads it).
    async fn push_cache(&self, _key: &str, _root: &Path, _log: &LogSink) -> anyhow::Result<()> {
        Ok(())
    }

    /// Keeps the artifacts collected into `stored` for later jobs (locally: in memory; the
    /// agent: uploads them).
    async fn store_artifacts(&self, stored: &Stored, log: &LogSink) -> anyhow::Result<()>;

    /// The workspace is ready and the script starts now.
    fn script_starting(&self) {}
}

/// Everything one attempt needs besides its [`JobIo`], log and cancellation.
#[derive(Clone)]
pub struct AttemptSpec<'a> {
    pub definition: &'a JobDefinition,
    pub trigger: &'a Trigger,
    /// `CI_JOB_ID`: the server's job id, or a number unique within a local run.
    pub job_id: u64,
    /// 1-based.
    pub attempt: u32,
    pub executor: Arc<dyn Executor>,
    /// The attempt's own directory: `workspace/`, `scripts/` and `artifacts/` go below it.
    pub dir: PathBuf,
    /// Caches, one directory per key.
    pub cache_dir: PathBuf,
    /// Masked variables, with the pipeline variables' precedence.
    pub secrets: &'a [(String, String)],
    /// CI/CD variables (the server's, resolved for this job): above the pipeline file's and
    /// dotenv's, below the pipeline's own; masked ones must be in the log's masker too.
    pub variables: &'a [JobVariable],
    /// Used when the job has no `timeout`.
    pub default_timeout: Duration,
    /// The limit of the `after_script` step.
    pub after_script_timeout: Duration,
    /// `CI_JOB_TOKEN` (masked), when there is one.
    pub job_token: Option<String>,
    /// `CI_RUNNER_*`, when an agent runs the job.
    pub runner: Option<RunnerInfo>,
}

impl std::fmt::Debug for AttemptSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptSpec")
            .field("job", &self.definition.name)
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
    },
    Canceled,
}

/// What an attempt leaves for the scheduler.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: Outcome,
    /// `artifacts:reports:dotenv`, for the jobs that depend on this one.
    pub dotenv: Vec<(String, String)>,
    pub junit: Option<JunitSummary>,
    /// Artifacts were collected and stored (uploaded).
    pub artifacts: bool,
}

impl AttemptReport {
    fn only(outcome: Outcome) -> AttemptReport {
        AttemptReport {
            outcome,
            dotenv: Vec::new(),
            junit: None,
            artifacts: false,
        }
    }
}

/// Runs one attempt of `spec.definition` to its end. Everything goes to `log`, which is
/// flushed before returning; `cancel` stops the attempt at once (the executor's cleanup
/// kills what runs).
pub async fn run_attempt(
    spec: &AttemptSpec<'_>,
    io: &dyn JobIo,
    log: &LogSink,
    cancel: &CancellationToken,
) -> AttemptReport {
    let report = attempt(spec, io, log, cancel).await;
    log.flush();
    report
}

fn sys_fail(msg: String, log: &LogSink) -> AttemptReport {
    log.info(&format!("ERROR: {msg}"));
    AttemptReport::only(Outcome::Failed {
        reason: FailureReason::RunnerSystemFailure,
        exit_code: None,
    })
}

async fn attempt(
    spec: &AttemptSpec<'_>,
    io: &dyn JobIo,
    log: &LogSink,
    cancel: &CancellationToken,
) -> AttemptReport {
    let job = spec.definition;
    let dir = &spec.dir;
    let ws = dir.join("workspace");
    let scratch = dir.join("scripts");

    // 1. Workspace, artifacts of the jobs this one depends on, variables, caches.
    if let Err(e) = std::fs::create_dir_all(&ws).and_then(|_| std::fs::create_dir_all(&scratch)) {
        return sys_fail(
            format!("creating the job directory {}: {e}", dir.display()),
            log,
        );
    }
    let git_strategy = raw_variable(spec, "GIT_STRATEGY");
    let checkout = tokio::select! {
        r = io.checkout(&ws, git_strategy.as_deref(), log) => r,
        _ = cancel.cancelled() => return AttemptReport::only(Outcome::Canceled),
    };
    let checkout = match checkout {
        Ok(files) => files,
        Err(e) => return sys_fail(format!("preparing the workspace: {e:#}"), log),
    };
    let dotenv = tokio::select! {
        r = io.restore_dependencies(&ws, log) => r,
        _ = cancel.cancelled() => return AttemptReport::only(Outcome::Canceled),
    };
    let dotenv = match dotenv {
        Ok(d) => d,
        Err(e) => return sys_fail(format!("{e:#}"), log),
    };
    let docker = spec.executor.name() == "docker";
    let project_dir = if docker {
        format!("/builds/{}", spec.trigger.project.path)
    } else {
        ws.display().to_string()
    };
    let ci_variables = match file_variables(spec, &scratch, docker) {
        Ok(v) => v,
        Err(e) => return sys_fail(e, log),
    };
    let env = match variables(spec, &project_dir, &dotenv, &ci_variables) {
        Ok(env) => env,
        Err(e) => return sys_fail(e, log),
    };
    let lookup = |s: &str| {
        vars::expand(s, &|n| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        })
    };
    let fallback = env
        .iter()
        .rev()
        .find(|(k, _)| k == "CACHE_FALLBACK_KEY")
        .map(|(_, v)| v.clone());
    let cache_keys: Vec<String> = job
        .cache
        .iter()
        .map(|c| cache::key(c, &ws, &lookup))
        .collect();
    for (c, key) in job.cache.iter().zip(&cache_keys) {
        let mut restored = None;
        for k in cache::candidates(c, key, fallback.as_deref(), &lookup) {
            if let Err(e) = io.fetch_cache(&k, &spec.cache_dir, log).await {
                log.info(&format!("WARNING: fetching cache {k} failed: {e:#}"));
            }
            match cache::restore_key(&spec.cache_dir, &k, &ws) {
                Ok(true) => {
                    restored = Some(k);
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    log.info(&format!("WARNING: restoring cache {k} failed: {e:#}"));
                    break;
                }
            }
        }
        match restored {
            Some(k) => log.info(&format!("Restored cache {k}")),
            None if c.policy != "push" => log.info(&format!("No cache for key {key} yet")),
            None => {}
        }
    }

    // 2. The executor's lifecycle: prepare, script, after_script, cleanup.
    let exec_spec = JobSpec {
        id: format!("{}-{}-{}", std::process::id(), spec.job_id, spec.attempt),
        name: job.name.clone(),
        workspace: ws.clone(),
        scratch: scratch.clone(),
        project_dir: project_dir.clone(),
        env: env.clone(),
        image: job.image.clone(),
        services: job.services.clone(),
        labels: vec![
            (
                "org.gantry.project".to_string(),
                spec.trigger.project.path.clone(),
            ),
            ("org.gantry.job-name".to_string(), job.name.clone()),
        ],
    };
    let timeout = job
        .timeout
        .map(Duration::from_secs)
        .unwrap_or(spec.default_timeout);
    let mut prepared = match tokio::select! {
        r = spec.executor.prepare(&exec_spec, log) => Some(r),
        _ = cancel.cancelled() => None,
    } {
        None => return AttemptReport::only(Outcome::Canceled),
        Some(Ok(p)) => p,
        Some(Err((e, handle))) => {
            if let Some(mut h) = handle {
                h.cleanup(log).await;
            }
            return sys_fail(e.to_string(), log);
        }
    };
    let mut commands = job.before_script.clone();
    commands.extend(job.script.iter().cloned());
    let script = render_script(&commands, &project_dir);
    enum Ran {
        Exit(i32),
        System(String),
        Timeout,
        Canceled,
    }
    io.script_starting();
    let ran = tokio::select! {
        r = tokio::time::timeout(timeout, prepared.run(Step::Script, &script, &[], log)) => match r {
            Ok(Ok(code)) => Ran::Exit(code),
            Ok(Err(e)) => Ran::System(e.to_string()),
            Err(_) => Ran::Timeout,
        },
        _ = cancel.cancelled() => Ran::Canceled,
    };
    let job_status = match &ran {
        Ran::Exit(0) => "success",
        Ran::Canceled => "canceled",
        _ => "failed",
    };
    match &ran {
        Ran::Timeout => log.info(&format!(
            "ERROR: Job failed: execution took longer than {}",
            human(timeout)
        )),
        Ran::Exit(c) if *c != 0 => log.info(&format!("ERROR: Job failed: exit code {c}")),
        Ran::System(e) => log.info(&format!("ERROR: Job failed (system failure): {e}")),
        _ => {}
    }
    if !job.after_script.is_empty() && !matches!(ran, Ran::Canceled) {
        log.info("Running after_script");
        let after = render_script(&job.after_script, &project_dir);
        let extra = vec![("CI_JOB_STATUS".to_string(), job_status.to_string())];
        match tokio::select! {
            r = tokio::time::timeout(spec.after_script_timeout, prepared.run(Step::AfterScript, &after, &extra, log)) => Some(r),
            _ = cancel.cancelled() => None,
        } {
            Some(Ok(Ok(0))) | None => {}
            Some(Ok(Ok(code))) => log.info(&format!(
                "WARNING: after_script failed with exit code {code}"
            )),
            Some(Ok(Err(e))) => log.info(&format!("WARNING: after_script failed: {e}")),
            Some(Err(_)) => log.info(&format!(
                "WARNING: after_script timed out after {}",
                human(spec.after_script_timeout)
            )),
        }
    }
    prepared.cleanup(log).await;
    if matches!(ran, Ran::Canceled) {
        log.info("Job canceled");
        return AttemptReport::only(Outcome::Canceled);
    }
    let success = matches!(ran, Ran::Exit(0));

    // 3. Caches and artifacts.
    for (c, key) in job.cache.iter().zip(&cache_keys) {
        match cache::save(c, key, success, &spec.cache_dir, &ws, &checkout, &lookup) {
            Ok(Some(n)) => {
                log.info(&format!("Saved cache {key} ({n} files)"));
                if let Err(e) = io.push_cache(key, &spec.cache_dir, log).await {
                    log.info(&format!("WARNING: uploading cache {key} failed: {e:#}"));
                }
            }
            Ok(None) => {}
            Err(e) => log.info(&format!("WARNING: saving cache {key} failed: {e:#}")),
        }
    }
    let mut report = AttemptReport::only(Outcome::Success);
    if let Some(a) = &job.artifacts
        && artifacts::wanted(a, success)
    {
        match artifacts::collect(&ws, a, &checkout, &dir.join("artifacts"), &lookup) {
            Ok(stored) => match io.store_artifacts(&stored, log).await {
                Ok(()) => {
                    log.info(&format!("Uploaded artifacts: {} files", stored.files.len()));
                    report.junit = stored.junit;
                    report.dotenv = stored.dotenv;
                    report.artifacts = true;
                }
                Err(e) => log.info(&format!("WARNING: uploading artifacts failed: {e:#}")),
            },
            Err(e) => log.info(&format!("WARNING: collecting artifacts failed: {e:#}")),
        }
    }
    // The workspace is not needed once artifacts and caches are saved.
    let _ = std::fs::remove_dir_all(&ws);
    report.outcome = match ran {
        Ran::Exit(0) => Outcome::Success,
        Ran::Exit(code) => Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(code),
        },
        Ran::Timeout => Outcome::Failed {
            reason: FailureReason::JobExecutionTimeout,
            exit_code: None,
        },
        Ran::System(_) => Outcome::Failed {
            reason: FailureReason::RunnerSystemFailure,
            exit_code: None,
        },
        Ran::Canceled => Outcome::Canceled,
    };
    report
}

/// The last definition of `name` among the definition's and the trigger's variables, as
/// written (for settings read before the variables are complete, such as `GIT_STRATEGY`).
fn raw_variable(spec: &AttemptSpec<'_>, name: &str) -> Option<String> {
    spec.trigger
        .variables
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| {
            spec.definition
                .variables
                .iter()
                .rev()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        })
}

/// The directory, below the attempt's scratch directory, of file-type variables.
const VARIABLE_FILES: &str = "variables";

/// [`AttemptSpec::variables`] as the job sees them: a file-type variable's value is written to
/// a file of its own (mode 0600, below the scratch directory, which the docker executor
/// mounts at `/gantry/scripts`) and the variable holds that file's path, as GitLab does.
fn file_variables(
    spec: &AttemptSpec<'_>,
    scratch: &Path,
    docker: bool,
) -> Result<Vec<JobVariable>, String> {
    let mut out = Vec::with_capacity(spec.variables.len());
    for v in spec.variables {
        if !v.file {
            out.push(v.clone());
            continue;
        }
        let dir = scratch.join(VARIABLE_FILES);
        let path = dir.join(&v.key);
        let written = std::fs::create_dir_all(&dir).and_then(|_| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(v.value.as_bytes())
        });
        if let Err(e) = written {
            return Err(format!(
                "writing the file of variable {} to {}: {e}",
                v.key,
                path.display()
            ));
        }
        let shown = if docker {
            format!("/gantry/scripts/{VARIABLE_FILES}/{}", v.key)
        } else {
            path.display().to_string()
        };
        out.push(JobVariable {
            key: v.key.clone(),
            value: shown,
            masked: false,
            file: true,
        });
    }
    Ok(out)
}

/// The job's variables, expanded, in GitLab's precedence order: predefined (with the job's
/// id, project dir and runner), the definition's, the dependencies' dotenv, the CI/CD
/// variables (the server's, file-type ones as paths), the pipeline's, then the secrets
/// (masked).
pub fn variables(
    spec: &AttemptSpec<'_>,
    project_dir: &str,
    dotenv: &[(String, String)],
    ci_variables: &[JobVariable],
) -> Result<Vec<(String, String)>, String> {
    let job = spec.definition;
    let mut ctx = JobContext::new(job.name.clone(), job.stage.clone(), spec.job_id);
    ctx.project_dir = Some(project_dir.to_string());
    ctx.builds_dir = Some(
        Path::new(project_dir)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    ctx.image = job.image.as_ref().map(|i| i.name.clone());
    ctx.manual = job.when == When::Manual;
    ctx.timeout_secs = Some(job.timeout.unwrap_or(spec.default_timeout.as_secs()));
    ctx.token = spec.job_token.clone();
    if spec.trigger.context.registry.is_some() && spec.job_token.is_some() {
        // GitLab's convention: the job token logs in to the registry.
        ctx.registry_user = Some("gitlab-ci-token".into());
        ctx.registry_password = spec.job_token.clone();
    }
    ctx.runner = spec.runner.clone();
    if let Some((index, total)) = job.node {
        ctx.parallel = Some(vars::Parallel { index, total });
    }
    if let Some(env) = &job.environment {
        ctx.environment = Some(vars::JobEnvironment {
            name: env.name.clone(),
            url: env.url.clone(),
            action: Some(env.action.clone()),
            tier: env.deployment_tier.clone(),
        });
    }
    let mut set = VarSet::with_predefined(spec.trigger, &spec.trigger.context, Some(&ctx));
    set.push(
        Layer::Job,
        job.variables.iter().map(|v| {
            Var::new(v.name.clone(), v.value.clone(), vars::Phase::Pipeline).with_raw(v.raw)
        }),
    );
    set.push_pairs(
        Layer::Dotenv,
        dotenv.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    // Stored values are taken as written: `$` in a secret is not a reference.
    set.push(
        Layer::Project,
        ci_variables.iter().map(|v| {
            Var::new(v.key.clone(), v.value.clone(), vars::Phase::Pipeline)
                .with_masked(v.masked)
                .with_raw(true)
        }),
    );
    set.push_pairs(
        Layer::Pipeline,
        spec.trigger
            .variables
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    set.push(
        Layer::Pipeline,
        spec.secrets
            .iter()
            .map(|(k, v)| Var::new(k.clone(), v.clone(), vars::Phase::Pipeline).with_masked(true)),
    );
    set.expand_all()
        .map(|vars| vars.into_iter().map(|v| (v.name, v.value)).collect())
        .map_err(|e| format!("variables reference each other in a loop: {e}"))
}

/// A duration as people read it: `45s`, `3m 20s`, `1h 5m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
