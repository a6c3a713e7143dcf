//! `gantry run`: the whole pipeline on this machine, from the working tree, with the same
//! plan, rules and executors as the server; a live view in a terminal, plain lines in CI.

use super::Source;
use super::plan::{TriggerArgs, load_and_plan};
use anyhow::{Context, Result, bail};
use gantry_api::agent::JobVariable;
use gantry_runner::executor::Executor;
use gantry_runner::executor::docker::DockerExecutor;
use gantry_runner::executor::shell::ShellExecutor;
use gantry_runner::runtime::{self, Event, Options};
use gantry_runner::status::{JobState, PipelineStatus};
use gantry_runner::workspace;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Docker when an engine answers, else shell.
    Auto,
    Shell,
    Docker,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run only these jobs (and the jobs they need). Named manual jobs are played.
    pub jobs: Vec<String>,
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub trigger: TriggerArgs,
    /// Show the plan and run nothing.
    #[arg(long)]
    pub list: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub executor: ExecutorKind,
    /// Play every manual job.
    #[arg(long)]
    pub manual: bool,
    /// Use the working tree as it is, uncommitted changes included (default: the last commit).
    #[arg(long)]
    pub dirty: bool,
    /// How many jobs may run at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub concurrency: usize,
    /// A masked variable: NAME=VALUE, or NAME to take the value from the environment (repeatable).
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    pub secrets: Vec<String>,
    /// The timeout of jobs that set none.
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// Start `when: delayed` jobs at once instead of waiting for `start_in`.
    #[arg(long)]
    pub skip_delays: bool,
    /// The image of Docker jobs that set none.
    #[arg(long)]
    pub docker_image: Option<String>,
    /// Where caches are kept between runs.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Keep workspaces and artifacts of this run (printed at the end).
    #[arg(long)]
    pub keep: bool,
    /// Plain output even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// `println!` that ignores a closed stdout (the reader went away; the run still finishes
/// and cleans up).
macro_rules! outln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("gantry")
}

type Pairs = Vec<(String, String)>;

