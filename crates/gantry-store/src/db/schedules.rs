//! Rows of the triggers that start pipelines by themselves: cron schedules and the polling of
//! remotes that cannot send webhooks (migration 0003).
//!
//! Both are claimed before they act, with a conditional update of the time they are due
//! (`… SET next_run_at = <next> WHERE id = $ AND next_run_at = <what was read>`): two ticks of
//! one server, or two servers on one PostgreSQL database, never fire the same slot twice.
//! Times are given by the caller (the engine's clock), never read here, so tests can move
//! them.

use super::{Db, PageReq, returned_id};
use crate::Result;
use sqlx::Row;
use sqlx::any::AnyRow;

const SCHEDULE_COLS: &str = "id, project_id, description, cron, time_zone, git_ref, variables, \
    active, next_run_at, last_run_at, last_pipeline_id, last_error, created_at, updated_at";

/// A schedule as stored. `variables` is a JSON array of `{"key", "value"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub cron: String,
    pub time_zone: String,
    pub git_ref: String,
    pub variables: String,
    pub active: bool,
    /// The next slot, ms since the epoch; `None` while inactive.
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_pipeline_id: Option<i64>,
    /// Why the last firing made no pipeline, until one does.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ScheduleRow {
    fn from_row(r: &AnyRow) -> Result<ScheduleRow> {
        Ok(ScheduleRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            description: r.try_get("description")?,
            cron: r.try_get("cron")?,
            time_zone: r.try_get("time_zone")?,
            git_ref: r.try_get("git_ref")?,
            variables: r.try_get("variables")?,
            active: r.try_get::<i64, _>("active")? != 0,
            next_run_at: r.try_get("next_run_at")?,
            last_run_at: r.try_get("last_run_at")?,
            last_pipeline_id: r.try_get("last_pipeline_id")?,
            last_error: r.try_get("last_error")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A new schedule, validated by the caller (the expression, the zone and the ref).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub project_id: i64,
    pub description: String,
    pub cron: String,
    pub time_zone: String,
    pub git_ref: String,
    pub variables: String,
    pub active: bool,
    pub next_run_at: Option<i64>,
    pub now: i64,
}

/// Every settable field of a schedule, written at once (the caller merged the change into the
/// stored row and validated the result).
#[derive(Debug, Clone)]
pub struct ScheduleUpdate {
    pub description: String,
    pub cron: String,
    pub time_zone: String,
    pub git_ref: String,
    pub variables: String,
    pub active: bool,
    pub next_run_at: Option<i64>,
    pub now: i64,
}

const POLLING_COLS: &str = "project_id, interval_secs, next_poll_at, primed, last_poll_at, \
    last_error, last_error_at, updated_at";

/// A project's polling settings and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollingRow {
    pub project_id: i64,
    pub interval_secs: i64,
    pub next_poll_at: i64,
    /// A poll has recorded the remote's heads (the first one starts no pipeline).
    pub primed: bool,
    pub last_poll_at: Option<i64>,
    /// The last poll's failure, until a poll succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub updated_at: i64,
}

