//! `gantry pipeline run|list|show|cancel|retry`: pipelines on the server. `run --wait`
//! follows the pipeline by polling it, prints each job's state as it changes and exits with
//! the pipeline's result, so a script can wait for CI as it waits for `make`.

use super::client::{self, Client, Conn, Output, Paging, typed};
use super::project::project_segment;
use anyhow::Result;
use gantry_api::rest::{Job, KeyValue, Pipeline, PipelineCreate};
use gantry_api::{JobStatus, PipelineStatus};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `--wait` asks.
const POLL: Duration = Duration::from_millis(200);
/// How long `--wait` keeps trying through a server that does not answer.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Start a pipeline for a project's branch, tag or commit.
    Run(RunArgs),
    /// List pipelines, newest first (all projects', or one project's).
    List(ListArgs),
    /// A pipeline and its jobs (every attempt).
    Show(IdArgs),
    /// Cancel every unfinished job of a pipeline.
    Cancel(IdArgs),
    /// Retry a pipeline's failed, canceled and skipped jobs.
    Retry(IdArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The project: its id or its path (`group/name`).
    pub project: String,
    /// The branch or tag [default: the project's default branch].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The commit [default: the ref's tip on the project's remote].
    #[arg(long)]
    pub sha: Option<String>,
    /// A pipeline variable, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Follow the pipeline until it finishes, printing job state changes; exit 0 only if it
    /// succeeds.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this project's pipelines (an id or a path).
    pub project: Option<String>,
    #[command(flatten)]
    pub paging: Paging,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The pipeline's id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Run(a) => {
            let client = Client::new(&a.conn)?;
            client::run(start(client, a))
        }
        Command::List(a) => {
            let client = Client::new(&a.conn)?;
            client::run(list(client, a))
        }
        Command::Show(a) => {
            let client = Client::new(&a.conn)?;
            client::run(show(client, a))
        }
        Command::Cancel(a) => {
            let client = Client::new(&a.conn)?;
            client::run(act(client, a, "cancel"))
        }
        Command::Retry(a) => {
            let client = Client::new(&a.conn)?;
            client::run(act(client, a, "retry"))
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

async fn start(client: Client, a: RunArgs) -> Result<ExitCode> {
    let body = PipelineCreate {
        git_ref: a.git_ref.clone(),
        sha: a.sha.clone(),
        variables: a
            .vars
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    };
    let path = format!("/api/v1/projects/{}/pipelines", project_segment(&a.project));
    let v = client
        .post(&path, Some(&serde_json::to_value(&body)?))
        .await?;
    let p: Pipeline = typed(&v)?;
    let json = a.output.json();
    if json && !(a.wait && p.errors.is_none()) {
        client::print_json(&v);
    } else if !json {
        println!(
            "pipeline {}: {} (ref {}, sha {})",
            p.id,
            p.status,
            p.git_ref,
            short(&p.sha)
        );
    }
    if let Some(errors) = &p.errors {
        if !json {
            eprintln!("the pipeline file has errors:");
            eprintln!("{}", errors.trim_end());
        }
        return Ok(ExitCode::FAILURE);
    }
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait(&client, p.id, json).await
}

/// What `--wait` printed last for a job.
type Seen = HashMap<i64, (JobStatus, Option<String>)>;

/// Prints the jobs whose state (or reason to wait) changed since `seen`.
fn changes(jobs: &[Job], seen: &mut Seen) -> Vec<String> {
    let mut out = Vec::new();
    for j in jobs {
        let now = (j.status, j.waiting_reason.clone());
        let first = !seen.contains_key(&j.id);
        if seen.get(&j.id) == Some(&now) {
            continue;
        }
        seen.insert(j.id, now);
        if first && j.status == JobStatus::Created {
            continue;
        }
        let mut extra = Vec::new();
        if j.attempt > 1 {
            extra.push(format!("attempt {}", j.attempt));
        }
        if let Some(r) = j.failure_reason {
            extra.push(r.to_string());
        }
        if j.status == JobStatus::Failed && j.allow_failure {
            extra.push("allowed to fail".to_string());
        }
        let mut line = format!(
            "  {:<9} {} [job {}{}]",
            j.status.as_str(),
            j.name,
            j.id,
            extra.iter().map(|e| format!(", {e}")).collect::<String>()
        );
        if j.status == JobStatus::Pending
            && let Some(w) = &j.waiting_reason
        {
            line.push_str(&format!(" waiting: {w}"));
        }
        out.push(line);
    }
    out
}

async fn wait(client: &Client, id: i64, json: bool) -> Result<ExitCode> {
    let mut seen = Seen::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        let v = match client.get(&format!("/api/v1/pipelines/{id}")).await {
            Ok(v) => {
                failing_since = None;
                v
            }
            Err(f) if f.transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(f.into());
                }
                tokio::time::sleep(POLL * 5).await;
                continue;
            }
            Err(f) => return Err(f.into()),
        };
        let p: Pipeline = typed(&v)?;
        let jobs = p.jobs.clone().unwrap_or_default();
        if !json {
            for line in changes(&jobs, &mut seen) {
                println!("{line}");
            }
        }
        let blocked =
            p.status == PipelineStatus::Manual && !jobs.iter().any(|j| j.status.is_active());
        if p.status.is_finished() || blocked {
            if json {
                client::print_json(&v);
            } else if blocked {
                let manual: Vec<String> = jobs
                    .iter()
                    .filter(|j| j.status == JobStatus::Manual)
                    .map(|j| format!("{} (job {})", j.name, j.id))
                    .collect();
                println!(
                    "pipeline {id} waits for a manual job: {}; play it with `gantry job play ID`",
                    manual.join(", ")
                );
            } else {
                let took = match (p.started_at, p.finished_at) {
                    (Some(s), Some(f)) => format!(" in {}", client::duration(f - s)),
                    _ => String::new(),
                };
                println!("pipeline {id} {}{took}", p.status);
            }
            return Ok(if p.status == PipelineStatus::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn list(client: Client, a: ListArgs) -> Result<ExitCode> {
    let path = match &a.project {
        Some(p) => format!(
            "/api/v1/projects/{}/pipelines?{}",
            project_segment(p),
            a.paging.query()
        ),
        None => format!("/api/v1/pipelines?{}", a.paging.query()),
    };
    client::list(
        &client,
        &path,
        &a.output,
        &a.paging,
        "no pipelines",
        |items: &[Pipeline]| {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.project_id.to_string(),
                        p.git_ref.clone(),
                        short(&p.sha).to_string(),
                        p.status.to_string(),
                        p.source.clone(),
                        client::ago(p.created_at),
                        match (p.started_at, p.finished_at) {
                            (Some(s), Some(f)) => client::duration(f - s),
                            _ => String::new(),
                        },
                    ]
                })
                .collect();
            client::table(
                &[
                    "ID", "PROJECT", "REF", "SHA", "STATUS", "SOURCE", "CREATED", "DURATION",
                ],
                &rows,
            )
        },
    )
    .await
}

