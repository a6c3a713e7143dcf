//! The database: SQLite (the embedded default, one file) or PostgreSQL, behind one [`Db`].
//!
//! Both go through sqlx's `Any` driver with the same SQL: numbered `$1` parameters (which
//! SQLite accepts too), `RETURNING id`, integers for times (ms since the epoch) and flags
//! (0/1). The schemas live in `migrations/sqlite` and `migrations/postgres` with the same
//! numbering; a test checks that they declare the same tables and columns.
//!
//! Every state change of a job is a conditional `UPDATE … WHERE status IN (…)`, so that two
//! racing events (an agent's result and a cancel, a lease expiry and a late heartbeat) cannot
//! both win: the caller learns from the returned flag whether its transition happened.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives a
//! crash of the process (`kill -9`), which is what the server promises; surviving a power cut
//! is PostgreSQL's job in real deployments.

mod accounts;
pub mod outbox;
mod registry;
pub mod replication;
mod schedules;
mod triggers;
pub mod ui;
mod variables;

pub use accounts::{AuditEntry, AuditRow, MemberRow, NewUser, SessionRow, TokenRow, UserRow};
pub use registry::{
    ManifestRow, NewManifest, PULL_RECORD_INTERVAL, REGISTRY_HISTORY_ACTIONS, RegistrySettingsRow,
    RepositoryRow, RepositorySummary, RobotRow, TagRow, TagSummary,
};
pub use schedules::{NewSchedule, PollingRow, ScheduleRow, ScheduleUpdate};
pub use triggers::{MergeRequestState, TriggerTokenRow};
pub use variables::{ProtectedRefRow, VariableFields, VariableRow, variable_aad};

use crate::secrets::{Keyring, is_sealed};
use crate::{Result, StoreError};
use gantry_api::{FailureReason, JobStatus, PipelineStatus};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::borrow::Cow;
use std::time::Duration;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Every pipeline and job write that changed something, for live views (the web UI's
    /// server-sent events). Nobody listening costs nothing; a slow listener lags and
    /// reloads, it never slows a write.
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// What a write changed: a pipeline (its status, or a job added to it) or a job (its
/// status, its outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Pipeline(i64),
    Job(i64),
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "webhooks",
        include_str!("../migrations/sqlite/0002_webhooks.sql"),
    ),
    (
        3,
        "schedules",
        include_str!("../migrations/sqlite/0003_schedules.sql"),
    ),
    (
        4,
        "outbox",
        include_str!("../migrations/sqlite/0004_outbox.sql"),
    ),
    (
        5,
        "triggers",
        include_str!("../migrations/sqlite/0005_triggers.sql"),
    ),
    (
        6,
        "accounts",
        include_str!("../migrations/sqlite/0006_accounts.sql"),
    ),
    (
        7,
        "variables",
        include_str!("../migrations/sqlite/0007_variables.sql"),
    ),
    (
        8,
        "registry",
        include_str!("../migrations/sqlite/0008_registry.sql"),
    ),
    (9, "ui", include_str!("../migrations/sqlite/0009_ui.sql")),
    (
        10,
        "robots",
        include_str!("../migrations/sqlite/0010_robots.sql"),
    ),
    (
        11,
        "registry policy",
        include_str!("../migrations/sqlite/0011_registry_policy.sql"),
    ),
    (
        12,
        "replication",
        include_str!("../migrations/sqlite/0012_replication.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "webhooks",
        include_str!("../migrations/postgres/0002_webhooks.sql"),
    ),
    (
        3,
        "schedules",
        include_str!("../migrations/postgres/0003_schedules.sql"),
    ),
    (
        4,
        "outbox",
        include_str!("../migrations/postgres/0004_outbox.sql"),
    ),
    (
        5,
        "triggers",
        include_str!("../migrations/postgres/0005_triggers.sql"),
    ),
    (
        6,
        "accounts",
        include_str!("../migrations/postgres/0006_accounts.sql"),
    ),
    (
        7,
        "variables",
        include_str!("../migrations/postgres/0007_variables.sql"),
    ),
    (
        8,
        "registry",
        include_str!("../migrations/postgres/0008_registry.sql"),
    ),
    (9, "ui", include_str!("../migrations/postgres/0009_ui.sql")),
    (
        10,
        "robots",
        include_str!("../migrations/postgres/0010_robots.sql"),
    ),
    (
        11,
        "registry policy",
        include_str!("../migrations/postgres/0011_registry_policy.sql"),
    ),
    (
        12,
        "replication",
        include_str!("../migrations/postgres/0012_replication.sql"),
    ),
];

