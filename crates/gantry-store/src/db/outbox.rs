//! Commit statuses and notifications: a project's forge settings, its notification channels
//! and the outbox, the queue of messages to send (migration `0004_outbox`).
//!
//! The outbox is what makes sending safe to do beside pipelines: the engine enqueues a row
//! (cheap, one `INSERT`) where an event happens and a sender task delivers it later, retrying
//! with backoff. Each row has a unique `dedupe_key` and [`Db::enqueue`] does nothing when the
//! key exists, so one event is queued once, also across restarts. A row is claimed
//! (`queued` → `sending`, a conditional update) before it is sent and marked `done`,
//! `queued` again (a retry, with `next_attempt_at`) or `failed` afterwards; rows found
//! `sending` at start (the process died mid-send) are queued again: delivery is at least
//! once, and only that edge can send a message twice.
//!
//! Rows of a `group_key` (one commit-status context of a pipeline or a job) are ordered: an
//! older row is never sent once a newer one exists ([`Db::outbox_newer_in_group`]), so a
//! retried `running` cannot overwrite `success` at the forge.
//!
//! Secrets are never in a row's payload: the forge's token and a chat webhook's URL stay
//! sealed in `project_forges` and `notification_channels` and are opened when sending.

use crate::Result;
use crate::db::{Db, PageReq, now_ms};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// The row binding of a project's sealed forge token.
pub fn forge_token_aad(project_id: i64) -> String {
    format!("project:{project_id}:forge_token")
}

/// The row binding of a chat channel's sealed webhook URL.
pub fn channel_url_aad(channel_id: i64) -> String {
    format!("channel:{channel_id}:url")
}

/// A project's forge, to which commit statuses go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRow {
    pub project_id: i64,
    /// `gitlab`, `github` or `gitea`.
    pub kind: String,
    pub api_url: String,
    pub repository: String,
    /// Sealed with [`forge_token_aad`].
    pub token: String,
    pub job_statuses: bool,
    pub updated_at: i64,
}

