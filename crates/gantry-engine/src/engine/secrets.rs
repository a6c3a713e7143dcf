//! The engine's side of secrets at rest ([`gantry_store::secrets`]): the keyring, reloaded
//! from its key file after a rotation, and the project values sealed with it, the remote's
//! credentials and the webhook secret.
//!
//! Values are bound to their row with [`project_aad`] (`project:<id>:<column>`): the id of a
//! project is known only once its row is inserted, so the row and its sealed values are
//! written in one transaction ([`gantry_store::Db::insert_project_sealed`]).
//!
//! `gantry admin rotate-key` may run while the server does: it appends a key to the file and
//! reseals the database with it. The server then meets values sealed with a key it did not
//! load: [`Keys::open`] reloads the file once and tries again, and [`Keys::seal`] reloads it
//! when it changed, so new values go under the new key too.

use super::{Credentials, Engine};
use crate::error::{EngineError, Result};
use crate::token::new_token;
use gantry_api::rest;
use gantry_store::db::{ProjectRow, ProjectSecrets, SealedColumn, project_aad};
use gantry_store::secrets::{ExposeSecret, SecretError, SecretString};
use gantry_store::{Keyring, is_sealed};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// The prefix of generated webhook secrets.
const WEBHOOK_SECRET_PREFIX: &str = "gwh_";
/// The longest webhook secret accepted from a caller.
const MAX_WEBHOOK_SECRET: usize = 1024;

/// What identifies a version of the key file: a rotation replaces the file (a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}

/// The keyring in use, and where it came from.
pub(super) struct Keys {
    current: RwLock<Arc<Keyring>>,
    /// The key file, when the keyring was read from one (not from `GANTRY_SECRETS_KEY`).
    file: Option<PathBuf>,
    loaded: Mutex<Option<Stamp>>,
}