/// Reads `.gantry/variables`: `NAME: value` or `NAME: {value: …, masked: true, file: true}`;
/// returns the plain, the masked and the file-type ones (a file whose path the job gets).
fn local_variables(root: &std::path::Path) -> Result<(Pairs, Pairs, Vec<JobVariable>)> {
    let path = root.join(".gantry/variables");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    };
    let mut sources = gantry_pipeline::source::SourceMap::new();
    let id = sources.add(".gantry/variables", text);
    let mut d = gantry_pipeline::diag::Diagnostics::new();
    let node = gantry_pipeline::yaml::load(&sources, id, &mut d);
    let Some(map) = node.as_ref().and_then(|n| n.as_map()) else {
        if d.has_errors() {
            bail!("{}", d.render(&sources));
        }
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    };
    let (mut plain, mut masked, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for e in &map.entries {
        match (e.value.as_str(), e.value.as_map()) {
            (Some(v), _) => plain.push((e.key.clone(), v.to_string())),
            (_, Some(m)) => {
                let v = m
                    .get("value")
                    .and_then(|v| v.as_str())
                    .with_context(|| format!(".gantry/variables: {} needs a `value`", e.key))?
                    .to_string();
                let is_masked = m.get("masked").and_then(|b| b.as_bool()).unwrap_or(false);
                if m.get("file").and_then(|b| b.as_bool()).unwrap_or(false) {
                    files.push(JobVariable {
                        key: e.key.clone(),
                        value: v,
                        masked: is_masked,
                        file: true,
                    });
                } else if is_masked {
                    masked.push((e.key.clone(), v));
                } else {
                    plain.push((e.key.clone(), v));
                }
            }
            _ => bail!(
                ".gantry/variables: {} must be a string or a map with `value`",
                e.key
            ),
        }
    }
    Ok((plain, masked, files))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: Args) -> Result<ExitCode> {
    let repo = a.source.repo();
    let (file_vars, file_secrets, file_typed) = local_variables(&repo.root)?;
    let mut trigger = a.trigger.trigger(repo.trigger_base())?;
    let mut secrets = file_secrets;
    for s in &a.secrets {
        match s.split_once('=') {
            Some((k, v)) => secrets.push((k.to_string(), v.to_string())),
            None => {
                let v = std::env::var(s)
                    .with_context(|| format!("--secret {s}: no such environment variable"))?;
                secrets.push((s.clone(), v));
            }
        }
    }
    let mut vars = file_vars;
    vars.append(&mut trigger.variables);
    trigger.variables = vars;
    let executor: Arc<dyn Executor> = match a.executor {
        ExecutorKind::Shell => Arc::new(ShellExecutor),
        ExecutorKind::Docker => {
            let mut d = DockerExecutor::connect()
                .await
                .map_err(|e| anyhow::anyhow!("{e}: start Docker, or use --executor shell"))?;
            d.default_image = a.docker_image.clone();
            Arc::new(d)
        }
        ExecutorKind::Auto => match DockerExecutor::connect().await {
            Ok(mut d) => {
                d.default_image = a.docker_image.clone();
                Arc::new(d)
            }
            Err(e) => {
                eprintln!("No Docker Engine answers ({e}); running jobs with the shell executor.");
                Arc::new(ShellExecutor)
            }
        },
    };

    // Jobs and rules can tell which executor runs them (a Gantry variable, like GitLab's CI_RUNNER_*).
    trigger
        .variables
        .push(("GANTRY_EXECUTOR".into(), executor.name().into()));
    let (plan, _) = match load_and_plan(&a.source, &trigger)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if a.list {
        print!("{}", super::plan::render(&plan, &trigger));
        return Ok(ExitCode::SUCCESS);
    }
    if !plan.created {
        println!("No pipeline: {}", plan.workflow);
        return Ok(ExitCode::SUCCESS);
    }
    for j in &a.jobs {
        if !plan
            .jobs
            .iter()
            .any(|p| &p.name == j || &p.base == j || p.job.name == *j)
        {
            let names: Vec<&str> = plan.jobs.iter().map(|p| p.name.as_str()).collect();
            let hint = gantry_pipeline::diag::did_you_mean(j, names.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            bail!("no job '{j}' in this pipeline{hint}; `gantry run --list` shows the plan");
        }
    }
    let timeout = gantry_pipeline::model::duration::parse(&a.timeout)
        .with_context(|| format!("--timeout: '{}' is not a duration", a.timeout))?;

    let project_key = format!(
        "{}-{}",
        gantry_pipeline::vars::ref_slug(&trigger.project.title),
        short_hash(&repo.root.display().to_string())
    );
    let run_dir = cache_home().join("runs").join(&project_key).join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    let cache_dir = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| cache_home().join("cache").join(&project_key));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;

    let opts = Options {
        concurrency: a.concurrency,
        play_all_manual: a.manual,
        play: a.jobs.clone(),
        select: a.jobs.clone(),
        default_timeout: Duration::from_secs(timeout),
        after_script_timeout: Duration::from_secs(300),
        skip_delays: a.skip_delays,
        run_dir: run_dir.clone(),
        cache_dir,
        source: workspace::Source::new(&repo.root, a.dirty),
        secrets,
        variables: file_typed,
    };
    let fancy = !a.plain && std::io::stdout().is_terminal() && std::env::var_os("CI").is_none();
    let color = fancy || std::env::var_os("CLICOLOR_FORCE").is_some();
    let view = Arc::new(View::new(&plan, fancy, color));
    println!(
        "Running {} job(s) with the {} executor{}",
        plan.jobs.len(),
        executor.name(),
        if a.dirty {
            " (working tree, uncommitted changes included)"
        } else {
            ""
        }
    );

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        let view = view.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                view.line(None, "Canceling: stopping running jobs and removing their containers (Ctrl-C again to force)");
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let ticker = if fancy {
        let view = view.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                view.footer();
            }
        }))
    } else {
        None
    };
    let obs_view = view.clone();
    let observer: runtime::Observer = Arc::new(move |e| obs_view.event(e));
    let report = runtime::run(&plan, &trigger, executor, opts, observer, cancel).await;
    if let Some(t) = ticker {
        t.abort();
    }
    view.clear_footer();
    view.summary(&report);
    if a.keep {
        outln!("Workspaces and artifacts kept in {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(match report.status {
        s if s.is_success() => ExitCode::SUCCESS,
        PipelineStatus::Canceled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

fn short_hash(s: &str) -> String {
    // FNV-1a: a stable, dependency-free name for a directory.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

/// The terminal: log lines prefixed with the job name, state changes, and on a terminal a
/// footer with the running jobs and progress.
struct View {
    fancy: bool,
    color: bool,
    width: usize,
    total: usize,
    inner: Mutex<ViewState>,
}

struct ViewState {
    partial: HashMap<String, Vec<u8>>,
    running: Vec<(String, Instant)>,
    done: usize,
    footer_shown: bool,
    palette: HashMap<String, usize>,
}

const COLORS: &[&str] = &["36", "35", "34", "33", "32", "96", "95", "94"];

impl View {
    fn new(plan: &gantry_pipeline::plan::Plan, fancy: bool, color: bool) -> View {
        let width = plan
            .jobs
            .iter()
            .map(|j| j.name.chars().count())
            .max()
            .unwrap_or(4)
            .min(28);
        let palette = plan
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.clone(), i % COLORS.len()))
            .collect();
        View {
            fancy,
            color,
            width,
            total: plan.jobs.len(),
            inner: Mutex::new(ViewState {
                partial: HashMap::new(),
                running: Vec::new(),
                done: 0,
                footer_shown: false,
                palette,
            }),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn prefix(&self, st: &ViewState, job: &str) -> String {
        let name: String = job.chars().take(self.width).collect();
        let padded = format!("{name:<w$}", w = self.width);
        let c = st.palette.get(job).copied().unwrap_or(0);
        format!("{} │ ", self.paint(COLORS[c], &padded))
    }

    fn emit(&self, st: &mut ViewState, text: &str) {
        let mut out = std::io::stdout().lock();
        if st.footer_shown {
            let _ = write!(out, "\r\x1b[2K");
            st.footer_shown = false;
        }
        let _ = writeln!(out, "{text}");
    }

    fn line(&self, job: Option<&str>, text: &str) {
        let mut st = self.inner.lock().expect("view");
        let line = match job {
            Some(j) => format!("{}{text}", self.prefix(&st, j)),
            None => text.to_string(),
        };
        self.emit(&mut st, &line);
    }

    fn event(&self, e: Event) {
        let mut st = self.inner.lock().expect("view");
        match e {
            Event::Log { job, bytes } => {
                let mut buf = st.partial.remove(&job).unwrap_or_default();
                buf.extend_from_slice(&bytes);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1])
                        .trim_end_matches('\r')
                        .to_string();
                    let text = if self.color { text } else { strip_ansi(&text) };
                    let l = format!("{}{text}", self.prefix(&st, &job));
                    self.emit(&mut st, &l);
                }
                st.partial.insert(job, buf);
            }
            Event::State {
                job,
                state,
                attempt,
                elapsed,
            } => {
                if let Some(rest) = st.partial.remove(&job).filter(|b| !b.is_empty()) {
                    let l = format!(
                        "{}{}",
                        self.prefix(&st, &job),
                        String::from_utf8_lossy(&rest)
                    );
                    self.emit(&mut st, &l);
                }
                let (mark, code) = match &state {
                    JobState::Running => ("▶", "36"),
                    JobState::Scheduled => ("⏲", "36"),
                    JobState::Success => ("✔", "32"),
                    JobState::Failed { allowed: true, .. } => ("!", "33"),
                    JobState::Failed { .. } => ("✘", "31"),
                    JobState::Canceled => ("⊘", "90"),
                    JobState::Skipped(_) | JobState::Manual { .. } | JobState::Created => {
                        ("·", "90")
                    }
                };
                match state {
                    JobState::Running => {
                        st.running.retain(|(j, _)| j != &job);
                        st.running.push((job.clone(), Instant::now()));
                    }
                    JobState::Scheduled => {}
                    _ => {
                        st.running.retain(|(j, _)| j != &job);
                        st.done += 1;
                    }
                }
                let retry = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                let time = if elapsed > Duration::ZERO {
                    format!(" in {:.1}s", elapsed.as_secs_f64())
                } else {
                    String::new()
                };
                let detail = match &state {
                    JobState::Failed {
                        class, exit_code, ..
                    } => format!(
                        " ({}{})",
                        class.as_str(),
                        exit_code
                            .map(|c| format!(", exit code {c}"))
                            .unwrap_or_default()
                    ),
                    JobState::Skipped(r) => format!(" ({})", skip_text(r)),
                    JobState::Manual { blocking } => {
                        if *blocking {
                            " (waiting to be played: gantry run JOB or --manual)".into()
                        } else {
                            " (not played)".into()
                        }
                    }
                    _ => String::new(),
                };
                let text = format!(
                    "{} {job} {}{retry}{time}{detail}",
                    self.paint(code, mark),
                    self.paint(code, state.label())
                );
                self.emit(&mut st, &text);
            }
        }
        drop(st);
        if self.fancy {
            self.footer();
        }
    }

    fn footer(&self) {
        let mut st = self.inner.lock().expect("view");
        if st.running.is_empty() {
            return;
        }
        const SPIN: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let tenths = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() / 100);
        let spin = SPIN[tenths as usize % SPIN.len()];
        let running: Vec<String> = st
            .running
            .iter()
            .map(|(j, t)| format!("{j} {}s", t.elapsed().as_secs()))
            .collect();
        let text = format!(
            "{spin} {}/{} done · running: {}",
            st.done,
            self.total,
            running.join(", ")
        );
        let text: String = text.chars().take(200).collect();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{}", self.paint("2", &text));
        let _ = out.flush();
        st.footer_shown = true;
    }

    fn clear_footer(&self) {
        let mut st = self.inner.lock().expect("view");
        if st.footer_shown {
            print!("\r\x1b[2K");
            st.footer_shown = false;
        }
    }

    fn summary(&self, report: &runtime::RunReport) {
        outln!();
        let failed: Vec<_> = report
            .jobs
            .iter()
            .filter(|j| matches!(j.state, JobState::Failed { .. }))
            .collect();
        for j in &failed {
            outln!("{} {} — last lines:", self.paint("31", "✘"), j.name);
            for l in &j.tail {
                let l = if self.color { l.clone() } else { strip_ansi(l) };
                outln!("    {l}");
            }
        }
        let mut junit = gantry_runner::artifacts::JunitSummary::default();
        let mut any_junit = false;
        for j in &report.jobs {
            if let Some(s) = &j.junit {
                junit.add(s);
                any_junit = true;
            }
        }
        if any_junit {
            outln!(
                "Tests: {} passed, {} failed, {} errors, {} skipped",
                junit.passed(),
                junit.failures,
                junit.errors,
                junit.skipped
            );
        }
        let count =
            |f: &dyn Fn(&JobState) -> bool| report.jobs.iter().filter(|j| f(&j.state)).count();
        let passed = count(&|s| *s == JobState::Success);
        let failed_n = count(&|s| matches!(s, JobState::Failed { .. }));
        let skipped = count(&|s| matches!(s, JobState::Skipped(_)));
        let manual = count(&|s| matches!(s, JobState::Manual { .. }));
        let code = if report.status.is_success() {
            "32"
        } else {
            "31"
        };
        outln!(
            "Pipeline {} in {:.1}s: {passed} passed, {failed_n} failed, {skipped} skipped, {manual} manual",
            self.paint(code, report.status.label()),
            report.duration.as_secs_f64()
        );
    }
}

fn skip_text(r: &gantry_runner::status::SkipReason) -> String {
    use gantry_runner::status::SkipReason::*;
    match r {
        UpstreamFailed => "a job it depends on failed".into(),
        NothingFailed => "when: on_failure, and nothing failed".into(),
        WaitingForManual(m) => format!("waits for manual job {m}"),
        NotSelected => "not selected".into(),
    }
}

/// Removes ANSI escape sequences (for plain output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
