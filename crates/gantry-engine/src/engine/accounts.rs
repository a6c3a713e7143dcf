//! Accounts: local users with Argon2id passwords, browser sessions (a cookie and its CSRF
//! token), personal access tokens with scopes and expiry, project roles, and the audit log.
//!
//! - **Passwords** are hashed with Argon2id (the `argon2` crate's defaults: 19 MiB, two
//!   passes, OWASP's minimum) on a blocking thread. A login for an unknown user still verifies
//!   against a dummy hash, so its time does not tell which user names exist.
//! - **Login limits**: [`LOCK_AFTER`] wrong passwords in a row lock the account for
//!   [`LOCK_FOR`]; every IP address gets at most [`IP_FAILURES`] failed logins per
//!   [`IP_WINDOW`] (429 after that), whatever the accounts tried.
//! - **Tokens** (`gpat_…`) have 256 random bits and are kept as SHA-256, shown once. A token
//!   past its expiry or revoked is refused with 401 and says so. Scopes: `api` (everything
//!   the user may do), `read_api` (GET only), `read_registry`, `write_registry` (the registry
//!   only).
//! - **Sessions** (`gses_…` in an HTTP-only cookie) last [`SESSION_TTL`]; a request that
//!   changes something with a session must carry the session's CSRF token in `X-CSRF-Token`.
//! - **Roles**: a user's role in a project ([`Role`]); instance administrators (and the
//!   administrator's token) act as owners everywhere.
//! - **Audit**: who did what and when, appended to `audit_log` (never a secret), readable by
//!   administrators, pruned after the configured retention.

use super::{Caller, Engine, UserCaller, blocking};
use crate::error::{EngineError, Result};
use crate::token::{hash_token, new_token};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use gantry_api::rest::{self, Page};
use gantry_api::{Role, Scope};
use gantry_store::db::{AuditEntry, AuditRow, NewUser, PageReq, TokenRow, UserRow, now_ms};
use std::collections::HashMap;
use std::time::Duration;

/// Wrong passwords in a row that lock an account.
pub const LOCK_AFTER: i64 = 5;
/// How long a locked account refuses logins.
pub const LOCK_FOR: Duration = Duration::from_secs(15 * 60);
/// Failed logins an IP address may make per [`IP_WINDOW`].
pub const IP_FAILURES: u32 = 20;
pub const IP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;
const TOKEN_PREFIX: &str = "gpat_";
pub const SESSION_PREFIX: &str = "gses_";

/// Failed logins per IP address: (count, window start).
#[derive(Default)]
pub(super) struct LoginLimiter {
    by_ip: std::sync::Mutex<HashMap<String, (u32, i64)>>,
}

impl LoginLimiter {
    fn blocked(&self, ip: &str, now: i64) -> bool {
        let map = self.by_ip.lock().expect("limiter");
        map.get(ip).is_some_and(|(n, start)| {
            now - start < IP_WINDOW.as_millis() as i64 && *n >= IP_FAILURES
        })
    }

    fn failed(&self, ip: &str, now: i64) {
        let mut map = self.by_ip.lock().expect("limiter");
        let window = IP_WINDOW.as_millis() as i64;
        map.retain(|_, (_, start)| now - *start < window);
        let e = map.entry(ip.to_string()).or_insert((0, now));
        e.0 += 1;
    }
}

/// Hashes a password with Argon2id and a random salt (slow on purpose: call it on a blocking
/// thread).
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| EngineError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::Internal(format!("hashing a password: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// What a password must be.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(EngineError::BadRequest(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(EngineError::BadRequest(format!(
            "the password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// A user name: what GitLab accepts, roughly.
pub fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "user name '{name}' is not valid: 1-64 letters, digits, '-', '_' or '.', starting \
             with a letter or digit"
        )))
    }
}

/// A made-up hash to verify against when the user does not exist (same cost as a real one).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").expect("hashing works"))
}

impl Engine {
    // ---- who is calling ---------------------------------------------------------------------

