//! Cron schedules: a project's pipelines started at the minutes a cron expression names, in
//! an IANA time zone, on a ref with variables (source `schedule`, the description as
//! `CI_PIPELINE_SCHEDULE_DESCRIPTION`).
//!
//! ```text
//! tick (every 250 ms) ─► due schedules (active, next_run_at <= clock) ─► claim the slot:
//!     next_run_at moved from the slot read to the next slot after *now* (conditional
//!     UPDATE) ─► a task per claimed slot: create_pipeline_with (never in the tick)
//!     ─► last_pipeline_id or last_error
//! ```
//!
//! The claim makes each slot fire once however many ticks or servers see it. The next slot
//! is computed from the clock, not from the slot that fired: a server that was down for
//! three days runs a daily schedule once when it comes back, not three times. Inactive
//! schedules have no `next_run_at`; activating one computes it from now.

use super::{Engine, TriggerExtras, blocking, paged};
use crate::error::{EngineError, Result};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use gantry_api::rest::{self, KeyValue, Page, PipelineCreate};
use gantry_pipeline::trigger::Source;
use gantry_store::db::{NewSchedule, PageReq, ProjectRow, ScheduleRow, ScheduleUpdate};

/// The login schedule pipelines are started by (`GITLAB_USER_LOGIN`).
const SCHEDULE_USER: &str = "schedule";

/// A schedule's expression and zone, checked.
#[derive(Debug, Clone)]
pub(super) struct When {
    cron: Cron,
    tz: Tz,
}

impl When {
    /// Reads a 5-field cron expression and an IANA zone name; a 400 that says what to write
    /// otherwise.
    pub(super) fn parse(cron: &str, time_zone: &str) -> Result<When> {
        let fields = cron.split_whitespace().count();
        if fields != 5 {
            return Err(EngineError::BadRequest(format!(
                "cron '{cron}' has {fields} field(s): write the standard 5, minute hour \
                 day-of-month month day-of-week (e.g. '30 2 * * 1-5': 02:30 on weekdays)"
            )));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| {
                EngineError::BadRequest(format!(
                    "cron '{cron}' is not valid ({e}): fields are minute (0-59), hour (0-23), \
                     day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7 or SUN-SAT), \
                     each '*', a value, a range 'a-b', a list 'a,b' or a step '*/n'"
                ))
            })?;
        let tz: Tz = time_zone.parse().map_err(|_| {
            EngineError::BadRequest(format!(
                "time_zone '{time_zone}' is not an IANA time zone name: use one like 'UTC', \
                 'Europe/Paris' or 'America/New_York' (see `timedatectl list-timezones`)"
            ))
        })?;
        let when = When { cron: parsed, tz };
        // An expression that never matches (31 February) is refused now, not at run time.
        when.next_after(0).map_err(|_| {
            EngineError::BadRequest(format!(
                "cron '{cron}' never matches a real date: check the day of month and the month"
            ))
        })?;
        Ok(when)
    }

    /// The first slot strictly after `ms` (ms since the epoch).
    pub(super) fn next_after(&self, ms: i64) -> Result<i64> {
        let t = chrono::DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| EngineError::Internal(format!("time {ms} out of range")))?
            .with_timezone(&self.tz);
        let next = self
            .cron
            .find_next_occurrence(&t, false)
            .map_err(|e| EngineError::Internal(format!("no next run: {e}")))?;
        Ok(next.timestamp_millis())
    }

    /// `ms` in ISO 8601 in the schedule's zone.
    fn iso(&self, ms: i64) -> Option<String> {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| {
            t.with_timezone(&self.tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    }
}

/// A ref name as a schedule may hold it (a branch or tag name).
fn check_ref_name(r: &str) -> Result<()> {
    if r.is_empty()
        || r.starts_with('-')
        || r.contains("..")
        || r.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Err(EngineError::BadRequest(format!(
            "ref '{r}' is not a branch or tag name: give one like 'main' or 'v1.2'"
        )));
    }
    Ok(())
}

fn check_variables(vars: &[KeyValue]) -> Result<()> {
    for v in vars {
        if v.key.is_empty() || !v.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(EngineError::BadRequest(format!(
                "variable name '{}' is not valid: use letters, digits and '_' (e.g. 'DEPLOY_ENV')",
                v.key
            )));
        }
    }
    Ok(())
}

fn check_description(d: &str) -> Result<()> {
    if d.trim().is_empty() {
        return Err(EngineError::BadRequest(
            "description is empty: say what the schedule is for (e.g. 'nightly build'); \
             jobs see it as CI_PIPELINE_SCHEDULE_DESCRIPTION"
                .into(),
        ));
    }
    if d.len() > 1000 {
        return Err(EngineError::BadRequest(
            "description is longer than 1000 bytes: shorten it".into(),
        ));
    }
    Ok(())
}

