//! `gantry server`: the store, the engine and the HTTP API in one process, with an agent
//! of its own unless `--no-local-agent`; the registry, its collection task and its
//! replication (the engine's worker, the registry's copy).
//!
//! The data directory holds everything of the embedded default: `gantry.db` (SQLite),
//! `logs/`, `blobs/` (unless `--blob-store` puts them in a bucket: [`blobs`]), `git/` (the
//! mirrors), the local agent's state, and three secrets made on first start, readable by the
//! owner only: `admin-token` (the API's administrator),
//! `registration-token` (for `gantry agent --token`) and `secrets.key`, the keyring that
//! encrypts project credentials and webhook secrets in the database (see [`keyring`]).

mod blobs;
mod notify;

use anyhow::{Context, Result};
use gantry_engine::{Engine, EngineConfig};
use gantry_runner::agent::{AgentConfig, ExecutorKind};
use gantry_server::AppState;
use gantry_store::logs::LogStore;
use gantry_store::secrets::KEY_ENV;
use gantry_store::{Db, Keyring};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where everything is kept [default: $XDG_DATA_HOME/gantry or ~/.local/share/gantry].
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one; the line `listening on URL` says which).
    #[arg(long, default_value = "127.0.0.1:8080", env = "GANTRY_LISTEN")]
    pub listen: String,
    /// `postgres://user@host/db` for PostgreSQL [default: SQLite in the data directory].
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// How agents and jobs reach this server [default: http://LISTEN].
    #[arg(long, env = "GANTRY_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// The agents' registration token [default: made once, kept in DATA_DIR/registration-token].
    #[arg(long, env = "GANTRY_REGISTRATION_TOKEN", hide_env_values = true)]
    pub registration_token: Option<String>,
    /// Do not run an agent inside the server.
    #[arg(long)]
    pub no_local_agent: bool,
    /// The local agent's executor.
    #[arg(long, value_enum, default_value = "shell")]
    pub local_agent_executor: Executor,
    /// How many jobs the local agent runs at once [default: the number of CPUs].
    #[arg(long)]
    pub local_agent_concurrency: Option<u32>,
    /// Seconds without a heartbeat after which a running job fails as runner_system_failure.
    #[arg(long, default_value_t = 30)]
    pub lease_timeout: u64,
    /// Seconds between agents' heartbeats.
    #[arg(long, default_value_t = 5)]
    pub heartbeat: u64,
    /// The key file that encrypts secrets in the database [default: GANTRY_SECRETS_KEY when
    /// set, else DATA_DIR/secrets.key, made at first start].
    #[arg(long, env = "GANTRY_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Days the audit log keeps its entries.
    #[arg(long, default_value_t = 365, env = "GANTRY_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: u64,
    /// fsync each registry blob before acknowledging it, so that pushed images survive a
    /// power cut and not only a crash of the server (costs milliseconds per blob). Without
    /// it the registry promises what the embedded SQLite database promises.
    #[arg(long, env = "GANTRY_REGISTRY_DURABLE")]
    pub registry_durable: bool,
    /// Seconds between the registry's garbage collections (0: never; then run it with
    /// `POST /api/v1/registry/gc`).
    #[arg(long, default_value_t = 3600, env = "GANTRY_REGISTRY_GC_INTERVAL")]
    pub registry_gc_interval: u64,
    /// Seconds during which new links, blobs and uploads are never collected.
    #[arg(long, default_value_t = 3600, env = "GANTRY_REGISTRY_GC_GRACE")]
    pub registry_gc_grace: u64,
    /// Milliseconds before the first retry of a replication run that failed for a reason
    /// that may pass (an unreachable or busy destination); doubled at each attempt, up to 30
    /// minutes, 5 attempts in all.
    #[arg(
        long,
        default_value_t = 30_000,
        env = "GANTRY_REPLICATION_RETRY_MS",
        hide = true
    )]
    pub replication_retry_ms: u64,
    /// Where blobs are kept: a directory, or S3-compatible object storage.
    #[command(flatten)]
    pub blobs: blobs::BlobArgs,
    /// Email (SMTP) and the outbox of commit statuses and notifications.
    #[command(flatten)]
    pub notify: notify::NotifyArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Executor {
    Shell,
    Docker,
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("gantry")
}

