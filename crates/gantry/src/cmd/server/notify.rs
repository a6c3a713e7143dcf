//! `gantry server`'s settings of commit statuses and notifications: the instance's SMTP
//! server (notification channels of kind `email` send through it) and the outbox's retries.
//!
//! The password comes from `GANTRY_SMTP_PASSWORD` or a file (`--smtp-password-file`), never
//! from the command line (which other users of the machine can read), and is never logged.

use anyhow::{Context, Result, bail};
use gantry_engine::engine::{NotifyConfig, SmtpConfig, SmtpTls};
use gantry_store::secrets::SecretString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    /// The SMTP server that sends email notifications [default: none, email is off].
    #[arg(long, env = "GANTRY_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// Its port [default: 587 with starttls, 465 with tls, 25 with none].
    #[arg(long, env = "GANTRY_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// How the connection is protected.
    #[arg(long, value_enum, default_value = "starttls", env = "GANTRY_SMTP_TLS")]
    pub smtp_tls: TlsMode,
    /// The SMTP user; its password in GANTRY_SMTP_PASSWORD or --smtp-password-file.
    #[arg(long, env = "GANTRY_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// A file holding the SMTP password (its first line).
    #[arg(long, env = "GANTRY_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// The sender: `Gantry <ci@example.com>`.
    #[arg(long, env = "GANTRY_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Extra CA certificates (PEM) to trust for the SMTP server, besides the system's.
    #[arg(long, env = "GANTRY_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Milliseconds before the first retry of a commit status or notification that failed
    /// (doubled at each attempt, up to 5 minutes).
    #[arg(
        long,
        default_value_t = 5000,
        env = "GANTRY_OUTBOX_RETRY_MS",
        hide = true
    )]
    pub outbox_retry_ms: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

impl NotifyArgs {
    pub fn config(&self) -> Result<NotifyConfig> {
        let mut cfg = NotifyConfig {
            retry_base: Duration::from_millis(self.outbox_retry_ms.max(1)),
            ..NotifyConfig::default()
        };
        let Some(host) = self.smtp_host.clone().filter(|h| !h.is_empty()) else {
            return Ok(cfg);
        };
        let tls = match self.smtp_tls {
            TlsMode::None => SmtpTls::None,
            TlsMode::Starttls => SmtpTls::StartTls,
            TlsMode::Tls => SmtpTls::Tls,
        };
        let port = self.smtp_port.unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        });
        let Some(from) = self.smtp_from.clone() else {
            bail!("--smtp-host needs --smtp-from, the sender's address (Gantry <ci@example.com>)");
        };
        let password = match (
            &self.smtp_password_file,
            std::env::var("GANTRY_SMTP_PASSWORD"),
        ) {
            (Some(file), _) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("reading the SMTP password file {}", file.display())
                })?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
            (None, Ok(p)) => Some(p),
            (None, Err(_)) => None,
        };
        if self.smtp_username.is_some() && password.is_none() {
            bail!(
                "--smtp-username needs a password: set GANTRY_SMTP_PASSWORD or --smtp-password-file"
            );
        }
        if let Some(ca) = &self.smtp_ca_file
            && !ca.is_file()
        {
            bail!("the SMTP CA file {} does not exist", ca.display());
        }
        cfg.smtp = Some(SmtpConfig {
            host,
            port,
            tls,
            username: self.smtp_username.clone(),
            password: password.map(SecretString::from),
            from,
            ca_file: self.smtp_ca_file.clone(),
        });
        Ok(cfg)
    }
}