    /// The caller a personal access token names; a revoked or expired one is refused with a
    /// message that says so.
    pub(super) async fn authenticate_access_token(&self, token: &str) -> Result<Option<Caller>> {
        let Some(t) = self
            .inner
            .db
            .access_token_by_hash(&hash_token(token))
            .await?
        else {
            return Ok(None);
        };
        if t.revoked {
            return Err(EngineError::Unauthorized(format!(
                "the personal access token '{}' was revoked: make a new one",
                t.name
            )));
        }
        if t.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(EngineError::Unauthorized(format!(
                "the personal access token '{}' has expired: make a new one",
                t.name
            )));
        }
        let Some(user) = self.inner.db.user(t.user_id).await? else {
            return Ok(None);
        };
        if user.blocked {
            return Err(EngineError::Unauthorized(format!(
                "user {} is blocked",
                user.username
            )));
        }
        self.inner.db.touch_access_token(t.id).await?;
        Ok(Some(Caller::User(UserCaller {
            id: user.id,
            username: user.username,
            admin: user.is_admin,
            scopes: Some(parse_scopes(&t.scopes)),
            csrf: None,
        })))
    }

    /// The caller a session cookie names, with the session's CSRF token.
    pub async fn authenticate_session(&self, cookie: &str) -> Result<Option<Caller>> {
        if !cookie.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let Some(s) = self.inner.db.session(&hash_token(cookie)).await? else {
            return Ok(None);
        };
        if s.expires_at <= now_ms() {
            return Err(EngineError::Unauthorized(
                "your session has expired: sign in again".into(),
            ));
        }
        let Some(user) = self.inner.db.user(s.user_id).await? else {
            return Ok(None);
        };
        if user.blocked {
            return Ok(None);
        }
        Ok(Some(Caller::User(UserCaller {
            id: user.id,
            username: user.username,
            admin: user.is_admin,
            scopes: None,
            csrf: Some(s.csrf_token),
        })))
    }

    /// The caller's role in a project: administrators are owners everywhere; agents and jobs
    /// have none (jobs are checked by their own rules).
    pub async fn role_in(&self, caller: &Caller, project_id: i64) -> Result<Option<Role>> {
        match caller {
            Caller::Admin => Ok(Some(Role::Owner)),
            Caller::User(u) if u.admin => Ok(Some(Role::Owner)),
            Caller::User(u) => Ok(self.inner.db.role_of(project_id, u.id).await?),
            Caller::Agent(_) | Caller::Job(_) => Ok(None),
        }
    }

    /// The project a pipeline belongs to.
    pub async fn project_of_pipeline(&self, id: i64) -> Result<i64> {
        let p = self
            .inner
            .db
            .pipeline(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("pipeline {id}")))?;
        Ok(p.project_id)
    }

    /// The project a job belongs to.
    pub async fn project_of_job(&self, id: i64) -> Result<i64> {
        Ok(self.job_row(id).await?.project_id)
    }

    // ---- sessions ---------------------------------------------------------------------------

    /// Signs a user in: a new session (its cookie value and CSRF token). `ip` is the client's
    /// address, for the per-address limit.
    pub async fn login(&self, username: &str, password: &str, ip: &str) -> Result<rest::Session> {
        let user = self.check_login(username, password, ip).await?;
        let now = now_ms();
        let cookie = new_token(SESSION_PREFIX);
        let csrf = new_token("");
        let expires_at = now + SESSION_TTL.as_millis() as i64;
        self.inner
            .db
            .insert_session(&hash_token(&cookie), user.id, &csrf, expires_at)
            .await?;
        self.audit_as(
            &user.username,
            "login",
            None,
            &user.username,
            None,
            Some(ip),
        )
        .await;
        Ok(rest::Session {
            user: user_dto(&user),
            session: cookie,
            csrf_token: csrf,
            expires_at,
        })
    }

    /// Checks a user name and password under the sign-in limits (a locked account, too many
    /// failures from `ip`), recording failures; the user when they are right.
    pub(super) async fn check_login(
        &self,
        username: &str,
        password: &str,
        ip: &str,
    ) -> Result<UserRow> {
        let now = now_ms();
        if self.inner.logins.blocked(ip, now) {
            self.audit_as("anonymous", "login.limited", None, username, None, Some(ip))
                .await;
            return Err(EngineError::TooManyRequests(format!(
                "too many failed sign-ins from {ip}: wait {} minutes",
                IP_WINDOW.as_secs() / 60
            )));
        }
        let user = self.inner.db.user_by_name(username).await?;
        let stored = user
            .as_ref()
            .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
        let pw = password.to_string();
        let good = blocking(move || Ok(verify_password(&pw, &stored))).await?;
        let refused = || {
            EngineError::Unauthorized(
                "wrong user name or password (after 5 wrong passwords the account is locked \
                 for 15 minutes)"
                    .into(),
            )
        };
        let Some(user) = user else {
            self.inner.logins.failed(ip, now);
            self.audit_as("anonymous", "login.failed", None, username, None, Some(ip))
                .await;
            return Err(refused());
        };
        if let Some(until) = user.locked_until.filter(|u| *u > now) {
            self.inner.logins.failed(ip, now);
            self.audit_as(
                &user.username,
                "login.locked",
                None,
                username,
                None,
                Some(ip),
            )
            .await;
            return Err(EngineError::TooManyRequests(format!(
                "the account {} is locked after too many wrong passwords: try again in {} \
                 minutes, or ask an administrator to set a new password",
                user.username,
                (until - now) / 60_000 + 1
            )));
        }
        if !good || user.blocked {
            self.inner.logins.failed(ip, now);
            if !good {
                let lock_until = now + LOCK_FOR.as_millis() as i64;
                self.inner
                    .db
                    .login_failed(user.id, LOCK_AFTER, lock_until)
                    .await?;
            }
            self.audit_as(
                &user.username,
                "login.failed",
                None,
                username,
                None,
                Some(ip),
            )
            .await;
            return Err(refused());
        }
        self.inner.db.login_succeeded(user.id).await?;
        Ok(user)
    }

    /// Ends a session.
    pub async fn logout(&self, cookie: &str) -> Result<()> {
        self.inner.db.delete_session(&hash_token(cookie)).await?;
        Ok(())
    }

    // ---- users ------------------------------------------------------------------------------

    /// Makes a local user (an administrator's act, or `gantry admin create-user`).
    pub async fn create_user(&self, req: rest::UserCreate, by: &Caller) -> Result<rest::User> {
        check_username(&req.username)?;
        check_password(&req.password)?;
        let pw = req.password.clone();
        let hash = blocking(move || hash_password(&pw)).await?;
        let new = NewUser {
            username: req.username.clone(),
            name: req.name.clone().unwrap_or_else(|| req.username.clone()),
            email: req.email.clone().unwrap_or_default(),
            password_hash: hash,
            is_admin: req.admin,
        };
        let id = match self.inner.db.insert_user(&new).await {
            Ok(id) => id,
            Err(gantry_store::StoreError::Conflict(m)) => return Err(EngineError::Conflict(m)),
            Err(e) => return Err(e.into()),
        };
        let details = serde_json::json!({"admin": req.admin}).to_string();
        self.audit(
            by,
            "user.create",
            None,
            &format!("user {}", req.username),
            Some(details),
        )
        .await;
        self.user(id).await
    }

    pub async fn user(&self, id: i64) -> Result<rest::User> {
        let u = self
            .inner
            .db
            .user(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("user {id}")))?;
        Ok(user_dto(&u))
    }

    pub async fn users(&self) -> Result<Vec<rest::User>> {
        Ok(self.inner.db.users().await?.iter().map(user_dto).collect())
    }

    async fn user_by_name(&self, username: &str) -> Result<UserRow> {
        self.inner
            .db
            .user_by_name(username)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("user {username}")))
    }

    // ---- personal access tokens -----------------------------------------------------------

    /// Makes a personal access token for the calling user; the answer holds it, this once.
    pub async fn create_access_token(
        &self,
        caller: &Caller,
        req: rest::AccessTokenCreate,
    ) -> Result<rest::AccessToken> {
        let user = signed_in(caller)?;
        if req.name.trim().is_empty() || req.name.len() > 255 {
            return Err(EngineError::BadRequest(
                "a token needs a name (at most 255 bytes) to tell it apart".into(),
            ));
        }
        if req.scopes.is_empty() {
            return Err(EngineError::BadRequest(
                "a token needs scopes: api, read_api, read_registry, write_registry".into(),
            ));
        }
        // A token cannot give more than the one that makes it.
        if let Some(have) = &user.scopes
            && !have.contains(&Scope::Api)
        {
            return Err(EngineError::Forbidden(
                "only a session or a token with the api scope makes tokens".into(),
            ));
        }
        if let Some(at) = req.expires_at
            && at <= now_ms()
        {
            return Err(EngineError::BadRequest(
                "expires_at is in the past: give a time to come (ms since the epoch)".into(),
            ));
        }
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let token = new_token(TOKEN_PREFIX);
        let hint = token[..TOKEN_PREFIX.len() + 4].to_string();
        let id = self
            .inner
            .db
            .insert_access_token(
                user.id,
                req.name.trim(),
                &hash_token(&token),
                &hint,
                &names.join(","),
                req.expires_at,
            )
            .await?;
        let details = serde_json::json!({"scopes": names, "expires_at": req.expires_at});
        self.audit(
            caller,
            "token.create",
            None,
            &format!("token {id} ({})", req.name.trim()),
            Some(details.to_string()),
        )
        .await;
        let row = self
            .inner
            .db
            .access_tokens_of(user.id)
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| EngineError::not_found(format!("token {id}")))?;
        Ok(rest::AccessToken {
            token: Some(token),
            ..token_dto(&row)
        })
    }

    pub async fn access_tokens(&self, caller: &Caller) -> Result<Vec<rest::AccessToken>> {
        let user = signed_in(caller)?;
        let rows = self.inner.db.access_tokens_of(user.id).await?;
        Ok(rows.iter().map(token_dto).collect())
    }

    pub async fn revoke_access_token(&self, caller: &Caller, id: i64) -> Result<()> {
        let user = signed_in(caller)?;
        if !self.inner.db.revoke_access_token(user.id, id).await? {
            return Err(EngineError::not_found(format!("token {id}")));
        }
        self.audit(caller, "token.revoke", None, &format!("token {id}"), None)
            .await;
        Ok(())
    }

    // ---- members ----------------------------------------------------------------------------

    pub async fn members(&self, project: &str) -> Result<Vec<rest::Member>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.members(p.id).await?;
        Ok(rows
            .into_iter()
            .map(|m| rest::Member {
                user_id: m.user_id,
                username: m.username,
                role: m.role,
                created_at: m.created_at,
            })
            .collect())
    }

    /// Gives a user a role in a project. Only owners give or take the owner role.
    pub async fn set_member(
        &self,
        caller: &Caller,
        project: &str,
        req: rest::MemberSet,
    ) -> Result<rest::Member> {
        let p = self.find_project_row(project).await?;
        let user = self.user_by_name(&req.username).await?;
        let mine = self.role_in(caller, p.id).await?;
        let current = self.inner.db.role_of(p.id, user.id).await?;
        if (req.role == Role::Owner || current == Some(Role::Owner)) && mine != Some(Role::Owner) {
            return Err(EngineError::Forbidden(
                "only an owner gives or takes the owner role".into(),
            ));
        }
        self.inner.db.set_member(p.id, user.id, req.role).await?;
        let details = serde_json::json!({"role": req.role, "was": current}).to_string();
        self.audit(
            caller,
            "member.set",
            Some(p.id),
            &format!("user {}", user.username),
            Some(details),
        )
        .await;
        let m = self
            .inner
            .db
            .members(p.id)
            .await?
            .into_iter()
            .find(|m| m.user_id == user.id)
            .ok_or_else(|| EngineError::not_found(format!("member {}", user.username)))?;
        Ok(rest::Member {
            user_id: m.user_id,
            username: m.username,
            role: m.role,
            created_at: m.created_at,
        })
    }

    pub async fn remove_member(
        &self,
        caller: &Caller,
        project: &str,
        username: &str,
    ) -> Result<()> {
        let p = self.find_project_row(project).await?;
        let user = self.user_by_name(username).await?;
        let current = self.inner.db.role_of(p.id, user.id).await?;
        if current == Some(Role::Owner) && self.role_in(caller, p.id).await? != Some(Role::Owner) {
            return Err(EngineError::Forbidden(
                "only an owner takes the owner role".into(),
            ));
        }
        if !self.inner.db.remove_member(p.id, user.id).await? {
            return Err(EngineError::not_found(format!(
                "{username} as a member of {}",
                p.path
            )));
        }
        self.audit(
            caller,
            "member.remove",
            Some(p.id),
            &format!("user {username}"),
            None,
        )
        .await;
        Ok(())
    }

    /// The projects the caller may see, a page of them: all for administrators, those a
    /// user is a member of.
    pub async fn projects_for(
        &self,
        caller: &Caller,
        page: PageReq,
    ) -> Result<Page<rest::Project>> {
        match caller {
            Caller::User(u) if !u.admin => {
                let rows = self.inner.db.projects_of_member(u.id, page).await?;
                Ok(super::paged(page, rows, |r| super::project_dto(&r)))
            }
            _ if caller.is_admin() => self.projects(page).await,
            _ => Err(EngineError::Forbidden(
                "agents and jobs list no projects".into(),
            )),
        }
    }

    /// Registers a project; a user who does becomes its owner. Only administrators register
    /// repositories on the server's own disk (a path or `file://`): anyone else could read
    /// any repository the server's account can.
    pub async fn create_project_as(
        &self,
        req: rest::ProjectCreate,
        caller: &Caller,
    ) -> Result<rest::Project> {
        let url = req.git_url.trim();
        // An empty URL is a registry project (images only): nothing on the disk to read.
        let remote = url.is_empty()
            || ["http://", "https://", "ssh://", "git://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            || (!url.contains("://") && url.contains('@') && url.contains(':'));
        if !remote && !caller.is_admin() {
            return Err(EngineError::Forbidden(format!(
                "'{url}' is on the server's disk: only administrators register such \
                 repositories; give an http(s):// or ssh:// URL"
            )));
        }
        let p = self.create_project(req).await?;
        if let Caller::User(u) = caller {
            self.inner.db.set_member(p.id, u.id, Role::Owner).await?;
        }
        self.audit(
            caller,
            "project.create",
            Some(p.id),
            &format!("project {}", p.path),
            None,
        )
        .await;
        Ok(p)
    }

    // ---- audit ------------------------------------------------------------------------------

    /// Records what `caller` did. Never fails the act: a record that cannot be written is
    /// logged.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        project_id: Option<i64>,
        target: &str,
        details: Option<String>,
    ) {
        self.audit_as(&caller.name(), action, project_id, target, details, None)
            .await;
    }

    pub(super) async fn audit_as(
        &self,
        actor: &str,
        action: &str,
        project_id: Option<i64>,
        target: &str,
        details: Option<String>,
        ip: Option<&str>,
    ) {
        let entry = AuditEntry {
            actor: actor.to_string(),
            action: action.to_string(),
            project_id,
            target: target.chars().take(255).collect(),
            details,
            ip: ip.map(str::to_string),
        };
        if let Err(e) = self.inner.db.audit(&entry).await {
            tracing::warn!(
                actor,
                action,
                target,
                "the audit log could not be written: {e}"
            );
        }
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, page: PageReq) -> Result<Page<rest::AuditEvent>> {
        let rows = self.inner.db.audit_log(page).await?;
        Ok(super::paged(page, rows, audit_dto))
    }

    /// Forgets audit entries older than the retention.
    pub(super) async fn prune_audit_log(&self) -> Result<()> {
        let keep = self.inner.config.audit_retention.as_millis() as i64;
        let gone = self.inner.db.prune_audit_log(now_ms() - keep).await?;
        if gone > 0 {
            tracing::info!(
                entries = gone,
                "audit log entries past the retention removed"
            );
        }
        Ok(())
    }
}

