//! `gantry schedule list|create|update|delete|play`: a project's cron schedules on the server
//! (pipelines with source `schedule`, at the minutes a 5-field cron expression names in a
//! time zone), and `gantry schedule polling` for a project's polling interval.

use super::client::{self, Client, Conn, Output, Paging, typed};
use super::project::project_segment;
use anyhow::Result;
use gantry_api::rest::{
    KeyValue, Pipeline, Polling, PollingUpdate, Schedule, ScheduleCreate, ScheduleUpdate,
};
use reqwest::Method;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// A project's schedules, with their next run.
    List(ListArgs),
    /// Create a schedule: `gantry schedule create team/app --cron '0 3 * * *' --description nightly`.
    Create(CreateArgs),
    /// Change a schedule's fields (those given); --active re-computes its next run from now.
    Update(UpdateArgs),
    /// Delete a schedule.
    Delete(IdArgs),
    /// Run a schedule now (its next run stays).
    Play(IdArgs),
    /// Show a project's polling, or set its interval (--interval SECS) or stop it (--off).
    Polling(PollingArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The project: its id or its path (`group/name`).
    pub project: String,
    #[command(flatten)]
    pub paging: Paging,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The project: its id or its path (`group/name`).
    pub project: String,
    /// 5 fields: minute hour day-of-month month day-of-week (e.g. '30 2 * * 1-5').
    #[arg(long)]
    pub cron: String,
    /// What it is for; jobs see it as CI_PIPELINE_SCHEDULE_DESCRIPTION.
    #[arg(long)]
    pub description: String,
    /// An IANA time zone, e.g. Europe/Paris [default: UTC].
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// The branch or tag [default: the project's default branch].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// A variable of its pipelines, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Create it switched off.
    #[arg(long)]
    pub inactive: bool,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The project: its id or its path.
    pub project: String,
    /// The schedule's id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    #[arg(long)]
    pub cron: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Replaces the variables, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Remove every variable.
    #[arg(long, conflicts_with = "vars")]
    pub clear_vars: bool,
    /// Switch it on (the next run is computed from now).
    #[arg(long, conflicts_with = "inactive")]
    pub active: bool,
    /// Switch it off.
    #[arg(long)]
    pub inactive: bool,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The project: its id or its path.
    pub project: String,
    /// The schedule's id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct PollingArgs {
    /// The project: its id or its path.
    pub project: String,
    /// Poll the remote every SECS seconds (the first poll only records the heads).
    #[arg(long, value_name = "SECS", conflicts_with = "off")]
    pub interval: Option<i64>,
    /// Stop polling.
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::List(a) => {
            let client = Client::new(&a.conn)?;
            client::run(list(client, a))
        }
        Command::Create(a) => {
            let client = Client::new(&a.conn)?;
            client::run(create(client, a))
        }
        Command::Update(a) => {
            let client = Client::new(&a.conn)?;
            client::run(update(client, a))
        }
        Command::Delete(a) => {
            let client = Client::new(&a.conn)?;
            client::run(delete(client, a))
        }
        Command::Play(a) => {
            let client = Client::new(&a.conn)?;
            client::run(play(client, a))
        }
        Command::Polling(a) => {
            let client = Client::new(&a.conn)?;
            client::run(polling(client, a))
        }
    }
}

fn base(project: &str) -> String {
    format!("/api/v1/projects/{}/schedules", project_segment(project))
}

