//! The job runtime: runs a [`Plan`] to the end.
//!
//! Jobs start as soon as the jobs they depend on (earlier stages, or their `needs`) are done
//! and the concurrency limit and their `resource_group` allow. Each job's `when` decides what
//! "done" must look like (`on_success`, `on_failure`, `always`, `manual`, `delayed`); failed
//! attempts are retried by `retry`; `timeout` stops a job; cancellation (Ctrl-C) stops every
//! running job and cleans up what its executor created. The server runs jobs through the same
//! [`run_attempt`] path, one job at a time, on its agents.

use crate::artifacts::{self, Stored};
use crate::cache;
use crate::executor::{Executor, JobSpec, Step, render_script};
use crate::log::LogSink;
use crate::mask::Masker;
use crate::status::{
    FailureClass, JobResult, JobState, PipelineStatus, SkipReason, pipeline_status,
};
use crate::workspace;
use gantry_pipeline::model::When;
use gantry_pipeline::plan::{After, Plan, PlannedJob};
use gantry_pipeline::trigger::Trigger;
use gantry_pipeline::vars::{self, JobContext, Layer, Var, VarSet};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the runtime tells its observer (the terminal, or later the server).
#[derive(Debug, Clone)]
pub enum Event {
    /// A job changed state; `attempt` counts from 1.
    State {
        job: String,
        state: JobState,
        attempt: u32,
        elapsed: Duration,
    },
    /// Masked log bytes of a job.
    Log { job: String, bytes: Vec<u8> },
}

pub type Observer = Arc<dyn Fn(Event) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Options {
    /// At most this many jobs run at once.
    pub concurrency: usize,
    /// Play every manual job.
    pub play_all_manual: bool,
    /// Manual jobs played by name.
    pub play: Vec<String>,
    /// Run only these jobs and what they need (all when empty).
    pub select: Vec<String>,
    /// Used when a job has no `timeout`.
    pub default_timeout: Duration,
    /// Limit of the `after_script` step.
    pub after_script_timeout: Duration,
    /// Do not wait for `when: delayed` jobs' `start_in`.
    pub skip_delays: bool,
    /// Workspaces, scripts and artifacts of this run.
    pub run_dir: PathBuf,
    /// Caches, kept between runs.
    pub cache_dir: PathBuf,
    pub source: workspace::Source,
    /// Masked variables (added with the pipeline variables' precedence).
    pub secrets: Vec<(String, String)>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub status: PipelineStatus,
    pub jobs: Vec<JobResult>,
    pub duration: Duration,
}

struct Shared {
    artifacts: Mutex<HashMap<String, Stored>>,
    /// The project's files, taken once for the whole run.
    snapshot: Result<workspace::Snapshot, String>,
}