/// The migrations of a backend: (version, description, SQL).
pub fn migrations(backend: Backend) -> &'static [(i64, &'static str, &'static str)] {
    match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Opens `url` (`sqlite:///path/to/file.db`, `sqlite::memory:`, `postgres://…`) and brings
    /// its schema up to date.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Conflict(format!(
                "unsupported database URL '{url}': use sqlite:///path/to/gantry.db or postgres://user@host/db"
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') && !url.contains(":memory:") => {
                format!("{url}?mode=rwc")
            }
            _ => url.to_string(),
        };
        let opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                            // Checkpoints (which fsync the database) run from
                            // [`Db::checkpoint`] on the server's ticker, not inside
                            // whichever commit crosses 1000 pages: a trigger never waits
                            // for one.
                            "PRAGMA wal_autocheckpoint = 0",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = opts.connect(&url).await?;
        let db = Db {
            pool,
            backend,
            changes: tokio::sync::broadcast::channel(1024).0,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Listens to [`Change`]s from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn changed(&self, c: Change) {
        // No receiver is not an error: nobody watches.
        let _ = self.changes.send(c);
    }

    fn changed_if(&self, yes: bool, c: Change) -> bool {
        if yes {
            self.changed(c);
        }
        yes
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<()> {
        let list: Vec<Migration> = migrations(self.backend)
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(list),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- settings -------------------------------------------------------------------------

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a setting unless it exists (the first of racing writers wins).
    pub async fn insert_setting_once(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- projects -------------------------------------------------------------------------

    /// A project without credentials or webhook secret.
    pub async fn insert_project(&self, p: &NewProject) -> Result<i64> {
        self.insert_project_sealed(p, |_| ProjectSecrets::default())
            .await
    }

    /// Inserts a project and its sealed values in one transaction: `seal` gets the new row's
    /// id, which the values are bound to (see [`project_aad`]), and returns them sealed.
    pub async fn insert_project_sealed(
        &self,
        p: &NewProject,
        seal: impl FnOnce(i64) -> ProjectSecrets,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO projects (path, git_url, default_branch, pipeline_file, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&p.path)
        .bind(&p.git_url)
        .bind(&p.default_branch)
        .bind(p.pipeline_file.as_deref())
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| unique_to_conflict(e, &format!("a project with path '{}' exists", p.path)))?;
        let id = returned_id(&row)?;
        let secrets = seal(id);
        if secrets.credentials.is_some() || secrets.webhook_secret.is_some() {
            sqlx::query("UPDATE projects SET credentials = $1, webhook_secret = $2 WHERE id = $3")
                .bind(secrets.credentials.as_deref())
                .bind(secrets.webhook_secret.as_deref())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Replaces a project's sealed webhook secret; false when there is no such project.
    pub async fn set_webhook_secret(&self, id: i64, sealed: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE projects SET webhook_secret = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Seals again, with the keyring's current key, every sealed value of the database that
    /// uses another key, and seals the plaintext credentials stored before encryption at rest
    /// existed; all in one transaction, so a failure (a value no key opens, one moved to
    /// another row) changes nothing. Each write is conditional on the value read, so a value
    /// the server replaced meanwhile (sealed with a key of the file) is left as it is.
    pub async fn reseal_all(&self, keyring: &Keyring) -> Result<Resealed> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT id, credentials, webhook_secret FROM projects ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
        let mut done = Resealed::default();
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            for column in [SealedColumn::Credentials, SealedColumn::WebhookSecret] {
                let Some(old) = r.try_get::<Option<String>, _>(column.name())? else {
                    continue;
                };
                let aad = project_aad(id, column);
                let plaintext = !is_sealed(&old);
                let new = if !plaintext {
                    keyring.reseal(&old, aad.as_bytes())
                } else {
                    // Plaintext from before encryption at rest.
                    Ok(Some(keyring.seal(old.as_bytes(), aad.as_bytes())))
                };
                let new = new.map_err(|source| StoreError::Secret {
                    what: format!("project {id}, {}", column.name()),
                    source,
                })?;
                let Some(new) = new else { continue };
                let r = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE projects SET {col} = $1 WHERE id = $2 AND {col} = $3",
                    col = column.name()
                )))
                .bind(&new)
                .bind(id)
                .bind(&old)
                .execute(&mut *tx)
                .await?;
                done.written += r.rows_affected();
                if plaintext {
                    done.plaintext += r.rows_affected();
                }
            }
        }
        for column in SEALED_COLUMNS {
            column.reseal(&mut tx, keyring, &mut done).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Rewrites the database so that no copy of replaced values stays in its free space:
    /// SQLite's `VACUUM` (then the write-ahead log is checkpointed and emptied), PostgreSQL's
    /// `VACUUM FULL` of `projects`. Used after plaintext secrets were sealed.
    pub async fn scrub(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("VACUUM").execute(&self.pool).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await?;
            }
            Backend::Postgres => {
                sqlx::query("VACUUM FULL projects")
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes a project that has no pipelines (a registration whose first fetch failed).
    pub async fn delete_project(&self, id: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM projects WHERE id = $1 AND NOT EXISTS \
             (SELECT 1 FROM pipelines WHERE project_id = $2)",
        )
        .bind(id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_default_branch(&self, id: i64, branch: &str) -> Result<()> {
        sqlx::query("UPDATE projects SET default_branch = $1 WHERE id = $2")
            .bind(branch)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn project(&self, id: i64) -> Result<Option<ProjectRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROJECT_COLS} FROM projects WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| ProjectRow::from_row(&r)).transpose()
    }

    pub async fn project_by_path(&self, path: &str) -> Result<Option<ProjectRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROJECT_COLS} FROM projects WHERE path = $1"
        )))
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| ProjectRow::from_row(&r)).transpose()
    }

    pub async fn projects(&self, page: PageReq) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PROJECT_COLS} FROM projects ORDER BY id LIMIT $1 OFFSET $2"
        )))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ProjectRow::from_row).collect()
    }

    // ---- webhook deliveries ---------------------------------------------------------------

    /// Records a webhook request. A `claimed` one (a delivery that may create a pipeline)
    /// fails with [`StoreError::Conflict`] when an earlier claimed delivery of the project has
    /// the same delivery id or the same payload: that is a replay. Unclaimed records (refusals)
    /// are kept to the newest [`DELIVERIES_KEPT`] per project.
    pub async fn insert_delivery(&self, d: &NewDelivery) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO webhook_deliveries (project_id, forge, event, delivery_id, payload_sha256, \
             claimed, received_at, status, outcome, pipeline_id, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(d.project_id)
        .bind(&d.forge)
        .bind(&d.event)
        .bind(d.delivery_id.as_deref())
        .bind(&d.payload_sha256)
        .bind(d.claimed as i64)
        .bind(now_ms())
        .bind(i64::from(d.status))
        .bind(&d.outcome)
        .bind(d.pipeline_id)
        .bind(d.error.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, "this delivery was already received"))?;
        let id = returned_id(&row)?;
        if !d.claimed {
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE project_id = $1 AND claimed = 0 AND id < \
                 (SELECT id FROM webhook_deliveries WHERE project_id = $2 AND claimed = 0 \
                 ORDER BY id DESC LIMIT 1 OFFSET $3)",
            )
            .bind(d.project_id)
            .bind(d.project_id)
            .bind(DELIVERIES_KEPT - 1)
            .execute(&self.pool)
            .await?;
        }
        Ok(id)
    }

    /// What became of a claimed delivery. `keep_claim: false` gives the claim back (the
    /// delivery failed: a redelivery may try again).
    pub async fn finish_delivery(&self, id: i64, end: &DeliveryEnd) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, outcome = $2, pipeline_id = $3, error = $4, \
             claimed = CASE WHEN $5 = 1 THEN claimed ELSE 0 END WHERE id = $6",
        )
        .bind(i64::from(end.status))
        .bind(&end.outcome)
        .bind(end.pipeline_id)
        .bind(end.error.as_deref())
        .bind(end.keep_claim as i64)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A project's deliveries, newest first.
    pub async fn deliveries(&self, project_id: i64, page: PageReq) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE project_id = $1 \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(project_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(DeliveryRow::from_row).collect()
    }

    // ---- pipelines ------------------------------------------------------------------------

    /// Stores a new pipeline and its jobs (each with its first decision: pending, skipped,
    /// manual, scheduled…) in one transaction, so that a pipeline is never seen without its
    /// jobs and a failed write (a full disk) leaves nothing behind. The jobs' `pipeline_id`
    /// is set here. Returns the pipeline's id and the jobs' ids, in order.
    pub async fn create_pipeline(
        &self,
        p: &NewPipeline,
        jobs: &[NewJob],
    ) -> Result<(i64, Vec<i64>)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO pipelines (project_id, git_ref, sha, status, source, parent_job_id, \
             trigger_json, errors, auto_cancel, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(p.project_id)
        .bind(&p.git_ref)
        .bind(&p.sha)
        .bind(p.status.as_str())
        .bind(&p.source)
        .bind(p.parent_job_id)
        .bind(&p.trigger_json)
        .bind(p.errors.as_deref())
        .bind(p.auto_cancel.as_deref())
        .bind(now)
        .bind(p.status.is_finished().then_some(now))
        .fetch_all(&mut *tx)
        .await?;
        let id = returned_id(&row)?;
        let mut ids = Vec::with_capacity(jobs.len());
        for j in jobs {
            ids.push(insert_job(&mut tx, id, j).await?);
        }
        tx.commit().await?;
        self.changed(Change::Pipeline(id));
        Ok((id, ids))
    }

    /// Copies what the SQLite write-ahead log holds into the database file, as far as it can
    /// without waiting for readers (`PRAGMA wal_checkpoint(PASSIVE)`). The server calls it
    /// on its ticker; automatic checkpoints are off (see [`Db::connect`]). A no-op on
    /// PostgreSQL.
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn set_pipeline_errors(&self, id: i64, errors: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE pipelines SET errors = $1, status = 'failed', finished_at = $2 WHERE id = $3",
        )
        .bind(errors)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.changed(Change::Pipeline(id));
        Ok(())
    }

    /// Sets a pipeline's status, stamping `started_at` the first time it runs and
    /// `finished_at` when it finishes (cleared when a retry makes it run again).
    pub async fn set_pipeline_status(&self, id: i64, status: PipelineStatus) -> Result<bool> {
        let now = now_ms();
        let finished = status.is_finished();
        let running = matches!(status, PipelineStatus::Running);
        let r = sqlx::query(
            "UPDATE pipelines SET status = $1, \
             started_at = CASE WHEN $2 = 1 AND started_at IS NULL THEN $3 ELSE started_at END, \
             finished_at = CASE WHEN $4 = 1 THEN $5 ELSE NULL END \
             WHERE id = $6 AND status <> $7",
        )
        .bind(status.as_str())
        .bind(running as i64)
        .bind(now)
        .bind(finished as i64)
        .bind(now)
        .bind(id)
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Pipeline(id)))
    }

    pub async fn pipeline(&self, id: i64) -> Result<Option<PipelineRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| PipelineRow::from_row(&r)).transpose()
    }

    /// Newest first.
    pub async fn pipelines_of_project(
        &self,
        project_id: i64,
        page: PageReq,
    ) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(project_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// Newest first, all projects.
    pub async fn pipelines(&self, page: PageReq) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines ORDER BY id DESC LIMIT $1 OFFSET $2"
        )))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// Unfinished pipelines of a project on a ref, older than `before_id`.
    pub async fn unfinished_pipelines_on_ref(
        &self,
        project_id: i64,
        git_ref: &str,
        before_id: i64,
    ) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1 AND git_ref = $2 AND id < $3 \
             AND status IN ('created', 'pending', 'running', 'scheduled') AND parent_job_id IS NULL"
        )))
        .bind(project_id)
        .bind(git_ref)
        .bind(before_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// Every pipeline not finished yet (for recovery after a restart).
    pub async fn unfinished_pipelines(&self) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE status NOT IN ('success', 'failed', 'canceled', 'skipped')"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// The child pipeline a trigger job started.
    pub async fn child_pipeline_of(&self, job_id: i64) -> Result<Option<PipelineRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE parent_job_id = $1 ORDER BY id DESC LIMIT 1"
        )))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| PipelineRow::from_row(&r)).transpose()
    }

    // ---- jobs -----------------------------------------------------------------------------

    pub async fn insert_job(&self, j: &NewJob) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id = insert_job(&mut tx, j.pipeline_id, j).await?;
        tx.commit().await?;
        self.changed(Change::Pipeline(j.pipeline_id));
        Ok(id)
    }

    /// A new attempt of a job: the old one is marked retried, the new one inserted, together.
    pub async fn retry_job(&self, old_id: i64, new: &NewJob) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET retried = 1 WHERE id = $1")
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
        let id = insert_job(&mut tx, new.pipeline_id, new).await?;
        tx.commit().await?;
        self.changed(Change::Job(old_id));
        self.changed(Change::Pipeline(new.pipeline_id));
        Ok(id)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| JobRow::from_row(&r)).transpose()
    }

    pub async fn job_by_token_hash(&self, hash: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE token_hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| JobRow::from_row(&r)).transpose()
    }

    /// Every job of a pipeline, every attempt, in creation order.
    pub async fn jobs_of_pipeline(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE pipeline_id = $1 ORDER BY id"
        )))
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    pub async fn jobs_page_of_pipeline(
        &self,
        pipeline_id: i64,
        page: PageReq,
    ) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE pipeline_id = $1 ORDER BY id LIMIT $2 OFFSET $3"
        )))
        .bind(pipeline_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    pub async fn jobs_with_status(&self, status: JobStatus) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE status = $1 ORDER BY id"
        )))
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    pub async fn running_jobs_of_agent(&self, agent_id: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE agent_id = $1 AND status = 'running' ORDER BY id"
        )))
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    /// Running jobs whose lease ran out before `now`.
    pub async fn expired_leases(&self, now: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE status = 'running' AND lease_until < $1 ORDER BY id"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    /// Scheduled (`when: delayed`) jobs whose time has come.
    pub async fn due_jobs(&self, now: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE status = 'scheduled' AND run_at <= $1 ORDER BY id"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    /// Moves a job from one of `from` to `to`; false when it was in none of them.
    pub async fn transition(&self, id: i64, from: &[JobStatus], to: JobStatus) -> Result<bool> {
        let now = now_ms();
        let list = status_list(from);
        let r = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = $1, \
             queued_at = CASE WHEN $2 = 'pending' THEN $3 ELSE queued_at END, \
             finished_at = CASE WHEN $4 = 1 THEN $5 ELSE finished_at END \
             WHERE id = $6 AND status IN ({list})"
        )))
        .bind(to.as_str())
        .bind(to.as_str())
        .bind(now)
        .bind(to.is_finished() as i64)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// `when: delayed`: the job waits until `run_at`.
    pub async fn schedule_job(&self, id: i64, run_at: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'scheduled', run_at = $1 WHERE id = $2 AND status = 'created'",
        )
        .bind(run_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// A manual job is played: it becomes pending, and who played it is kept.
    pub async fn play_job(&self, id: i64, user: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'pending', played_by = $1, queued_at = $2 \
             WHERE id = $3 AND status = 'manual'",
        )
        .bind(user)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// Hands a pending job to an agent.
    pub async fn assign_job(
        &self,
        id: i64,
        agent_id: i64,
        token_hash: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'running', agent_id = $1, token_hash = $2, lease_until = $3, \
             started_at = $4 WHERE id = $5 AND status = 'pending'",
        )
        .bind(agent_id)
        .bind(token_hash)
        .bind(lease_until)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// [`Db::assign_job`] that also returns the job's row as it is now (one round trip on
    /// the way from a trigger to the agent instead of two); `None` when it was not pending.
    pub async fn claim_job(
        &self,
        id: i64,
        agent_id: i64,
        token_hash: &str,
        lease_until: i64,
    ) -> Result<Option<JobRow>> {
        // fetch_all: SQLite finishes a RETURNING statement (and reports its errors) only
        // when every row has been read.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'running', agent_id = $1, token_hash = $2, lease_until = $3, \
             started_at = $4 WHERE id = $5 AND status = 'pending' RETURNING {JOB_COLS}"
        )))
        .bind(agent_id)
        .bind(token_hash)
        .bind(lease_until)
        .bind(now_ms())
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let row = rows.first().map(JobRow::from_row).transpose()?;
        self.changed_if(row.is_some(), Change::Job(id));
        Ok(row)
    }

    /// A job that never reaches an agent (a trigger job) starts running.
    pub async fn start_job_in_server(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// Extends the leases of every running job of an agent.
    pub async fn extend_leases(&self, agent_id: i64, until: i64) -> Result<()> {
        sqlx::query("UPDATE jobs SET lease_until = $1 WHERE agent_id = $2 AND status = 'running'")
            .bind(until)
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// After a restart, give every running job one lease to be claimed by its agent.
    pub async fn extend_all_leases(&self, until: i64) -> Result<()> {
        sqlx::query("UPDATE jobs SET lease_until = $1 WHERE status = 'running'")
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a job's end. Only a job in one of `from` finishes; false otherwise.
    pub async fn finish_job(&self, id: i64, from: &[JobStatus], end: &JobEnd) -> Result<bool> {
        let list = status_list(from);
        let dotenv = serde_json::to_string(&end.dotenv).unwrap_or_else(|_| "[]".into());
        let r = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = $1, failure_reason = $2, exit_code = $3, dotenv = $4, \
             has_artifacts = $5, log_size = $6, finished_at = $7, lease_until = NULL \
             WHERE id = $8 AND status IN ({list})"
        )))
        .bind(end.status.as_str())
        .bind(end.failure_reason.map(|r| r.as_str()))
        .bind(end.exit_code.map(i64::from))
        .bind(dotenv)
        .bind(end.has_artifacts as i64)
        .bind(end.log_size as i64)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.changed_if(r.rows_affected() > 0, Change::Job(id)))
    }

    /// The final log size and whether artifacts were stored, for a job that is already finished
    /// (canceled ones report their log later).
    pub async fn set_job_outputs(&self, id: i64, log_size: u64, has_artifacts: bool) -> Result<()> {
        sqlx::query("UPDATE jobs SET log_size = $1, has_artifacts = $2 WHERE id = $3")
            .bind(log_size as i64)
            .bind(has_artifacts as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.changed(Change::Job(id));
        Ok(())
    }

    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) FROM jobs WHERE retried = 0 GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    // ---- agents ---------------------------------------------------------------------------

    pub async fn insert_agent(&self, a: &NewAgent) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO agents (name, token_hash, tags, run_untagged, executor, concurrency, version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&a.name)
        .bind(&a.token_hash)
        .bind(serde_json::to_string(&a.tags).unwrap_or_else(|_| "[]".into()))
        .bind(a.run_untagged as i64)
        .bind(&a.executor)
        .bind(i64::from(a.concurrency))
        .bind(&a.version)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        returned_id(&row)
    }

    /// What an agent says of itself when it connects.
    pub async fn update_agent(&self, id: i64, a: &AgentUpdate) -> Result<()> {
        sqlx::query(
            "UPDATE agents SET tags = $1, run_untagged = $2, executor = $3, concurrency = $4, \
             version = $5, last_seen_at = $6 WHERE id = $7",
        )
        .bind(serde_json::to_string(&a.tags).unwrap_or_else(|_| "[]".into()))
        .bind(a.run_untagged as i64)
        .bind(&a.executor)
        .bind(i64::from(a.concurrency))
        .bind(&a.version)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces an agent's token hash by one no token has: the agent can no longer connect.
    pub async fn revoke_agent_token(&self, id: i64, unusable: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE agents SET token_hash = $1 WHERE id = $2")
            .bind(unusable)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn touch_agent(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn agent_by_token_hash(&self, hash: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AGENT_COLS} FROM agents WHERE token_hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| AgentRow::from_row(&r)).transpose()
    }

    pub async fn agents(&self, page: PageReq) -> Result<Vec<AgentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AGENT_COLS} FROM agents ORDER BY id LIMIT $1 OFFSET $2"
        )))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AgentRow::from_row).collect()
    }
}

