//! What the web UI's pages read beyond the REST API's lists: the last pipeline of each
//! project's default branch, the last pipeline of each ref, a project's pipelines filtered
//! by ref, status and source, a pipeline's child pipelines. Each is one query (no query per
//! row), so that a page's time does not grow with what it shows.

use super::{AGENT_COLS, AgentRow, Db, PIPELINE_COLS, PageReq, PipelineRow};
use crate::Result;
use gantry_api::JobStatus;
use sqlx::{AssertSqlSafe, Row};

/// The filters of a project's pipelines list; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct PipelineFilter {
    pub git_ref: Option<String>,
    pub status: Option<String>,
    pub source: Option<String>,
}

/// A job as the pipeline graph shows it: what [`JobRow`](super::JobRow) has, without what
/// the graph does not read (tags, tokens, leases, dotenv, outputs).
#[derive(Debug, Clone)]
pub struct GraphJob {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub stage_index: i64,
    pub position: i64,
    pub status: JobStatus,
    pub retried: bool,
    pub allow_failure: bool,
    pub failure_reason: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl Db {
    /// Every job of a pipeline (every attempt) for its graph, in one query; not their
    /// definitions, which never change once stored: see [`Db::job_definitions`].
    pub async fn graph_jobs(&self, pipeline_id: i64) -> Result<Vec<GraphJob>> {
        let rows = sqlx::query(
            "SELECT id, name, stage, stage_index, position, status, retried, \
             allow_failure, failure_reason, started_at, finished_at \
             FROM jobs WHERE pipeline_id = $1 ORDER BY id",
        )
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(5)?;
                Ok(GraphJob {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    stage: r.try_get(2)?,
                    stage_index: r.try_get(3)?,
                    position: r.try_get(4)?,
                    status: status.parse().map_err(crate::StoreError::Conflict)?,
                    retried: r.try_get::<i64, _>(6)? != 0,
                    allow_failure: r.try_get::<i64, _>(7)? != 0,
                    failure_reason: r.try_get(8)?,
                    started_at: r.try_get(9)?,
                    finished_at: r.try_get(10)?,
                })
            })
            .collect()
    }

    /// The definitions (JSON) of these jobs, in one query: (id, definition).
    pub async fn job_definitions(&self, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Ids are integers we hold, never user text.
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, definition FROM jobs WHERE id IN ({list})"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
            .collect())
    }

    /// For each of `projects`, the newest pipeline (not a child) of its default branch.
    pub async fn last_default_branch_pipelines(
        &self,
        projects: &[i64],
    ) -> Result<Vec<PipelineRow>> {
        if projects.is_empty() {
            return Ok(Vec::new());
        }
        // Ids are integers we hold, never user text.
        let ids = projects
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE id IN (\
               SELECT (SELECT MAX(x.id) FROM pipelines x \
                       WHERE x.project_id = pr.id AND x.git_ref = pr.default_branch \
                       AND x.parent_job_id IS NULL) \
               FROM projects pr WHERE pr.id IN ({ids}))"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// The newest pipeline (not a child) of each ref of a project, newest first, at most
    /// `limit`.
    pub async fn ref_heads(&self, project_id: i64, limit: i64) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE id IN (\
               SELECT MAX(id) FROM pipelines WHERE project_id = $1 AND parent_job_id IS NULL \
               GROUP BY git_ref) \
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(project_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// A project's pipelines (children included: their source says so), newest first, one
    /// page, filtered.
    pub async fn pipelines_filtered(
        &self,
        project_id: i64,
        f: &PipelineFilter,
        page: PageReq,
    ) -> Result<Vec<PipelineRow>> {
        let mut sql = format!("SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1");
        let mut binds: Vec<&str> = Vec::new();
        for (col, v) in [
            ("git_ref", &f.git_ref),
            ("status", &f.status),
            ("source", &f.source),
        ] {
            if let Some(v) = v {
                binds.push(v);
                sql.push_str(&format!(" AND {col} = ${}", binds.len() + 1));
            }
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT ${} OFFSET ${}",
            binds.len() + 2,
            binds.len() + 3
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(project_id);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    /// The pipelines the trigger jobs of a pipeline started (every attempt's).
    pub async fn child_pipelines(&self, pipeline_id: i64) -> Result<Vec<PipelineRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE parent_job_id IN \
             (SELECT id FROM jobs WHERE pipeline_id = $1) ORDER BY id"
        )))
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PipelineRow::from_row).collect()
    }

    pub async fn agent(&self, id: i64) -> Result<Option<AgentRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AGENT_COLS} FROM agents WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| AgentRow::from_row(&r)).transpose()
    }

    /// Running jobs with their agent: (job id, job name, pipeline id, agent id).
    pub async fn running_jobs(&self) -> Result<Vec<(i64, String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT id, name, pipeline_id, agent_id FROM jobs \
             WHERE status = 'running' AND agent_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    r.get::<String, _>(1),
                    r.get::<i64, _>(2),
                    r.get::<i64, _>(3),
                )
            })
            .collect())
    }
}
