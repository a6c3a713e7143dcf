//! The agent: runs the server's jobs on this machine, with the executors of `gantry run`.
//!
//! The protocol is [`gantry_api::agent`]'s; how this side keeps it:
//!
//! - **Registration** happens once: the id and token the server gives are kept in
//!   `<state dir>/credentials.json` (mode 0600) and reused; a token the server rejects (401
//!   or 403 on connect) is dropped and the agent registers again when it has a registration
//!   token.
//! - **One connection** (WebSocket, TCP_NODELAY): `Hello` lists the jobs running here and the
//!   results not acknowledged yet; `Welcome` gives each job's stored log offset (sending
//!   resumes there) or `keep: false` (the job is canceled). Lost connections are retried
//!   forever with a backoff from 50 ms to 2 s; a connection that hears nothing (not even a
//!   pong) for three heartbeats, and at least 3 s, is dropped and retried.
//! - **Jobs** start the moment they arrive (a task each; the server pushes no more than the
//!   concurrency). `Started` goes when the script starts, `Finished` when the attempt is
//!   over; it is kept, and repeated in every `Hello`, until `FinishedAck`.
//! - **Cancel** (or `keep: false`) fires the job's cancellation token: the attempt drops the
//!   running step and the executor's cleanup kills the process group or removes the
//!   containers at once; the job finishes as `canceled`.
//! - **Logs** go through the job's masker (secrets and the job token never leave masked),
//!   into a per-job [`logbuf::LogBuffer`], and out as binary `LogFrame`s as soon as bytes
//!   arrive: every read from the process wakes the connection, which sends everything
//!   written since (so small writes coalesce). Bytes stay until `LogAck`; while the server is
//!   away they are kept (beyond 64 MiB per job, in a file in the state dir). Bytes still
//!   unacknowledged a heartbeat after they went were not stored and go again.
//! - **Heartbeat** every `heartbeat_ms` extends the leases.
//! - **Shutdown** (the `shutdown` token: Ctrl-C or SIGTERM in `gantry agent`) cancels the
//!   running jobs, reports them `canceled`, waits up to 10 s for the server to acknowledge,
//!   and returns. A job pushed while stopping is reported canceled at once.

mod http;
pub mod logbuf;

use crate::executor::Executor;
use crate::executor::docker::DockerExecutor;
use crate::executor::shell::ShellExecutor;
use crate::job::{AttemptSpec, Outcome, run_attempt};
use crate::log::LogSink;
use crate::mask::Masker;
use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use gantry_api::JobStatus;
use gantry_api::agent::{
    AgentMsg, Finished, JobPayload, LogFrame, RegisterRequest, RegisterResponse, ServerMsg,
};
use logbuf::LogBuffer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

/// The agent's version, sent at registration and in `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The largest log frame sent, in bytes.
const MAX_FRAME: usize = 256 * 1024;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a stopping agent waits for the server to acknowledge its results.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Which executor runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Shell,
    Docker,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Docker => "docker",
        }
    }
}

/// What the agent reports to whoever runs it (the CLI prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Registered { agent_id: i64 },
    Connected { agent_id: i64, server: String },
    Disconnected { reason: String },
    JobStarted { job_id: i64, name: String },
    JobFinished { job_id: i64, status: JobStatus },
}

pub type EventHook = Arc<dyn Fn(&AgentEvent) + Send + Sync>;

#[derive(Clone)]
pub struct AgentConfig {
    /// `http(s)://host[:port][/prefix]`.
    pub server: String,
    /// Needed only until the agent has registered.
    pub registration_token: Option<String>,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: ExecutorKind,
    /// The image of Docker jobs that set none.
    pub docker_image: Option<String>,
    pub concurrency: u32,
    /// Credentials, spilled logs, the local cache.
    pub state_dir: PathBuf,
    /// Job directories (workspace, scripts, artifacts), removed after each job.
    pub builds_dir: PathBuf,
    /// The timeout of jobs that set none.
    pub default_timeout: Duration,
    /// Unacknowledged log bytes kept in memory per job before spilling to a file.
    pub spill_limit: usize,
    pub on_event: Option<EventHook>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("run_untagged", &self.run_untagged)
            .field("executor", &self.executor)
            .field("concurrency", &self.concurrency)
            .field("state_dir", &self.state_dir)
            .field("builds_dir", &self.builds_dir)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// A shell agent named after this host, with no tags (so it runs untagged jobs), one job
    /// at a time, state in [`default_state_dir`].
    pub fn new(server: impl Into<String>, registration_token: Option<String>) -> AgentConfig {
        let state_dir = default_state_dir();
        AgentConfig {
            server: server.into().trim_end_matches('/').to_string(),
            registration_token,
            name: hostname(),
            tags: Vec::new(),
            run_untagged: true,
            executor: ExecutorKind::Shell,
            docker_image: None,
            concurrency: 1,
            builds_dir: state_dir.join("builds"),
            state_dir,
            default_timeout: Duration::from_secs(3600),
            spill_limit: logbuf::SPILL_LIMIT,
            on_event: None,
        }
    }

