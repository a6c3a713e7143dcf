//! `gantry login`: signs a user in and makes a personal access token for the command line,
//! printed once, to put in `GANTRY_TOKEN`. The password is read from standard input, a file or
//! an environment variable, never from the command line.

use super::client::{self, Client, typed};
use anyhow::{Context, Result, bail};
use gantry_api::rest::AccessToken;
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The user to sign in as.
    #[arg(long, short = 'u')]
    pub username: String,
    /// A file holding the password.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// The token's scopes (repeatable): api, read_api, read_registry, write_registry.
    #[arg(long = "scope", default_value = "api")]
    pub scopes: Vec<String>,
    /// Days until the token stops working [default: never].
    #[arg(long)]
    pub expires_days: Option<u32>,
    /// The Gantry server's URL.
    #[arg(long, env = "GANTRY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let password = match (&a.password_file, &a.password_env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the password from {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, Some(var)) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("--password-env {var}: the variable is not set"))?,
        (None, None) => {
            eprint!("password for {}: ", a.username);
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        bail!("no password given");
    }
    let client = Client::with_token(&a.server, None)?;
    client::run(login(client, a, password))
}

async fn login(client: Client, a: Args, password: String) -> Result<ExitCode> {
    let rb = client
        .request(Method::POST, "/api/v1/session")
        .json(&json!({"username": a.username, "password": password}));
    let resp = client.send(rb).await?;
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = resp.bytes().await.map_err(|e| client.unreachable(&e))?;
    let session: serde_json::Value = serde_json::from_slice(&body)?;
    let cookie = cookie.context("the server answered without a session cookie")?;
    let csrf = session["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".into());
    let expires_at = a.expires_days.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        now + i64::from(d) * 86_400_000
    });
    let rb = client
        .request(Method::POST, "/api/v1/user/tokens")
        .header(reqwest::header::COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": format!("gantry login ({host})"), "scopes": a.scopes, "expires_at": expires_at}));
    let made = client.send(rb).await?;
    let token: AccessToken = typed(&made.json().await.map_err(|e| client.unreachable(&e))?)?;
    // The session was only for this: end it.
    let _ = client
        .send(
            client
                .request(Method::DELETE, "/api/v1/session")
                .header(reqwest::header::COOKIE, &cookie)
                .header("X-CSRF-Token", &csrf),
        )
        .await;
    let value = token.token.unwrap_or_default();
    eprintln!(
        "signed in as {}; a personal access token ({}) for this machine, shown once:",
        a.username,
        token
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "export GANTRY_SERVER={} GANTRY_TOKEN={value}",
        client.base()
    );
    Ok(ExitCode::SUCCESS)
}