/// The jobs table of `pipeline show`.
pub fn jobs_table(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let mut status = j.status.to_string();
            if j.retried {
                status.push_str(" (retried)");
            } else if j.status == JobStatus::Failed && j.allow_failure {
                status.push_str(" (allowed)");
            }
            vec![
                j.id.to_string(),
                j.stage.clone(),
                j.name.clone(),
                status,
                j.attempt.to_string(),
                j.failure_reason.map(|r| r.to_string()).unwrap_or_default(),
                j.waiting_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    client::table(
        &[
            "ID", "STAGE", "NAME", "STATUS", "ATTEMPT", "FAILURE", "WAITING",
        ],
        &rows,
    )
}

async fn show(client: Client, a: IdArgs) -> Result<ExitCode> {
    let v = client.get(&format!("/api/v1/pipelines/{}", a.id)).await?;
    if a.output.json() {
        client::print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let p: Pipeline = typed(&v)?;
    let mut facts = vec![
        format!("project {}", p.project_id),
        format!("ref {}", p.git_ref),
        format!("sha {}", short(&p.sha)),
        format!("source {}", p.source),
        format!("created {}", client::ago(p.created_at)),
    ];
    if let (Some(s), Some(f)) = (p.started_at, p.finished_at) {
        facts.push(format!("took {}", client::duration(f - s)));
    }
    println!("pipeline {}: {} ({})", p.id, p.status, facts.join(", "));
    if let Some(e) = &p.errors {
        println!("errors:\n{}", e.trim_end());
    }
    let jobs = p.jobs.unwrap_or_default();
    if !jobs.is_empty() {
        print!("{}", jobs_table(&jobs));
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(client: Client, a: IdArgs, verb: &str) -> Result<ExitCode> {
    let v = client
        .post(&format!("/api/v1/pipelines/{}/{verb}", a.id), None)
        .await?;
    if a.output.json() {
        client::print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let p: Pipeline = typed(&v)?;
    let done = if verb == "cancel" {
        "canceled"
    } else {
        "retried"
    };
    println!("pipeline {} {done}: {}", p.id, p.status);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_api::FailureReason;

    fn job(id: i64, name: &str, status: JobStatus) -> Job {
        Job {
            id,
            pipeline_id: 1,
            name: name.into(),
            stage: "test".into(),
            status,
            attempt: 1,
            retried: false,
            allow_failure: false,
            failure_reason: None,
            exit_code: None,
            waiting_reason: None,
            tags: vec![],
            agent_id: None,
            played_by: None,
            log_size: 0,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn wait_prints_each_change_once() {
        let mut seen = Seen::new();
        let mut a = job(1, "build", JobStatus::Pending);
        a.waiting_reason = Some("no online agent has tags [gpu]".into());
        let b = job(2, "test", JobStatus::Created);
        let lines = changes(&[a.clone(), b.clone()], &mut seen);
        assert_eq!(
            lines,
            vec!["  pending   build [job 1] waiting: no online agent has tags [gpu]"]
        );
        assert!(changes(&[a.clone(), b.clone()], &mut seen).is_empty());
        a.status = JobStatus::Failed;
        a.waiting_reason = None;
        a.failure_reason = Some(FailureReason::ScriptFailure);
        let lines = changes(&[a, b], &mut seen);
        assert_eq!(lines, vec!["  failed    build [job 1, script_failure]"]);
    }
}
