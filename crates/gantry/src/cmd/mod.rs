//! One module per subcommand, plus what they share: finding and loading the pipeline file.

pub mod admin;
pub mod agent;
pub mod agents;
pub mod client;
pub mod config;
pub mod hook;
pub mod image;
pub mod job;
pub mod lint;
pub mod login;
pub mod pipeline;
pub mod plan;
pub mod project;
pub mod remote;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod server;

use crate::repo::{FsFetcher, Repo, read_text};
use anyhow::{Result, bail};
use gantry_pipeline::Loaded;
use std::path::PathBuf;

/// Options every pipeline-reading command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Source {
    /// The pipeline file (default: .gantry.yml, else .gitlab-ci.yml, at the repository root).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Work in this directory instead of the current one.
    #[arg(long, short = 'C', default_value = ".")]
    pub dir: PathBuf,
    /// Read `include: project: NAME` from a local checkout: NAME=DIR (repeatable).
    #[arg(long = "project", value_name = "NAME=DIR")]
    pub projects: Vec<String>,
}

impl Source {
    pub fn repo(&self) -> Repo {
        Repo::discover(&self.dir)
    }

    /// Loads, resolves and builds the pipeline. `vars` are the variables include rules see.
    pub fn load(&self, vars: &dyn Fn(&str) -> Option<String>) -> Result<Loaded> {
        let repo = self.repo();
        let file = repo.pipeline_file(
            self.file
                .as_deref()
                .map(|f| {
                    if f.is_relative() && !f.exists() {
                        self.dir.join(f)
                    } else {
                        f.to_path_buf()
                    }
                })
                .as_deref(),
        )?;
        let text = read_text(&file)?;
        let mut projects = Vec::new();
        for p in &self.projects {
            let Some((name, dir)) = p.split_once('=') else {
                bail!("--project takes NAME=DIR, got '{p}'");
            };
            projects.push((name.to_string(), PathBuf::from(dir)));
        }
        let name = repo.display_name(&file);
        let fetcher = FsFetcher { repo, projects };
        Ok(gantry_pipeline::load(&name, &text, &fetcher, vars))
    }
}

/// Output formats for machine-readable commands.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Parses `K=V`.
pub fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got '{s}'")),
    }
}
