//! Users, personal access tokens, sessions, project members and the audit log (migration 0006).
//! Passwords arrive here already hashed (Argon2id, by the engine) and tokens as SHA-256: the
//! store never sees a secret.

use super::{Db, PageReq, now_ms, returned_id, unique_to_conflict};
use crate::{Result, StoreError};
use gantry_api::Role;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub blocked: bool,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

const USER_COLS: &str = "id, username, name, email, password_hash, is_admin, blocked, \
    failed_logins, locked_until, created_at, last_login_at";

impl UserRow {
    fn from_row(r: &AnyRow) -> Result<UserRow> {
        Ok(UserRow {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            name: r.try_get("name")?,
            email: r.try_get("email")?,
            password_hash: r.try_get("password_hash")?,
            is_admin: r.try_get::<i64, _>("is_admin")? != 0,
            blocked: r.try_get::<i64, _>("blocked")? != 0,
            failed_logins: r.try_get("failed_logins")?,
            locked_until: r.try_get("locked_until")?,
            created_at: r.try_get("created_at")?,
            last_login_at: r.try_get("last_login_at")?,
        })
    }
}

/// A personal access token as stored: its hash, never the token.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub hint: String,
    /// Comma-separated scope names.
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const TOKEN_COLS: &str =
    "id, user_id, name, hint, scopes, expires_at, revoked, created_at, last_used_at";

impl TokenRow {
    fn from_row(r: &AnyRow) -> Result<TokenRow> {
        Ok(TokenRow {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            name: r.try_get("name")?,
            hint: r.try_get("hint")?,
            scopes: r.try_get("scopes")?,
            expires_at: r.try_get("expires_at")?,
            revoked: r.try_get::<i64, _>("revoked")? != 0,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user_id: i64,
    pub csrf_token: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub project_id: i64,
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: i64,
}

/// One thing somebody did, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// The user name, `admin-token`, `agent:ID`, `job:ID` or `anonymous`.
    pub actor: String,
    /// `login`, `login.failed`, `token.create`, `member.set`, `job.play`, …
    pub action: String,
    pub project_id: Option<i64>,
    /// What it was done to (`user alice`, `job 12`, `token 3`).
    pub target: String,
    /// JSON with the rest; never a secret.
    pub details: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub entry: AuditEntry,
}

impl Db {
    // ---- users ------------------------------------------------------------------------------

    pub async fn insert_user(&self, u: &NewUser) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO users (username, name, email, password_hash, is_admin, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&u.username)
        .bind(&u.name)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(u.is_admin as i64)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, &format!("user '{}' exists", u.username)))?;
        returned_id(&rows)
    }

    pub async fn user(&self, id: i64) -> Result<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(UserRow::from_row).collect()
    }

    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>(0))
    }

    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL \
             WHERE id = $2",
        )
        .bind(password_hash)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A good login: the failures are forgotten.
    pub async fn login_succeeded(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $1 \
             WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A wrong password: one more failure; at `limit` failures the account is locked until
    /// `lock_until` (and the count starts again). Returns the failures counted so far.
    pub async fn login_failed(&self, id: i64, limit: i64, lock_until: i64) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 \
             RETURNING failed_logins",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let failures: i64 = row.get(0);
        if failures >= limit {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = $1 WHERE id = $2")
                .bind(lock_until)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(failures)
    }

    // ---- personal access tokens -----------------------------------------------------------

    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    pub async fn insert_access_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        hint: &str,
        scopes: &str,
        expires_at: Option<i64>,
    ) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO access_tokens (user_id, name, token_hash, hint, scopes, expires_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(hint)
        .bind(scopes)
        .bind(expires_at)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, "a token with this value exists"))?;
        returned_id(&rows)
    }

    /// The token with this hash (revoked and expired ones too: the caller says why it fails).
    pub async fn access_token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM access_tokens WHERE token_hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(TokenRow::from_row).transpose()
    }

    pub async fn access_tokens_of(&self, user_id: i64) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM access_tokens WHERE user_id = $1 ORDER BY id"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TokenRow::from_row).collect()
    }

    pub async fn touch_access_token(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a user's token; false when the user has no such token.
    pub async fn revoke_access_token(&self, user_id: i64, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE access_tokens SET revoked = 1 WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- sessions ---------------------------------------------------------------------------

    pub async fn insert_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        let row =
            sqlx::query("SELECT user_id, csrf_token, expires_at FROM sessions WHERE id_hash = $1")
                .bind(id_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| SessionRow {
            user_id: r.get(0),
            csrf_token: r.get(1),
            expires_at: r.get(2),
        }))
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- members ----------------------------------------------------------------------------

    /// Gives a user a role in a project (or changes it).
    pub async fn set_member(&self, project_id: i64, user_id: i64, role: Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_member(&self, project_id: i64, user_id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM members WHERE project_id = $1 AND user_id = $2")
            .bind(project_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The user's role in the project, if a member.
    pub async fn role_of(&self, project_id: i64, user_id: i64) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT role FROM members WHERE project_id = $1 AND user_id = $2")
            .bind(project_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse_role(&r.get::<String, _>(0))).transpose()
    }

    pub async fn members(&self, project_id: i64) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT m.project_id, m.user_id, u.username, m.role, m.created_at FROM members m \
             JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.user_id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    project_id: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    username: r.try_get(2)?,
                    role: parse_role(&r.try_get::<String, _>(3)?)?,
                    created_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// The projects a user is a member of, a page of them.
    pub async fn projects_of_member(
        &self,
        user_id: i64,
        page: PageReq,
    ) -> Result<Vec<super::ProjectRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM projects WHERE id IN (SELECT project_id FROM members WHERE \
             user_id = $1) ORDER BY id LIMIT $2 OFFSET $3",
            super::PROJECT_COLS
        )))
        .bind(user_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::ProjectRow::from_row).collect()
    }

    /// The projects a user is a member of, with the role.
    pub async fn memberships(&self, user_id: i64) -> Result<Vec<(i64, Role)>> {
        let rows = sqlx::query("SELECT project_id, role FROM members WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, parse_role(&r.try_get::<String, _>(1)?)?)))
            .collect()
    }

    // ---- audit log --------------------------------------------------------------------------

    /// Appends to the audit log.
    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, project_id, target, details, ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(now_ms())
        .bind(&e.actor)
        .bind(&e.action)
        .bind(e.project_id)
        .bind(&e.target)
        .bind(e.details.as_deref())
        .bind(e.ip.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, page: PageReq) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, project_id, target, details, ip FROM audit_log \
             ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    entry: AuditEntry {
                        actor: r.try_get(2)?,
                        action: r.try_get(3)?,
                        project_id: r.try_get(4)?,
                        target: r.try_get(5)?,
                        details: r.try_get(6)?,
                        ip: r.try_get(7)?,
                    },
                })
            })
            .collect()
    }

    /// Removes audit entries older than `before` (the retention); how many went.
    pub async fn prune_audit_log(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn parse_role(s: &str) -> Result<Role> {
    s.parse().map_err(|e: String| {
        StoreError::Db(sqlx::Error::Decode(format!("members.role: {e}").into()))
    })
}