/// The id an `INSERT … RETURNING id` gave. Such statements outside a transaction use
/// `fetch_all`, not `fetch_one`: SQLite commits the statement when it is stepped to its end,
/// and a `fetch_one` stops after the first row, so a commit that fails (a full disk:
/// "database or disk is full") was lost and the id of a row that does not exist returned.
fn returned_id(rows: &[AnyRow]) -> Result<i64> {
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    Ok(row.get::<i64, _>(0))
}

async fn insert_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pipeline_id: i64,
    j: &NewJob,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_index, position, status, \
         attempt, definition, tags, resource_group, allow_failure, created_at, queued_at, run_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
    )
    .bind(pipeline_id)
    .bind(j.project_id)
    .bind(&j.name)
    .bind(&j.stage)
    .bind(j.stage_index)
    .bind(j.position)
    .bind(j.status.as_str())
    .bind(i64::from(j.attempt))
    .bind(&j.definition)
    .bind(serde_json::to_string(&j.tags).unwrap_or_else(|_| "[]".into()))
    .bind(j.resource_group.as_deref())
    .bind(j.allow_failure as i64)
    .bind(now_ms())
    .bind((j.status == JobStatus::Pending).then(now_ms))
    .bind(j.run_at)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.get::<i64, _>(0))
}