/// The signed-in user of a caller.
fn signed_in(caller: &Caller) -> Result<&UserCaller> {
    match caller {
        Caller::User(u) => Ok(u),
        _ => Err(EngineError::Forbidden(
            "only a signed-in user has tokens: sign in, or use a personal access token".into(),
        )),
    }
}

fn parse_scopes(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(|n| n.parse().ok()).collect()
}

fn user_dto(u: &UserRow) -> rest::User {
    rest::User {
        id: u.id,
        username: u.username.clone(),
        name: u.name.clone(),
        email: u.email.clone(),
        admin: u.is_admin,
        blocked: u.blocked,
        created_at: u.created_at,
        last_login_at: u.last_login_at,
    }
}

fn token_dto(t: &TokenRow) -> rest::AccessToken {
    rest::AccessToken {
        id: t.id,
        name: t.name.clone(),
        hint: t.hint.clone(),
        scopes: parse_scopes(&t.scopes),
        expires_at: t.expires_at,
        revoked: t.revoked,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        token: None,
    }
}

pub(super) fn audit_dto(r: AuditRow) -> rest::AuditEvent {
    rest::AuditEvent {
        id: r.id,
        at: r.at,
        actor: r.entry.actor,
        action: r.entry.action,
        project_id: r.entry.project_id,
        target: r.entry.target,
        details: r.entry.details.and_then(|d| serde_json::from_str(&d).ok()),
        ip: r.entry.ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
        assert!(!verify_password("x", "not a hash"));
        assert!(check_password("short").is_err());
        assert!(check_username("alice.b-1").is_ok());
        assert!(check_username("-x").is_err() && check_username("a b").is_err());
    }

    #[test]
    fn the_ip_limiter_counts_failures_in_its_window() {
        let l = LoginLimiter::default();
        for _ in 0..IP_FAILURES {
            assert!(!l.blocked("1.2.3.4", 1000));
            l.failed("1.2.3.4", 1000);
        }
        assert!(l.blocked("1.2.3.4", 1000));
        assert!(!l.blocked("5.6.7.8", 1000));
        assert!(!l.blocked("1.2.3.4", 1000 + IP_WINDOW.as_millis() as i64));
    }
}
