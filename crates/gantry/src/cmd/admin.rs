//! `gantry admin`: maintenance of a server's data, run on the server's machine with access to
//! its data directory and database (not through the API).

use super::server::{default_data_dir, redact};
use anyhow::{Context, Result, bail};
use gantry_store::secrets::KEY_ENV;
use gantry_store::{Db, Keyring};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add a new key to the secrets key file and re-encrypt every secret of the database with
    /// it (in one transaction). Old keys stay in the file; a running server picks up the new
    /// key by itself.
    RotateKey(RotateArgs),
    /// Make a local user in the server's database (the first administrator: --admin). The
    /// password comes from --password-file, --password-env, or standard input; never from
    /// the command line.
    CreateUser(CreateUserArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateUserArgs {
    pub username: String,
    /// An instance administrator (owner of every project).
    #[arg(long)]
    pub admin: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// A file holding the password.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// The server's data directory [default: $XDG_DATA_HOME/gantry or ~/.local/share/gantry].
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's database, when it is not the data directory's SQLite file.
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// The server's data directory [default: $XDG_DATA_HOME/gantry or ~/.local/share/gantry]:
    /// its secrets.key and gantry.db.
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The key file, when the server is given one with --secrets-key-file.
    #[arg(long, env = "GANTRY_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The server's database, when it is not the data directory's SQLite file.
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    pub database_url: Option<String>,
}

pub fn run(c: Command) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match c {
        Command::RotateKey(a) => rt.block_on(rotate_key(a)),
        Command::CreateUser(a) => rt.block_on(create_user(a)),
    }
}

/// The server's database, from its data directory or URL.
async fn open_db(data: &std::path::Path, url: Option<&str>) -> Result<Db> {
    let db_url = url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", data.join("gantry.db").display()));
    if url.is_none() && !data.join("gantry.db").exists() {
        bail!(
            "{} has no gantry.db: start the server once, or give its data directory \
             (--data-dir) or database (--database-url)",
            data.display()
        );
    }
    Db::connect(&db_url)
        .await
        .with_context(|| format!("opening the database {}", redact(&db_url)))
}

async fn create_user(a: CreateUserArgs) -> Result<ExitCode> {
    use gantry_engine::engine::accounts::{check_password, check_username, hash_password};
    check_username(&a.username)?;
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
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    check_password(&password)?;
    let data = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let db = open_db(&data, a.database_url.as_deref()).await?;
    let hash = hash_password(&password)?;
    let id = db
        .insert_user(&gantry_store::db::NewUser {
            username: a.username.clone(),
            name: a.name.clone().unwrap_or_else(|| a.username.clone()),
            email: a.email.clone().unwrap_or_default(),
            password_hash: hash,
            is_admin: a.admin,
        })
        .await
        .with_context(|| format!("making user {}", a.username))?;
    db.audit(&gantry_store::db::AuditEntry {
        actor: "gantry admin create-user".into(),
        action: "user.create".into(),
        target: format!("user {}", a.username),
        details: Some(serde_json::json!({"admin": a.admin}).to_string()),
        ..Default::default()
    })
    .await?;
    db.close().await;
    let what = if a.admin { "administrator" } else { "user" };
    println!("{what} {} made (id {id})", a.username);
    Ok(ExitCode::SUCCESS)
}

async fn rotate_key(a: RotateArgs) -> Result<ExitCode> {
    let data = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let file = match &a.secrets_key_file {
        Some(f) => f.clone(),
        None if std::env::var_os(KEY_ENV).is_some() => bail!(
            "{KEY_ENV} is set: the server takes its keys from it, and a variable cannot be \
             rotated from here; rotate a key file instead (--secrets-key-file)"
        ),
        None => data.join("secrets.key"),
    };
    if !file.exists() {
        bail!(
            "{} does not exist: give the server's key file (--secrets-key-file) or data directory (--data-dir)",
            file.display()
        );
    }
    let db_url = a
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("gantry.db").display()));
    if db_url.starts_with("sqlite:") && !data.join("gantry.db").exists() && a.database_url.is_none()
    {
        bail!(
            "{} has no gantry.db: give the server's data directory (--data-dir) or database (--database-url)",
            data.display()
        );
    }
    // The database first: if it cannot be reached, the key file stays as it is.
    let db = Db::connect(&db_url)
        .await
        .with_context(|| format!("opening the database {}", redact(&db_url)))?;
    let id = Keyring::rotate_file(&file)?;
    let keyring = Keyring::load_file(&file)?;
    let ids: Vec<&str> = keyring.ids().collect();
    println!(
        "{}: new key {id} (keys: {})",
        file.display(),
        ids.join(", ")
    );
    let n = db.reseal_all(&keyring).await.with_context(|| {
        format!(
            "re-encrypting the database with key {id} failed, and nothing in it changed (the \
             key file keeps every key, so nothing is lost)"
        )
    })?;
    println!("resealed {} values with key {id}", n.written);
    if n.plaintext > 0 {
        // No copy of the plaintext may stay in the database's free space.
        db.scrub()
            .await
            .context("compacting the database after sealing plaintext credentials")?;
        println!(
            "sealed {} plaintext credentials stored before encryption at rest, and compacted the database",
            n.plaintext
        );
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}
