//! [`Engine`]: everything the server does between a trigger and a finished pipeline.
//!
//! ```text
//! receive_webhook (webhooks.rs) ─► verified, parsed, claimed once ─► create_pipeline_with
//! create_pipeline ─► mirror: read the commit and the file (fetch when missing) ─► load
//!     + plan (one blocking step) ─► store the pipeline and its jobs with their first
//!     decisions (one transaction) ─► pending jobs to the dispatcher ─► pump
//! advance(pipeline) ─► dag::decide on the jobs' current attempts ─► skip / manual /
//!     delayed / pending ─► pending jobs to the dispatcher ─► pump
//! pump ─► dispatcher matches free agents ─► db: pending → running (conditional) ─► push
//!     the JobPayload on the agent's connection
//! agent: Started, log frames, Finished ─► logs stored by offset, acked ─► finish_job
//!     (waits for the whole log) ─► retry? ─► advance
//! ticker (every 250 ms): expired leases fail as runner_system_failure, delayed jobs whose
//!     time has come become pending, live logs are synced to disk, SQLite's log checkpointed,
//!     due cron schedules (schedules.rs) and polls (polling.rs) claimed and started in tasks,
//!     due replication schedules (replication.rs) claimed and queued
//! ```
//!
//! The database is the truth; the dispatcher's memory (who is online, which slots and
//! resource groups are taken) is rebuilt on start from the running jobs and from what
//! agents say when they reconnect. Every change to a pipeline's jobs happens under that
//! pipeline's lock (striped), so two events never decide the same job twice; job state
//! changes are also conditional in the database.

pub mod accounts;
pub mod lint;
mod notify;
mod outbox;
mod polling;
pub mod registry;
pub mod replication;
mod schedules;
mod secrets;
mod triggers;
mod variables;
mod webhooks;

pub use notify::{NotifyConfig, SmtpConfig, SmtpTls};
pub use webhooks::{HookBody, HookRequest};

use crate::dag::{self, Decision, Node};
use crate::dispatch::{Dispatcher, Online, Queued};
use crate::error::{EngineError, Result};
use crate::git::{Mirror, MirrorFetcher, Remote};
use crate::token::{constant_time_eq, hash_token, new_token};
use gantry_api::agent::{
    AgentMsg, Dependency, Finished, JobPayload, LogFrame, RegisterRequest, RegisterResponse,
    Resume, ServerMsg,
};
use gantry_api::job::JobDefinition;
use gantry_api::rest::{self, Page, PipelineCreate, ProjectCreate};
use gantry_api::{FailureReason, JobStatus, PipelineStatus};
use gantry_pipeline::plan::Plan;
use gantry_pipeline::trigger::{ProjectInfo, Source, Trigger, UserInfo};
use gantry_store::blob::BlobStore;
use gantry_store::db::{
    AgentRow, AgentUpdate, JobEnd, JobRow, NewAgent, NewJob, NewPipeline, NewProject, PageReq,
    PipelineRow, ProjectRow, now_ms,
};
use gantry_store::logs::LogStore;
use gantry_store::{Db, Keyring, StoreError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Mirrors live under `data_dir/git`.
    pub data_dir: PathBuf,
    /// How agents and jobs reach the server (`CI_SERVER_URL`).
    pub external_url: String,
    /// A running job whose agent is silent this long fails as `runner_system_failure`.
    pub lease: Duration,
    /// How often agents say they are alive.
    pub heartbeat: Duration,
    /// The keyring that seals project secrets (credentials, webhook secrets) at start.
    pub keyring: Arc<Keyring>,
    /// The key file the keyring was read from, if any: read again when it changes (a
    /// rotation by `gantry admin rotate-key` while the server runs).
    pub secrets_key_file: Option<PathBuf>,
    /// Audit log entries older than this are removed.
    pub audit_retention: Duration,
    /// The time cron schedules and polling go by: the system's, or a manual one in tests.
    pub clock: crate::Clock,
    /// Commit statuses and notifications: SMTP, retries, timeouts.
    pub notify: NotifyConfig,
}

const STRIPES: usize = 64;
/// `CI_OPEN_MERGE_REQUESTS` names at most this many (as GitLab).
const OPEN_MERGE_REQUESTS_LISTED: i64 = 4;
/// A mirror's reader (open packs, caches) is closed after this long unused.
const MIRROR_IDLE: Duration = Duration::from_secs(10);

/// Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Db,
    logs: LogStore,
    blobs: Arc<dyn BlobStore>,
    config: EngineConfig,
    mirrors: Mutex<HashMap<i64, Arc<Mirror>>>,
    dispatch: Mutex<Dispatcher>,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Results that arrived before the whole log: (agent, result).
    parked: Mutex<HashMap<i64, (i64, Finished)>>,
    /// Pipelines' triggers as jobs receive them (without the planner's file lists). They never
    /// change once stored; kept to spare a read per pushed job.
    triggers: Mutex<HashMap<i64, Arc<Trigger>>>,
    next_conn: AtomicU64,
    keys: secrets::Keys,
    logins: accounts::LoginLimiter,
    /// The outbox's sender (commit statuses, notifications).
    sender: outbox::Sender,
    admin_hash: String,
    registration_hash: String,
    polls: polling::Polls,
    /// Agents whose token was revoked while they were connected: their connection ends at
    /// their next message.
    revoked_agents: Mutex<std::collections::HashSet<i64>>,
    /// Registry replication's worker (replication.rs).
    replication: replication::Worker,
}

/// What the API caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The administrator's token (`DATA_DIR/admin-token`).
    Admin,
    /// A user, by a personal access token or a browser session.
    User(UserCaller),
    Agent(i64),
    Job(i64),
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCaller {
    pub id: i64,
    pub username: String,
    /// An instance administrator: owner of every project.
    pub admin: bool,
    /// A personal access token's scopes; `None` for a browser session (everything the user
    /// may do, with the CSRF token for changes).
    pub scopes: Option<Vec<gantry_api::Scope>>,
    /// The session's CSRF token (sessions only).
    pub csrf: Option<String>,
}

impl Caller {
    /// Who it is, for records: the user name, `admin-token`, `agent:ID`, `job:ID`.
    pub fn name(&self) -> String {
        match self {
            Caller::Admin => "admin-token".into(),
            Caller::User(u) => u.username.clone(),
            Caller::Agent(id) => format!("agent:{id}"),
            Caller::Job(id) => format!("job:{id}"),
        }
    }

    /// An instance administrator (the token, or an administrator user).
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin) || matches!(self, Caller::User(u) if u.admin)
    }
}

