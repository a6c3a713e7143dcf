//! Registry replication (migration 0012): a project's rules (where its images go, which ones,
//! when) and their runs, a durable queue.
//!
//! A rule's password is stored sealed ([`crate::Keyring::seal`]) and bound to its row with
//! [`replication_password_aad`]; nothing here sees the plaintext (the engine seals and opens).
//! A schedule's slot is claimed as a pipeline schedule's is: `next_run_at` moved from the
//! value read ([`Db::claim_replication_slot`]). Runs are claimed conditionally too
//! (`queued` → `running`, counted as an attempt) and hold a lease the worker renews; a run
//! whose lease passed (its server died) is claimed again by the next look, so no run is lost
//! to a restart and none runs twice at once. Times are given by the caller.

use super::{Db, PageReq, returned_id, unique_to_conflict};
use crate::Result;
use sqlx::Row;
use sqlx::any::AnyRow;

/// The row binding (associated data) of a rule's sealed password:
/// `replication:<id>:password`. Ids are never reused.
pub fn replication_password_aad(id: i64) -> String {
    format!("replication:{id}:password")
}

const RULE_COLS: &str = "id, project_id, name, url, namespace, username, password, repositories, \
    tags, on_push, schedule, time_zone, next_run_at, enabled, insecure, created_by, created_at, \
    updated_at";

const RUN_COLS: &str = "id, replication_id, project_id, triggered_by, repository, tag, actor, \
    status, attempts, next_attempt_at, lease_until, queued_at, started_at, finished_at, \
    images_copied, images_skipped, blobs_copied, blobs_mounted, blobs_skipped, bytes_copied, error";

/// What describes a rule besides its password (a new one, or the new state of one), checked
/// by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationFields {
    pub name: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    /// Replaces the project's path in the destination's names; empty: names kept.
    pub namespace: String,
    pub username: String,
    /// Glob on repository names below the project's path.
    pub repositories: String,
    /// Glob on tags.
    pub tags: String,
    pub on_push: bool,
    /// A 5-field cron expression, read in `time_zone`.
    pub schedule: Option<String>,
    pub time_zone: String,
    /// The next scheduled slot; `None` without a schedule or while disabled.
    pub next_run_at: Option<i64>,
    pub enabled: bool,
    /// Accept any TLS certificate from the destination.
    pub insecure: bool,
}

/// A rule as stored; `password` is sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicationRow {
    pub id: i64,
    pub project_id: i64,
    pub fields: ReplicationFields,
    /// Sealed with [`replication_password_aad`].
    pub password: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for ReplicationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationRow")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("fields", &self.fields)
            .field("password", &self.password.as_ref().map(|_| "[sealed]"))
            .finish_non_exhaustive()
    }
}

impl ReplicationRow {
    fn from_row(r: &AnyRow) -> Result<ReplicationRow> {
        Ok(ReplicationRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            fields: ReplicationFields {
                name: r.try_get("name")?,
                url: r.try_get("url")?,
                namespace: r.try_get("namespace")?,
                username: r.try_get("username")?,
                repositories: r.try_get("repositories")?,
                tags: r.try_get("tags")?,
                on_push: r.try_get::<i64, _>("on_push")? != 0,
                schedule: r.try_get("schedule")?,
                time_zone: r.try_get("time_zone")?,
                next_run_at: r.try_get("next_run_at")?,
                enabled: r.try_get::<i64, _>("enabled")? != 0,
                insecure: r.try_get::<i64, _>("insecure")? != 0,
            },
            password: r.try_get("password")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// What an update does to a rule's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordChange {
    Keep,
    Clear,
    /// The new value, sealed for the row.
    Set(String),
}

/// What a run copied (its counters as they stand).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationCounts {
    pub images_copied: i64,
    pub images_skipped: i64,
    pub blobs_copied: i64,
    pub blobs_mounted: i64,
    pub blobs_skipped: i64,
    pub bytes_copied: i64,
}

/// A run to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReplicationRun {
    pub replication_id: i64,
    pub project_id: i64,
    /// `push`, `schedule` or `manual`.
    pub triggered_by: String,
    /// The pushed image (push runs); `None`: every matching tag.
    pub image: Option<(String, String)>,
    pub actor: String,
    pub now: i64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRunRow {
    pub id: i64,
    pub replication_id: i64,
    pub project_id: i64,
    pub triggered_by: String,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub actor: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub lease_until: Option<i64>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub counts: ReplicationCounts,
    /// Why it failed (or why the last attempt did, while it waits for the next).
    pub error: Option<String>,
}

impl ReplicationRunRow {
    fn from_row(r: &AnyRow) -> Result<ReplicationRunRow> {
        Ok(ReplicationRunRow {
            id: r.try_get("id")?,
            replication_id: r.try_get("replication_id")?,
            project_id: r.try_get("project_id")?,
            triggered_by: r.try_get("triggered_by")?,
            repository: r.try_get("repository")?,
            tag: r.try_get("tag")?,
            actor: r.try_get("actor")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            lease_until: r.try_get("lease_until")?,
            queued_at: r.try_get("queued_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            counts: ReplicationCounts {
                images_copied: r.try_get("images_copied")?,
                images_skipped: r.try_get("images_skipped")?,
                blobs_copied: r.try_get("blobs_copied")?,
                blobs_mounted: r.try_get("blobs_mounted")?,
                blobs_skipped: r.try_get("blobs_skipped")?,
                bytes_copied: r.try_get("bytes_copied")?,
            },
            error: r.try_get("error")?,
        })
    }
}

impl Db {
    // ---- rules ----------------------------------------------------------------------------

