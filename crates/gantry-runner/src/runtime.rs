//! The job runtime: runs a [`Plan`] to the end.
//!
//! Jobs start as soon as the jobs they depend on (earlier stages, or their `needs`) are done
//! and the concurrency limit and their `resource_group` allow. Each job's `when` decides what
//! "done" must look like (`on_success`, `on_failure`, `always`, `manual`, `delayed`); failed
//! attempts are retried by `retry`; `timeout` stops a job; cancellation (Ctrl-C) stops every
//! running job and cleans up what its executor created. Each attempt goes through
//! [`run_attempt`] (the [`crate::job`] module), the path agents run server jobs through; the
//! scheduler here turns [`JobDefinition::from_plan`] into attempts and decides retries.

use crate::artifacts::{self, Stored};
use crate::executor::Executor;
use crate::job::{AttemptReport, AttemptSpec, JobIo, Outcome, run_attempt};
use crate::log::LogSink;
use crate::mask::Masker;
use crate::status::{
    FailureClass, JobResult, JobState, PipelineStatus, SkipReason, pipeline_status,
};
use crate::workspace;
use gantry_api::job::JobDefinition;
use gantry_pipeline::model::When;
use gantry_pipeline::plan::{After, Plan};
use gantry_pipeline::trigger::Trigger;
use gantry_pipeline::vars;
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
    /// Variables with a CI/CD variable's precedence and flags (file-type ones become a file).
    pub variables: Vec<gantry_api::agent::JobVariable>,
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
                    definition: JobDefinition::from_plan(plan, i),
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
    definition: JobDefinition,
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
        let job = &self.definition;
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
        let retry = job.retry.clone();
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
            let (report, tail) = self.attempt(attempt).await;
            let (state, junit) = match report.outcome {
                Outcome::Success => (JobState::Success, report.junit),
                Outcome::Canceled => (JobState::Canceled, None),
                Outcome::Failed { reason, exit_code } => {
                    let class = FailureClass::from(reason);
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
                        report.junit,
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
            job: self.definition.name.clone(),
            state: state.clone(),
            attempt: attempts,
            elapsed,
        });
        JobResult {
            name: self.definition.name.clone(),
            stage: self.definition.stage.clone(),
            state,
            attempts,
            duration: elapsed,
            tail,
            junit,
        }
    }

    /// One attempt through [`run_attempt`], with the log going to the observer; returns the
    /// report and the last lines of the log.
    async fn attempt(&self, attempt: u32) -> (AttemptReport, Vec<String>) {
        let job = &self.definition;
        let slug = format!("{}-{}", vars::ref_slug(&job.name), self.index);
        let dir = self
            .opts
            .run_dir
            .join("jobs")
            .join(format!("{slug}-{attempt}"));
        let tail_buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let masker = Masker::new(
            self.opts.secrets.iter().map(|(_, v)| v.clone()).chain(
                self.opts
                    .variables
                    .iter()
                    .filter(|v| v.masked)
                    .map(|v| v.value.clone()),
            ),
        );
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
        let spec = AttemptSpec {
            definition: job,
            trigger: &self.trigger,
            job_id: (self.index as u64 + 1) * 10 + attempt as u64,
            attempt,
            executor: self.executor.clone(),
            dir,
            cache_dir: self.opts.cache_dir.clone(),
            secrets: &self.opts.secrets,
            variables: &self.opts.variables,
            default_timeout: self.opts.default_timeout,
            after_script_timeout: self.opts.after_script_timeout,
            job_token: None,
            runner: None,
        };
        let io = LocalIo {
            shared: &self.shared,
            name: &job.name,
            artifact_sources: &self.artifact_sources,
        };
        let report = run_attempt(&spec, &io, &log, &self.cancel).await;
        let t = tail_buf.lock().expect("tail");
        let text = String::from_utf8_lossy(&t);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let tail = lines[lines.len().saturating_sub(15)..].to_vec();
        (report, tail)
    }
}

/// A local run's inputs and outputs: the run's snapshot, and artifacts kept in memory.
struct LocalIo<'a> {
    shared: &'a Shared,
    name: &'a str,
    artifact_sources: &'a [String],
}

#[async_trait::async_trait]
impl JobIo for LocalIo<'_> {
    async fn checkout(
        &self,
        workspace: &std::path::Path,
        _git_strategy: Option<&str>,
        _log: &LogSink,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let snapshot = match self.shared.snapshot.as_ref() {
            Ok(s) => s,
            Err(e) => anyhow::bail!("reading the project's files: {e}"),
        };
        snapshot.checkout(workspace)?;
        Ok(snapshot.files.clone())
    }

    async fn restore_dependencies(
        &self,
        workspace: &std::path::Path,
        log: &LogSink,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let stored = self.shared.artifacts.lock().expect("artifacts").clone();
        let mut dotenv = Vec::new();
        for from in self.artifact_sources {
            if let Some(s) = stored.get(from) {
                artifacts::restore(s, workspace)
                    .map_err(|e| anyhow::anyhow!("restoring artifacts of '{from}': {e:#}"))?;
                log.info(&format!(
                    "Restored artifacts of {from} ({} files)",
                    s.files.len()
                ));
                dotenv.extend(s.dotenv.iter().cloned());
            }
        }
        Ok(dotenv)
    }

    async fn store_artifacts(&self, stored: &Stored, _log: &LogSink) -> anyhow::Result<()> {
        self.shared
            .artifacts
            .lock()
            .expect("artifacts")
            .insert(self.name.to_string(), stored.clone());
        Ok(())
    }
}