    fn emit(&self, e: AgentEvent) {
        if let Some(f) = &self.on_event {
            f(&e);
        }
    }
}

/// `$XDG_STATE_HOME/gantry/agent`, else `~/.local/state/gantry/agent`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("gantry")
        .join("agent")
}

/// This machine's host name (`agent` when it has none).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Credentials {
    server: String,
    id: i64,
    token: String,
}

const CREDENTIALS: &str = "credentials.json";

fn load_credentials(state_dir: &Path, server: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(state_dir.join(CREDENTIALS)).ok()?;
    let c: Credentials = serde_json::from_str(&text).ok()?;
    (c.server == server).then_some(c)
}

fn save_credentials(state_dir: &Path, c: &Credentials) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!(".{CREDENTIALS}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(c)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, state_dir.join(CREDENTIALS))?;
    Ok(())
}

/// What job tasks tell the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Out {
    /// New log bytes.
    Log(i64),
    Started(i64),
    Finished(i64),
}

struct Slot {
    cancel: CancellationToken,
    log: Arc<Mutex<LogBuffer>>,
    /// An `Out::Log` for this job waits in the channel.
    queued: Arc<AtomicBool>,
    finished: Option<Finished>,
    /// The connection (generation) that has been told `finished`.
    finished_told: u64,
}

struct Agent {
    config: AgentConfig,
    client: reqwest::Client,
    executor: Arc<dyn Executor>,
    jobs: Mutex<HashMap<i64, Slot>>,
    events: mpsc::UnboundedSender<Out>,
    stopping: AtomicBool,
    creds: Mutex<Option<Credentials>>,
    /// Cancels that came before their job (the server cancels a job it is still sending):
    /// such a job ends as canceled the moment it arrives. The last few ids only.
    early_cancels: Mutex<std::collections::VecDeque<i64>>,
}

impl Agent {
    fn stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            for s in self.jobs.lock().expect("jobs").values() {
                s.cancel.cancel();
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn idle(&self) -> bool {
        self.jobs.lock().expect("jobs").is_empty()
    }
}

/// Runs the agent until `shutdown` fires (then cancels running jobs, reports them and
/// returns). Errors only for what retrying cannot fix: no credentials and no registration
/// token, a registration token the server refuses, no executor.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    if config.server.is_empty() {
        bail!("no server URL");
    }
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    std::fs::create_dir_all(&config.builds_dir)
        .with_context(|| format!("creating {}", config.builds_dir.display()))?;
    let executor: Arc<dyn Executor> = match config.executor {
        ExecutorKind::Shell => Arc::new(ShellExecutor),
        ExecutorKind::Docker => {
            let mut d = DockerExecutor::connect()
                .await
                .map_err(|e| anyhow::anyhow!("{e}: start Docker, or use the shell executor"))?;
            d.default_image = config.docker_image.clone();
            Arc::new(d)
        }
    };
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent {
        creds: Mutex::new(load_credentials(&config.state_dir, &config.server)),
        config,
        client,
        executor,
        jobs: Mutex::new(HashMap::new()),
        events: tx,
        stopping: AtomicBool::new(false),
        early_cancels: Mutex::new(std::collections::VecDeque::new()),
    });
    let mut backoff = BACKOFF_START;
    let mut generation = 0u64;
    let mut deadline: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            agent.stop();
        }
        if agent.stopping() {
            let d = *deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            if agent.idle() || Instant::now() >= d {
                return Ok(());
            }
        }
        let creds = agent.creds.lock().expect("creds").clone();
        let creds = match creds {
            Some(c) => c,
            None => match register(&agent).await {
                Ok(c) => {
                    agent.config.emit(AgentEvent::Registered { agent_id: c.id });
                    *agent.creds.lock().expect("creds") = Some(c.clone());
                    c
                }
                Err(Register::Fatal(e)) => return Err(e),
                Err(Register::Retry(e)) => {
                    agent.config.emit(AgentEvent::Disconnected {
                        reason: format!("registering: {e:#}"),
                    });
                    pause(&agent, &shutdown, &mut backoff, deadline).await;
                    continue;
                }
            },
        };
        generation += 1;
        let reason = match connect(&agent.config.server, &creds.token).await {
            Ok(ws) => {
                let r = session(&agent, ws, &mut rx, generation, &shutdown, &mut backoff).await;
                match r {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            }
            Err(Connect::Unauthorized(e)) => {
                if agent.config.registration_token.is_none() {
                    bail!(
                        "the server refused this agent's token ({e}) and there is no registration token to register again"
                    );
                }
                let _ = std::fs::remove_file(agent.config.state_dir.join(CREDENTIALS));
                *agent.creds.lock().expect("creds") = None;
                format!("the server refused the agent token ({e}); registering again")
            }
            Err(Connect::Other(e)) => e,
        };
        for s in agent.jobs.lock().expect("jobs").values() {
            s.log.lock().expect("log").disconnected();
        }
        agent.config.emit(AgentEvent::Disconnected {
            reason: reason.clone(),
        });
        pause(&agent, &shutdown, &mut backoff, deadline).await;
    }
}

