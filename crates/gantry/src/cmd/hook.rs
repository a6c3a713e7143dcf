//! `gantry hook install REPO`: pipelines for pushes to a plain bare repository, with no forge.
//!
//! `install` registers the repository as a project on the server (or takes the project that
//! already builds it), gives the project a new webhook secret, and writes two files into the
//! repository's `hooks/`: `gantry-hook.json` (the server, the project, the secret; readable by
//! the repository's owner only) and a `post-receive` script that runs `gantry hook
//! post-receive`. That command reads git's `OLD NEW REF` lines and posts one push per ref to
//! `POST /api/v1/hooks/git/{project}`, which creates the pipeline as a forge's webhook would;
//! the pusher sees each pipeline's number in `git push`'s output (`remote: …`). A server that
//! cannot be reached does not fail the push (it has happened already): the hook says so.

use super::client::{self, ApiFailure, Client, Conn, encode_segment, typed};
use anyhow::{Context, Result, bail};
use gantry_api::rest::{HookReply, Project, ProjectCreate, WebhookSecret};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The hook's settings, next to it in `hooks/`.
const SETTINGS: &str = "gantry-hook.json";
/// Marks a `post-receive` written by `install`, so that installing again may replace it.
const MARK: &str = "# Installed by `gantry hook install`";

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make a `git push` to a local bare repository start its pipeline: registers the
    /// repository as a project (unless one builds it already) and installs a post-receive hook.
    Install(InstallArgs),
    /// What the installed post-receive hook runs: reads git's "OLD NEW REF" lines from
    /// standard input and tells the server of each.
    PostReceive,
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The bare repository (`git init --bare`).
    pub repo: PathBuf,
    /// The project's path on the server [default: the repository's directory name without
    /// `.git`].
    #[arg(long)]
    pub project: Option<String>,
    /// Replace a post-receive hook that `gantry hook install` did not write.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// What `gantry-hook.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    server: String,
    project: String,
    webhook_secret: String,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Install(a) => {
            let client = Client::new(&a.conn)?;
            client::run(install(client, a))
        }
        Command::PostReceive => post_receive(),
    }
}