impl Engine {
    /// Starts an engine on a store: recovers what a previous process left (running jobs get
    /// one lease to be claimed by their agents, pending jobs are queued again) and starts the
    /// ticker. `admin_token` and `registration_token` are the secrets of the API's
    /// administrator and of agent registration.
    pub async fn start(
        config: EngineConfig,
        db: Db,
        logs: LogStore,
        blobs: Arc<dyn BlobStore>,
        admin_token: &str,
        registration_token: &str,
    ) -> Result<Engine> {
        let keys = secrets::Keys::new(config.keyring.clone(), config.secrets_key_file.clone());
        let sender = outbox::Sender::new(config.notify.timeout);
        let engine = Engine {
            inner: Arc::new(Inner {
                db,
                logs,
                blobs,
                config,
                mirrors: Mutex::new(HashMap::new()),
                dispatch: Mutex::new(Dispatcher::default()),
                locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                parked: Mutex::new(HashMap::new()),
                triggers: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                keys,
                logins: accounts::LoginLimiter::default(),
                sender,
                admin_hash: hash_token(admin_token),
                registration_hash: hash_token(registration_token),
                polls: polling::Polls::default(),
                revoked_agents: Mutex::new(std::collections::HashSet::new()),
                replication: replication::Worker::default(),
            }),
        };
        engine.recover().await?;
        let pruner = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                if let Err(e) = pruner.prune_audit_log().await {
                    tracing::warn!("pruning the audit log: {e}");
                }
            }
        });
        engine.start_outbox().await?;
        let ticker = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = ticker.tick().await {
                    tracing::warn!("scheduler tick: {e}");
                }
            }
        });
        Ok(engine)
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn logs(&self) -> &LogStore {
        &self.inner.logs
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    fn lock(&self, pipeline_id: i64) -> &tokio::sync::Mutex<()> {
        &self.inner.locks[pipeline_id.rem_euclid(STRIPES as i64) as usize]
    }

    fn dispatcher(&self) -> std::sync::MutexGuard<'_, Dispatcher> {
        self.inner
            .dispatch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    async fn recover(&self) -> Result<()> {
        let db = &self.inner.db;
        let until = now_ms() + self.inner.config.lease.as_millis() as i64;
        db.extend_all_leases(until).await?;
        for j in db.jobs_with_status(JobStatus::Running).await? {
            let group = j.resource_group.clone().map(|g| (j.project_id, g));
            self.dispatcher().hold(j.id, j.agent_id, group);
        }
        for j in db.jobs_with_status(JobStatus::Pending).await? {
            self.queue(&j);
        }
        for p in db.unfinished_pipelines().await? {
            self.advance(p.id).await?;
        }
        // Logs left live by a crash between a job's end and its log's compression.
        for id in self.inner.logs.live_jobs() {
            if let Some(j) = db.job(id).await?
                && j.status.is_finished()
            {
                let logs = self.inner.logs.clone();
                if let Err(e) = blocking(move || Ok(logs.finish(id)?)).await {
                    tracing::warn!(job = id, "finishing a log left live: {e}");
                }
            }
        }
        Ok(())
    }

    async fn tick(&self) -> Result<()> {
        let now = now_ms();
        // Claims only: the pipelines are created in tasks of their own.
        self.fire_due_schedules().await;
        self.start_due_polls().await;
        self.queue_due_replications().await;
        // Live logs reach the disk within a tick (appends are not synced one by
        // one; see gantry_store::logs).
        let logs = self.inner.logs.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || logs.sync()).await {
            tracing::warn!("syncing logs: {e}");
        }
        if let Err(e) = self.inner.db.checkpoint().await {
            tracing::warn!("checkpointing the database: {e}");
        }
        for j in self.inner.db.expired_leases(now).await? {
            tracing::warn!(job = j.id, "lease expired");
            if let Some(agent) = j.agent_id {
                self.dispatcher()
                    .send(agent, ServerMsg::Cancel { job_id: j.id });
            }
            let end = JobEnd {
                log_size: self.log_len(j.id),
                ..JobEnd::failed(FailureReason::RunnerSystemFailure)
            };
            self.append_system_line(
                j.id,
                "ERROR: Job failed (system failure): the agent stopped answering (its lease expired)",
            );
            self.end_job(&j, end, &[JobStatus::Running]).await?;
        }
        for j in self.inner.db.due_jobs(now).await? {
            if self
                .inner
                .db
                .transition(j.id, &[JobStatus::Scheduled], JobStatus::Pending)
                .await?
            {
                self.queue(&j);
            }
        }
        self.pump().await;
        metrics::gauge!("gantry_queue_length").set(self.dispatcher().queue_len() as f64);
        // Mirrors nobody read from for a while give their git process back.
        let mirrors: Vec<Arc<Mirror>> = self
            .inner
            .mirrors
            .lock()
            .expect("mirrors")
            .values()
            .cloned()
            .collect();
        for m in mirrors {
            m.release_idle(MIRROR_IDLE);
        }
        Ok(())
    }

    // ---- authentication -------------------------------------------------------------------

    /// Who holds `token`, if anyone.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        let hash = hash_token(token);
        if constant_time_eq(&hash, &self.inner.admin_hash) {
            return Ok(Some(Caller::Admin));
        }
        if token.starts_with("gat_")
            && let Some(a) = self.inner.db.agent_by_token_hash(&hash).await?
        {
            return Ok(Some(Caller::Agent(a.id)));
        }
        if token.starts_with("gjt_")
            && let Some(j) = self.inner.db.job_by_token_hash(&hash).await?
            && j.status == JobStatus::Running
        {
            return Ok(Some(Caller::Job(j.id)));
        }
        if token.starts_with("gpat_") {
            return self.authenticate_access_token(token).await;
        }
        Ok(None)
    }

    pub async fn agent_by_token(&self, token: &str) -> Result<Option<AgentRow>> {
        Ok(self
            .inner
            .db
            .agent_by_token_hash(&hash_token(token))
            .await?)
    }

    // ---- projects -------------------------------------------------------------------------

    fn mirror_of(&self, p: &ProjectRow) -> Result<Arc<Mirror>> {
        if p.git_url.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "project {} has no git repository: it holds images only (a registry project), so it runs no pipelines",
                p.path
            )));
        }
        if let Some(m) = self.inner.mirrors.lock().expect("mirrors").get(&p.id) {
            return Ok(m.clone());
        }
        let creds = self.credentials_of(p)?;
        let remote = Remote {
            url: p.git_url.clone(),
            username: creds.username,
            password: creds.password,
            ssh_key: creds.ssh_key,
        };
        let dir = self
            .inner
            .config
            .data_dir
            .join("git")
            .join(format!("{}.git", p.id));
        let m = Arc::new(Mirror::open(dir, remote)?);
        self.inner
            .mirrors
            .lock()
            .expect("mirrors")
            .insert(p.id, m.clone());
        Ok(m)
    }

    pub async fn mirror(&self, project_id: i64) -> Result<Arc<Mirror>> {
        let p = self.project_row(project_id).await?;
        let this = self.clone();
        blocking(move || this.mirror_of(&p)).await
    }

    pub async fn create_project(&self, req: ProjectCreate) -> Result<rest::Project> {
        let path = req.path.trim().trim_matches('/').to_string();
        if path.is_empty()
            || !path.split('/').all(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
        {
            return Err(EngineError::BadRequest(format!(
                "project path '{}' is not valid: use letters, digits, '-', '_', '.', and '/' between groups (e.g. 'team/app')",
                req.path
            )));
        }
        // No git URL: a registry project (images only, like Harbor's projects).
        let registry_only = req.git_url.trim().is_empty();
        if registry_only && req.poll_interval_secs.is_some() {
            return Err(EngineError::BadRequest(
                "poll_interval_secs needs a git_url to poll".into(),
            ));
        }
        if let Some(secs) = req.poll_interval_secs {
            polling::check_interval(secs)?;
        }
        let creds = Credentials {
            username: req.username.clone(),
            password: req.password.clone(),
            ssh_key: req.ssh_key.clone(),
        };
        let credentials = (!creds.is_empty())
            .then(|| serde_json::to_string(&creds).expect("credentials serialize"));
        // A secret made here is shown once, in this answer.
        let (webhook_secret, made) = match &req.webhook_secret {
            Some(s) => {
                secrets::check_webhook_secret(s)?;
                (s.clone(), false)
            }
            None => (secrets::new_webhook_secret(), true),
        };
        let id = self
            .inner
            .db
            .insert_project_sealed(
                &NewProject {
                    path: path.clone(),
                    git_url: req.git_url.trim().to_string(),
                    default_branch: req.default_branch.clone().unwrap_or_else(|| "main".into()),
                    pipeline_file: req.pipeline_file.clone(),
                },
                |id| self.seal_project(id, credentials.as_deref(), &webhook_secret),
            )
            .await?;
        let row = self.project_row(id).await?;
        if registry_only {
            let mut project = self.project(id).await?;
            if made {
                project.webhook_secret = Some(webhook_secret);
            }
            return Ok(project);
        }
        // First fetch now, so that a wrong URL or password is seen at once.
        let this = self.clone();
        let r = row.clone();
        let default = blocking(move || {
            let m = this.mirror_of(&r)?;
            m.fetch(&[])?;
            Ok(m.default_branch()?)
        })
        .await;
        match default {
            Ok(Some(branch)) if req.default_branch.is_none() => {
                self.inner.db.set_default_branch(id, &branch).await?;
            }
            Ok(_) => {}
            Err(e) => {
                // Nothing is kept of a project that cannot be fetched: fix the URL or the
                // credentials and register it again.
                tracing::warn!(project = %path, "first fetch failed: {e}");
                self.inner.mirrors.lock().expect("mirrors").remove(&id);
                let _ = std::fs::remove_dir_all(
                    self.inner
                        .config
                        .data_dir
                        .join("git")
                        .join(format!("{id}.git")),
                );
                self.inner.db.delete_project(id).await?;
                return Err(e);
            }
        }
        if req.poll_interval_secs.is_some() {
            self.set_polling(&id.to_string(), req.poll_interval_secs)
                .await?;
        }
        let mut project = self.project(id).await?;
        if made {
            project.webhook_secret = Some(webhook_secret);
        }
        Ok(project)
    }

    async fn project_row(&self, id: i64) -> Result<ProjectRow> {
        self.inner
            .db
            .project(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("project {id}")))
    }

    /// A project by numeric id or by path.
    pub async fn find_project(&self, key: &str) -> Result<i64> {
        Ok(self.find_project_row(key).await?.id)
    }

    async fn find_project_row(&self, key: &str) -> Result<ProjectRow> {
        if let Ok(id) = key.parse::<i64>() {
            return self.project_row(id).await;
        }
        self.inner
            .db
            .project_by_path(key)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("project '{key}'")))
    }

    /// The registry's `HOST[:PORT]`, as image references start (`CI_REGISTRY`): the
    /// external URL's authority.
    pub fn registry_host(&self) -> String {
        registry_host(&self.inner.config.external_url)
    }

    pub async fn project(&self, id: i64) -> Result<rest::Project> {
        Ok(project_dto(&self.project_row(id).await?))
    }

    pub async fn projects(&self, page: PageReq) -> Result<Page<rest::Project>> {
        let rows = self.inner.db.projects(page).await?;
        Ok(paged(page, rows, |r| project_dto(&r)))
    }

    // ---- pipelines ------------------------------------------------------------------------

    /// Creates a pipeline for a ref (or commit) of a project. A pipeline file with errors
    /// gives a failed pipeline that carries the rendered errors, not an error reply.
    /// `project` is its numeric id or its path.
    pub async fn create_pipeline(
        &self,
        project: &str,
        req: PipelineCreate,
        source: Source,
        user: &str,
    ) -> Result<rest::Pipeline> {
        self.create_pipeline_with(project, req, source, user, TriggerExtras::default())
            .await
    }

    /// [`Engine::create_pipeline`] with what an event knows beyond a ref (a webhook's push or
    /// merge request): see [`TriggerExtras`].
    pub async fn create_pipeline_with(
        &self,
        project: &str,
        req: PipelineCreate,
        source: Source,
        user: &str,
        extras: TriggerExtras,
    ) -> Result<rest::Pipeline> {
        let project = self.find_project_row(project).await?;
        let project_id = project.id;
        let git_ref = req
            .git_ref
            .clone()
            .unwrap_or_else(|| project.default_branch.clone());
        let trigger = Trigger {
            source,
            ref_name: git_ref.clone(),
            // Decided below, once it is known whether the ref is a tag.
            protected: false,
            project: self.project_info(&project),
            user: UserInfo {
                login: user.to_string(),
                name: user.to_string(),
                ..UserInfo::default()
            },
            variables: req
                .variables
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            ..Trigger::default()
        };
        // A branch's open merge requests, as the forge's webhooks told (CI_OPEN_MERGE_REQUESTS;
        // a merge request's own pipeline names itself).
        let mut trigger = trigger;
        // The server's registry (CI_REGISTRY, CI_REGISTRY_IMAGE; the agent adds the job
        // token as CI_REGISTRY_PASSWORD).
        trigger.context.registry = Some(registry_host(&self.inner.config.external_url));
        if source != Source::MergeRequestEvent {
            let open = self
                .inner
                .db
                .open_merge_requests(project_id, &git_ref, OPEN_MERGE_REQUESTS_LISTED)
                .await?;
            trigger.context.open_merge_requests = open
                .into_iter()
                .map(|iid| format!("{}!{iid}", project.path))
                .collect();
        }
        let protected_patterns = self.protected_patterns(project_id).await?;
        // One trip to a blocking thread: the commit, the file, the includes and the plan.
        let this = self.clone();
        let p2 = project.clone();
        let sha_req = req.sha.clone();
        let (sha, trigger, planned) = blocking(move || {
            let TriggerExtras { fetch_ref, apply } = extras;
            let mut trigger = trigger;
            let ref2 = trigger.ref_name.clone();
            let m = this.mirror_of(&p2)?;
            // A commit the mirror has (a push names it) costs no fetch.
            let known = match sha_req.as_deref() {
                Some(rev) => match m.commit_info(rev) {
                    Ok(c) => Some(c),
                    Err(crate::git::GitError::UnknownRevision { .. }) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            let commit = match known {
                Some(c) => c,
                None => {
                    // A ref the remote does not have is the caller's mistake (400), not
                    // a failing remote (502).
                    let fetch = fetch_ref.as_deref().unwrap_or(ref2.as_str());
                    // A short name is a branch first, then a tag (as git resolves it).
                    let fetched = match m.fetch(&[fetch]) {
                        Err(crate::git::GitError::RefNotFound { .. })
                            if fetch_ref.is_none() && !ref2.starts_with("refs/") =>
                        {
                            m.fetch(&[&format!("refs/tags/{ref2}")])
                        }
                        other => other,
                    };
                    fetched.map_err(|e| match e {
                        crate::git::GitError::RefNotFound { .. } => EngineError::BadRequest(
                            format!("'{ref2}' is neither a branch nor a tag of {}: {e}", p2.path),
                        ),
                        e => e.into(),
                    })?;
                    let rev = sha_req.as_deref().unwrap_or(&ref2);
                    let sha = m.resolve(rev)?.ok_or_else(|| {
                        EngineError::BadRequest(format!(
                            "'{rev}' is neither a branch, a tag nor a commit of {}",
                            p2.path
                        ))
                    })?;
                    m.commit_info(&sha)?
                }
            };
            trigger.is_tag = m.is_tag(&ref2)?;
            trigger.protected = variables::ref_is_protected(
                &protected_patterns,
                &p2.default_branch,
                &ref2,
                trigger.is_tag,
            );
            if trigger.is_tag {
                trigger.context.open_merge_requests.clear();
            }
            trigger.commit = commit.to_trigger(None);
            let skip = match apply {
                Some(apply) => apply(&m, &mut trigger)?,
                None => None,
            };
            let sha = trigger.commit.sha.clone();
            if let Some(reason) = skip {
                return Ok((sha, trigger, Planned::Skipped(reason)));
            }
            let candidates: Vec<String> = match &p2.pipeline_file {
                Some(f) => vec![f.clone()],
                None => vec![".gantry.yml".into(), ".gitlab-ci.yml".into()],
            };
            let mut file = None;
            for c in &candidates {
                if let Some(bytes) = m.read_file(&sha, c)? {
                    file = Some((c.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                    break;
                }
            }
            let planned = match file {
                Some((name, text)) => {
                    trigger.context.config_path = Some(name.clone());
                    this.plan_text(&m, &name, &text, &trigger)?.into()
                }
                None => Planned::Invalid(format!(
                    "no pipeline file at {} ({ref2}): add {} to the repository, or set the project's pipeline_file",
                    &sha[..sha.len().min(8)],
                    candidates.join(" or ")
                )),
            };
            Ok((sha, trigger, planned))
        })
        .await?;
        // A merge request's pipeline is listed under the ref GitLab shows for it; its jobs
        // still see the source branch as CI_COMMIT_REF_NAME.
        let git_ref = match &trigger.merge_request {
            Some(mr) => format!("refs/merge-requests/{}/head", mr.iid),
            None => git_ref,
        };
        let row = NewPipeline {
            project_id,
            git_ref,
            sha,
            status: PipelineStatus::Created,
            source: trigger.source.as_str().to_string(),
            parent_job_id: None,
            trigger_json: String::new(),
            errors: None,
            auto_cancel: None,
        };
        let id = self.store_planned(&project, row, trigger, planned).await?;
        self.pipeline(id, true).await
    }

    /// Loads and plans a pipeline file at the trigger's commit: the plan, or the rendered
    /// diagnostics. Blocking (git reads, the planner): call it on a blocking thread.
    fn plan_text(
        &self,
        mirror: &Arc<Mirror>,
        name: &str,
        text: &str,
        trigger: &Trigger,
    ) -> Result<std::result::Result<Plan, String>> {
        let lookup = |path: &str| -> Option<Arc<Mirror>> {
            let handle = tokio::runtime::Handle::current();
            let row = handle
                .block_on(self.inner.db.project_by_path(path))
                .ok()
                .flatten()?;
            self.mirror_of(&row).ok()
        };
        let fetcher = MirrorFetcher::new(mirror, trigger.commit.sha.clone(), &lookup);
        let vars_list = gantry_pipeline::vars::pipeline_variables(trigger);
        let vars = |n: &str| {
            trigger
                .variables
                .iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    vars_list
                        .iter()
                        .find(|v| v.name == n)
                        .map(|v| v.value.clone())
                })
        };
        let loaded = gantry_pipeline::load(name, text, &fetcher, &vars);
        let pipeline = match loaded.pipeline.as_ref() {
            Some(p) if !loaded.has_errors() => p,
            _ => return Ok(Err(loaded.diagnostics.render(&loaded.sources))),
        };
        // The commit's file list only when `rules:exists` needs it.
        let listed;
        let mut trigger = trigger;
        if trigger.files.is_none() && pipeline.uses_exists() {
            let mut t = trigger.clone();
            t.files = Some(mirror.list_files(&t.commit.sha)?);
            listed = t;
            trigger = &listed;
        }
        let mut diags = gantry_pipeline::diag::Diagnostics::new();
        let plan = gantry_pipeline::plan::compile(pipeline, trigger, &mut diags);
        if diags.has_errors() {
            return Ok(Err(diags.render(&loaded.sources)));
        }
        Ok(Ok(plan))
    }

    /// Stores a planned pipeline and its jobs, each with its first decision (pending,
    /// skipped, manual, scheduled), in one transaction; then hands its pending jobs to the
    /// dispatcher. A plan that failed is stored as a failed pipeline showing the errors, a
    /// skipped one as a skipped pipeline saying why. Returns the pipeline's id.
    async fn store_planned(
        &self,
        project: &ProjectRow,
        mut row: NewPipeline,
        mut trigger: Trigger,
        planned: Planned,
    ) -> Result<i64> {
        // The stored trigger leaves the id out (the row has it): it is not known yet.
        trigger.pipeline_id = 0;
        trigger.pipeline_iid = 0;
        let mut defs = Vec::new();
        let mut jobs = Vec::new();
        match planned {
            Planned::Invalid(rendered) => {
                row.status = PipelineStatus::Failed;
                row.errors = Some(rendered);
            }
            Planned::Skipped(reason) => {
                row.status = PipelineStatus::Skipped;
                row.errors = Some(reason);
            }
            Planned::Plan(plan) if !plan.created => {
                row.status = PipelineStatus::Skipped;
                row.errors = Some(format!("no pipeline: {}", plan.workflow));
            }
            Planned::Plan(plan) => {
                defs = (0..plan.jobs.len())
                    .map(|i| JobDefinition::from_plan(&plan, i))
                    .collect();
                let (status, run_at) = first_decisions(&defs);
                row.status = dag::pipeline_status(&new_nodes(&defs, &status));
                row.auto_cancel = plan.auto_cancel.and_then(|a| a.on_new_commit);
                jobs = defs
                    .iter()
                    .enumerate()
                    .map(|(i, def)| NewJob {
                        pipeline_id: 0,
                        project_id: project.id,
                        name: def.name.clone(),
                        stage: def.stage.clone(),
                        stage_index: def.stage_index as i64,
                        position: i as i64,
                        status: status[i],
                        attempt: 1,
                        tags: def.tags.clone(),
                        resource_group: def.resource_group.clone(),
                        allow_failure: def.failure_allowed(None),
                        definition: serde_json::to_string(def).expect("definitions serialize"),
                        run_at: run_at[i],
                    })
                    .collect();
            }
        }
        row.trigger_json = serde_json::to_string(&trigger).expect("triggers serialize");
        let (id, ids) = self.inner.db.create_pipeline(&row, &jobs).await?;
        self.pipeline_stored(id).await;
        trigger.pipeline_id = id as u64;
        trigger.pipeline_iid = id as u64;
        // Pipelines on the same ref as listed: a merge request's are not its branch's.
        let (git_ref, sha) = (row.git_ref.clone(), row.sha.clone());
        self.remember_trigger(id, trigger);
        let queued_at = now_ms();
        for ((job, def), job_id) in jobs.iter().zip(&defs).zip(ids) {
            if job.status != JobStatus::Pending {
                continue;
            }
            if def.child.is_some() {
                self.start_child_later(job_id);
            } else {
                self.dispatcher().enqueue(Queued {
                    job_id,
                    project_id: project.id,
                    tags: job.tags.clone(),
                    resource_group: job.resource_group.clone(),
                    queued_at,
                });
            }
        }
        self.pump().await;
        if row.status.is_finished() {
            self.after_pipeline_end(id).await?;
        }
        if row.parent_job_id.is_none() && row.errors.is_none() {
            self.auto_cancel_older(project.id, &git_ref, &sha, id)
                .await?;
        }
        Ok(id)
    }

    fn project_info(&self, p: &ProjectRow) -> ProjectInfo {
        let server = self
            .inner
            .config
            .external_url
            .trim_end_matches('/')
            .to_string();
        ProjectInfo {
            id: p.id as u64,
            path: p.path.clone(),
            title: p.path.rsplit('/').next().unwrap_or(&p.path).to_string(),
            url: format!("{server}/{}", p.path),
            default_branch: p.default_branch.clone(),
            visibility: "private".into(),
            dir: String::new(),
            server_url: server,
        }
    }

    /// GitLab's "auto-cancel redundant pipelines": an older unfinished pipeline on the same
    /// ref, for another commit, is canceled when every job of it that has started is
    /// `interruptible` (`on_new_commit: conservative`, the default), or only its
    /// interruptible jobs are (`interruptible`); `none` turns it off. Pipelines of the same
    /// commit are not redundant (GitLab leaves those of the ref's head alone too).
    async fn auto_cancel_older(
        &self,
        project_id: i64,
        git_ref: &str,
        sha: &str,
        new_id: i64,
    ) -> Result<()> {
        let older = self
            .inner
            .db
            .unfinished_pipelines_on_ref(project_id, git_ref, new_id)
            .await?;
        for p in older.into_iter().filter(|p| p.sha != sha) {
            let mode = p.auto_cancel.as_deref().unwrap_or("conservative");
            if mode == "none" {
                continue;
            }
            let jobs = self.current_jobs(p.id).await?;
            let defs: Vec<JobDefinition> = jobs.iter().map(parse_def).collect::<Result<_>>()?;
            let started_uninterruptible = jobs.iter().zip(&defs).any(|(j, d)| {
                !d.interruptible
                    && (j.status == JobStatus::Running
                        || (j.status.is_finished() && j.status != JobStatus::Skipped))
            });
            match mode {
                "interruptible" => {
                    for (j, d) in jobs.iter().zip(&defs) {
                        if d.interruptible && j.status.is_active() {
                            self.cancel_one(j).await?;
                        }
                    }
                    self.advance(p.id).await?;
                }
                _ if !started_uninterruptible => {
                    tracing::info!(pipeline = p.id, newer = new_id, "auto-canceled");
                    self.cancel_pipeline(p.id).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub async fn pipeline(&self, id: i64, with_jobs: bool) -> Result<rest::Pipeline> {
        let row = self
            .inner
            .db
            .pipeline(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("pipeline {id}")))?;
        let mut dto = pipeline_dto(&row);
        if with_jobs {
            let jobs = self.inner.db.jobs_of_pipeline(id).await?;
            dto.jobs = Some(jobs.iter().map(|j| self.job_dto(j)).collect());
        }
        Ok(dto)
    }

    pub async fn pipelines(
        &self,
        project_id: Option<i64>,
        page: PageReq,
    ) -> Result<Page<rest::Pipeline>> {
        let rows = match project_id {
            Some(p) => {
                self.project_row(p).await?;
                self.inner.db.pipelines_of_project(p, page).await?
            }
            None => self.inner.db.pipelines(page).await?,
        };
        Ok(paged(page, rows, |r| pipeline_dto(&r)))
    }

    async fn current_jobs(&self, pipeline_id: i64) -> Result<Vec<JobRow>> {
        let mut jobs = self.inner.db.jobs_of_pipeline(pipeline_id).await?;
        jobs.retain(|j| !j.retried);
        jobs.sort_by_key(|j| (j.position, j.id));
        Ok(jobs)
    }

    /// Decides every job that can be decided, queues the ready ones, and updates the
    /// pipeline's status. Idempotent.
    pub fn advance(
        &self,
        pipeline_id: i64,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        // Boxed: advancing may start a child pipeline, which advances in turn.
        Box::pin(self.advance_now(pipeline_id))
    }

    async fn advance_now(&self, pipeline_id: i64) -> Result<()> {
        let ended = {
            let _guard = self.lock(pipeline_id).lock().await;
            let Some(row) = self.inner.db.pipeline(pipeline_id).await? else {
                return Ok(());
            };
            if row.errors.is_some() {
                return Ok(());
            }
            let jobs = self.current_jobs(pipeline_id).await?;
            let defs: Vec<JobDefinition> = jobs.iter().map(parse_def).collect::<Result<_>>()?;
            let mut status: Vec<JobStatus> = jobs.iter().map(|j| j.status).collect();
            let mut changes: Vec<(usize, Decision)> = Vec::new();
            loop {
                let decisions = dag::decide(&nodes(&jobs, &defs, &status));
                let mut changed = false;
                for (i, d) in decisions.into_iter().enumerate() {
                    let to = match d {
                        Decision::Wait => continue,
                        Decision::Skip => JobStatus::Skipped,
                        Decision::Manual => JobStatus::Manual,
                        Decision::Delay(_) => JobStatus::Scheduled,
                        Decision::Enqueue => JobStatus::Pending,
                    };
                    status[i] = to;
                    changes.push((i, d));
                    changed = true;
                }
                if !changed {
                    break;
                }
            }
            let mut ready = Vec::new();
            let mut manual = Vec::new();
            for (i, d) in changes {
                let j = &jobs[i];
                let db = &self.inner.db;
                let done = match d {
                    Decision::Skip => {
                        db.transition(j.id, &[JobStatus::Created], JobStatus::Skipped)
                            .await?
                    }
                    Decision::Manual => {
                        let done = db
                            .transition(j.id, &[JobStatus::Created], JobStatus::Manual)
                            .await?;
                        if done {
                            manual.push(j.id);
                        }
                        done
                    }
                    Decision::Delay(secs) => {
                        db.schedule_job(j.id, now_ms() + secs as i64 * 1000).await?
                    }
                    Decision::Enqueue => {
                        db.transition(j.id, &[JobStatus::Created], JobStatus::Pending)
                            .await?
                    }
                    Decision::Wait => false,
                };
                if done && d == Decision::Enqueue {
                    ready.push((j.clone(), defs[i].clone()));
                }
            }
            let mut pstatus = dag::pipeline_status(&nodes(&jobs, &defs, &status));
            if row.status == PipelineStatus::Canceled && !status.contains(&JobStatus::Running) {
                pstatus = PipelineStatus::Canceled;
            }
            let changed = self.set_pipeline_status(pipeline_id, pstatus).await?;
            for (j, def) in ready {
                if def.child.is_some() {
                    self.start_child_later(j.id);
                } else {
                    let mut j = j;
                    j.queued_at = Some(now_ms());
                    self.queue(&j);
                }
            }
            self.jobs_made_manual(pipeline_id, &manual).await;
            changed && pstatus.is_finished()
        };
        self.pump().await;
        if ended {
            self.after_pipeline_end(pipeline_id).await?;
        }
        Ok(())
    }

    /// A child pipeline ended: its trigger job (with `strategy: depend`) takes its result.
    async fn after_pipeline_end(&self, pipeline_id: i64) -> Result<()> {
        let Some(row) = self.inner.db.pipeline(pipeline_id).await? else {
            return Ok(());
        };
        let Some(parent_job) = row.parent_job_id else {
            return Ok(());
        };
        let Some(job) = self.inner.db.job(parent_job).await? else {
            return Ok(());
        };
        let def = parse_def(&job)?;
        if job.status == JobStatus::Running && def.child.as_ref().is_some_and(|c| c.depend) {
            let end = match row.status {
                PipelineStatus::Success => JobEnd::status(JobStatus::Success),
                PipelineStatus::Canceled => JobEnd::status(JobStatus::Canceled),
                _ => JobEnd::failed(FailureReason::UnknownFailure),
            };
            Box::pin(self.end_job(&job, end, &[JobStatus::Running])).await?;
        }
        Ok(())
    }

    /// Starts the child pipeline of trigger job `job_id`, in its own task.
    fn start_child_later(&self, job_id: i64) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = async {
                let j = this.job_row(job_id).await?;
                if let Some(child) = &parse_def(&j)?.child {
                    this.start_child(&j, child).await?;
                }
                Ok::<_, EngineError>(())
            };
            if let Err(e) = started.await {
                tracing::warn!(job = job_id, "child pipeline: {e}");
            }
        });
    }

    async fn start_child(
        &self,
        job: &JobRow,
        child: &gantry_api::job::ChildPipeline,
    ) -> Result<()> {
        if !self.inner.db.start_job_in_server(job.id).await? {
            return Ok(());
        }
        let parent = self
            .inner
            .db
            .pipeline(job.pipeline_id)
            .await?
            .ok_or_else(|| EngineError::not_found("pipeline"))?;
        let project = self.project_row(job.project_id).await?;
        let mut trigger: Trigger = serde_json::from_str(&parent.trigger_json)
            .map_err(|e| EngineError::Internal(format!("stored trigger: {e}")))?;
        trigger.source = Source::ParentPipeline;
        // The child's configuration is the include files, as GitLab merges them.
        let mut text = String::from("include:\n");
        for f in &child.include {
            text.push_str(&format!(
                "  - local: {}\n",
                serde_json::to_string(f).expect("string")
            ));
        }
        let mirror = self.mirror(project.id).await?;
        let this = self.clone();
        let t2 = trigger.clone();
        let planned: Planned =
            blocking(move || this.plan_text(&mirror, "(child pipeline)", &text, &t2))
                .await?
                .into();
        let row = NewPipeline {
            project_id: project.id,
            git_ref: parent.git_ref.clone(),
            sha: parent.sha.clone(),
            status: PipelineStatus::Created,
            source: Source::ParentPipeline.as_str().into(),
            parent_job_id: Some(job.id),
            trigger_json: String::new(),
            errors: None,
            auto_cancel: None,
        };
        let id = self.store_planned(&project, row, trigger, planned).await?;
        let child_row = self.inner.db.pipeline(id).await?;
        if !child.depend {
            let end = match child_row.map(|r| r.errors.is_some()) {
                Some(true) => JobEnd::failed(FailureReason::ConfigError),
                _ => JobEnd::status(JobStatus::Success),
            };
            self.end_job(job, end, &[JobStatus::Running]).await?;
        } else if child_row.is_some_and(|r| r.status.is_finished()) {
            self.after_pipeline_end(id).await?;
        }
        Ok(())
    }

    /// Cancels every unfinished job of a pipeline (and of its child pipelines).
    pub async fn cancel_pipeline(&self, id: i64) -> Result<rest::Pipeline> {
        let row = self
            .inner
            .db
            .pipeline(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("pipeline {id}")))?;
        if !row.status.is_finished() {
            for j in self.current_jobs(id).await? {
                if j.status.is_active() || j.status == JobStatus::Manual {
                    self.cancel_one(&j).await?;
                    if j.status == JobStatus::Running
                        && let Some(child) = self.inner.db.child_pipeline_of(j.id).await?
                    {
                        Box::pin(self.cancel_pipeline(child.id)).await?;
                    }
                }
            }
            self.set_pipeline_status(id, PipelineStatus::Canceled)
                .await?;
            self.advance(id).await?;
        }
        self.pipeline(id, true).await
    }

    /// One job to `canceled`: a running one is also stopped on its agent (its log is
    /// finished when the agent reports back, or when its lease runs out).
    async fn cancel_one(&self, j: &JobRow) -> Result<()> {
        let from = [
            JobStatus::Created,
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Scheduled,
            JobStatus::Manual,
        ];
        if self
            .inner
            .db
            .transition(j.id, &from, JobStatus::Canceled)
            .await?
        {
            let mut d = self.dispatcher();
            d.dequeue(j.id);
            if j.status == JobStatus::Running {
                if let Some(agent) = j.agent_id.or_else(|| d.agent_of(j.id)) {
                    d.send(agent, ServerMsg::Cancel { job_id: j.id });
                }
            } else {
                d.release(j.id);
            }
        }
        Ok(())
    }

    /// Retries the failed and canceled jobs of a pipeline, and the jobs skipped after them;
    /// stage order and `needs` apply again.
    pub async fn retry_pipeline(&self, id: i64) -> Result<rest::Pipeline> {
        let _ = self
            .inner
            .db
            .pipeline(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("pipeline {id}")))?;
        {
            let _guard = self.lock(id).lock().await;
            let jobs = self.current_jobs(id).await?;
            let retry: Vec<&JobRow> = jobs
                .iter()
                .filter(|j| {
                    matches!(
                        j.status,
                        JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
                    )
                })
                .collect();
            if retry.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "pipeline {id} has no failed, canceled or skipped jobs to retry"
                )));
            }
            for j in retry {
                self.inner.db.retry_job(j.id, &next_attempt(j)).await?;
            }
            // The pipeline runs again.
            self.set_pipeline_status(id, PipelineStatus::Running)
                .await?;
        }
        self.advance(id).await?;
        self.pipeline(id, true).await
    }

    // ---- jobs -----------------------------------------------------------------------------

    fn job_dto(&self, j: &JobRow) -> rest::Job {
        let waiting_reason = if j.status == JobStatus::Pending {
            self.dispatcher().waiting_reason(j.id)
        } else {
            None
        };
        rest::Job {
            id: j.id,
            pipeline_id: j.pipeline_id,
            name: j.name.clone(),
            stage: j.stage.clone(),
            status: j.status,
            attempt: j.attempt,
            retried: j.retried,
            allow_failure: j.allow_failure,
            failure_reason: j.failure_reason,
            exit_code: j.exit_code,
            waiting_reason,
            tags: j.tags.clone(),
            agent_id: j.agent_id,
            played_by: j.played_by.clone(),
            log_size: if j.status.is_finished() && j.log_size > 0 {
                j.log_size
            } else {
                self.log_len(j.id).max(j.log_size)
            },
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }

    pub async fn job_row(&self, id: i64) -> Result<JobRow> {
        self.inner
            .db
            .job(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("job {id}")))
    }

    pub async fn job(&self, id: i64) -> Result<rest::Job> {
        Ok(self.job_dto(&self.job_row(id).await?))
    }

    pub async fn jobs(&self, pipeline_id: i64, page: PageReq) -> Result<Page<rest::Job>> {
        self.pipeline(pipeline_id, false).await?;
        let rows = self
            .inner
            .db
            .jobs_page_of_pipeline(pipeline_id, page)
            .await?;
        Ok(paged(page, rows, |r| self.job_dto(&r)))
    }

    /// Runs a finished job again as a new attempt; its skipped followers get a new chance.
    pub async fn retry_job(&self, id: i64) -> Result<rest::Job> {
        let j = self.job_row(id).await?;
        if !j.status.is_finished() || j.retried {
            return Err(EngineError::Conflict(format!(
                "job {id} is {}{}: only the latest attempt of a finished job can be retried",
                j.status,
                if j.retried { " and was retried" } else { "" }
            )));
        }
        let new_id = {
            let _guard = self.lock(j.pipeline_id).lock().await;
            let jobs = self.current_jobs(j.pipeline_id).await?;
            let defs: Vec<JobDefinition> = jobs.iter().map(parse_def).collect::<Result<_>>()?;
            let refs: Vec<&JobDefinition> = defs.iter().collect();
            let down = dag::downstream_of(&refs, &j.name);
            let new_id = self.inner.db.retry_job(j.id, &next_attempt(&j)).await?;
            for other in &jobs {
                if other.status == JobStatus::Skipped && down.contains(&other.name.as_str()) {
                    self.inner
                        .db
                        .retry_job(other.id, &next_attempt(other))
                        .await?;
                }
            }
            self.set_pipeline_status(j.pipeline_id, PipelineStatus::Running)
                .await?;
            new_id
        };
        self.advance(j.pipeline_id).await?;
        self.job(new_id).await
    }

    /// Plays a manual job, recording who did.
    pub async fn play_job(&self, id: i64, user: &str) -> Result<rest::Job> {
        let j = self.job_row(id).await?;
        if j.status != JobStatus::Manual {
            return Err(EngineError::Conflict(format!(
                "job {id} is {}, not a manual job waiting to be played",
                j.status
            )));
        }
        if self.inner.db.play_job(id, user).await? {
            let j = self.job_row(id).await?;
            self.queue(&j);
            self.set_pipeline_status(j.pipeline_id, PipelineStatus::Running)
                .await?;
            self.pump().await;
        }
        self.job(id).await
    }

    pub async fn cancel_job(&self, id: i64) -> Result<rest::Job> {
        let j = self.job_row(id).await?;
        if !(j.status.is_active() || j.status == JobStatus::Manual) {
            return Err(EngineError::Conflict(format!(
                "job {id} is {}: only unfinished jobs can be canceled",
                j.status
            )));
        }
        self.cancel_one(&j).await?;
        self.advance(j.pipeline_id).await?;
        self.job(id).await
    }

    fn queue(&self, j: &JobRow) {
        self.dispatcher().enqueue(Queued {
            job_id: j.id,
            project_id: j.project_id,
            tags: j.tags.clone(),
            resource_group: j.resource_group.clone(),
            queued_at: j.queued_at.unwrap_or_else(now_ms),
        });
    }

    /// Matches queued jobs with free agents and pushes them.
    async fn pump(&self) {
        let assigned = self.dispatcher().assign();
        for (q, agent) in assigned {
            if let Err(e) = self.push(&q, agent).await {
                tracing::warn!(job = q.job_id, agent, "dispatch: {e}");
                self.dispatcher().release(q.job_id);
            }
        }
    }

    async fn push(&self, q: &Queued, agent: i64) -> Result<()> {
        let token = new_token("gjt_");
        let lease_until = now_ms() + self.inner.config.lease.as_millis() as i64;
        let Some(j) = self
            .inner
            .db
            .claim_job(q.job_id, agent, &hash_token(&token), lease_until)
            .await?
        else {
            // Canceled while queued.
            self.dispatcher().release(q.job_id);
            return Ok(());
        };
        self.job_changed(&j).await;
        metrics::histogram!("gantry_job_pickup_seconds")
            .record((now_ms() - q.queued_at).max(0) as f64 / 1000.0);
        let payload = match self.payload(&j, token).await {
            Ok(p) => p,
            Err(e) => {
                // A job that cannot be described (a variable no key opens) fails now, saying
                // why, rather than waiting for its lease. The message names no value.
                tracing::warn!(job = j.id, "the job's payload: {e}");
                self.append_system_line(j.id, &format!("ERROR: Job failed (system failure): {e}"));
                let end = JobEnd {
                    log_size: self.log_len(j.id),
                    ..JobEnd::failed(FailureReason::RunnerSystemFailure)
                };
                self.end_job(&j, end, &[JobStatus::Running]).await?;
                return Ok(());
            }
        };
        let sent = self
            .dispatcher()
            .send(agent, ServerMsg::Job(Box::new(payload)));
        if !sent {
            // The agent went away between matching and sending: the job goes back.
            tracing::info!(
                job = j.id,
                agent,
                "agent gone before the job was sent; requeued"
            );
            if self
                .inner
                .db
                .transition(j.id, &[JobStatus::Running], JobStatus::Pending)
                .await?
            {
                self.dispatcher().release(j.id);
                self.queue(&j);
            }
        }
        self.advance_status_only(j.pipeline_id).await?;
        Ok(())
    }

    /// A job started: the pipeline is running.
    async fn advance_status_only(&self, pipeline_id: i64) -> Result<()> {
        self.set_pipeline_status(pipeline_id, PipelineStatus::Running)
            .await?;
        Ok(())
    }

    async fn payload(&self, j: &JobRow, token: String) -> Result<JobPayload> {
        let trigger = self.job_trigger(j.pipeline_id).await?;
        let def = parse_def(j)?;
        // The jobs it waits for (none in the first stage without `needs`: no query then).
        let upstream = def.artifacts_from.as_ref().is_some_and(|a| !a.is_empty())
            || def.needs.as_ref().is_some_and(|n| !n.is_empty())
            || (def.needs.is_none() && def.artifacts_from.is_none() && def.stage_index > 0);
        let jobs = match upstream {
            true => self.current_jobs(j.pipeline_id).await?,
            false => Vec::new(),
        };
        let waits_for: Vec<&JobRow> = match (&def.artifacts_from, &def.needs) {
            (Some(names), _) => jobs.iter().filter(|o| names.contains(&o.name)).collect(),
            (None, Some(needs)) => jobs
                .iter()
                .filter(|o| needs.iter().any(|n| n.job == o.name))
                .collect(),
            (None, None) => jobs
                .iter()
                .filter(|o| (o.stage_index as usize) < def.stage_index)
                .collect(),
        };
        let dependencies = waits_for
            .into_iter()
            .filter(|o| o.has_artifacts || !o.dotenv.is_empty())
            .map(|o| Dependency {
                job_id: o.id,
                name: o.name.clone(),
                dotenv: o.dotenv.clone(),
                artifacts: o.has_artifacts,
            })
            .collect();
        let variables = self.job_variables(j.project_id, &trigger, &def).await?;
        Ok(JobPayload {
            id: j.id,
            secrets: vec![("CI_JOB_TOKEN".into(), token.clone())],
            token,
            attempt: j.attempt,
            pipeline_id: j.pipeline_id,
            project_id: j.project_id,
            trigger: (*trigger).clone(),
            definition: def,
            dependencies,
            variables,
        })
    }

    /// A pipeline's trigger as its jobs get it: without the lists only the planner needs
    /// (they can be large).
    async fn job_trigger(&self, pipeline_id: i64) -> Result<Arc<Trigger>> {
        if let Some(t) = self
            .inner
            .triggers
            .lock()
            .expect("triggers")
            .get(&pipeline_id)
        {
            return Ok(t.clone());
        }
        let p = self
            .inner
            .db
            .pipeline(pipeline_id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("pipeline {pipeline_id}")))?;
        let mut trigger: Trigger = serde_json::from_str(&p.trigger_json).map_err(|e| {
            EngineError::Internal(format!("stored trigger of pipeline {}: {e}", p.id))
        })?;
        trigger.pipeline_id = p.id as u64;
        trigger.pipeline_iid = p.id as u64;
        Ok(self.remember_trigger(pipeline_id, trigger))
    }

    fn remember_trigger(&self, pipeline_id: i64, mut trigger: Trigger) -> Arc<Trigger> {
        trigger.files = None;
        trigger.changed_files = None;
        trigger.changed_since.clear();
        let t = Arc::new(trigger);
        let mut cache = self.inner.triggers.lock().expect("triggers");
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(pipeline_id, t.clone());
        t
    }

    /// Ends a job (from one of `from`), retries it if `retry` says so, and moves its
    /// pipeline on.
    async fn end_job(&self, j: &JobRow, end: JobEnd, from: &[JobStatus]) -> Result<()> {
        let id = j.id;
        let mut end = end;
        end.log_size = end.log_size.max(self.log_len(id));
        // The row first, then the log: whoever sees the log finished (a live follower) reads
        // the job's final state. A crash in between leaves a live log of a finished job,
        // which `recover` compresses.
        let ended = self.inner.db.finish_job(j.id, from, &end).await?;
        if ended {
            self.job_changed(j).await;
        }
        if !ended {
            // Canceled before the agent reported: keep what it sent.
            self.inner
                .db
                .set_job_outputs(j.id, end.log_size, end.has_artifacts)
                .await?;
        }
        let this = self.clone();
        // Compress the log (bounded memory, off the async threads).
        if let Err(e) = blocking(move || Ok(this.inner.logs.finish(id)?)).await {
            tracing::warn!(job = id, "finishing the log: {e}");
        }
        self.dispatcher().release(j.id);
        if ended && end.status == JobStatus::Failed {
            let def = parse_def(j)?;
            let reason = end.failure_reason.unwrap_or(FailureReason::UnknownFailure);
            if def.retries(j.attempt, reason, end.exit_code) {
                let _guard = self.lock(j.pipeline_id).lock().await;
                let mut next = next_attempt(j);
                next.status = JobStatus::Pending;
                let new_id = self.inner.db.retry_job(j.id, &next).await?;
                if let Some(row) = self.inner.db.job(new_id).await? {
                    self.queue(&row);
                }
            }
        }
        self.advance(j.pipeline_id).await
    }

    /// The stored length of a job's log (0 when it cannot be read, which is logged).
    pub fn log_len(&self, job_id: i64) -> u64 {
        self.inner.logs.len(job_id).unwrap_or_else(|e| {
            tracing::warn!(job = job_id, "log length: {e}");
            0
        })
    }

    fn append_system_line(&self, job_id: i64, line: &str) {
        let len = self.log_len(job_id);
        let text = format!("\n{line}\n");
        if let Err(e) = self.inner.logs.append(job_id, len, text.as_bytes()) {
            tracing::warn!(job = job_id, "log: {e}");
        }
    }

    // ---- agents ---------------------------------------------------------------------------

    pub async fn register_agent(&self, req: RegisterRequest) -> Result<RegisterResponse> {
        if !constant_time_eq(&hash_token(&req.token), &self.inner.registration_hash) {
            return Err(EngineError::Unauthorized(
                "the registration token is wrong: use the one in the server's data directory (registration-token) or given with --registration-token".into(),
            ));
        }
        if !matches!(req.executor.as_str(), "shell" | "docker") {
            return Err(EngineError::BadRequest(format!(
                "executor '{}' is not known: use shell or docker",
                req.executor
            )));
        }
        let token = new_token("gat_");
        let id = self
            .inner
            .db
            .insert_agent(&NewAgent {
                name: req.name,
                token_hash: hash_token(&token),
                tags: req.tags,
                run_untagged: req.run_untagged,
                executor: req.executor,
                concurrency: req.concurrency.max(1),
                version: req.version,
            })
            .await?;
        Ok(RegisterResponse { id, token })
    }

    pub async fn agents(&self, page: PageReq) -> Result<Page<rest::Agent>> {
        let rows = self.inner.db.agents(page).await?;
        let d = self.dispatcher();
        Ok(paged(page, rows, |a| rest::Agent {
            online: d.agents.contains_key(&a.id),
            running: d.running_on(a.id) as u32,
            id: a.id,
            name: a.name,
            tags: a.tags,
            run_untagged: a.run_untagged,
            executor: a.executor,
            concurrency: a.concurrency,
            last_seen_at: a.last_seen_at,
            version: a.version,
        }))
    }

    pub fn agents_online(&self) -> usize {
        self.dispatcher().agents.len()
    }

    pub fn queue_len(&self) -> usize {
        self.dispatcher().queue_len()
    }

    /// An agent connected and said hello: returns the connection id and the welcome. Jobs
    /// the database gives to this agent that it does not run any more fail now.
    pub async fn agent_connected(
        &self,
        agent: &AgentRow,
        hello: AgentMsg,
        tx: UnboundedSender<ServerMsg>,
    ) -> Result<(u64, ServerMsg)> {
        let AgentMsg::Hello {
            running,
            finished,
            tags,
            run_untagged,
            executor,
            concurrency,
            version,
        } = hello
        else {
            return Err(EngineError::BadRequest(
                "the first message must be hello".into(),
            ));
        };
        self.inner
            .db
            .update_agent(
                agent.id,
                &AgentUpdate {
                    tags: tags.clone(),
                    run_untagged,
                    executor,
                    concurrency,
                    version,
                },
            )
            .await?;
        let mut resume = Vec::new();
        let mine = self.inner.db.running_jobs_of_agent(agent.id).await?;
        let reported: Vec<i64> = running
            .iter()
            .copied()
            .chain(finished.iter().map(|f| f.job_id))
            .collect();
        for j in &mine {
            if !reported.contains(&j.id) {
                // It was running here, and the agent does not know it any more (it
                // restarted, or it is the server's own agent after a server crash).
                self.append_system_line(
                    j.id,
                    "ERROR: Job failed (system failure): the agent lost the job (it restarted)",
                );
                let end = JobEnd {
                    log_size: self.log_len(j.id),
                    ..JobEnd::failed(FailureReason::RunnerSystemFailure)
                };
                self.end_job(j, end, &[JobStatus::Running]).await?;
            }
        }
        for id in &running {
            let keep = mine.iter().any(|j| j.id == *id);
            resume.push(Resume {
                job_id: *id,
                log_offset: self.log_len(*id),
                keep,
            });
        }
        for f in &finished {
            resume.push(Resume {
                job_id: f.job_id,
                log_offset: self.log_len(f.job_id),
                keep: true,
            });
        }
        let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut d = self.dispatcher();
            for id in &running {
                if mine.iter().any(|j| j.id == *id) {
                    d.hold(*id, Some(agent.id), None);
                }
            }
            d.agents.insert(
                agent.id,
                Online {
                    conn,
                    tx,
                    tags,
                    run_untagged,
                    capacity: concurrency.max(1),
                },
            );
            metrics::gauge!("gantry_agents_online").set(d.agents.len() as f64);
        }
        let until = now_ms() + self.inner.config.lease.as_millis() as i64;
        self.inner.db.extend_leases(agent.id, until).await?;
        let welcome = ServerMsg::Welcome {
            agent_id: agent.id,
            heartbeat_ms: self.inner.config.heartbeat.as_millis() as u64,
            lease_ms: self.inner.config.lease.as_millis() as u64,
            resume,
        };
        // Results reported in the hello are handled once the welcome is out (their logs may
        // still have to be resent).
        let this = self.clone();
        let agent_id = agent.id;
        tokio::spawn(async move {
            for f in finished {
                if let Err(e) = this.job_finished(agent_id, f).await {
                    tracing::warn!(agent = agent_id, "result from hello: {e}");
                }
            }
            this.pump().await;
        });
        Ok((conn, welcome))
    }

    /// The agent's connection closed. Its jobs keep running there; their leases decide.
    pub fn agent_disconnected(&self, agent_id: i64, conn: u64) {
        let mut d = self.dispatcher();
        if d.agents.get(&agent_id).is_some_and(|a| a.conn == conn) {
            d.agents.remove(&agent_id);
        }
        metrics::gauge!("gantry_agents_online").set(d.agents.len() as f64);
    }

    /// Revokes an agent's token (administrators): it cannot connect again, and its
    /// connection ends at its next message (its running jobs then fail when their leases
    /// expire, as for a lost agent). Audited.
    pub async fn revoke_agent(&self, id: i64, by: &Caller) -> Result<()> {
        let unusable = format!("revoked:{id}:{}", new_token(""));
        if !self.inner.db.revoke_agent_token(id, &unusable).await? {
            return Err(EngineError::not_found(format!("agent {id}")));
        }
        self.inner
            .revoked_agents
            .lock()
            .expect("revoked agents")
            .insert(id);
        {
            let mut d = self.dispatcher();
            d.agents.remove(&id);
            metrics::gauge!("gantry_agents_online").set(d.agents.len() as f64);
        }
        self.audit(by, "agent.revoke", None, &format!("agent {id}"), None)
            .await;
        Ok(())
    }

    fn check_not_revoked(&self, agent_id: i64) -> Result<()> {
        if self
            .inner
            .revoked_agents
            .lock()
            .expect("revoked agents")
            .contains(&agent_id)
        {
            return Err(EngineError::Unauthorized(
                "this agent's token was revoked: register the agent again".into(),
            ));
        }
        Ok(())
    }

    pub async fn agent_message(&self, agent_id: i64, msg: AgentMsg) -> Result<()> {
        self.check_not_revoked(agent_id)?;
        match msg {
            AgentMsg::Hello { .. } => Err(EngineError::BadRequest("hello was already said".into())),
            AgentMsg::Heartbeat => {
                let until = now_ms() + self.inner.config.lease.as_millis() as i64;
                self.inner.db.extend_leases(agent_id, until).await?;
                self.inner.db.touch_agent(agent_id).await?;
                Ok(())
            }
            AgentMsg::Started { job_id } => {
                tracing::debug!(job = job_id, "started");
                Ok(())
            }
            AgentMsg::Finished(f) => self.job_finished(agent_id, f).await,
        }
    }

    /// Stores log bytes; returns the length stored (to acknowledge).
    pub async fn agent_log(&self, agent_id: i64, frame: LogFrame) -> Result<u64> {
        self.check_not_revoked(agent_id)?;
        let len = self
            .inner
            .logs
            .append(frame.job_id, frame.offset, &frame.data)?;
        let parked = self
            .inner
            .parked
            .lock()
            .expect("parked")
            .get(&frame.job_id)
            .filter(|(_, f)| f.log_len <= len)
            .cloned();
        if let Some((agent, f)) = parked {
            self.inner.parked.lock().expect("parked").remove(&f.job_id);
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.job_finished(agent, f).await {
                    tracing::warn!("finishing a parked result: {e}");
                }
            });
        }
        Ok(len)
    }

    async fn job_finished(&self, agent_id: i64, f: Finished) -> Result<()> {
        let Some(j) = self.inner.db.job(f.job_id).await? else {
            self.dispatcher()
                .send(agent_id, ServerMsg::FinishedAck { job_id: f.job_id });
            return Ok(());
        };
        if j.agent_id != Some(agent_id) {
            return Err(EngineError::BadRequest(format!(
                "job {} does not run on agent {agent_id}",
                j.id
            )));
        }
        if self.log_len(j.id) < f.log_len && !j.status.is_finished() {
            // Wait for the rest of the log.
            self.inner
                .parked
                .lock()
                .expect("parked")
                .insert(j.id, (agent_id, f));
            return Ok(());
        }
        if j.status == JobStatus::Running || j.status == JobStatus::Canceled {
            let end = JobEnd {
                status: f.status,
                failure_reason: f.failure_reason,
                exit_code: f.exit_code,
                dotenv: f.dotenv.clone(),
                has_artifacts: f.artifacts,
                log_size: f.log_len,
            };
            self.end_job(&j, end, &[JobStatus::Running]).await?;
        }
        self.dispatcher()
            .send(agent_id, ServerMsg::FinishedAck { job_id: j.id });
        self.pump().await;
        Ok(())
    }
}

