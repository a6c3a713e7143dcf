//! `gantry project add|list`: registering the repositories the server builds. Secrets
//! (a password or token, an SSH key) are read from an environment variable or a file, never
//! taken from the command line, where `ps` and shell history would show them.

use super::client::{self, Client, Conn, Output, Paging, encode_segment, typed};
use anyhow::{Context, Result, bail};
use gantry_api::rest::{Project, ProjectCreate};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Register a project: its path (`group/name`) and git URL.
    Add(AddArgs),
    /// List the projects.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// `group/name` or `name`: what `include:project` and CI_PROJECT_PATH use.
    pub path: String,
    /// A path on the server, or a file://, http(s):// or ssh:// URL; without it, a registry
    /// project (images only, no pipelines).
    #[arg(long, default_value = "")]
    pub git_url: String,
    /// The branch pipelines run for when none is named [default: the remote's HEAD].
    #[arg(long)]
    pub default_branch: Option<String>,
    /// The pipeline file [default: .gantry.yml, else .gitlab-ci.yml].
    #[arg(long)]
    pub pipeline_file: Option<String>,
    /// The user name for an http(s):// remote (with --password-env or --password-file).
    #[arg(long, requires = "password", conflicts_with = "ssh_key_file")]
    pub username: Option<String>,
    /// The environment variable holding the password or token of --username.
    #[arg(long, value_name = "VAR", group = "password", requires = "username")]
    pub password_env: Option<String>,
    /// A file holding the password or token of --username.
    #[arg(long, value_name = "FILE", group = "password", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// A private key (OpenSSH format) for an ssh:// remote.
    #[arg(long, value_name = "FILE")]
    pub ssh_key_file: Option<PathBuf>,
    /// Poll the remote for new commits every SECS seconds (for forges that cannot send
    /// webhooks); the first poll only records the heads.
    #[arg(long, value_name = "SECS")]
    pub poll_interval: Option<i64>,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
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

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Add(a) => {
            let body = create_body(&a)?;
            let client = Client::new(&a.conn)?;
            client::run(add(client, body, a.output))
        }
        Command::List(a) => {
            let client = Client::new(&a.conn)?;
            client::run(list(client, a))
        }
    }
}

/// A secret from a file, without its trailing newline.
fn read_secret(file: &Path, what: &str) -> Result<String> {
    let s = std::fs::read_to_string(file)
        .with_context(|| format!("reading the {what} from {}", file.display()))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("{} is empty: no {what} in it", file.display());
    }
    Ok(s)
}

fn create_body(a: &AddArgs) -> Result<ProjectCreate> {
    let password = match (&a.password_env, &a.password_file) {
        (Some(var), _) => Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("--password-env {var}: the variable is not set"))?,
        ),
        (None, Some(f)) => Some(read_secret(f, "password")?),
        (None, None) => None,
    };
    let ssh_key = match &a.ssh_key_file {
        Some(f) => {
            let mut k = read_secret(f, "SSH key")?;
            k.push('\n');
            Some(k)
        }
        None => None,
    };
    Ok(ProjectCreate {
        path: a.path.trim_matches('/').to_string(),
        git_url: local_url(&a.git_url),
        default_branch: a.default_branch.clone(),
        pipeline_file: a.pipeline_file.clone(),
        username: a.username.clone(),
        password,
        ssh_key,
        webhook_secret: None,
        poll_interval_secs: a.poll_interval,
    })
}

/// A relative path to a repository on this machine becomes absolute: the server resolves
/// paths from its own directory, not the caller's.
fn local_url(url: &str) -> String {
    let p = Path::new(url);
    if !url.contains("://")
        && p.is_relative()
        && p.exists()
        && let Ok(abs) = std::fs::canonicalize(p)
    {
        return abs.display().to_string();
    }
    url.to_string()
}

async fn add(client: Client, body: ProjectCreate, out: Output) -> Result<ExitCode> {
    let v = client
        .post("/api/v1/projects", Some(&serde_json::to_value(&body)?))
        .await?;
    if out.json() {
        client::print_json(&v);
    } else {
        let p: Project = typed(&v)?;
        println!("project {} {}", p.id, p.path);
        println!("  git url         {}", p.git_url);
        println!("  default branch  {}", p.default_branch);
        if let Some(f) = &p.pipeline_file {
            println!("  pipeline file   {f}");
        }
        if let Some(secret) = &p.webhook_secret {
            println!("  webhook secret  {secret}");
            println!(
                "                  (shown once: give it to the forge's webhook, sent to /api/v1/hooks/FORGE/{})",
                p.path
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: Client, a: ListArgs) -> Result<ExitCode> {
    let path = format!("/api/v1/projects?{}", a.paging.query());
    let empty = "no projects: add one with `gantry project add PATH --git-url URL`";
    client::list(
        &client,
        &path,
        &a.output,
        &a.paging,
        empty,
        |items: &[Project]| {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.path.clone(),
                        p.git_url.clone(),
                        p.default_branch.clone(),
                        p.pipeline_file.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            client::table(&["ID", "PATH", "GIT URL", "BRANCH", "PIPELINE FILE"], &rows)
        },
    )
    .await
}

/// A project id or path as one URL path segment.
pub fn project_segment(project: &str) -> String {
    let p = project.trim().trim_matches('/');
    encode_segment(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_segments() {
        assert_eq!(project_segment("12"), "12");
        assert_eq!(project_segment("group/sub/name"), "group%2Fsub%2Fname");
        assert_eq!(project_segment("/group/name/"), "group%2Fname");
    }

    #[test]
    fn relative_local_paths_become_absolute() {
        assert_eq!(local_url("https://x/y.git"), "https://x/y.git");
        assert_eq!(local_url("/abs/repo"), "/abs/repo");
        assert_eq!(local_url("does-not-exist-here"), "does-not-exist-here");
        assert!(local_url(".").starts_with('/'));
    }
}