async fn install(client: Client, a: InstallArgs) -> Result<ExitCode> {
    let repo = std::fs::canonicalize(&a.repo)
        .with_context(|| format!("{}: no such repository", a.repo.display()))?;
    if !is_bare(&repo) {
        bail!(
            "{} is not a bare git repository (it needs HEAD, objects/ and refs/): create one \
             with `git init --bare {}`",
            repo.display(),
            repo.display()
        );
    }
    let hooks = repo.join("hooks");
    let script = hooks.join("post-receive");
    if let Ok(existing) = std::fs::read_to_string(&script)
        && !existing.contains(MARK)
        && !a.force
    {
        bail!(
            "{} already has a post-receive hook that Gantry did not write: move it away, or \
             pass --force to replace it",
            repo.display()
        );
    }
    let path = match &a.project {
        Some(p) => p.trim_matches('/').to_string(),
        None => default_project_path(&repo)?,
    };
    let git_url = repo.display().to_string();
    let segment = encode_segment(&path);
    let (project, secret) = match client.get(&format!("/api/v1/projects/{segment}")).await {
        Ok(v) => {
            let p: Project = typed(&v)?;
            if Path::new(&p.git_url) != repo {
                bail!(
                    "project {path} on the server builds {}, not {}: choose another name with \
                     --project",
                    p.git_url,
                    repo.display()
                );
            }
            let v = client
                .post(&format!("/api/v1/projects/{segment}/webhook-secret"), None)
                .await?;
            let s: WebhookSecret = typed(&v)?;
            (p, s.webhook_secret)
        }
        Err(ApiFailure {
            status: Some(404), ..
        }) => {
            let body = ProjectCreate {
                path: path.clone(),
                git_url,
                default_branch: head_branch(&repo),
                pipeline_file: None,
                username: None,
                password: None,
                ssh_key: None,
                webhook_secret: None,
                poll_interval_secs: None,
            };
            let v = client
                .post("/api/v1/projects", Some(&serde_json::to_value(&body)?))
                .await?;
            let mut p: Project = typed(&v)?;
            let secret = p
                .webhook_secret
                .take()
                .context("the server made the project without a webhook secret")?;
            (p, secret)
        }
        Err(e) => return Err(e.into()),
    };
    let settings = Settings {
        server: client.base().to_string(),
        project: project.path.clone(),
        webhook_secret: secret,
    };
    std::fs::create_dir_all(&hooks)?;
    write_private(
        &hooks.join(SETTINGS),
        serde_json::to_string_pretty(&settings)?.as_bytes(),
    )?;
    let exe = std::env::current_exe().context("finding this gantry binary")?;
    let text = format!(
        "#!/bin/sh\n{MARK}: tells the Gantry server at {} of every push\n\
         # (project {}); settings in hooks/{SETTINGS}.\nexec {} hook post-receive\n",
        settings.server,
        project.path,
        shell_quote(&exe.display().to_string())
    );
    write_executable(&script, text.as_bytes())?;
    println!("project {} {}", project.id, project.path);
    println!("  repository  {}", repo.display());
    println!("  hook        {}", script.display());
    println!(
        "a push to this repository now starts its pipeline on {}",
        settings.server
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs in the repository (git sets `GIT_DIR`, or starts hooks in the bare repository).
fn post_receive() -> Result<ExitCode> {
    let git_dir = std::env::var_os("GIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let file = git_dir.join("hooks").join(SETTINGS);
    let settings: Settings = serde_json::from_slice(&std::fs::read(&file).with_context(|| {
        format!(
            "reading {}: run `gantry hook install` again",
            file.display()
        )
    })?)
    .with_context(|| format!("{} is not the hook's settings", file.display()))?;
    let pusher = ["GL_USERNAME", "REMOTE_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_default();
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        if let (Some(before), Some(after), Some(git_ref)) =
            (parts.next(), parts.next(), parts.next())
        {
            updates.push(gantry_engine::forge::git::RefUpdate {
                git_ref: git_ref.to_string(),
                before: before.to_string(),
                after: after.to_string(),
                pusher: pusher.clone(),
            });
        }
    }
    let client = Client::with_token(&settings.server, None)?;
    client::run(async move {
        let path = format!("/api/v1/hooks/git/{}", encode_segment(&settings.project));
        for u in &updates {
            let delivery = hex_id();
            let rb = client
                .request(reqwest::Method::POST, &path)
                .header("X-Gantry-Event", "push")
                .header("X-Gantry-Token", &settings.webhook_secret)
                .header("X-Gantry-Delivery", &delivery)
                .json(u);
            let short = u.git_ref.rsplit_once('/').map_or(&*u.git_ref, |(_, n)| n);
            match client.send(rb).await {
                Ok(resp) => match resp.json::<HookReply>().await {
                    Ok(HookReply {
                        pipeline_id: Some(id),
                        status,
                        ..
                    }) => {
                        let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
                        eprintln!(
                            "gantry: pipeline {id} for {short}{status}: {}/api/v1/pipelines/{id}",
                            settings.server
                        );
                    }
                    Ok(HookReply { reason, .. }) => {
                        eprintln!(
                            "gantry: no pipeline for {short}: {}",
                            reason.unwrap_or_default()
                        );
                    }
                    Err(e) => eprintln!("gantry: the server's answer for {short}: {e}"),
                },
                Err(f) => eprintln!("gantry: no pipeline for {short}: {}", f.message),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn is_bare(repo: &Path) -> bool {
    repo.join("HEAD").is_file() && repo.join("objects").is_dir() && repo.join("refs").is_dir()
}

/// `/srv/git/app.git` → `app`.
fn default_project_path(repo: &Path) -> Result<String> {
    let name = repo
        .file_name()
        .and_then(|n| n.to_str())
        .context("the repository's directory has no usable name: pass --project")?;
    let name = name.strip_suffix(".git").unwrap_or(name);
    if name.is_empty() {
        bail!("the repository's directory has no usable name: pass --project");
    }
    Ok(name.to_string())
}

/// The branch the repository's `HEAD` names (`ref: refs/heads/main`), for a repository that
/// has no branch yet.
fn head_branch(repo: &Path) -> Option<String> {
    let head = std::fs::read_to_string(repo.join("HEAD")).ok()?;
    head.trim()
        .strip_prefix("ref: refs/heads/")
        .map(str::to_string)
}

/// Sixteen random bytes in hex: one delivery's id.
fn hex_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o600)
}

#[cfg(unix)]
fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o755)
}

/// Writes a file through a temporary one in the same directory, with its mode set before
/// the secret is written, and renames it into place.
#[cfg(unix)]
fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_and_head_branches() {
        assert_eq!(
            default_project_path(Path::new("/srv/git/app.git")).unwrap(),
            "app"
        );
        assert_eq!(default_project_path(Path::new("/srv/app")).unwrap(), "app");
        assert!(default_project_path(Path::new("/srv/.git")).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("HEAD"), "ref: refs/heads/trunk\n").unwrap();
        assert_eq!(head_branch(dir.path()).as_deref(), Some("trunk"));
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