/// Waits `backoff` (doubling it up to the cap), cut short by a shutdown or the stop deadline.
async fn pause(
    agent: &Agent,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
    deadline: Option<Instant>,
) {
    let mut wait = *backoff;
    if let Some(d) = deadline {
        wait = wait.min(d.saturating_duration_since(Instant::now()));
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled(), if !agent.stopping() => {}
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

enum Register {
    Fatal(anyhow::Error),
    Retry(anyhow::Error),
}

async fn register(agent: &Agent) -> Result<Credentials, Register> {
    let c = &agent.config;
    let Some(token) = c.registration_token.clone() else {
        return Err(Register::Fatal(anyhow::anyhow!(
            "this agent is not registered yet: give it the server's registration token"
        )));
    };
    let req = RegisterRequest {
        token,
        name: c.name.clone(),
        tags: c.tags.clone(),
        run_untagged: c.run_untagged,
        executor: c.executor.as_str().to_string(),
        concurrency: c.concurrency,
        version: VERSION.to_string(),
    };
    let url = format!("{}/api/v1/agents/register", c.server);
    let resp = agent
        .client
        .post(&url)
        .json(&req)
        .send()
        .await
        .map_err(|e| Register::Retry(anyhow::anyhow!("POST {url}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        let r: RegisterResponse = resp
            .json()
            .await
            .map_err(|e| Register::Retry(anyhow::anyhow!("POST {url}: {e}")))?;
        let creds = Credentials {
            server: c.server.clone(),
            id: r.id,
            token: r.token,
        };
        save_credentials(&c.state_dir, &creds).map_err(Register::Fatal)?;
        return Ok(creds);
    }
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<gantry_api::rest::ApiError>(&body)
        .map(|e| e.message)
        .unwrap_or(body);
    let e = anyhow::anyhow!("registering at {url}: {status}: {}", msg.trim());
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(Register::Retry(e))
    } else {
        Err(Register::Fatal(e))
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Connect {
    Unauthorized(String),
    Other(String),
}

/// `http(s)://…` → `ws(s)://…/api/v1/agents/connect`.
fn connect_url(server: &str) -> String {
    let base = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        server.to_string()
    };
    format!("{base}/api/v1/agents/connect")
}

async fn connect(server: &str, token: &str) -> Result<Ws, Connect> {
    let url = connect_url(server);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Connect::Other(format!("{url}: {e}")))?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Connect::Other("the agent token is not a valid header".into()))?,
    );
    let fut = tokio_tungstenite::connect_async_with_config(req, None, true);
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Err(_) => Err(Connect::Other(format!("connecting to {url}: timed out"))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status() == 401 || resp.status() == 403 => {
            Err(Connect::Unauthorized(resp.status().to_string()))
        }
        Ok(Err(e)) => Err(Connect::Other(format!("connecting to {url}: {e}"))),
    }
}

/// One connection, from `Hello` to its end. `Ok` when the agent has stopped for good.
async fn session(
    agent: &Arc<Agent>,
    ws: Ws,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    generation: u64,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (mut sink, mut stream) = ws.split();
    let c = &agent.config;
    let hello = {
        let mut jobs = agent.jobs.lock().expect("jobs");
        let mut running = Vec::new();
        let mut finished = Vec::new();
        for (id, s) in jobs.iter_mut() {
            match &s.finished {
                None => running.push(*id),
                Some(f) => {
                    finished.push(f.clone());
                    s.finished_told = generation;
                }
            }
        }
        running.sort_unstable();
        finished.sort_by_key(|f| f.job_id);
        AgentMsg::Hello {
            running,
            finished,
            tags: c.tags.clone(),
            run_untagged: c.run_untagged,
            executor: c.executor.as_str().to_string(),
            concurrency: c.concurrency,
            version: VERSION.to_string(),
        }
    };
    send_json(&mut sink, &hello).await?;
    let welcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str::<ServerMsg>(&t).ok(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(ServerMsg::Welcome {
        agent_id,
        heartbeat_ms,
        lease_ms,
        resume,
    }) = welcome
    else {
        return Err("the server did not answer Hello with Welcome".into());
    };
    *backoff = BACKOFF_START;
    c.emit(AgentEvent::Connected {
        agent_id,
        server: c.server.clone(),
    });
    {
        let jobs = agent.jobs.lock().expect("jobs");
        for r in &resume {
            if let Some(s) = jobs.get(&r.job_id) {
                s.log.lock().expect("log").resume(r.log_offset);
                if !r.keep && s.finished.is_none() {
                    s.cancel.cancel();
                }
            }
        }
    }
    let ids: Vec<i64> = agent.jobs.lock().expect("jobs").keys().copied().collect();
    for id in ids {
        send_log(agent, &mut sink, id).await?;
    }
    sink.flush().await.map_err(|e| e.to_string())?;

    let beat = Duration::from_millis(heartbeat_ms.max(10));
    let silent_limit = (beat * 3)
        .max(Duration::from_secs(3))
        .max(Duration::from_millis(lease_ms));
    let mut ticker = tokio::time::interval(beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if agent.stopping() {
            let d = *stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            if agent.idle() || Instant::now() >= d {
                let _ = sink.send(Message::Close(None)).await;
                return Ok(());
            }
        }
        tokio::select! {
            m = stream.next() => {
                last_heard = Instant::now();
                match m {
                    None => return Err("the server closed the connection".into()),
                    Some(Err(e)) => return Err(format!("connection lost: {e}")),
                    Some(Ok(Message::Close(_))) => return Err("the server closed the connection".into()),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(&t) {
                        Ok(msg) => handle(agent, msg),
                        Err(e) => tracing::warn!("ignoring a message from the server: {e}"),
                    },
                    Some(Ok(_)) => {}
                }
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { return Err("internal channel closed".into()) };
                match ev {
                    Out::Log(id) => send_log(agent, &mut sink, id).await?,
                    Out::Started(job_id) => {
                        send_json(&mut sink, &AgentMsg::Started { job_id }).await?;
                    }
                    Out::Finished(id) => {
                        send_log(agent, &mut sink, id).await?;
                        let f = {
                            let mut jobs = agent.jobs.lock().expect("jobs");
                            jobs.get_mut(&id).and_then(|s| {
                                if s.finished_told == generation {
                                    return None;
                                }
                                s.finished_told = generation;
                                s.finished.clone()
                            })
                        };
                        if let Some(f) = f {
                            send_json(&mut sink, &AgentMsg::Finished(f)).await?;
                        }
                    }
                }
                sink.flush().await.map_err(|e| format!("connection lost: {e}"))?;
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > silent_limit {
                    return Err(format!("no word from the server for {:?}", last_heard.elapsed()));
                }
                send_json(&mut sink, &AgentMsg::Heartbeat).await?;
                sink.send(Message::Ping(Vec::new().into())).await.map_err(|e| format!("connection lost: {e}"))?;
                // Log bytes the server did not store (a full disk) go again.
                for id in stalled_logs(agent) {
                    send_log(agent, &mut sink, id).await?;
                }
                sink.flush().await.map_err(|e| format!("connection lost: {e}"))?;
            }
            _ = shutdown.cancelled(), if !agent.stopping() => agent.stop(),
        }
    }
}

async fn send_json<S>(sink: &mut S, msg: &AgentMsg) -> Result<(), String>
where
    S: SinkExt<Message, Error = tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("connection lost: {e}"))
}