fn status_list(from: &[JobStatus]) -> String {
    // Statuses are our own constants, never user input.
    from.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unique_to_conflict(e: sqlx::Error, msg: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(msg.into()),
        _ => StoreError::Db(e),
    }
}

/// `LIMIT`/`OFFSET` of a page (pages count from 1).
#[derive(Debug, Clone, Copy)]
pub struct PageReq {
    pub page: u32,
    pub per_page: u32,
}

impl PageReq {
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> PageReq {
        PageReq {
            page: page.unwrap_or(1).max(1),
            per_page: per_page.unwrap_or(20).clamp(1, 100),
        }
    }
    /// One more than the page, to know whether a next page exists.
    pub(crate) fn limit(self) -> i64 {
        i64::from(self.per_page) + 1
    }
    pub(crate) fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
    /// Splits the fetched rows into the page and the next page's number.
    pub fn finish<T>(self, mut rows: Vec<T>) -> (Vec<T>, Option<u32>) {
        if rows.len() > self.per_page as usize {
            rows.truncate(self.per_page as usize);
            (rows, Some(self.page + 1))
        } else {
            (rows, None)
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub path: String,
    pub git_url: String,
    pub default_branch: String,
    pub pipeline_file: Option<String>,
}

/// A column whose values are sealed with an AAD naming their row (see [`Keyring::seal`]);
/// the projects' own columns, which may still hold plaintext, are [`SealedColumn`]s.
struct SealedValues {
    table: &'static str,
    /// The column the AAD's id comes from.
    key: &'static str,
    column: &'static str,
    aad: fn(i64) -> String,
}

/// Every sealed column outside `projects`, for [`Db::reseal_all`].
const SEALED_COLUMNS: [SealedValues; 4] = [
    SealedValues {
        table: "project_forges",
        key: "project_id",
        column: "token",
        aad: outbox::forge_token_aad,
    },
    SealedValues {
        table: "notification_channels",
        key: "id",
        column: "url",
        aad: outbox::channel_url_aad,
    },
    SealedValues {
        table: "ci_variables",
        key: "id",
        column: "value",
        aad: variable_aad,
    },
    SealedValues {
        table: "registry_replications",
        key: "id",
        column: "password",
        aad: replication::replication_password_aad,
    },
];

impl SealedValues {
    /// Seals again with the current key every value of the column sealed with another one,
    /// each write conditional on the value read (see [`Db::reseal_all`]).
    async fn reseal(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        keyring: &Keyring,
        done: &mut Resealed,
    ) -> Result<()> {
        let SealedValues {
            table,
            key,
            column,
            aad,
        } = self;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {key} AS id, {column} AS v FROM {table} WHERE {column} IS NOT NULL ORDER BY {key}"
        )))
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let old: String = r.try_get("v")?;
            if !is_sealed(&old) {
                continue;
            }
            let new =
                keyring
                    .reseal(&old, aad(id).as_bytes())
                    .map_err(|source| StoreError::Secret {
                        what: format!("{table} {id}, {column}"),
                        source,
                    })?;
            let Some(new) = new else { continue };
            let r = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = $1 WHERE {key} = $2 AND {column} = $3"
            )))
            .bind(&new)
            .bind(id)
            .bind(&old)
            .execute(&mut **tx)
            .await?;
            done.written += r.rows_affected();
        }
        Ok(())
    }
}

