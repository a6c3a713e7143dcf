//! `gantry agent`: runs the server's jobs on this machine. Registers once with the server's
//! registration token (the agent's own id and token are kept in the state directory), keeps
//! one connection over which the server pushes jobs, and runs them with the executors of
//! `gantry run`. Ctrl-C or SIGTERM cancels the running jobs, reports them canceled and exits.

use anyhow::{Result, bail};
use gantry_runner::agent::{self, AgentConfig, AgentEvent, ExecutorKind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    Shell,
    Docker,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's URL, e.g. http://ci.example:8080.
    #[arg(long, env = "GANTRY_SERVER")]
    pub server: String,
    /// The server's registration token (needed until the agent has registered).
    #[arg(long, env = "GANTRY_REGISTRATION_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tags of the jobs this agent takes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Take jobs without tags too (the default when no --tags are given).
    #[arg(long)]
    pub run_untagged: bool,
    #[arg(long, value_enum, default_value = "shell")]
    pub executor: Executor,
    /// The image of Docker jobs that set none.
    #[arg(long)]
    pub docker_image: Option<String>,
    /// How many jobs may run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// The agent's name on the server (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Credentials, spilled logs and caches (default: $XDG_STATE_HOME/gantry/agent).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where jobs' workspaces go (default: <state dir>/builds).
    #[arg(long)]
    pub builds_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut config = AgentConfig::new(a.server.clone(), a.token.clone());
    config.tags = a
        .tags
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    config.run_untagged = a.run_untagged || config.tags.is_empty();
    config.executor = match a.executor {
        Executor::Shell => ExecutorKind::Shell,
        Executor::Docker => ExecutorKind::Docker,
    };
    config.docker_image = a.docker_image.clone();
    config.concurrency = a.concurrency;
    if let Some(n) = &a.name {
        config.name = n.clone();
    }
    if let Some(d) = &a.state_dir {
        config.state_dir = d.clone();
        config.builds_dir = d.join("builds");
    }
    if let Some(d) = &a.builds_dir {
        config.builds_dir = d.clone();
    }
    let connected_once = Arc::new(AtomicBool::new(false));
    config.on_event = Some(Arc::new(move |e: &AgentEvent| match e {
        AgentEvent::Connected { agent_id, server } => {
            if !connected_once.swap(true, Ordering::SeqCst) {
                println!("Connected to {server} as agent {agent_id}; waiting for jobs");
            } else {
                eprintln!("Reconnected to {server}");
            }
        }
        AgentEvent::Disconnected { reason } => eprintln!("Disconnected: {reason}; retrying"),
        AgentEvent::Registered { agent_id } => eprintln!("Registered as agent {agent_id}"),
        AgentEvent::JobStarted { job_id, name } => eprintln!("Job {job_id} ({name}) started"),
        AgentEvent::JobFinished { job_id, status } => eprintln!("Job {job_id} {status}"),
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("Stopping: canceling running jobs");
                shutdown.cancel();
            });
        }
        agent::run(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