    /// Stores a new rule; `seal` seals its password for the new row's id (in the same
    /// transaction). A rule of the same name in the project is a conflict.
    pub async fn insert_replication(
        &self,
        project_id: i64,
        f: &ReplicationFields,
        created_by: &str,
        now: i64,
        seal: Option<impl FnOnce(i64) -> String>,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "INSERT INTO registry_replications (project_id, name, url, namespace, username, \
             password, repositories, tags, on_push, schedule, time_zone, next_run_at, enabled, \
             insecure, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING id",
        )
        .bind(project_id)
        .bind(&f.name)
        .bind(&f.url)
        .bind(&f.namespace)
        .bind(&f.username)
        .bind(&f.repositories)
        .bind(&f.tags)
        .bind(f.on_push as i64)
        .bind(f.schedule.as_deref())
        .bind(&f.time_zone)
        .bind(f.next_run_at)
        .bind(f.enabled as i64)
        .bind(f.insecure as i64)
        .bind(created_by)
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| {
            unique_to_conflict(
                e,
                &format!(
                    "the project has a replication rule named '{}': pick another name, or change \
                     that one with PUT",
                    f.name
                ),
            )
        })?;
        let id = returned_id(&rows)?;
        if let Some(seal) = seal {
            sqlx::query("UPDATE registry_replications SET password = $1 WHERE id = $2")
                .bind(seal(id))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn replication(&self, id: i64) -> Result<Option<ReplicationRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLS} FROM registry_replications WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ReplicationRow::from_row).transpose()
    }

    /// A project's rules, by name.
    pub async fn replications_of_project(&self, project_id: i64) -> Result<Vec<ReplicationRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLS} FROM registry_replications WHERE project_id = $1 ORDER BY name"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ReplicationRow::from_row).collect()
    }

    /// A project's enabled rules that replicate on push.
    pub async fn push_replications(&self, project_id: i64) -> Result<Vec<ReplicationRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLS} FROM registry_replications WHERE project_id = $1 AND enabled = 1 \
             AND on_push = 1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ReplicationRow::from_row).collect()
    }

    /// Writes every field of a rule and changes its password as told; false when there is no
    /// such rule. A name another rule of the project has is a conflict.
    pub async fn update_replication(
        &self,
        id: i64,
        f: &ReplicationFields,
        password: &PasswordChange,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE registry_replications SET name = $1, url = $2, namespace = $3, username = $4, \
             repositories = $5, tags = $6, on_push = $7, schedule = $8, time_zone = $9, \
             next_run_at = $10, enabled = $11, insecure = $12, updated_at = $13 WHERE id = $14",
        )
        .bind(&f.name)
        .bind(&f.url)
        .bind(&f.namespace)
        .bind(&f.username)
        .bind(&f.repositories)
        .bind(&f.tags)
        .bind(f.on_push as i64)
        .bind(f.schedule.as_deref())
        .bind(&f.time_zone)
        .bind(f.next_run_at)
        .bind(f.enabled as i64)
        .bind(f.insecure as i64)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            unique_to_conflict(
                e,
                &format!(
                    "the project has another replication rule named '{}': pick another name",
                    f.name
                ),
            )
        })?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let sealed = match password {
            PasswordChange::Keep => None,
            PasswordChange::Clear => Some(None),
            PasswordChange::Set(s) => Some(Some(s.as_str())),
        };
        if let Some(value) = sealed {
            sqlx::query("UPDATE registry_replications SET password = $1 WHERE id = $2")
                .bind(value)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a rule of a project and its runs' history; false when there is none.
    pub async fn delete_replication(&self, project_id: i64, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM registry_replication_runs WHERE replication_id = $1 AND EXISTS \
             (SELECT 1 FROM registry_replications WHERE id = $2 AND project_id = $3)",
        )
        .bind(id)
        .bind(id)
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
        let done =
            sqlx::query("DELETE FROM registry_replications WHERE id = $1 AND project_id = $2")
                .bind(id)
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Enabled rules whose scheduled slot has come (`next_run_at <= now`), earliest first.
    pub async fn due_replications(&self, now: i64) -> Result<Vec<ReplicationRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLS} FROM registry_replications WHERE enabled = 1 AND \
             next_run_at <= $1 ORDER BY next_run_at, id LIMIT 100"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ReplicationRow::from_row).collect()
    }

    /// Claims the slot `due` of a rule's schedule by moving it to `next`: true for exactly
    /// one caller per slot.
    pub async fn claim_replication_slot(
        &self,
        id: i64,
        due: i64,
        next: Option<i64>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE registry_replications SET next_run_at = $1 \
             WHERE id = $2 AND enabled = 1 AND next_run_at = $3",
        )
        .bind(next)
        .bind(id)
        .bind(due)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- runs -----------------------------------------------------------------------------

    /// Queues a run, due now, unless one that covers it waits already: a queued run of the
    /// rule for every tag, or (for an image) one for the same image; a run for every tag is
    /// not covered by one for an image (a blank name matches no image run). Returns the
    /// run's id and whether it is new.
    pub async fn queue_replication_run(&self, r: &NewReplicationRun) -> Result<(i64, bool)> {
        let (repository, tag) = match &r.image {
            Some((repo, tag)) => (Some(repo.as_str()), Some(tag.as_str())),
            None => (None, None),
        };
        // One statement that writes first: SQLite cannot turn a read transaction into a
        // write when another writer committed meanwhile (SQLITE_BUSY_SNAPSHOT).
        let rows = sqlx::query(
            "INSERT INTO registry_replication_runs (replication_id, project_id, triggered_by, \
             repository, tag, actor, status, attempts, next_attempt_at, queued_at, \
             images_copied, images_skipped, blobs_copied, blobs_mounted, blobs_skipped, \
             bytes_copied) \
             SELECT $1, $2, $3, $4, $5, $6, 'queued', 0, $7, $8, 0, 0, 0, 0, 0, 0 \
             WHERE NOT EXISTS (SELECT 1 FROM registry_replication_runs WHERE \
             replication_id = $1 AND status = 'queued' AND \
             (repository IS NULL OR (repository = $9 AND tag = $10))) RETURNING id",
        )
        .bind(r.replication_id)
        .bind(r.project_id)
        .bind(&r.triggered_by)
        .bind(repository)
        .bind(tag)
        .bind(&r.actor)
        .bind(r.now)
        .bind(r.now)
        .bind(repository.unwrap_or(""))
        .bind(tag.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        if !rows.is_empty() {
            return Ok((returned_id(&rows)?, true));
        }
        let row = sqlx::query(
            "SELECT id FROM registry_replication_runs WHERE replication_id = $1 AND \
             status = 'queued' AND (repository IS NULL OR (repository = $2 AND tag = $3)) \
             ORDER BY id LIMIT 1",
        )
        .bind(r.replication_id)
        .bind(repository.unwrap_or(""))
        .bind(tag.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok((row.try_get("id")?, false)),
            // It started between the two statements: queue this one after all.
            None => Box::pin(self.queue_replication_run(r)).await,
        }
    }

    /// Claims up to `limit` runs, oldest first: queued ones that are due, and running ones
    /// whose lease passed (their server stopped). Each claim is conditional on the row as it
    /// was read, counts an attempt and holds the run until `lease_until`. Runs of the rules
    /// `skip` names (running here) are left alone.
    pub async fn claim_replication_runs(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
        skip: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<Vec<ReplicationRunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM registry_replication_runs WHERE \
             (status = 'queued' AND next_attempt_at <= $1) OR \
             (status = 'running' AND lease_until < $2) ORDER BY id LIMIT $3"
        )))
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for r in &rows {
            let mut run = ReplicationRunRow::from_row(r)?;
            if skip(run.replication_id) || !taken.insert(run.replication_id) {
                continue;
            }
            let done = sqlx::query(
                "UPDATE registry_replication_runs SET status = 'running', attempts = attempts + 1, \
                 lease_until = $1, started_at = COALESCE(started_at, $2) \
                 WHERE id = $3 AND status = $4 AND attempts = $5",
            )
            .bind(lease_until)
            .bind(now)
            .bind(run.id)
            .bind(&run.status)
            .bind(run.attempts)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() > 0 {
                run.status = "running".into();
                run.attempts += 1;
                run.lease_until = Some(lease_until);
                run.started_at = run.started_at.or(Some(now));
                claimed.push(run);
            } else {
                taken.remove(&run.replication_id);
            }
        }
        Ok(claimed)
    }

    /// Holds a running run (attempt `attempts`) until `until`; false when it is no longer
    /// this attempt's (taken over, or its rule deleted).
    pub async fn renew_replication_lease(
        &self,
        id: i64,
        attempts: i64,
        until: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE registry_replication_runs SET lease_until = $1 \
             WHERE id = $2 AND status = 'running' AND attempts = $3",
        )
        .bind(until)
        .bind(id)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ends attempt `attempts` of a running run: `succeeded` or `failed` (finished now), or
    /// `queued` again, due at `retry_at`, with why this attempt failed. The counters are what
    /// the attempt copied (added to those of earlier attempts). False when the run is no
    /// longer this attempt's.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_replication_attempt(
        &self,
        id: i64,
        attempts: i64,
        status: &str,
        retry_at: Option<i64>,
        counts: &ReplicationCounts,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let finished = matches!(status, "succeeded" | "failed").then_some(now);
        let r = sqlx::query(
            "UPDATE registry_replication_runs SET status = $1, \
             next_attempt_at = COALESCE($2, next_attempt_at), lease_until = NULL, \
             finished_at = $3, images_copied = images_copied + $4, \
             images_skipped = images_skipped + $5, blobs_copied = blobs_copied + $6, \
             blobs_mounted = blobs_mounted + $7, blobs_skipped = blobs_skipped + $8, \
             bytes_copied = bytes_copied + $9, error = $10 \
             WHERE id = $11 AND status = 'running' AND attempts = $12",
        )
        .bind(status)
        .bind(retry_at)
        .bind(finished)
        .bind(counts.images_copied)
        .bind(counts.images_skipped)
        .bind(counts.blobs_copied)
        .bind(counts.blobs_mounted)
        .bind(counts.blobs_skipped)
        .bind(counts.bytes_copied)
        .bind(error)
        .bind(id)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn replication_run(&self, id: i64) -> Result<Option<ReplicationRunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM registry_replication_runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ReplicationRunRow::from_row).transpose()
    }

    /// A rule's runs, newest first.
    pub async fn replication_runs(
        &self,
        replication_id: i64,
        page: PageReq,
    ) -> Result<Vec<ReplicationRunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM registry_replication_runs WHERE replication_id = $1 \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(replication_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ReplicationRunRow::from_row).collect()
    }

    /// The earliest time a queued run is due or a running one's lease passes: when the
    /// worker should look again.
    pub async fn replication_next_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN status = 'queued' THEN next_attempt_at ELSE lease_until END) \
             AS due FROM registry_replication_runs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// Forgets finished runs that ended before `before`. Returns how many.
    pub async fn prune_replication_runs(&self, before: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM registry_replication_runs WHERE status IN ('succeeded', 'failed') \
             AND finished_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