/// Runs the plan with `executor` until every job is done, or `cancel` fires.
pub async fn run(
    plan: &Plan,
    trigger: &Trigger,
    executor: Arc<dyn Executor>,
    opts: Options,
    observer: Observer,
    cancel: CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let n = plan.jobs.len();
    let mut state: Vec<JobState> = vec![JobState::Created; n];
    let mut results: Vec<Option<JobResult>> = vec![None; n];
    if !opts.select.is_empty() {
        let keep: HashSet<usize> = plan.closure(&opts.select).into_iter().collect();
        for (i, s) in state.iter_mut().enumerate() {
            if !keep.contains(&i) {
                *s = JobState::Skipped(SkipReason::NotSelected);
            }
        }
    }
    let snapshot = opts
        .source
        .snapshot(&opts.run_dir.join("source"))
        .map_err(|e| format!("{e:#}"));
    let shared = Arc::new(Shared {
        artifacts: Mutex::new(HashMap::new()),
        snapshot,
    });
    let mut running: JoinSet<(usize, JobResult)> = JoinSet::new();
    let mut groups_busy: HashSet<String> = HashSet::new();
    let mut active = 0usize;
    let mut canceled = false;
    loop {
        // Decide every job whose dependencies are all done.
        let mut progressed = true;
        while progressed {
            progressed = false;
            let stages = StageSummary::new(plan, &state);
            for i in 0..n {
                if state[i] != JobState::Created {
                    continue;
                }
                let job = &plan.jobs[i];
                let outcome = match &job.after {
                    After::EarlierStages => stages.before(job.stage_index),
                    After::Jobs(list) => {
                        Upstream::of(list.iter().map(|&d| (&state[d], &plan.jobs[d].name)))
                    }
                };
                if !outcome.done {
                    continue;
                }
                let (failed, waiting_for) = (outcome.failed, outcome.waiting_for);
                let decided = match job.when {
                    When::Always => None,
                    When::OnFailure if failed => None,
                    When::OnFailure => Some(JobState::Skipped(SkipReason::NothingFailed)),
                    _ if failed => Some(JobState::Skipped(SkipReason::UpstreamFailed)),
                    _ if waiting_for.is_some() => Some(JobState::Skipped(
                        SkipReason::WaitingForManual(waiting_for.clone().unwrap_or_default()),
                    )),
                    When::Manual
                        if !(opts.play_all_manual
                            || opts.play.iter().any(|p| p == &job.name || p == &job.base)
                            || opts.select.iter().any(|p| p == &job.name || p == &job.base)) =>
                    {
                        Some(JobState::Manual {
                            // Only `allow_failure: true` lets the pipeline go on without it.
                            blocking: job.allow_failure
                                != gantry_pipeline::model::AllowFailure::Bool(true),
                        })
                    }
                    _ => None,
                };
                if let Some(s) = decided {
                    observer(Event::State {
                        job: job.name.clone(),
                        state: s.clone(),
                        attempt: 0,
                        elapsed: Duration::ZERO,
                    });
                    results[i] = Some(JobResult {
                        name: job.name.clone(),
                        stage: job.stage.clone(),
                        state: s.clone(),
                        attempts: 0,
                        duration: Duration::ZERO,
                        tail: Vec::new(),
                        junit: None,
                    });
                    state[i] = s;
                    progressed = true;
                    continue;
                }
                if canceled || active >= opts.concurrency.max(1) {
                    continue;
                }
                if let Some(g) = &job.job.resource_group {
                    if groups_busy.contains(g) {
                        continue;
                    }
                    groups_busy.insert(g.clone());
                }
                active += 1;
                let delayed = job.when == When::Delayed && !opts.skip_delays;
                state[i] = if delayed {
                    JobState::Scheduled
                } else {
                    JobState::Running
                };
                observer(Event::State {
                    job: job.name.clone(),
                    state: state[i].clone(),
                    attempt: 1,
                    elapsed: Duration::ZERO,
                });
                let ctx = JobRun {
                    artifact_sources: plan.artifact_sources(i),
                    plan_job: job.clone(),
                    trigger: trigger.clone(),
                    executor: executor.clone(),
                    opts: opts.clone(),
                    observer: observer.clone(),
                    shared: shared.clone(),
                    cancel: cancel.clone(),
                    index: i,
                };
                running.spawn(async move { (i, ctx.run(delayed).await) });
                progressed = true;
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            done = running.join_next() => {
                let Some(Ok((i, result))) = done else { continue };
                active -= 1;
                if let Some(g) = &plan.jobs[i].job.resource_group {
                    groups_busy.remove(g);
                }
                state[i] = result.state.clone();
                results[i] = Some(result);
            }
            _ = cancel.cancelled(), if !canceled => {
                canceled = true;
            }
        }
    }
    for i in 0..n {
        if state[i] == JobState::Created {
            let s = JobState::Canceled;
            if !canceled {
                continue;
            }
            observer(Event::State {
                job: plan.jobs[i].name.clone(),
                state: s.clone(),
                attempt: 0,
                elapsed: Duration::ZERO,
            });
            results[i] = Some(JobResult {
                name: plan.jobs[i].name.clone(),
                stage: plan.jobs[i].stage.clone(),
                state: s,
                attempts: 0,
                duration: Duration::ZERO,
                tail: Vec::new(),
                junit: None,
            });
        }
    }
    let jobs: Vec<JobResult> = results.into_iter().flatten().collect();
    let status = pipeline_status(&jobs, canceled);
    RunReport {
        status,
        jobs,
        duration: started.elapsed(),
    }
}

/// What the jobs a job waits for came to.
#[derive(Debug, Clone, Default)]
struct Upstream {
    /// All of them are done.
    done: bool,
    /// One failed (not allowed to), was canceled, or was skipped because of a failure.
    failed: bool,
    /// A blocking manual job among them (or further up) was not played.
    waiting_for: Option<String>,
}

impl Upstream {
    fn of<'a>(jobs: impl Iterator<Item = (&'a JobState, &'a String)>) -> Upstream {
        let mut u = Upstream {
            done: true,
            ..Upstream::default()
        };
        for (s, name) in jobs {
            u.add(s, name);
        }
        u
    }

    fn add(&mut self, s: &JobState, name: &str) {
        self.done &= s.is_terminal();
        self.failed |= matches!(
            s,
            JobState::Failed { allowed: false, .. }
                | JobState::Skipped(SkipReason::UpstreamFailed)
                | JobState::Canceled
        );
        if self.waiting_for.is_none() {
            self.waiting_for = match s {
                JobState::Manual { blocking: true } => Some(name.to_string()),
                JobState::Skipped(SkipReason::WaitingForManual(m)) => Some(m.clone()),
                _ => None,
            };
        }
    }
}