fn key_values(vars: &[(String, String)]) -> Vec<KeyValue> {
    vars.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn next_run(s: &Schedule) -> String {
    match (&s.next_run_at_iso, s.active) {
        (Some(iso), _) => iso.clone(),
        (None, false) => "(inactive)".into(),
        (None, true) => "-".into(),
    }
}

fn print_schedule(s: &Schedule) {
    println!(
        "schedule {} of project {}: {}",
        s.id, s.project_id, s.description
    );
    println!("  cron        {} ({})", s.cron, s.time_zone);
    println!("  ref         {}", s.git_ref);
    for v in &s.variables {
        println!("  variable    {}={}", v.key, v.value);
    }
    println!("  active      {}", if s.active { "yes" } else { "no" });
    println!("  next run    {}", next_run(s));
    if let Some(p) = s.last_pipeline_id {
        println!("  last pipeline {p}");
    }
    if let Some(e) = &s.last_error {
        println!("  last error  {e}");
    }
}

async fn show(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    out: Output,
) -> Result<ExitCode> {
    let v = client.call(method, path, body.as_ref()).await?;
    if out.json() {
        client::print_json(&v);
    } else {
        print_schedule(&typed(&v)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: Client, a: ListArgs) -> Result<ExitCode> {
    let path = format!("{}?{}", base(&a.project), a.paging.query());
    let empty = format!(
        "no schedules: add one with `gantry schedule create {} --cron '0 3 * * *' --description nightly`",
        a.project
    );
    client::list(
        &client,
        &path,
        &a.output,
        &a.paging,
        &empty,
        |items: &[Schedule]| {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.description.clone(),
                        s.cron.clone(),
                        s.time_zone.clone(),
                        s.git_ref.clone(),
                        next_run(s),
                        s.last_pipeline_id
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            client::table(
                &[
                    "ID",
                    "DESCRIPTION",
                    "CRON",
                    "ZONE",
                    "REF",
                    "NEXT RUN",
                    "LAST PIPELINE",
                ],
                &rows,
            )
        },
    )
    .await
}

async fn create(client: Client, a: CreateArgs) -> Result<ExitCode> {
    let body = ScheduleCreate {
        description: a.description.clone(),
        cron: a.cron.clone(),
        time_zone: a.time_zone.clone(),
        git_ref: a.git_ref.clone(),
        variables: key_values(&a.vars),
        active: Some(!a.inactive),
    };
    let body = serde_json::to_value(&body)?;
    show(
        &client,
        Method::POST,
        &base(&a.project),
        Some(body),
        a.output,
    )
    .await
}

async fn update(client: Client, a: UpdateArgs) -> Result<ExitCode> {
    let body = ScheduleUpdate {
        description: a.description.clone(),
        cron: a.cron.clone(),
        time_zone: a.time_zone.clone(),
        git_ref: a.git_ref.clone(),
        variables: (a.clear_vars || !a.vars.is_empty()).then(|| key_values(&a.vars)),
        active: match (a.active, a.inactive) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    };
    let path = format!("{}/{}", base(&a.project), a.id);
    let body = serde_json::to_value(&body)?;
    show(&client, Method::PUT, &path, Some(body), a.output).await
}

async fn delete(client: Client, a: IdArgs) -> Result<ExitCode> {
    let path = format!("{}/{}", base(&a.project), a.id);
    client.call(Method::DELETE, &path, None).await?;
    if !a.output.json() {
        println!("schedule {} deleted", a.id);
    }
    Ok(ExitCode::SUCCESS)
}

async fn play(client: Client, a: IdArgs) -> Result<ExitCode> {
    let path = format!("{}/{}/play", base(&a.project), a.id);
    let v = client.post(&path, None).await?;
    if a.output.json() {
        client::print_json(&v);
    } else {
        let p: Pipeline = typed(&v)?;
        println!(
            "pipeline {}: {} (ref {}, source {})",
            p.id, p.status, p.git_ref, p.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn polling(client: Client, a: PollingArgs) -> Result<ExitCode> {
    let path = format!("/api/v1/projects/{}/polling", project_segment(&a.project));
    let v = if a.interval.is_some() || a.off {
        let body = serde_json::to_value(PollingUpdate {
            interval_secs: a.interval,
        })?;
        client.call(Method::PUT, &path, Some(&body)).await?
    } else {
        client.get(&path).await?
    };
    if a.output.json() {
        client::print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let p: Polling = typed(&v)?;
    match p.interval_secs {
        None => println!("project {}: not polled", p.project_id),
        Some(s) => {
            println!("project {}: polled every {s} s", p.project_id);
            println!("  refs seen   {}", p.refs_seen);
            if let Some(t) = p.last_poll_at {
                println!("  last poll   {}", client::ago(t));
            }
            if let Some(e) = &p.last_error {
                println!("  last error  {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
