//! `gantry`: the one binary. Subcommands are thin: they parse arguments, call the library
//! crates and print. See ARCHITECTURE.md for the map.

mod cmd;
mod repo;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "gantry",
    version,
    about = "Container CI/CD in one binary: pipelines in the GitLab CI dialect, from commit to production."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a pipeline file and print every problem with its line (exit 1 on errors).
    Lint(cmd::lint::Args),
    /// Print the fully merged pipeline (includes, extends, !reference resolved).
    Config(cmd::config::Args),
    /// Show the jobs that would run for an event, their order, and why.
    Plan(cmd::plan::Args),
    /// Run the pipeline on this machine from the working tree (shell or Docker executor).
    Run(Box<cmd::run::Args>),
    /// Print a JSON Schema of the pipeline file for editors.
    Schema,
    /// Run the server's jobs on this machine (registers once, then takes pushed jobs);
    /// `gantry agent list` lists the server's agents.
    Agent(Box<cmd::agents::AgentCommand>),
    /// Run the server: the API, the store, the scheduler and (by default) an agent.
    Server(Box<cmd::server::Args>),
    /// Run the OCI registry alone: `/v2/` and the API that manages it (users, tokens,
    /// projects, members, robot accounts, registry settings, promotion, collection); no CI.
    Registry(Box<cmd::server::Args>),
    /// Maintain a server's data on its machine: rotate-key.
    #[command(subcommand)]
    Admin(cmd::admin::Command),
    /// Projects on the server: add, list.
    #[command(subcommand)]
    Project(cmd::project::Command),
    /// Pipelines on the server: run (and --wait), list, show, cancel, retry.
    #[command(subcommand)]
    Pipeline(cmd::pipeline::Command),
    /// Jobs on the server: log (-f to follow), retry, play, cancel.
    #[command(subcommand)]
    Job(cmd::job::Command),
    /// Sign in as a user and print a personal access token for GANTRY_TOKEN.
    Login(cmd::login::Args),
    /// Pipelines for pushes to a local bare repository, with no forge: install.
    #[command(subcommand)]
    Hook(cmd::hook::Command),
    /// Cron schedules on the server: list, create, update, delete, play; polling.
    #[command(subcommand)]
    Schedule(cmd::schedule::Command),
    /// Images in the registry: promote by digest.
    #[command(subcommand)]
    Image(cmd::image::Command),
}

/// glibc malloc arenas of the long-running commands (see `gantry_malloc`).
const MALLOC_ARENAS: i32 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(a) => cmd::lint::run(a),
        Command::Config(a) => cmd::config::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Run(a) => cmd::run::run(*a),
        Command::Schema => cmd::schema::run(),
        Command::Agent(a) => {
            gantry_malloc::limit_arenas(MALLOC_ARENAS);
            cmd::agents::run(*a)
        }
        Command::Server(a) => {
            gantry_malloc::limit_arenas(MALLOC_ARENAS);
            cmd::server::run(*a)
        }
        Command::Registry(a) => {
            gantry_malloc::limit_arenas(MALLOC_ARENAS);
            cmd::server::run_registry(*a)
        }
        Command::Admin(c) => cmd::admin::run(c),
        Command::Project(c) => cmd::project::run(c),
        Command::Pipeline(c) => cmd::pipeline::run(c),
        Command::Job(c) => cmd::job::run(c),
        Command::Hook(c) => cmd::hook::run(c),
        Command::Login(a) => cmd::login::run(a),
        Command::Schedule(c) => cmd::schedule::run(c),
        Command::Image(c) => cmd::image::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
