//! Trigger tokens and the merge requests the forges told of (migration 0005).

use super::{Db, now_ms, returned_id, unique_to_conflict};
use crate::Result;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A trigger token as stored: its hash, never the token.
#[derive(Debug, Clone)]
pub struct TriggerTokenRow {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub hint: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl TriggerTokenRow {
    fn from_row(r: &AnyRow) -> Result<TriggerTokenRow> {
        Ok(TriggerTokenRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            description: r.try_get("description")?,
            hint: r.try_get("hint")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
        })
    }
}

const TRIGGER_COLS: &str =
    "id, project_id, description, hint, created_by, created_at, last_used_at";

/// A merge request's state as its forge last told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequestState {
    pub project_id: i64,
    pub iid: i64,
    pub source_branch: String,
    pub target_branch: String,
    pub title: String,
    pub from_fork: bool,
    pub is_open: bool,
}

impl Db {
    /// Stores a new trigger token of a project by its hash.
    pub async fn insert_trigger_token(
        &self,
        project_id: i64,
        description: &str,
        token_hash: &str,
        hint: &str,
        created_by: &str,
    ) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO trigger_tokens (project_id, description, token_hash, hint, created_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(project_id)
        .bind(description)
        .bind(token_hash)
        .bind(hint)
        .bind(created_by)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, "a trigger token with this value exists"))?;
        returned_id(&rows)
    }

    /// A project's trigger tokens, oldest first.
    pub async fn trigger_tokens(&self, project_id: i64) -> Result<Vec<TriggerTokenRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TRIGGER_COLS} FROM trigger_tokens WHERE project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TriggerTokenRow::from_row).collect()
    }

    /// The token of a project with this hash, marked used now.
    pub async fn use_trigger_token(
        &self,
        project_id: i64,
        token_hash: &str,
    ) -> Result<Option<TriggerTokenRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TRIGGER_COLS} FROM trigger_tokens WHERE project_id = $1 AND token_hash = $2"
        )))
        .bind(project_id)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let token = TriggerTokenRow::from_row(&row)?;
        sqlx::query("UPDATE trigger_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(token.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(token))
    }

    /// Deletes a project's trigger token; false when it has none with this id.
    pub async fn delete_trigger_token(&self, project_id: i64, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM trigger_tokens WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records what a forge said of a merge request (opened, updated, closed, merged).
    pub async fn upsert_merge_request(&self, mr: &MergeRequestState) -> Result<()> {
        sqlx::query(
            "INSERT INTO merge_requests (project_id, iid, source_branch, target_branch, title, \
             from_fork, is_open, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (project_id, iid) DO UPDATE SET source_branch = excluded.source_branch, \
             target_branch = excluded.target_branch, title = excluded.title, \
             from_fork = excluded.from_fork, is_open = excluded.is_open, \
             updated_at = excluded.updated_at",
        )
        .bind(mr.project_id)
        .bind(mr.iid)
        .bind(&mr.source_branch)
        .bind(&mr.target_branch)
        .bind(&mr.title)
        .bind(mr.from_fork as i64)
        .bind(mr.is_open as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a merge request closed (or merged), whatever else is known of it.
    pub async fn close_merge_request(&self, project_id: i64, iid: i64) -> Result<()> {
        sqlx::query(
            "UPDATE merge_requests SET is_open = 0, updated_at = $1 \
             WHERE project_id = $2 AND iid = $3",
        )
        .bind(now_ms())
        .bind(project_id)
        .bind(iid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The iids of the open merge requests from `branch` of the project itself (not from
    /// forks), newest first, at most `limit`.
    pub async fn open_merge_requests(
        &self,
        project_id: i64,
        branch: &str,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT iid FROM merge_requests WHERE project_id = $1 AND source_branch = $2 \
             AND is_open = 1 AND from_fork = 0 ORDER BY iid DESC LIMIT $3",
        )
        .bind(project_id)
        .bind(branch)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }
}