/// What an event knows beyond a ref, for [`Engine::create_pipeline_with`].
#[derive(Default)]
pub struct TriggerExtras {
    /// What to fetch when the mirror lacks the requested commit, instead of the requested
    /// branch: a full ref (`refs/tags/v1.0`, a merge request's `refs/pull/7/head`).
    pub fetch_ref: Option<String>,
    /// Called on the blocking thread once the commit is read from the mirror, before the
    /// pipeline file is: sets what the event decides on the trigger (source, user, the
    /// previous commit, the merge request, changed files, protection) and returns a reason to
    /// skip the pipeline (stored `skipped` with that reason, no job) or `None`.
    #[allow(
        clippy::type_complexity,
        reason = "one boxed callback, named by the field's documentation"
    )]
    pub apply:
        Option<Box<dyn FnOnce(&Mirror, &mut Trigger) -> Result<Option<String>> + Send + 'static>>,
}

impl std::fmt::Debug for TriggerExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerExtras")
            .field("fetch_ref", &self.fetch_ref)
            .field("apply", &self.apply.is_some())
            .finish()
    }
}

/// What the blocking step of a trigger decided.
enum Planned {
    Plan(Plan),
    /// The pipeline file's problems, rendered.
    Invalid(String),
    /// No pipeline runs, for this reason (`[skip ci]`).
    Skipped(String),
}

