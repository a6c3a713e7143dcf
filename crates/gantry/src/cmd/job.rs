//! `gantry job log|retry|play|cancel`. `job log` copies the log to stdout as it comes, never
//! holding all of it; `job log -f` follows the server-sent events of a running job and, when
//! the connection drops, resumes from the last event's id (the log offset after it), so no
//! byte is printed twice or lost. It exits with the job's result.

use super::client::{self, ApiFailure, Client, Conn, Output, SseParser, typed};
use anyhow::Result;
use futures_util::StreamExt;
use gantry_api::rest::Job;
use reqwest::Method;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `-f` keeps reconnecting without hearing from the server.
const PATIENCE: Duration = Duration::from_secs(60);
/// Silence after which a stream counts as dropped (the server sends a keep-alive every 15 s).
const IDLE: Duration = Duration::from_secs(45);

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a job's log; with -f, follow it until the job finishes (exit 0 if it succeeded).
    Log(LogArgs),
    /// Run a finished job again as a new attempt.
    Retry(IdArgs),
    /// Start a manual job.
    Play(IdArgs),
    /// Cancel a job.
    Cancel(IdArgs),
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The job's id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    /// Follow the log as it grows until the job finishes; exit 0 only if it succeeded.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The job's id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Log(a) => {
            let client = Client::new(&a.conn)?;
            client::run(async move {
                let mut out = std::io::stdout();
                if a.follow {
                    follow(&client, a.id, &mut out).await
                } else {
                    whole(&client, a.id, &mut out).await
                }
            })
        }
        Command::Retry(a) => {
            let client = Client::new(&a.conn)?;
            client::run(act(client, a, "retry"))
        }
        Command::Play(a) => {
            let client = Client::new(&a.conn)?;
            client::run(act(client, a, "play"))
        }
        Command::Cancel(a) => {
            let client = Client::new(&a.conn)?;
            client::run(act(client, a, "cancel"))
        }
    }
}

/// Writes and flushes; `Ok(false)` when the reader has gone (`| head`).
fn emit(out: &mut dyn Write, bytes: &[u8]) -> Result<bool> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The whole log, piece by piece as the server sends it.
pub async fn whole(client: &Client, id: i64, out: &mut dyn Write) -> Result<ExitCode> {
    let resp = client
        .send(client.request(Method::GET, &format!("/api/v1/jobs/{id}/log")))
        .await?;
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| client.unreachable(&e))?;
        if !emit(out, &piece)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ApiFailure {
    ApiFailure {
        message: format!("the server sent a malformed {what} event: {e}"),
        exit: 1,
        status: None,
    }
}

/// Follows the log's event stream to its `end` event, reconnecting after drops.
pub async fn follow(client: &Client, id: i64, out: &mut dyn Write) -> Result<ExitCode> {
    let path = format!("/api/v1/jobs/{id}/log/stream");
    // The log offset up to which bytes are printed, and the id to resume from.
    let mut printed: u64 = 0;
    let mut last_id: Option<String> = None;
    let mut quiet_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut rb = client
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(last) = &last_id {
            rb = rb.header("Last-Event-ID", last.as_str());
        }
        match client.send(rb).await {
            Err(f) if !f.transient() => return Err(f.into()),
            Err(f) => {
                if quiet_since.get_or_insert_with(Instant::now).elapsed() > PATIENCE {
                    return Err(f.into());
                }
            }
            Ok(resp) => {
                let mut parser = SseParser::new();
                let mut body = resp.bytes_stream();
                // Until the stream ends, errs or goes silent: then reconnect.
                while let Ok(Some(Ok(piece))) = tokio::time::timeout(IDLE, body.next()).await {
                    quiet_since = None;
                    backoff = Duration::from_millis(100);
                    for ev in parser.feed(&piece) {
                        match ev.event.as_str() {
                            "log" => {
                                let d: serde_json::Value = serde_json::from_str(&ev.data)
                                    .map_err(|e| malformed("log", e))?;
                                let text = d["text"].as_str().unwrap_or_default();
                                let from = d["offset"].as_u64().unwrap_or(printed);
                                let end = ev
                                    .id
                                    .as_deref()
                                    .and_then(|i| i.trim().parse::<u64>().ok())
                                    .unwrap_or(from + text.len() as u64);
                                if end <= printed {
                                    continue; // already printed
                                }
                                let mut bytes = text.as_bytes();
                                let overlap = printed.saturating_sub(from) as usize;
                                if overlap > 0 && end - from == bytes.len() as u64 {
                                    bytes = &bytes[overlap..];
                                }
                                if !emit(out, bytes)? {
                                    return Ok(ExitCode::SUCCESS);
                                }
                                printed = end;
                                last_id = Some(ev.id.clone().unwrap_or_else(|| end.to_string()));
                            }
                            "end" => {
                                let d: serde_json::Value = serde_json::from_str(&ev.data)
                                    .map_err(|e| malformed("end", e))?;
                                let status = d["status"].as_str().unwrap_or("unknown");
                                if status == "success" {
                                    return Ok(ExitCode::SUCCESS);
                                }
                                eprintln!("job {id} {status}");
                                return Ok(ExitCode::FAILURE);
                            }
                            "error" => {
                                return Err(ApiFailure {
                                    message: format!(
                                        "the server could not read the log of job {id}: {}",
                                        ev.data
                                    ),
                                    exit: 1,
                                    status: None,
                                }
                                .into());
                            }
                            _ => {}
                        }
                    }
                }
                if quiet_since.get_or_insert_with(Instant::now).elapsed() > PATIENCE {
                    return Err(ApiFailure {
                        message: format!(
                            "lost the log stream of job {id} at byte {printed} and could not \
                             resume it"
                        ),
                        exit: 1,
                        status: None,
                    }
                    .into());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn act(client: Client, a: IdArgs, verb: &str) -> Result<ExitCode> {
    let body = match verb {
        "play" => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| serde_json::json!({ "user": u })),
        _ => None,
    };
    let v = client
        .post(&format!("/api/v1/jobs/{}/{verb}", a.id), body.as_ref())
        .await?;
    if a.output.json() {
        client::print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let j: Job = typed(&v)?;
    match verb {
        "retry" => println!(
            "job {} {}: {} (attempt {}, a retry of job {})",
            j.id, j.name, j.status, j.attempt, a.id
        ),
        _ => println!("job {} {}: {}", j.id, j.name, j.status),
    }
    Ok(ExitCode::SUCCESS)
}