/// Reads a secret file, or makes it (owner-only) with a new token.
fn secret_file(path: &Path, prefix: &str) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let token = gantry_engine::token::new_token(prefix);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// The keyring that seals secrets at rest, and the file it came from: `file` (which must
/// exist), else the `GANTRY_SECRETS_KEY` variable, else `DATA_DIR/secrets.key`, made (owner
/// only) when missing.
pub fn keyring(file: Option<&Path>, data: &Path) -> Result<(Keyring, Option<PathBuf>)> {
    if let Some(file) = file {
        if !file.exists() {
            anyhow::bail!(
                "the secrets key file {} does not exist: make one with `umask 077; printf 'k1 %s\\n' \"$(openssl rand -base64 32)\" > {}`, or leave --secrets-key-file out to use DATA_DIR/secrets.key",
                file.display(),
                file.display()
            );
        }
        let k = Keyring::load_file(file)?;
        return Ok((k, Some(file.to_path_buf())));
    }
    if let Ok(value) = std::env::var(KEY_ENV) {
        let k = Keyring::from_env_value(&value).context("reading the secrets keyring")?;
        return Ok((k, None));
    }
    let path = data.join("secrets.key");
    let k = if path.exists() {
        Keyring::load_file(&path)?
    } else {
        Keyring::create_file(&path)?
    };
    Ok((k, Some(path)))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args, false))
}

/// `gantry registry`: the same store, accounts and registry, without CI (no agent, no
/// pipeline, agent or webhook routes).
pub fn run_registry(mut args: Args) -> Result<ExitCode> {
    args.no_local_agent = true;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args, true))
}

async fn serve(args: Args, registry_only: bool) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,gantry=info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    let admin = secret_file(&data.join("admin-token"), "gadm_")?;
    let registration = match &args.registration_token {
        Some(t) => t.clone(),
        None => secret_file(&data.join("registration-token"), "grt_")?,
    };
    let (keyring, key_file) = keyring(args.secrets_key_file.as_deref(), &data)?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("gantry.db").display()));
    let db = Db::connect(&db_url)
        .await
        .with_context(|| format!("opening the database {}", redact(&db_url)))?;
    let logs = LogStore::open(data.join("logs")).context("opening the log store")?;
    let (blobs, blobs_at) = args.blobs.open(&data).await?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let external = args.external_url.clone().unwrap_or_else(|| url.clone());
    let config = EngineConfig {
        data_dir: data.clone(),
        external_url: external,
        lease: Duration::from_secs(args.lease_timeout.max(1)),
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
        keyring: Arc::new(keyring),
        secrets_key_file: key_file,
        audit_retention: Duration::from_secs(args.audit_retention_days.max(1) * 86_400),
        clock: gantry_engine::Clock::System,
        notify: args.notify.config()?,
    };
    let engine = Engine::start(
        config,
        db.clone(),
        logs,
        blobs.clone(),
        &admin,
        &registration,
    )
    .await
    .context("starting the engine")?;
    let registry = gantry_registry::Registry::new(
        db,
        blobs,
        gantry_server::registry::EngineAuthority(engine.clone()),
        gantry_registry::RegistryConfig {
            uploads_dir: data.join("registry-uploads"),
            public_url: args.external_url.clone(),
            token_secret: engine
                .registry_token_key()
                .await
                .context("the registry's token key")?,
            durable: args.registry_durable,
            gc_grace: Duration::from_secs(args.registry_gc_grace),
        },
    )
    .context("opening the registry's upload folder")?;
    if args.registry_gc_interval > 0 {
        let (reg, every) = (
            registry.clone(),
            Duration::from_secs(args.registry_gc_interval),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = reg.retention_and_collection().await {
                    eprintln!("warning: registry garbage collection: {e}");
                }
            }
        });
    }
    engine.start_replication(
        Arc::new(gantry_server::registry::RegistryReplicator {
            registry: registry.clone(),
            timeout: Duration::from_secs(60),
        }),
        gantry_engine::engine::replication::ReplicationConfig {
            retry_base: Duration::from_millis(args.replication_retry_ms.max(1)),
            ..Default::default()
        },
    );
    // Memory freed after a burst goes back to the system within a second or two.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(gantry_malloc::release_free_memory).await;
        }
    });
    let state = AppState {
        engine,
        metrics: gantry_server::metrics_handle(),
        registry,
        registry_only,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    println!("listening on {url}");
    println!("data directory {}", data.display());
    println!("blob store {blobs_at}");

    let agent = if args.no_local_agent {
        None
    } else {
        let mut cfg = AgentConfig::new(url.clone(), Some(registration.clone()));
        cfg.name = format!("{} (local)", gantry_runner::agent::hostname());
        cfg.state_dir = data.join("local-agent");
        cfg.builds_dir = data.join("local-agent").join("builds");
        cfg.executor = match args.local_agent_executor {
            Executor::Shell => ExecutorKind::Shell,
            Executor::Docker => ExecutorKind::Docker,
        };
        cfg.concurrency = args.local_agent_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2)
        });
        let token = shutdown.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = gantry_runner::agent::run(cfg, token).await {
                eprintln!("error: the local agent stopped: {e:#}");
            }
        }))
    };
    let stop = shutdown.clone();
    gantry_server::serve(state, listener, async move { stop.cancelled().await })
        .await
        .context("serving HTTP")?;
    if let Some(a) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(15), a).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// A database URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite:///x/gantry.db"), "sqlite:///x/gantry.db");
    }
}
