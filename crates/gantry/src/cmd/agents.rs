//! `gantry agent list`: the agents the server knows, online or not.
//!
//! `gantry agent` itself runs an agent (its flags are in `agent.rs`). [`AgentCommand`] puts
//! both under one name: with a subcommand (`list`) the agent's own flags are neither required
//! nor allowed; without one, `gantry agent --server … --tags …` parses exactly as before.

use super::client::{self, Client, Conn, Output, Paging};
use anyhow::Result;
use clap::{ArgMatches, FromArgMatches};
use gantry_api::rest::Agent;
use std::process::ExitCode;

/// `gantry agent [FLAGS]` (run an agent) or `gantry agent list`.
#[derive(Debug)]
pub enum AgentCommand {
    Run(Box<super::agent::Args>),
    Sub(Sub),
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List the agents: online or not, executor, tags, running jobs, last seen.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub paging: Paging,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

impl FromArgMatches for AgentCommand {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        match m.subcommand_name() {
            Some(_) => Ok(AgentCommand::Sub(Sub::from_arg_matches(m)?)),
            None => Ok(AgentCommand::Run(Box::new(
                super::agent::Args::from_arg_matches(m)?,
            ))),
        }
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for AgentCommand {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = <super::agent::Args as clap::Args>::augment_args(cmd);
        <Sub as clap::Subcommand>::augment_subcommands(cmd)
            .subcommand_negates_reqs(true)
            .args_conflicts_with_subcommands(true)
            .subcommand_required(false)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub fn run(c: AgentCommand) -> Result<ExitCode> {
    match c {
        AgentCommand::Run(a) => super::agent::run(*a),
        AgentCommand::Sub(Sub::List(a)) => {
            let client = Client::new(&a.conn)?;
            client::run(list(client, a))
        }
    }
}

async fn list(client: Client, a: ListArgs) -> Result<ExitCode> {
    let path = format!("/api/v1/agents?{}", a.paging.query());
    let empty = "no agents: start one with `gantry agent --server URL --token REGISTRATION_TOKEN`";
    client::list(&client, &path, &a.output, &a.paging, empty, agents_table).await
}

fn agents_table(agents: &[Agent]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut tags = a.tags.join(",");
            if a.run_untagged {
                if !tags.is_empty() {
                    tags.push(',');
                }
                tags.push_str("(untagged)");
            }
            vec![
                a.id.to_string(),
                a.name.clone(),
                if a.online { "yes" } else { "no" }.to_string(),
                a.executor.clone(),
                tags,
                format!("{}/{}", a.running, a.concurrency),
                a.last_seen_at.map(client::ago).unwrap_or_default(),
            ]
        })
        .collect();
    client::table(
        &[
            "ID",
            "NAME",
            "ONLINE",
            "EXECUTOR",
            "TAGS",
            "RUNNING",
            "LAST SEEN",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_table_shows_tags_and_load() {
        let a = Agent {
            id: 3,
            name: "box".into(),
            tags: vec!["docker".into(), "linux".into()],
            run_untagged: true,
            executor: "docker".into(),
            concurrency: 4,
            online: true,
            running: 1,
            last_seen_at: None,
            version: "0.1.0".into(),
        };
        let t = agents_table(&[a]);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("3   box   yes     docker    docker,linux,(untagged)  1/4"),
            "{t}"
        );
    }
}