/// For stage order: what the jobs of all stages before each stage came to, computed in one
/// pass over the jobs (so deciding N jobs stays linear per pass, not quadratic).
struct StageSummary {
    /// `before[k]`: the jobs of stages `< k`.
    before: Vec<Upstream>,
}

impl StageSummary {
    fn new(plan: &Plan, state: &[JobState]) -> StageSummary {
        let stages = plan
            .jobs
            .iter()
            .map(|j| j.stage_index + 1)
            .max()
            .unwrap_or(0);
        let mut per_stage = vec![
            Upstream {
                done: true,
                ..Upstream::default()
            };
            stages
        ];
        for (j, s) in plan.jobs.iter().zip(state) {
            per_stage[j.stage_index].add(s, &j.name);
        }
        let mut before = Vec::with_capacity(stages + 1);
        let mut acc = Upstream {
            done: true,
            ..Upstream::default()
        };
        for st in per_stage {
            before.push(acc.clone());
            acc.done &= st.done;
            acc.failed |= st.failed;
            if acc.waiting_for.is_none() {
                acc.waiting_for = st.waiting_for;
            }
        }
        before.push(acc);
        StageSummary { before }
    }

    fn before(&self, stage_index: usize) -> Upstream {
        self.before[stage_index.min(self.before.len() - 1)].clone()
    }
}

struct JobRun {
    plan_job: PlannedJob,
    /// Jobs whose artifacts this one receives.
    artifact_sources: Vec<String>,
    trigger: Trigger,
    executor: Arc<dyn Executor>,
    opts: Options,
    observer: Observer,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    index: usize,
}