/// Jobs whose log bytes sent a heartbeat ago are still not acknowledged; sending restarts
/// at their acknowledged offset.
fn stalled_logs(agent: &Agent) -> Vec<i64> {
    let jobs = agent.jobs.lock().expect("jobs");
    jobs.iter()
        .filter(|(_, s)| s.log.lock().expect("log").rewind_stalled())
        .map(|(id, _)| *id)
        .collect()
}

/// Queues every unsent log byte of job `id` as frames (flushed by the caller).
async fn send_log<S>(agent: &Agent, sink: &mut S, id: i64) -> Result<(), String>
where
    S: SinkExt<Message, Error = tungstenite::Error> + Unpin,
{
    let (log, queued) = {
        let jobs = agent.jobs.lock().expect("jobs");
        match jobs.get(&id) {
            Some(s) => (s.log.clone(), s.queued.clone()),
            None => return Ok(()),
        }
    };
    // Cleared before reading, so bytes written from now on wake the connection again.
    queued.store(false, Ordering::SeqCst);
    loop {
        let frame = log.lock().expect("log").next_frame(MAX_FRAME);
        match frame {
            Ok(Some((offset, data))) => {
                let f = LogFrame {
                    job_id: id,
                    offset,
                    data,
                };
                sink.feed(Message::Binary(f.encode().into()))
                    .await
                    .map_err(|e| format!("connection lost: {e}"))?;
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!("reading the spilled log of job {id}: {e}");
                return Ok(());
            }
        }
    }
}

