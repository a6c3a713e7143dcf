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
    match c {
        Command::RotateKey(a) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(rotate_key(a))
        }
    }
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