fn variables_of(row: &ScheduleRow) -> Vec<KeyValue> {
    serde_json::from_str(&row.variables).unwrap_or_default()
}

fn schedule_dto(row: &ScheduleRow) -> rest::Schedule {
    let when = When::parse(&row.cron, &row.time_zone).ok();
    rest::Schedule {
        id: row.id,
        project_id: row.project_id,
        description: row.description.clone(),
        cron: row.cron.clone(),
        time_zone: row.time_zone.clone(),
        git_ref: row.git_ref.clone(),
        variables: variables_of(row),
        active: row.active,
        next_run_at: row.next_run_at,
        next_run_at_iso: row.next_run_at.zip(when).and_then(|(ms, w)| w.iso(ms)),
        last_run_at: row.last_run_at,
        last_pipeline_id: row.last_pipeline_id,
        last_error: row.last_error.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

impl Engine {
    /// Milliseconds since the epoch by the engine's clock (schedules and polling).
    pub(super) fn clock_ms(&self) -> i64 {
        self.inner.config.clock.now_ms()
    }

    /// Whether `git_ref` is a branch or a tag of the project's remote (the mirror, fetched
    /// again when it does not know the name). A 400 otherwise.
    async fn check_ref(&self, p: &ProjectRow, git_ref: &str) -> Result<()> {
        check_ref_name(git_ref)?;
        let this = self.clone();
        let p = p.clone();
        let r = git_ref.to_string();
        blocking(move || {
            let m = this.mirror_of(&p)?;
            let known =
                |m: &crate::git::Mirror| -> Result<bool> { Ok(m.is_branch(&r)? || m.is_tag(&r)?) };
            if known(&m)? {
                return Ok(());
            }
            m.fetch(&[])?;
            if known(&m)? {
                return Ok(());
            }
            Err(EngineError::BadRequest(format!(
                "ref '{r}' is neither a branch nor a tag of {}: give an existing one in \"ref\", \
                 or leave it out for the default branch ('{}')",
                p.path, p.default_branch
            )))
        })
        .await
    }

    async fn schedule_row(&self, project: &ProjectRow, id: i64) -> Result<ScheduleRow> {
        match self.inner.db.schedule(id).await? {
            Some(s) if s.project_id == project.id => Ok(s),
            _ => Err(EngineError::not_found(format!(
                "schedule {id} of project '{}'",
                project.path
            ))),
        }
    }

    /// A project's schedules, oldest first.
    pub async fn schedules(&self, project: &str, page: PageReq) -> Result<Page<rest::Schedule>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.schedules_of_project(p.id, page).await?;
        Ok(paged(page, rows, |r| schedule_dto(&r)))
    }

    pub async fn schedule(&self, project: &str, id: i64) -> Result<rest::Schedule> {
        let p = self.find_project_row(project).await?;
        Ok(schedule_dto(&self.schedule_row(&p, id).await?))
    }

    /// Creates a schedule. Everything is checked before anything is written: the expression,
    /// the zone, the ref (on the remote) and the variables' names.
    pub async fn create_schedule(
        &self,
        project: &str,
        req: rest::ScheduleCreate,
    ) -> Result<rest::Schedule> {
        let p = self.find_project_row(project).await?;
        check_description(&req.description)?;
        let cron = req.cron.trim().to_string();
        let tz = req
            .time_zone
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or("UTC")
            .to_string();
        let when = When::parse(&cron, &tz)?;
        check_variables(&req.variables)?;
        let git_ref = req
            .git_ref
            .clone()
            .unwrap_or_else(|| p.default_branch.clone());
        self.check_ref(&p, &git_ref).await?;
        let now = self.clock_ms();
        let active = req.active.unwrap_or(true);
        let next_run_at = if active {
            Some(when.next_after(now)?)
        } else {
            None
        };
        let id = self
            .inner
            .db
            .insert_schedule(&NewSchedule {
                project_id: p.id,
                description: req.description.trim().to_string(),
                cron,
                time_zone: tz,
                git_ref,
                variables: serde_json::to_string(&req.variables).expect("variables serialize"),
                active,
                next_run_at,
                now,
            })
            .await?;
        self.schedule(&p.id.to_string(), id).await
    }

    /// Changes the fields given. A new expression or zone, or an activation, computes the
    /// next run from now; deactivating clears it.
    pub async fn update_schedule(
        &self,
        project: &str,
        id: i64,
        req: rest::ScheduleUpdate,
    ) -> Result<rest::Schedule> {
        let p = self.find_project_row(project).await?;
        let old = self.schedule_row(&p, id).await?;
        let description = req.description.unwrap_or_else(|| old.description.clone());
        check_description(&description)?;
        let cron = req
            .cron
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| old.cron.clone());
        let tz = req
            .time_zone
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| old.time_zone.clone());
        let when = When::parse(&cron, &tz)?;
        let variables = match &req.variables {
            Some(v) => {
                check_variables(v)?;
                serde_json::to_string(v).expect("variables serialize")
            }
            None => old.variables.clone(),
        };
        let git_ref = req.git_ref.unwrap_or_else(|| old.git_ref.clone());
        if git_ref != old.git_ref {
            self.check_ref(&p, &git_ref).await?;
        }
        let active = req.active.unwrap_or(old.active);
        let now = self.clock_ms();
        let timing_changed = cron != old.cron || tz != old.time_zone;
        let next_run_at = match (active, old.next_run_at) {
            (false, _) => None,
            (true, Some(next)) if old.active && !timing_changed => Some(next),
            (true, _) => Some(when.next_after(now)?),
        };
        let found = self
            .inner
            .db
            .update_schedule(
                id,
                &ScheduleUpdate {
                    description: description.trim().to_string(),
                    cron,
                    time_zone: tz,
                    git_ref,
                    variables,
                    active,
                    next_run_at,
                    now,
                },
            )
            .await?;
        if !found {
            return Err(EngineError::not_found(format!("schedule {id}")));
        }
        self.schedule(&p.id.to_string(), id).await
    }

    pub async fn delete_schedule(&self, project: &str, id: i64) -> Result<()> {
        let p = self.find_project_row(project).await?;
        self.schedule_row(&p, id).await?;
        self.inner.db.delete_schedule(id).await?;
        Ok(())
    }

    /// Runs a schedule now (its next run stays as it was): the pipeline, or the error.
    pub async fn play_schedule(&self, project: &str, id: i64) -> Result<rest::Pipeline> {
        let p = self.find_project_row(project).await?;
        let row = self.schedule_row(&p, id).await?;
        self.run_schedule(&row).await
    }

    /// Starts the pipeline of a schedule and records the outcome on the schedule.
    async fn run_schedule(&self, row: &ScheduleRow) -> Result<rest::Pipeline> {
        let req = PipelineCreate {
            git_ref: Some(row.git_ref.clone()),
            sha: None,
            variables: variables_of(row),
        };
        // The description is the pipeline's (CI_PIPELINE_SCHEDULE_DESCRIPTION, predefined).
        let description = row.description.clone();
        let extras = TriggerExtras {
            fetch_ref: None,
            apply: Some(Box::new(move |_, t| {
                t.context.schedule_description = Some(description);
                Ok(None)
            })),
        };
        let made = self
            .create_pipeline_with(
                &row.project_id.to_string(),
                req,
                Source::Schedule,
                SCHEDULE_USER,
                extras,
            )
            .await;
        let (pipeline, error) = match &made {
            Ok(p) => (Some(p.id), None),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Err(e) = self
            .inner
            .db
            .set_schedule_outcome(row.id, pipeline, error.as_deref())
            .await
        {
            tracing::warn!(schedule = row.id, "recording the schedule's run: {e}");
        }
        made
    }

    /// From the tick: claims every due slot and starts its pipeline in a task of its own.
    pub(super) async fn fire_due_schedules(&self) {
        let now = self.clock_ms();
        let due = match self.inner.db.due_schedules(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("reading due schedules: {e}");
                return;
            }
        };
        for row in due {
            let Some(slot) = row.next_run_at else {
                continue;
            };
            // From now, not from the slot: runs missed while the server was down fire once.
            let next = match When::parse(&row.cron, &row.time_zone).and_then(|w| w.next_after(now))
            {
                Ok(n) => Some(n),
                Err(e) => {
                    // Cannot happen for rows written through the API; stop it rather than
                    // retry it every tick.
                    tracing::warn!(schedule = row.id, "schedule stopped: {e}");
                    None
                }
            };
            match self.inner.db.claim_schedule(row.id, slot, next, now).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(schedule = row.id, "claiming a schedule's run: {e}");
                    continue;
                }
            }
            let this = self.clone();
            tokio::spawn(async move {
                match this.run_schedule(&row).await {
                    Ok(p) => tracing::info!(schedule = row.id, pipeline = p.id, "schedule ran"),
                    Err(e) => tracing::warn!(schedule = row.id, "schedule made no pipeline: {e}"),
                }
            });
        }
    }
}