fn handle(agent: &Arc<Agent>, msg: ServerMsg) {
    match msg {
        ServerMsg::Job(p) => start_job(agent, *p),
        ServerMsg::Cancel { job_id } => {
            if let Some(s) = agent.jobs.lock().expect("jobs").get(&job_id) {
                s.cancel.cancel();
            } else {
                let mut early = agent.early_cancels.lock().expect("early cancels");
                if early.len() >= 256 {
                    early.pop_front();
                }
                early.push_back(job_id);
            }
        }
        ServerMsg::LogAck { job_id, offset } => {
            if let Some(s) = agent.jobs.lock().expect("jobs").get(&job_id) {
                s.log.lock().expect("log").ack(offset);
            }
        }
        ServerMsg::FinishedAck { job_id } => {
            let mut jobs = agent.jobs.lock().expect("jobs");
            if jobs.get(&job_id).is_some_and(|s| s.finished.is_some()) {
                jobs.remove(&job_id);
            }
        }
        ServerMsg::Welcome { .. } => {}
    }
}

fn start_job(agent: &Arc<Agent>, p: JobPayload) {
    let id = p.id;
    let cancel = CancellationToken::new();
    let log = Arc::new(Mutex::new(LogBuffer::new(
        agent
            .config
            .state_dir
            .join("logs")
            .join(format!("{id}.log")),
        agent.config.spill_limit,
    )));
    let queued = Arc::new(AtomicBool::new(false));
    {
        let mut jobs = agent.jobs.lock().expect("jobs");
        if jobs.contains_key(&id) {
            return; // pushed again after a reconnect: it runs (or ran) here already
        }
        let mut early = agent.early_cancels.lock().expect("early cancels");
        if let Some(i) = early.iter().position(|&j| j == id) {
            early.remove(i);
            cancel.cancel();
        }
        drop(early);
        if agent.stopping() {
            cancel.cancel();
        }
        jobs.insert(
            id,
            Slot {
                cancel: cancel.clone(),
                log: log.clone(),
                queued: queued.clone(),
                finished: None,
                finished_told: 0,
            },
        );
    }
    let agent = agent.clone();
    tokio::spawn(async move {
        let status = run_job(&agent, p, cancel, log, queued).await;
        agent
            .config
            .emit(AgentEvent::JobFinished { job_id: id, status });
    });
}