impl ForgeRow {
    fn from_row(r: &AnyRow) -> Result<ForgeRow> {
        Ok(ForgeRow {
            project_id: r.try_get("project_id")?,
            kind: r.try_get("kind")?,
            api_url: r.try_get("api_url")?,
            repository: r.try_get("repository")?,
            token: r.try_get("token")?,
            job_statuses: r.try_get::<i64, _>("job_statuses")? != 0,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A new notification channel.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub project_id: i64,
    pub kind: String,
    pub recipients: Option<String>,
    pub events: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub id: i64,
    pub project_id: i64,
    /// `email`, `slack`, `dingtalk`, `feishu`, `teams` or `generic`.
    pub kind: String,
    /// Comma-separated addresses (email).
    pub recipients: Option<String>,
    /// Sealed with [`channel_url_aad`] (chat).
    pub url: Option<String>,
    /// Comma-separated events.
    pub events: String,
    pub created_at: i64,
}

impl ChannelRow {
    fn from_row(r: &AnyRow) -> Result<ChannelRow> {
        Ok(ChannelRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            kind: r.try_get("kind")?,
            recipients: r.try_get("recipients")?,
            url: r.try_get("url")?,
            events: r.try_get("events")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const CHANNEL_COLS: &str = "id, project_id, kind, recipients, url, events, created_at";

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub project_id: i64,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
    /// `commit_status`, `email` or `chat`.
    pub kind: String,
    pub channel_id: Option<i64>,
    pub dedupe_key: String,
    pub group_key: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub project_id: i64,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
    pub kind: String,
    pub channel_id: Option<i64>,
    pub dedupe_key: String,
    pub group_key: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OutboxRow {
    fn from_row(r: &AnyRow) -> Result<OutboxRow> {
        Ok(OutboxRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            pipeline_id: r.try_get("pipeline_id")?,
            job_id: r.try_get("job_id")?,
            kind: r.try_get("kind")?,
            channel_id: r.try_get("channel_id")?,
            dedupe_key: r.try_get("dedupe_key")?,
            group_key: r.try_get("group_key")?,
            payload: r.try_get("payload")?,
            state: r.try_get("state")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

const OUTBOX_COLS: &str = "id, project_id, pipeline_id, job_id, kind, channel_id, dedupe_key, \
     group_key, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at";

impl Db {
    // ---- forge settings -------------------------------------------------------------------

    /// Sets (or replaces) a project's forge; `token` is sealed with [`forge_token_aad`].
    pub async fn set_forge(&self, f: &ForgeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO project_forges (project_id, kind, api_url, repository, token, \
             job_statuses, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (project_id) DO UPDATE SET kind = excluded.kind, \
             api_url = excluded.api_url, repository = excluded.repository, \
             token = excluded.token, job_statuses = excluded.job_statuses, \
             updated_at = excluded.updated_at",
        )
        .bind(f.project_id)
        .bind(&f.kind)
        .bind(&f.api_url)
        .bind(&f.repository)
        .bind(&f.token)
        .bind(f.job_statuses as i64)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn forge(&self, project_id: i64) -> Result<Option<ForgeRow>> {
        let row = sqlx::query(
            "SELECT project_id, kind, api_url, repository, token, job_statuses, updated_at \
             FROM project_forges WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| ForgeRow::from_row(&r)).transpose()
    }

    /// False when the project had no forge.
    pub async fn delete_forge(&self, project_id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM project_forges WHERE project_id = $1")
            .bind(project_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- channels -------------------------------------------------------------------------

    /// Inserts a channel and its sealed URL in one transaction: `seal` gets the new row's id,
    /// which the URL is bound to ([`channel_url_aad`]).
    pub async fn insert_channel_sealed(
        &self,
        c: &NewChannel,
        seal: impl FnOnce(i64) -> Option<String>,
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "INSERT INTO notification_channels (project_id, kind, recipients, events, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(c.project_id)
        .bind(&c.kind)
        .bind(c.recipients.as_deref())
        .bind(&c.events)
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
        let id: i64 = rows.first().ok_or(sqlx::Error::RowNotFound)?.try_get(0)?;
        if let Some(url) = seal(id) {
            sqlx::query("UPDATE notification_channels SET url = $1 WHERE id = $2")
                .bind(url)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn channels(&self, project_id: i64) -> Result<Vec<ChannelRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHANNEL_COLS} FROM notification_channels WHERE project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ChannelRow::from_row).collect()
    }

    pub async fn channel(&self, id: i64) -> Result<Option<ChannelRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHANNEL_COLS} FROM notification_channels WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| ChannelRow::from_row(&r)).transpose()
    }

    /// False when the project has no such channel. Its queued messages are dropped when the
    /// sender meets them.
    pub async fn delete_channel(&self, project_id: i64, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM notification_channels WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Whether the project has a forge and how many channels: the engine enqueues nothing
    /// for projects without either (one cheap query per pipeline event).
    pub async fn notify_targets(&self, project_id: i64) -> Result<(bool, i64)> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM project_forges WHERE project_id = $1) AS forges, \
             (SELECT COUNT(*) FROM notification_channels WHERE project_id = $2) AS channels",
        )
        .bind(project_id)
        .bind(project_id)
        .fetch_one(self.pool())
        .await?;
        Ok((
            row.try_get::<i64, _>("forges")? > 0,
            row.try_get::<i64, _>("channels")?,
        ))
    }

    /// The status of the newest finished (success or failed) top-level pipeline of a project on
    /// a ref before `before_id`: what tells a "fixed" pipeline from a "succeeded" one.
    pub async fn previous_result_on_ref(
        &self,
        project_id: i64,
        git_ref: &str,
        before_id: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT status FROM pipelines WHERE project_id = $1 AND git_ref = $2 AND id < $3 \
             AND status IN ('success', 'failed') AND parent_job_id IS NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(project_id)
        .bind(git_ref)
        .bind(before_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("status")).transpose()?)
    }

    // ---- the outbox -----------------------------------------------------------------------

    /// Queues a message, due now; false (and nothing written) when its `dedupe_key` was
    /// queued before.
    pub async fn enqueue(&self, m: &NewOutbox) -> Result<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO outbox (project_id, pipeline_id, job_id, kind, channel_id, dedupe_key, \
             group_key, payload, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(m.project_id)
        .bind(m.pipeline_id)
        .bind(m.job_id)
        .bind(&m.kind)
        .bind(m.channel_id)
        .bind(&m.dedupe_key)
        .bind(&m.group_key)
        .bind(&m.payload)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Claims up to `limit` due rows, oldest first (`queued` → `sending`, conditionally: two
    /// senders never claim the same row), and counts the attempt. Rows whose group `skip`
    /// names (being sent) are left queued.
    pub async fn claim_due(
        &self,
        now: i64,
        limit: i64,
        skip: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE state = 'queued' AND next_attempt_at <= $1 \
             ORDER BY id LIMIT $2"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut claimed = Vec::new();
        for r in &rows {
            let mut row = OutboxRow::from_row(r)?;
            if skip(&row.group_key) {
                continue;
            }
            let done = sqlx::query(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = $1 \
                 WHERE id = $2 AND state = 'queued'",
            )
            .bind(now)
            .bind(row.id)
            .execute(self.pool())
            .await?;
            if done.rows_affected() > 0 {
                row.state = "sending".into();
                row.attempts += 1;
                claimed.push(row);
            }
        }
        Ok(claimed)
    }

    /// The earliest `next_attempt_at` of the queued rows: when the sender should look again.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT MIN(next_attempt_at) AS due FROM outbox WHERE state = 'queued'")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// Whether a row newer than `id` exists in its group (then `id` must not be sent).
    pub async fn outbox_newer_in_group(&self, group_key: &str, id: i64) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT MAX(id) AS newer FROM outbox WHERE group_key = $1 AND id > $2")
                .bind(group_key)
                .bind(id)
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get::<Option<i64>, _>("newer")?)
    }

    /// Ends a claimed row: `done`, `failed` (given up) or `superseded`, with what went wrong.
    pub async fn outbox_finish(&self, id: i64, state: &str, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = $1, last_error = COALESCE($2, last_error), updated_at = $3 \
             WHERE id = $4",
        )
        .bind(state)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A claimed row goes back to the queue, due at `at`.
    pub async fn outbox_retry(&self, id: i64, at: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET state = 'queued', next_attempt_at = $1, last_error = $2, \
             updated_at = $3 WHERE id = $4 AND state = 'sending'",
        )
        .bind(at)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// At start: rows a previous process was sending when it stopped are queued again (they
    /// may have been delivered: at least once). Returns how many.
    pub async fn outbox_requeue_sending(&self) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE outbox SET state = 'queued', updated_at = $1 WHERE state = 'sending'",
        )
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// Forgets finished rows (done, failed, superseded) last changed before `before`; their
    /// events are long past, so their keys cannot be queued again. Returns how many.
    pub async fn outbox_prune(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM outbox WHERE state IN ('done', 'failed', 'superseded') \
             AND updated_at < $1",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// A project's outbox, newest first.
    pub async fn outbox_of_project(
        &self,
        project_id: i64,
        page: PageReq,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE project_id = $1 ORDER BY id DESC \
             LIMIT $2 OFFSET $3"
        )))
        .bind(project_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(OutboxRow::from_row).collect()
    }
}