impl From<std::result::Result<Plan, String>> for Planned {
    fn from(r: std::result::Result<Plan, String>) -> Planned {
        match r {
            Ok(plan) => Planned::Plan(plan),
            Err(rendered) => Planned::Invalid(rendered),
        }
    }
}

/// Credentials of a project's remote, as stored.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ssh_key: Option<String>,
}

impl Credentials {
    fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none() && self.ssh_key.is_none()
    }
}

/// The scheduler's view of a pipeline's current attempts, with `status` as decided so far.
fn nodes<'a>(jobs: &[JobRow], defs: &'a [JobDefinition], status: &[JobStatus]) -> Vec<Node<'a>> {
    defs.iter()
        .zip(status)
        .zip(jobs)
        .map(|((d, s), j)| Node {
            status: *s,
            def: d,
            exit_code: j.exit_code,
        })
        .collect()
}

/// The first decisions on a new pipeline's jobs (none has run): their statuses and, for
/// delayed jobs, when they are due.
fn first_decisions(defs: &[JobDefinition]) -> (Vec<JobStatus>, Vec<Option<i64>>) {
    let mut status = vec![JobStatus::Created; defs.len()];
    let mut run_at = vec![None; defs.len()];
    loop {
        let mut changed = false;
        for (i, d) in dag::decide(&new_nodes(defs, &status))
            .into_iter()
            .enumerate()
        {
            status[i] = match d {
                Decision::Wait => continue,
                Decision::Skip => JobStatus::Skipped,
                Decision::Manual => JobStatus::Manual,
                Decision::Delay(secs) => {
                    run_at[i] = Some(now_ms() + secs as i64 * 1000);
                    JobStatus::Scheduled
                }
                Decision::Enqueue => JobStatus::Pending,
            };
            changed = true;
        }
        if !changed {
            return (status, run_at);
        }
    }
}