impl JobRun {
    async fn run(self, delayed: bool) -> JobResult {
        let job = &self.plan_job;
        let started = Instant::now();
        if delayed {
            let wait = Duration::from_secs(job.start_in.unwrap_or(0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => {
                    return self.result(JobState::Canceled, 0, started, Vec::new(), None);
                }
            }
            (self.observer)(Event::State {
                job: job.name.clone(),
                state: JobState::Running,
                attempt: 1,
                elapsed: started.elapsed(),
            });
        }
        let retry = job.job.retry.clone();
        let max_attempts = 1 + retry.as_ref().map_or(0, |r| r.max);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                (self.observer)(Event::State {
                    job: job.name.clone(),
                    state: JobState::Running,
                    attempt,
                    elapsed: started.elapsed(),
                });
            }
            let outcome = self.attempt(attempt).await;
            let (state, tail, junit) = match outcome {
                Attempt::Success { tail, junit } => (JobState::Success, tail, junit),
                Attempt::Canceled { tail } => (JobState::Canceled, tail, None),
                Attempt::Failed {
                    class,
                    exit_code,
                    tail,
                    junit,
                } => {
                    let retryable = attempt < max_attempts
                        && retry.as_ref().is_some_and(|r| {
                            let class_ok =
                                r.when.is_empty() || r.when.iter().any(|w| class.matches(w));
                            let code_ok = r.exit_codes.is_empty()
                                || exit_code.is_some_and(|c| r.exit_codes.contains(&c));
                            class_ok && code_ok
                        });
                    if retryable && !self.cancel.is_cancelled() {
                        continue;
                    }
                    let allowed = job.allow_failure.allows(exit_code);
                    (
                        JobState::Failed {
                            class,
                            exit_code,
                            allowed,
                        },
                        tail,
                        junit,
                    )
                }
            };
            return self.result(state, attempt, started, tail, junit);
        }
    }

    fn result(
        &self,
        state: JobState,
        attempts: u32,
        started: Instant,
        tail: Vec<String>,
        junit: Option<artifacts::JunitSummary>,
    ) -> JobResult {
        let elapsed = started.elapsed();
        (self.observer)(Event::State {
            job: self.plan_job.name.clone(),
            state: state.clone(),
            attempt: attempts,
            elapsed,
        });
        JobResult {
            name: self.plan_job.name.clone(),
            stage: self.plan_job.stage.clone(),
            state,
            attempts,
            duration: elapsed,
            tail,
            junit,
        }
    }

    async fn attempt(&self, attempt: u32) -> Attempt {
        let job = &self.plan_job;
        let slug = format!("{}-{}", vars::ref_slug(&job.name), self.index);
        let dir = self
            .opts
            .run_dir
            .join("jobs")
            .join(format!("{slug}-{attempt}"));
        let ws = dir.join("workspace");
        let scratch = dir.join("scripts");
        let tail_buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let masker = Masker::new(self.opts.secrets.iter().map(|(_, v)| v.clone()));
        let log = {
            let obs = self.observer.clone();
            let name = job.name.clone();
            let tail = tail_buf.clone();
            LogSink::new(
                masker,
                Box::new(move |bytes| {
                    {
                        let mut t = tail.lock().expect("tail");
                        t.extend_from_slice(bytes);
                        let len = t.len();
                        if len > 64 * 1024 {
                            t.drain(..len - 32 * 1024);
                        }
                    }
                    obs(Event::Log {
                        job: name.clone(),
                        bytes: bytes.to_vec(),
                    });
                }),
            )
        };
        let tail = |log: &LogSink| {
            log.flush();
            let t = tail_buf.lock().expect("tail");
            let text = String::from_utf8_lossy(&t);
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines[lines.len().saturating_sub(15)..].to_vec()
        };
        let sys_fail = |msg: String, log: &LogSink| {
            log.info(&format!("ERROR: {msg}"));
            Attempt::Failed {
                class: FailureClass::RunnerSystemFailure,
                exit_code: None,
                tail: tail(log),
                junit: None,
            }
        };

        // 1. Workspace, artifacts of the jobs this one depends on, variables, caches.
        if let Err(e) = std::fs::create_dir_all(&ws).and_then(|_| std::fs::create_dir_all(&scratch))
        {
            return sys_fail(
                format!("creating the job directory {}: {e}", dir.display()),
                &log,
            );
        }
        let snapshot = match self.shared.snapshot.as_ref() {
            Ok(s) => s,
            Err(e) => return sys_fail(format!("reading the project's files: {e}"), &log),
        };
        if let Err(e) = snapshot.checkout(&ws) {
            return sys_fail(format!("preparing the workspace: {e:#}"), &log);
        }
        let checkout = &snapshot.files;
        let mut dotenv: Vec<(String, String)> = Vec::new();
        {
            let stored = self.shared.artifacts.lock().expect("artifacts").clone();
            for from in &self.artifact_sources {
                if let Some(s) = stored.get(from) {
                    if let Err(e) = artifacts::restore(s, &ws) {
                        return sys_fail(format!("restoring artifacts of '{from}': {e:#}"), &log);
                    }
                    log.info(&format!(
                        "Restored artifacts of {from} ({} files)",
                        s.files.len()
                    ));
                    dotenv.extend(s.dotenv.iter().cloned());
                }
            }
        }
        let docker = self.executor.name() == "docker";
        let project_dir = if docker {
            format!("/builds/{}", self.trigger.project.path)
        } else {
            ws.display().to_string()
        };
        let env = match self.variables(&project_dir, &dotenv, attempt) {
            Ok(env) => env,
            Err(e) => return sys_fail(e, &log),
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
            .job
            .cache
            .iter()
            .map(|c| cache::key(c, &ws, &lookup))
            .collect();
        for (c, key) in job.job.cache.iter().zip(&cache_keys) {
            match cache::restore(
                c,
                key,
                fallback.as_deref(),
                &self.opts.cache_dir,
                &ws,
                &lookup,
            ) {
                Ok(Some(k)) => log.info(&format!("Restored cache {k}")),
                Ok(None) if c.policy != "push" => log.info(&format!("No cache for key {key} yet")),
                Ok(None) => {}
                Err(e) => log.info(&format!("WARNING: restoring cache {key} failed: {e:#}")),
            }
        }

        // 2. The executor's lifecycle: prepare, script, after_script, cleanup.
        let spec = JobSpec {
            id: format!("{}-{}-{}", std::process::id(), self.index, attempt),
            name: job.name.clone(),
            workspace: ws.clone(),
            scratch: scratch.clone(),
            project_dir: project_dir.clone(),
            env: env.clone(),
            image: job.job.image.clone(),
            services: job.job.services.clone(),
            labels: vec![
                (
                    "org.gantry.project".to_string(),
                    self.trigger.project.path.clone(),
                ),
                ("org.gantry.job-name".to_string(), job.name.clone()),
            ],
        };
        let timeout = job
            .job
            .timeout
            .map(Duration::from_secs)
            .unwrap_or(self.opts.default_timeout);
        let mut prepared = match tokio::select! {
            r = self.executor.prepare(&spec, &log) => Some(r),
            _ = self.cancel.cancelled() => None,
        } {
            None => return Attempt::Canceled { tail: tail(&log) },
            Some(Ok(p)) => p,
            Some(Err((e, handle))) => {
                if let Some(mut h) = handle {
                    h.cleanup(&log).await;
                }
                return sys_fail(e.to_string(), &log);
            }
        };
        let mut commands = job.job.before_script.clone();
        commands.extend(job.job.script.iter().cloned());
        let script = render_script(&commands, &project_dir);
        enum Outcome {
            Exit(i32),
            System(String),
            Timeout,
            Canceled,
        }
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, prepared.run(Step::Script, &script, &[], &log)) => match r {
                Ok(Ok(code)) => Outcome::Exit(code),
                Ok(Err(e)) => Outcome::System(e.to_string()),
                Err(_) => Outcome::Timeout,
            },
            _ = self.cancel.cancelled() => Outcome::Canceled,
        };
        let job_status = match &outcome {
            Outcome::Exit(0) => "success",
            Outcome::Canceled => "canceled",
            _ => "failed",
        };
        match &outcome {
            Outcome::Timeout => log.info(&format!(
                "ERROR: Job failed: execution took longer than {}",
                human(timeout)
            )),
            Outcome::Exit(c) if *c != 0 => log.info(&format!("ERROR: Job failed: exit code {c}")),
            Outcome::System(e) => log.info(&format!("ERROR: Job failed (system failure): {e}")),
            _ => {}
        }
        if !job.job.after_script.is_empty() && !matches!(outcome, Outcome::Canceled) {
            log.info("Running after_script");
            let after = render_script(&job.job.after_script, &project_dir);
            let extra = vec![("CI_JOB_STATUS".to_string(), job_status.to_string())];
            match tokio::select! {
                r = tokio::time::timeout(self.opts.after_script_timeout, prepared.run(Step::AfterScript, &after, &extra, &log)) => Some(r),
                _ = self.cancel.cancelled() => None,
            } {
                Some(Ok(Ok(0))) | None => {}
                Some(Ok(Ok(code))) => log.info(&format!(
                    "WARNING: after_script failed with exit code {code}"
                )),
                Some(Ok(Err(e))) => log.info(&format!("WARNING: after_script failed: {e}")),
                Some(Err(_)) => log.info(&format!(
                    "WARNING: after_script timed out after {}",
                    human(self.opts.after_script_timeout)
                )),
            }
        }
        prepared.cleanup(&log).await;
        if matches!(outcome, Outcome::Canceled) {
            log.info("Job canceled");
            return Attempt::Canceled { tail: tail(&log) };
        }
        let success = matches!(outcome, Outcome::Exit(0));

        // 3. Caches and artifacts.
        for (c, key) in job.job.cache.iter().zip(&cache_keys) {
            match cache::save(
                c,
                key,
                success,
                &self.opts.cache_dir,
                &ws,
                checkout,
                &lookup,
            ) {
                Ok(Some(n)) => log.info(&format!("Saved cache {key} ({n} files)")),
                Ok(None) => {}
                Err(e) => log.info(&format!("WARNING: saving cache {key} failed: {e:#}")),
            }
        }
        let mut junit = None;
        if let Some(a) = &job.job.artifacts
            && artifacts::wanted(a, success)
        {
            match artifacts::collect(&ws, a, checkout, &dir.join("artifacts"), &lookup) {
                Ok(stored) => {
                    log.info(&format!("Uploaded artifacts: {} files", stored.files.len()));
                    junit = stored.junit;
                    self.shared
                        .artifacts
                        .lock()
                        .expect("artifacts")
                        .insert(job.name.clone(), stored);
                }
                Err(e) => log.info(&format!("WARNING: collecting artifacts failed: {e:#}")),
            }
        }
        if !self.opts.run_dir.as_os_str().is_empty() {
            // The workspace is not needed once artifacts and caches are saved.
            let _ = std::fs::remove_dir_all(&ws);
        }
        match outcome {
            Outcome::Exit(0) => Attempt::Success {
                tail: tail(&log),
                junit,
            },
            Outcome::Exit(code) => Attempt::Failed {
                class: FailureClass::ScriptFailure,
                exit_code: Some(code),
                tail: tail(&log),
                junit,
            },
            Outcome::Timeout => Attempt::Failed {
                class: FailureClass::JobExecutionTimeout,
                exit_code: None,
                tail: tail(&log),
                junit,
            },
            Outcome::System(_) => Attempt::Failed {
                class: FailureClass::RunnerSystemFailure,
                exit_code: None,
                tail: tail(&log),
                junit,
            },
            Outcome::Canceled => Attempt::Canceled { tail: tail(&log) },
        }
    }

    /// The job's variables, expanded, in GitLab's precedence order.
    fn variables(
        &self,
        project_dir: &str,
        dotenv: &[(String, String)],
        attempt: u32,
    ) -> Result<Vec<(String, String)>, String> {
        let job = &self.plan_job;
        let mut ctx = JobContext::new(
            job.name.clone(),
            job.stage.clone(),
            (self.index as u64 + 1) * 10 + attempt as u64,
        );
        ctx.project_dir = Some(project_dir.to_string());
        ctx.builds_dir = Some(
            std::path::Path::new(project_dir)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        ctx.image = job.job.image.as_ref().map(|i| i.name.clone());
        ctx.manual = job.when == When::Manual;
        ctx.timeout_secs = Some(
            job.job
                .timeout
                .unwrap_or(self.opts.default_timeout.as_secs()),
        );
        if let Some((index, total)) = job.node {
            ctx.parallel = Some(vars::Parallel { index, total });
        }
        if let Some(env) = &job.job.environment {
            ctx.environment = Some(vars::JobEnvironment {
                name: env.name.clone(),
                url: env.url.clone(),
                action: Some(env.action.clone()),
                tier: env.deployment_tier.clone(),
            });
        }
        let mut set = VarSet::with_predefined(&self.trigger, &Default::default(), Some(&ctx));
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
        set.push_pairs(
            Layer::Pipeline,
            self.trigger
                .variables
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        set.push(
            Layer::Pipeline,
            self.opts.secrets.iter().map(|(k, v)| {
                Var::new(k.clone(), v.clone(), vars::Phase::Pipeline).with_masked(true)
            }),
        );
        set.expand_all()
            .map(|vars| vars.into_iter().map(|v| (v.name, v.value)).collect())
            .map_err(|e| format!("variables reference each other in a loop: {e}"))
    }
}

enum Attempt {
    Success {
        tail: Vec<String>,
        junit: Option<artifacts::JunitSummary>,
    },
    Failed {
        class: FailureClass,
        exit_code: Option<i32>,
        tail: Vec<String>,
        junit: Option<artifacts::JunitSummary>,
    },
    Canceled {
        tail: Vec<String>,
    },
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