impl PollingRow {
    fn from_row(r: &AnyRow) -> Result<PollingRow> {
        Ok(PollingRow {
            project_id: r.try_get("project_id")?,
            interval_secs: r.try_get("interval_secs")?,
            next_poll_at: r.try_get("next_poll_at")?,
            primed: r.try_get::<i64, _>("primed")? != 0,
            last_poll_at: r.try_get("last_poll_at")?,
            last_error: r.try_get("last_error")?,
            last_error_at: r.try_get("last_error_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

impl Db {
    // ---- schedules ------------------------------------------------------------------------

    pub async fn insert_schedule(&self, s: &NewSchedule) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO schedules (project_id, description, cron, time_zone, git_ref, variables, \
             active, next_run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(s.project_id)
        .bind(&s.description)
        .bind(&s.cron)
        .bind(&s.time_zone)
        .bind(&s.git_ref)
        .bind(&s.variables)
        .bind(s.active as i64)
        .bind(s.next_run_at)
        .bind(s.now)
        .bind(s.now)
        .fetch_all(self.pool())
        .await?;
        returned_id(&rows)
    }

    pub async fn schedule(&self, id: i64) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| ScheduleRow::from_row(&r)).transpose()
    }

    /// A project's schedules, oldest first.
    pub async fn schedules_of_project(
        &self,
        project_id: i64,
        page: PageReq,
    ) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE project_id = $1 \
             ORDER BY id LIMIT $2 OFFSET $3"
        )))
        .bind(project_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ScheduleRow::from_row).collect()
    }

    /// Writes every settable field; false when there is no such schedule.
    pub async fn update_schedule(&self, id: i64, u: &ScheduleUpdate) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE schedules SET description = $1, cron = $2, time_zone = $3, git_ref = $4, \
             variables = $5, active = $6, next_run_at = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(&u.description)
        .bind(&u.cron)
        .bind(&u.time_zone)
        .bind(&u.git_ref)
        .bind(&u.variables)
        .bind(u.active as i64)
        .bind(u.next_run_at)
        .bind(u.now)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_schedule(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Active schedules whose slot has come (`next_run_at <= now`), earliest first.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE active = 1 AND next_run_at <= $1 \
             ORDER BY next_run_at, id LIMIT 100"
        )))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ScheduleRow::from_row).collect()
    }

    /// Claims the slot `due` of a schedule by moving it to `next`: true for exactly one
    /// caller per slot.
    pub async fn claim_schedule(
        &self,
        id: i64,
        due: i64,
        next: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE schedules SET next_run_at = $1, last_run_at = $2 \
             WHERE id = $3 AND active = 1 AND next_run_at = $4",
        )
        .bind(next)
        .bind(now)
        .bind(id)
        .bind(due)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// What a firing made: its pipeline (the error cleared), or why there is none.
    pub async fn set_schedule_outcome(
        &self,
        id: i64,
        pipeline_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE schedules SET last_pipeline_id = COALESCE($1, last_pipeline_id), \
             last_error = $2 WHERE id = $3",
        )
        .bind(pipeline_id)
        .bind(error)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- polling --------------------------------------------------------------------------

    /// Turns polling on (`Some(interval)`, first poll at `next_poll_at`) or off (`None`: the
    /// recorded heads are forgotten too, so turning it on again starts with a silent first
    /// poll). Changing the interval keeps the recorded heads.
    pub async fn set_polling(
        &self,
        project_id: i64,
        interval_secs: Option<i64>,
        next_poll_at: i64,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        match interval_secs {
            Some(secs) => {
                sqlx::query(
                    "INSERT INTO project_polling (project_id, interval_secs, next_poll_at, \
                     primed, updated_at) VALUES ($1, $2, $3, 0, $4) \
                     ON CONFLICT (project_id) DO UPDATE SET interval_secs = excluded.interval_secs, \
                     next_poll_at = excluded.next_poll_at, updated_at = excluded.updated_at",
                )
                .bind(project_id)
                .bind(secs)
                .bind(next_poll_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM polled_refs WHERE project_id = $1")
                    .bind(project_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM project_polling WHERE project_id = $1")
                    .bind(project_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn polling(&self, project_id: i64) -> Result<Option<PollingRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLLING_COLS} FROM project_polling WHERE project_id = $1"
        )))
        .bind(project_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| PollingRow::from_row(&r)).transpose()
    }

    /// Projects whose poll is due (`next_poll_at <= now`).
    pub async fn due_polls(&self, now: i64) -> Result<Vec<PollingRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLLING_COLS} FROM project_polling WHERE next_poll_at <= $1 \
             ORDER BY next_poll_at LIMIT 100"
        )))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(PollingRow::from_row).collect()
    }

    /// Claims a project's poll due at `due` by moving it to `next`: true for one caller.
    pub async fn claim_poll(&self, project_id: i64, due: i64, next: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE project_polling SET next_poll_at = $1 WHERE project_id = $2 AND next_poll_at = $3",
        )
        .bind(next)
        .bind(project_id)
        .bind(due)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The last sha seen of each polled ref (full names).
    pub async fn polled_refs(&self, project_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT git_ref, sha FROM polled_refs WHERE project_id = $1 ORDER BY git_ref",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("git_ref")?, r.try_get("sha")?)))
            .collect()
    }

    /// Claims a ref's move from `old` (`None`: a ref not recorded yet) to `new` before its
    /// pipeline is created: true for one caller only, so two servers polling the same project
    /// start one pipeline. [`Db::release_polled_ref`] gives the claim back.
    pub async fn claim_polled_ref(
        &self,
        project_id: i64,
        git_ref: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool> {
        let r = match old {
            Some(old) => {
                sqlx::query(
                    "UPDATE polled_refs SET sha = $1 WHERE project_id = $2 AND git_ref = $3 \
                     AND sha = $4",
                )
                .bind(new)
                .bind(project_id)
                .bind(git_ref)
                .bind(old)
                .execute(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO polled_refs (project_id, git_ref, sha) VALUES ($1, $2, $3) \
                     ON CONFLICT (project_id, git_ref) DO NOTHING",
                )
                .bind(project_id)
                .bind(git_ref)
                .bind(new)
                .execute(self.pool())
                .await?
            }
        };
        Ok(r.rows_affected() > 0)
    }

    /// Gives back a claim of [`Db::claim_polled_ref`] whose pipeline could not be made: the
    /// ref is `old` again (or unrecorded), so the next poll tries it again.
    pub async fn release_polled_ref(
        &self,
        project_id: i64,
        git_ref: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<()> {
        let q = match old {
            Some(old) => sqlx::query(
                "UPDATE polled_refs SET sha = $1 WHERE project_id = $2 AND git_ref = $3 AND sha = $4",
            )
            .bind(old)
            .bind(project_id)
            .bind(git_ref)
            .bind(new),
            None => sqlx::query(
                "DELETE FROM polled_refs WHERE project_id = $1 AND git_ref = $2 AND sha = $3",
            )
            .bind(project_id)
            .bind(git_ref)
            .bind(new),
        };
        q.execute(self.pool()).await?;
        Ok(())
    }

    /// Records a ref's sha, or forgets it (`None`: deleted on the remote).
    pub async fn set_polled_ref(
        &self,
        project_id: i64,
        git_ref: &str,
        sha: Option<&str>,
    ) -> Result<()> {
        match sha {
            Some(sha) => {
                sqlx::query(
                    "INSERT INTO polled_refs (project_id, git_ref, sha) VALUES ($1, $2, $3) \
                     ON CONFLICT (project_id, git_ref) DO UPDATE SET sha = excluded.sha",
                )
                .bind(project_id)
                .bind(git_ref)
                .bind(sha)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM polled_refs WHERE project_id = $1 AND git_ref = $2")
                    .bind(project_id)
                    .bind(git_ref)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// The first poll: records every ref at once and marks the project primed.
    pub async fn prime_polling(
        &self,
        project_id: i64,
        refs: &[(String, String)],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM polled_refs WHERE project_id = $1")
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        for (git_ref, sha) in refs {
            sqlx::query("INSERT INTO polled_refs (project_id, git_ref, sha) VALUES ($1, $2, $3)")
                .bind(project_id)
                .bind(git_ref)
                .bind(sha)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE project_polling SET primed = 1, last_poll_at = $1, last_error = NULL, \
             last_error_at = NULL WHERE project_id = $2",
        )
        .bind(now)
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The end of a poll: `error` is `None` when it succeeded (the last error is cleared).
    pub async fn finish_poll(&self, project_id: i64, now: i64, error: Option<&str>) -> Result<()> {
        let q = match error {
            None => sqlx::query(
                "UPDATE project_polling SET last_poll_at = $1, last_error = NULL, \
                 last_error_at = NULL WHERE project_id = $2",
            )
            .bind(now)
            .bind(project_id),
            Some(e) => sqlx::query(
                "UPDATE project_polling SET last_poll_at = $1, last_error = $2, \
                 last_error_at = $3 WHERE project_id = $4",
            )
            .bind(now)
            .bind(e)
            .bind(now)
            .bind(project_id),
        };
        q.execute(self.pool()).await?;
        Ok(())
    }
}