/// What [`Db::reseal_all`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Values written, sealed with the current key.
    pub written: u64,
    /// Of those, values that were plaintext (credentials from before encryption at rest).
    pub plaintext: u64,
}

/// A project's values sealed with [`Keyring::seal`], bound to [`project_aad`].
#[derive(Debug, Clone, Default)]
pub struct ProjectSecrets {
    /// The remote's credentials (JSON), sealed.
    pub credentials: Option<String>,
    /// The webhook secret, sealed.
    pub webhook_secret: Option<String>,
}

/// A column of `projects` that holds a sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    Credentials,
    WebhookSecret,
}

impl SealedColumn {
    pub fn name(self) -> &'static str {
        match self {
            SealedColumn::Credentials => "credentials",
            SealedColumn::WebhookSecret => "webhook_secret",
        }
    }
}

/// The row binding (associated data) of a project's sealed value: `project:<id>:<column>`.
/// Ids are never reused (SQLite `AUTOINCREMENT`, PostgreSQL identity columns), so a value
/// copied into another project's row, or into another column, or into a project created
/// later under the same path, does not open.
pub fn project_aad(id: i64, column: SealedColumn) -> String {
    format!("project:{id}:{}", column.name())
}

const PROJECT_COLS: &str =
    "id, path, git_url, default_branch, pipeline_file, credentials, webhook_secret, created_at";

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub id: i64,
    pub path: String,
    pub git_url: String,
    pub default_branch: String,
    pub pipeline_file: Option<String>,
    /// Sealed (see [`project_aad`]); plaintext JSON in rows written before encryption at rest.
    pub credentials: Option<String>,
    /// Sealed (see [`project_aad`]).
    pub webhook_secret: Option<String>,
    pub created_at: i64,
}