fn new_nodes<'a>(defs: &'a [JobDefinition], status: &[JobStatus]) -> Vec<Node<'a>> {
    defs.iter()
        .zip(status)
        .map(|(def, status)| Node {
            status: *status,
            def,
            exit_code: None,
        })
        .collect()
}

fn parse_def(j: &JobRow) -> Result<JobDefinition> {
    serde_json::from_str(&j.definition)
        .map_err(|e| EngineError::Internal(format!("stored definition of job {}: {e}", j.id)))
}

fn next_attempt(j: &JobRow) -> NewJob {
    NewJob {
        pipeline_id: j.pipeline_id,
        project_id: j.project_id,
        name: j.name.clone(),
        stage: j.stage.clone(),
        stage_index: j.stage_index,
        position: j.position,
        status: JobStatus::Created,
        attempt: j.attempt + 1,
        definition: j.definition.clone(),
        tags: j.tags.clone(),
        resource_group: j.resource_group.clone(),
        allow_failure: j.allow_failure,
        run_at: None,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("a blocking task failed: {e}")))?
}

fn paged<R, T>(page: PageReq, rows: Vec<R>, f: impl FnMut(R) -> T) -> Page<T> {
    let (rows, next_page) = page.finish(rows);
    Page {
        items: rows.into_iter().map(f).collect(),
        page: page.page,
        per_page: page.per_page,
        next_page,
    }
}

fn project_dto(p: &ProjectRow) -> rest::Project {
    rest::Project {
        id: p.id,
        path: p.path.clone(),
        git_url: p.git_url.clone(),
        default_branch: p.default_branch.clone(),
        pipeline_file: p.pipeline_file.clone(),
        created_at: p.created_at,
        webhook_secret: None,
    }
}

fn pipeline_dto(p: &PipelineRow) -> rest::Pipeline {
    rest::Pipeline {
        id: p.id,
        project_id: p.project_id,
        git_ref: p.git_ref.clone(),
        sha: p.sha.clone(),
        status: p.status,
        source: p.source.clone(),
        parent_job_id: p.parent_job_id,
        errors: p.errors.clone(),
        created_at: p.created_at,
        started_at: p.started_at,
        finished_at: p.finished_at,
        jobs: None,
    }
}

impl From<StoreError> for Box<EngineError> {
    fn from(e: StoreError) -> Self {
        Box::new(EngineError::Store(e))
    }
}

/// `host[:port]` of a URL (what `docker login` and image names use).
fn registry_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}