async fn run_job(
    agent: &Arc<Agent>,
    p: JobPayload,
    cancel: CancellationToken,
    buf: Arc<Mutex<LogBuffer>>,
    queued: Arc<AtomicBool>,
) -> JobStatus {
    let id = p.id;
    let c = &agent.config;
    c.emit(AgentEvent::JobStarted {
        job_id: id,
        name: p.definition.name.clone(),
    });
    let _ = std::fs::create_dir_all(c.state_dir.join("logs"));
    let masker = Masker::new(
        p.secrets
            .iter()
            .map(|(_, v)| v.clone())
            .chain(
                p.variables
                    .iter()
                    .filter(|v| v.masked)
                    .map(|v| v.value.clone()),
            )
            .chain(std::iter::once(p.token.clone())),
    );
    let writer = {
        let (buf, queued, events) = (buf.clone(), queued.clone(), agent.events.clone());
        Box::new(move |bytes: &[u8]| {
            if let Err(e) = buf.lock().expect("log").push(bytes) {
                tracing::error!("keeping the log of job {id}: {e}");
            }
            if !queued.swap(true, Ordering::SeqCst) {
                let _ = events.send(Out::Log(id));
            }
        })
    };
    let log = LogSink::new(masker, writer);
    log.info(&format!(
        "Running with gantry {VERSION} on {} (the {} executor)",
        c.name,
        agent.executor.name()
    ));
    let dir = c.builds_dir.join(id.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let creds = agent.creds.lock().expect("creds").clone();
    let runner = gantry_pipeline::vars::RunnerInfo {
        id: creds.as_ref().map_or(0, |c| c.id.max(0) as u64),
        description: c.name.clone(),
        tags: c.tags.clone(),
        version: VERSION.to_string(),
        revision: String::new(),
        executable_arch: format!("{}/{}", std::env::consts::OS, go_arch()),
        short_token: creds
            .as_ref()
            .map(|c| c.token.chars().take(8).collect())
            .unwrap_or_default(),
    };
    let io = http::HttpIo {
        client: agent.client.clone(),
        server: c.server.clone(),
        job_id: id,
        token: p.token.clone(),
        dependencies: p.dependencies.clone(),
        tmp: dir.join("tmp"),
        events: agent.events.clone(),
    };
    let spec = AttemptSpec {
        definition: &p.definition,
        trigger: &p.trigger,
        job_id: id.max(0) as u64,
        attempt: p.attempt,
        executor: agent.executor.clone(),
        dir: dir.clone(),
        cache_dir: c.state_dir.join("cache"),
        secrets: &p.secrets,
        variables: &p.variables,
        default_timeout: c.default_timeout,
        after_script_timeout: Duration::from_secs(300),
        job_token: Some(p.token.clone()),
        runner: Some(runner),
    };
    let report = run_attempt(&spec, &io, &log, &cancel).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let (status, failure_reason, exit_code) = match report.outcome {
        Outcome::Success => (JobStatus::Success, None, None),
        Outcome::Canceled => (JobStatus::Canceled, None, None),
        Outcome::Failed { reason, exit_code } => (JobStatus::Failed, Some(reason), exit_code),
    };
    let log_len = buf.lock().expect("log").end();
    let finished = Finished {
        job_id: id,
        status,
        failure_reason,
        exit_code,
        log_len,
        artifacts: report.artifacts,
        dotenv: report.dotenv,
    };
    if let Some(s) = agent.jobs.lock().expect("jobs").get_mut(&id) {
        s.finished = Some(finished);
    }
    let _ = agent.events.send(Out::Finished(id));
    status
}

/// The architecture as GitLab Runner names it (`amd64`, `arm64`, …).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_urls() {
        assert_eq!(connect_url("http://h:1"), "ws://h:1/api/v1/agents/connect");
        assert_eq!(
            connect_url("https://h/ci"),
            "wss://h/ci/api/v1/agents/connect"
        );
    }

    #[test]
    fn credentials_are_private_and_per_server() {
        let d = tempfile::tempdir().unwrap();
        let c = Credentials {
            server: "http://a".into(),
            id: 3,
            token: "t".into(),
        };
        save_credentials(d.path(), &c).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join(CREDENTIALS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_credentials(d.path(), "http://a"), Some(c));
        assert_eq!(load_credentials(d.path(), "http://b"), None);
    }
}