impl Keys {
    pub(super) fn new(keyring: Arc<Keyring>, file: Option<PathBuf>) -> Keys {
        let loaded = file.as_deref().and_then(stamp);
        Keys {
            current: RwLock::new(keyring),
            file,
            loaded: Mutex::new(loaded),
        }
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the key file again when it changed since it was read; true when the keyring
    /// changed. A file that cannot be read keeps the keyring as it is (and says so).
    fn reload_if_changed(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(file);
        if now.is_none() || now == *loaded {
            return false;
        }
        match Keyring::load_file(file) {
            Ok(k) => {
                tracing::info!(
                    file = %file.display(),
                    current = k.current_id(),
                    "the secrets key file changed: keyring reloaded"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
                *loaded = now;
                true
            }
            Err(e) => {
                tracing::warn!("the secrets key file changed but cannot be read: {e}");
                false
            }
        }
    }

    /// Seals `plain` for the row `aad` with the current key of the key file.
    pub(super) fn seal(&self, plain: &[u8], aad: &str) -> String {
        self.reload_if_changed();
        self.keyring().seal(plain, aad.as_bytes())
    }

    /// Opens a value sealed for the row `aad`; a key the keyring lacks makes it read the key
    /// file again first (a rotation while the server runs).
    pub(super) fn open(&self, sealed: &str, aad: &str) -> Result<SecretString, SecretError> {
        match self.keyring().open_string(sealed, aad.as_bytes()) {
            Err(SecretError::UnknownKey { .. }) if self.reload_if_changed() => {
                self.keyring().open_string(sealed, aad.as_bytes())
            }
            other => other,
        }
    }
}

impl Engine {
    /// The remote's credentials of a project: sealed, or plaintext JSON in rows written
    /// before encryption at rest (read as they are; `gantry admin rotate-key` seals them).
    pub(super) fn credentials_of(&self, p: &ProjectRow) -> Result<Credentials> {
        let Some(stored) = p.credentials.as_deref() else {
            return Ok(Credentials::default());
        };
        if !is_sealed(stored) {
            return Ok(serde_json::from_str(stored).unwrap_or_default());
        }
        let aad = project_aad(p.id, SealedColumn::Credentials);
        let json = self.inner.keys.open(stored, &aad).map_err(|e| {
            EngineError::Internal(format!("the credentials of project {}: {e}", p.path))
        })?;
        serde_json::from_str(json.expose_secret()).map_err(|e| {
            EngineError::Internal(format!(
                "the credentials of project {} are not readable: {e}",
                p.path
            ))
        })
    }

    /// The project's webhook secret, `None` when it has none.
    pub(super) fn webhook_secret_of(&self, p: &ProjectRow) -> Result<Option<SecretString>> {
        let Some(stored) = p.webhook_secret.as_deref() else {
            return Ok(None);
        };
        let aad = project_aad(p.id, SealedColumn::WebhookSecret);
        let secret = self.inner.keys.open(stored, &aad).map_err(|e| {
            EngineError::Internal(format!("the webhook secret of project {}: {e}", p.path))
        })?;
        Ok(Some(secret))
    }

    /// The sealed values of a new project, bound to its id.
    pub(super) fn seal_project(
        &self,
        id: i64,
        credentials: Option<&str>,
        webhook_secret: &str,
    ) -> ProjectSecrets {
        let keys = &self.inner.keys;
        ProjectSecrets {
            credentials: credentials
                .map(|c| keys.seal(c.as_bytes(), &project_aad(id, SealedColumn::Credentials))),
            webhook_secret: Some(keys.seal(
                webhook_secret.as_bytes(),
                &project_aad(id, SealedColumn::WebhookSecret),
            )),
        }
    }

    /// Gives a project a new webhook secret, returned this once; the old one stops working.
    pub async fn regenerate_webhook_secret(&self, project: &str) -> Result<rest::WebhookSecret> {
        let p = self.find_project_row(project).await?;
        let secret = new_webhook_secret();
        let sealed = self.inner.keys.seal(
            secret.as_bytes(),
            &project_aad(p.id, SealedColumn::WebhookSecret),
        );
        if !self.inner.db.set_webhook_secret(p.id, &sealed).await? {
            return Err(EngineError::not_found(format!("project {}", p.id)));
        }
        tracing::info!(project = %p.path, "webhook secret replaced");
        Ok(rest::WebhookSecret {
            webhook_secret: secret,
        })
    }
}

/// A new webhook secret: 256 random bits.
pub(super) fn new_webhook_secret() -> String {
    new_token(WEBHOOK_SECRET_PREFIX)
}

/// A webhook secret given by a caller: what every forge can send back.
pub(super) fn check_webhook_secret(secret: &str) -> Result<()> {
    let problem = if secret.trim().is_empty() {
        Some("is empty")
    } else if secret.len() > MAX_WEBHOOK_SECRET {
        Some("is longer than 1024 bytes")
    } else if secret.chars().any(char::is_control) {
        Some("contains control characters (line breaks, tabs)")
    } else if secret.trim() != secret {
        Some("starts or ends with white space, which forges drop")
    } else {
        None
    };
    match problem {
        Some(p) => Err(EngineError::BadRequest(format!(
            "webhook_secret {p}: leave it out and Gantry makes one, or give 1 to 1024 printable characters"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_key_file_is_reloaded_to_open_and_to_seal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let k1 = Arc::new(Keyring::create_file(&path).unwrap());
        let keys = Keys::new(k1.clone(), Some(path.clone()));
        let old = keys.seal(b"v1", "project:1:webhook_secret");
        assert!(old.starts_with("gsec1:k1:"), "{old}");

        // Another process rotates the file and reseals with the new key.
        Keyring::rotate_file(&path).unwrap();
        let k2 = Keyring::load_file(&path).unwrap();
        let resealed = k2
            .reseal(&old, b"project:1:webhook_secret")
            .unwrap()
            .unwrap();
        assert!(k1.open(&resealed, b"project:1:webhook_secret").is_err());
        let opened = keys.open(&resealed, "project:1:webhook_secret").unwrap();
        assert_eq!(opened.expose_secret(), "v1");
        assert!(keys.seal(b"v2", "x").starts_with("gsec1:k2:"));

        // Without a file (the environment's keyring) nothing is reloaded; errors stay errors.
        let env_only = Keys::new(k1, None);
        assert!(matches!(
            env_only.open(&resealed, "project:1:webhook_secret"),
            Err(SecretError::UnknownKey { .. })
        ));
        assert!(matches!(
            keys.open(&resealed, "project:2:webhook_secret"),
            Err(SecretError::Tampered)
        ));
    }

    #[test]
    fn webhook_secrets_given_by_callers() {
        assert!(check_webhook_secret("s3cr3t token!").is_ok());
        for bad in ["", "  ", "a\nb", " x", &"x".repeat(1025)] {
            let err = check_webhook_secret(bad).unwrap_err().to_string();
            assert!(err.starts_with("webhook_secret "), "{err}");
        }
        let s = new_webhook_secret();
        assert!(s.starts_with("gwh_") && check_webhook_secret(&s).is_ok());
    }
}