impl ProjectRow {
    fn from_row(r: &AnyRow) -> Result<ProjectRow> {
        Ok(ProjectRow {
            id: r.try_get("id")?,
            path: r.try_get("path")?,
            git_url: r.try_get("git_url")?,
            default_branch: r.try_get("default_branch")?,
            pipeline_file: r.try_get("pipeline_file")?,
            credentials: r.try_get("credentials")?,
            webhook_secret: r.try_get("webhook_secret")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// How many refused webhook requests are kept per project (the newest).
pub const DELIVERIES_KEPT: i64 = 1000;

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub project_id: i64,
    /// `gitlab`, `github`, `gitea` (or what the URL said).
    pub forge: String,
    /// The forge's event header (`Push Hook`, `pull_request`, …), empty when absent.
    pub event: String,
    pub delivery_id: Option<String>,
    /// Hex SHA-256 of the body.
    pub payload_sha256: String,
    /// Refuse this record if the delivery id or the payload was claimed before.
    pub claimed: bool,
    /// The HTTP status answered (202 while a claimed delivery is being handled).
    pub status: u16,
    /// `created`, `skipped`, `ignored`, `accepted` (being handled), `refused`, `failed`.
    pub outcome: String,
    pub pipeline_id: Option<i64>,
    /// Why it was refused or ignored: never the body, never a secret.
    pub error: Option<String>,
}

/// The end of a claimed delivery.
#[derive(Debug, Clone)]
pub struct DeliveryEnd {
    pub status: u16,
    pub outcome: String,
    pub pipeline_id: Option<i64>,
    pub error: Option<String>,
    pub keep_claim: bool,
}

const DELIVERY_COLS: &str = "id, project_id, forge, event, delivery_id, payload_sha256, claimed, \
    received_at, status, outcome, pipeline_id, error";

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub project_id: i64,
    pub forge: String,
    pub event: String,
    pub delivery_id: Option<String>,
    pub payload_sha256: String,
    pub claimed: bool,
    pub received_at: i64,
    pub status: u16,
    pub outcome: String,
    pub pipeline_id: Option<i64>,
    pub error: Option<String>,
}

impl DeliveryRow {
    fn from_row(r: &AnyRow) -> Result<DeliveryRow> {
        Ok(DeliveryRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            forge: r.try_get("forge")?,
            event: r.try_get("event")?,
            delivery_id: r.try_get("delivery_id")?,
            payload_sha256: r.try_get("payload_sha256")?,
            claimed: r.try_get::<i64, _>("claimed")? != 0,
            received_at: r.try_get("received_at")?,
            status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
            outcome: r.try_get("outcome")?,
            pipeline_id: r.try_get("pipeline_id")?,
            error: r.try_get("error")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewPipeline {
    pub project_id: i64,
    pub git_ref: String,
    pub sha: String,
    pub status: PipelineStatus,
    pub source: String,
    pub parent_job_id: Option<i64>,
    pub trigger_json: String,
    pub errors: Option<String>,
    pub auto_cancel: Option<String>,
}

const PIPELINE_COLS: &str = "id, project_id, git_ref, sha, status, source, parent_job_id, \
    trigger_json, errors, auto_cancel, created_at, started_at, finished_at";

#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub id: i64,
    pub project_id: i64,
    pub git_ref: String,
    pub sha: String,
    pub status: PipelineStatus,
    pub source: String,
    pub parent_job_id: Option<i64>,
    pub trigger_json: String,
    pub errors: Option<String>,
    pub auto_cancel: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl PipelineRow {
    fn from_row(r: &AnyRow) -> Result<PipelineRow> {
        let status: String = r.try_get("status")?;
        Ok(PipelineRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            git_ref: r.try_get("git_ref")?,
            sha: r.try_get("sha")?,
            status: status.parse().map_err(StoreError::Conflict)?,
            source: r.try_get("source")?,
            parent_job_id: r.try_get("parent_job_id")?,
            trigger_json: r.try_get("trigger_json")?,
            errors: r.try_get("errors")?,
            auto_cancel: r.try_get("auto_cancel")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    /// Ignored by [`Db::create_pipeline`], which sets it.
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    /// Order in the plan (stable across attempts).
    pub position: i64,
    pub status: JobStatus,
    pub attempt: u32,
    /// A `gantry_api::job::JobDefinition` as JSON.
    pub definition: String,
    pub tags: Vec<String>,
    pub resource_group: Option<String>,
    pub allow_failure: bool,
    /// When a `scheduled` job (`when: delayed`) is due, in ms since the epoch.
    pub run_at: Option<i64>,
}

const JOB_COLS: &str = "id, pipeline_id, project_id, name, stage, stage_index, position, status, \
    attempt, retried, definition, tags, resource_group, failure_reason, exit_code, allow_failure, \
    agent_id, lease_until, run_at, played_by, dotenv, has_artifacts, log_size, created_at, \
    queued_at, started_at, finished_at";

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub position: i64,
    pub status: JobStatus,
    pub attempt: u32,
    pub retried: bool,
    pub definition: String,
    pub tags: Vec<String>,
    pub resource_group: Option<String>,
    pub failure_reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    pub allow_failure: bool,
    pub agent_id: Option<i64>,
    pub lease_until: Option<i64>,
    pub run_at: Option<i64>,
    pub played_by: Option<String>,
    pub dotenv: Vec<(String, String)>,
    pub has_artifacts: bool,
    pub log_size: u64,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl JobRow {
    fn from_row(r: &AnyRow) -> Result<JobRow> {
        let status: String = r.try_get("status")?;
        let failure: Option<String> = r.try_get("failure_reason")?;
        let tags: String = r.try_get("tags")?;
        let dotenv: Option<String> = r.try_get("dotenv")?;
        let exit_code: Option<i64> = r.try_get("exit_code")?;
        Ok(JobRow {
            id: r.try_get("id")?,
            pipeline_id: r.try_get("pipeline_id")?,
            project_id: r.try_get("project_id")?,
            name: r.try_get("name")?,
            stage: r.try_get("stage")?,
            stage_index: r.try_get("stage_index")?,
            position: r.try_get("position")?,
            status: status.parse().map_err(StoreError::Conflict)?,
            attempt: r.try_get::<i64, _>("attempt")? as u32,
            retried: r.try_get::<i64, _>("retried")? != 0,
            definition: r.try_get("definition")?,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            resource_group: r.try_get("resource_group")?,
            failure_reason: failure
                .map(|f| f.parse())
                .transpose()
                .map_err(StoreError::Conflict)?,
            exit_code: exit_code.map(|c| c as i32),
            allow_failure: r.try_get::<i64, _>("allow_failure")? != 0,
            agent_id: r.try_get("agent_id")?,
            lease_until: r.try_get("lease_until")?,
            run_at: r.try_get("run_at")?,
            played_by: r.try_get("played_by")?,
            dotenv: dotenv
                .map(|d| serde_json::from_str(&d).unwrap_or_default())
                .unwrap_or_default(),
            has_artifacts: r.try_get::<i64, _>("has_artifacts")? != 0,
            log_size: r.try_get::<i64, _>("log_size")? as u64,
            created_at: r.try_get("created_at")?,
            queued_at: r.try_get("queued_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub status: JobStatus,
    pub failure_reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    pub dotenv: Vec<(String, String)>,
    pub has_artifacts: bool,
    pub log_size: u64,
}

impl JobEnd {
    pub fn status(status: JobStatus) -> JobEnd {
        JobEnd {
            status,
            failure_reason: None,
            exit_code: None,
            dotenv: Vec::new(),
            has_artifacts: false,
            log_size: 0,
        }
    }

    pub fn failed(reason: FailureReason) -> JobEnd {
        JobEnd {
            failure_reason: Some(reason),
            ..JobEnd::status(JobStatus::Failed)
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: String,
    pub token_hash: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: u32,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct AgentUpdate {
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: u32,
    pub version: String,
}

const AGENT_COLS: &str =
    "id, name, tags, run_untagged, executor, concurrency, version, created_at, last_seen_at";

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: u32,
    pub version: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
}

impl AgentRow {
    fn from_row(r: &AnyRow) -> Result<AgentRow> {
        let tags: String = r.try_get("tags")?;
        Ok(AgentRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            run_untagged: r.try_get::<i64, _>("run_untagged")? != 0,
            executor: r.try_get("executor")?,
            concurrency: r.try_get::<i64, _>("concurrency")? as u32,
            version: r.try_get("version")?,
            created_at: r.try_get("created_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
        })
    }
}
