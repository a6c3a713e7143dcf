//! The agent against a small fake server in this file (axum): registration, a pushed shell
//! job with its logs, artifacts and result, a connection dropped mid-job (every log byte
//! arrives exactly once after the reconnect, unacknowledged results are repeated), and a
//! cancel that kills a `sleep 30` at once.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use gantry_api::JobStatus;
use gantry_api::agent::{
    AgentMsg, Finished, JobPayload, LogFrame, RegisterRequest, RegisterResponse, Resume, ServerMsg,
};
use gantry_api::job::JobDefinition;
use gantry_pipeline::trigger::Trigger;
use gantry_runner::agent::{self, AgentConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REG_TOKEN: &str = "registration-token";
const AGENT_TOKEN: &str = "agent-token-123";
const JOB_TOKEN: &str = "job-token-abcdef";

struct Fake {
    registrations: AtomicUsize,
    conns: mpsc::UnboundedSender<WebSocket>,
    source: Vec<u8>,
    artifacts: Mutex<HashMap<i64, Vec<u8>>>,
}

async fn register(State(f): State<Arc<Fake>>, Json(r): Json<RegisterRequest>) -> Response {
    if r.token != REG_TOKEN {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    f.registrations.fetch_add(1, Ordering::SeqCst);
    Json(RegisterResponse {
        id: 7,
        token: AGENT_TOKEN.into(),
    })
    .into_response()
}

fn bearer(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn connect(State(f): State<Arc<Fake>>, h: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if bearer(&h) != format!("Bearer {AGENT_TOKEN}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ws.on_upgrade(move |socket| async move {
        let _ = f.conns.send(socket);
    })
}

async fn source(State(f): State<Arc<Fake>>, h: HeaderMap) -> Response {
    if bearer(&h) != format!("Bearer {JOB_TOKEN}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    f.source.clone().into_response()
}

async fn put_artifacts(
    State(f): State<Arc<Fake>>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> StatusCode {
    f.artifacts.lock().unwrap().insert(id, body.to_vec());
    StatusCode::CREATED
}

async fn no_cache() -> StatusCode {
    StatusCode::NOT_FOUND
}

struct Server {
    url: String,
    fake: Arc<Fake>,
    conns: mpsc::UnboundedReceiver<WebSocket>,
}

async fn server() -> Server {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("file.txt"), "from the source tar\n").unwrap();
    let files = gantry_runner::fsutil::list_files(src.path());
    let source_tar = gantry_runner::tarball::pack(src.path(), &files, Vec::new()).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        registrations: AtomicUsize::new(0),
        conns: tx,
        source: source_tar,
        artifacts: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/api/v1/agents/register", post(register))
        .route("/api/v1/agents/connect", get(connect))
        .route("/api/v1/jobs/{id}/source", get(source))
        .route("/api/v1/jobs/{id}/artifacts", put(put_artifacts))
        .route("/api/v1/jobs/{id}/cache/{key}", get(no_cache).put(no_cache))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url,
        fake,
        conns: rx,
    }
}

impl Server {
    async fn accept(&mut self) -> Conn {
        let ws = tokio::time::timeout(Duration::from_secs(10), self.conns.recv())
            .await
            .expect("the agent connects")
            .unwrap();
        Conn { ws }
    }
}

#[derive(Debug)]
enum In {
    Msg(AgentMsg),
    Log(LogFrame),
}

struct Conn {
    ws: WebSocket,
}

impl Conn {
    async fn recv(&mut self) -> In {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.recv())
                .await
                .expect("a message from the agent")
                .expect("the connection is open")
                .expect("a message");
            match m {
                Message::Text(t) => return In::Msg(serde_json::from_str(&t).unwrap()),
                Message::Binary(b) => return In::Log(LogFrame::decode(&b).unwrap()),
                _ => {}
            }
        }
    }

    async fn recv_msg(&mut self) -> AgentMsg {
        loop {
            if let In::Msg(m) = self.recv().await {
                return m;
            }
        }
    }

    async fn send(&mut self, m: &ServerMsg) {
        let text = serde_json::to_string(m).unwrap();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    async fn welcome(&mut self, resume: Vec<Resume>) {
        self.send(&ServerMsg::Welcome {
            agent_id: 7,
            heartbeat_ms: 100,
            lease_ms: 1000,
            resume,
        })
        .await;
    }
}

fn definition(script: &[&str], extra: &str) -> JobDefinition {
    let mut yaml = String::from("job:\n  script:\n");
    for l in script {
        yaml.push_str(&format!("    - {}\n", serde_json::to_string(l).unwrap()));
    }
    yaml.push_str(extra);
    let loaded = gantry_pipeline::load(
        ".gantry.yml",
        &yaml,
        &gantry_pipeline::resolve::NoFetcher,
        &|_| None,
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let mut diags = gantry_pipeline::diag::Diagnostics::new();
    let plan = gantry_pipeline::plan::compile(
        loaded.pipeline.as_ref().unwrap(),
        &Trigger::default(),
        &mut diags,
    );
    JobDefinition::from_plan(&plan, 0)
}

fn payload(id: i64, definition: JobDefinition) -> ServerMsg {
    ServerMsg::Job(Box::new(JobPayload {
        id,
        token: JOB_TOKEN.into(),
        attempt: 1,
        pipeline_id: 1,
        project_id: 1,
        trigger: Trigger::default(),
        definition,
        dependencies: Vec::new(),
        secrets: vec![("MY_SECRET".into(), "s3cr3t-value".into())],
        variables: Vec::new(),
    }))
}

struct Agent {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dirs: tempfile::TempDir,
}

fn start_agent(url: &str) -> Agent {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(url, Some(REG_TOKEN.into()));
    config.state_dir = dirs.path().join("state");
    config.builds_dir = dirs.path().join("builds");
    config.concurrency = 2;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(agent::run(config, shutdown.clone()));
    Agent {
        shutdown,
        handle,
        _dirs: dirs,
    }
}

impl Agent {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("the agent stops")
            .unwrap()
            .unwrap();
    }
}

/// Reads until `Finished` for `job`, storing log frames as the server does: a gap fails, a
/// resend of bytes already stored (the agent repeats what stays unacknowledged a heartbeat
/// later) must match them and is stored once. Acknowledges when `ack`.
async fn until_finished(c: &mut Conn, job: i64, log: &mut Vec<u8>, ack: bool) -> Finished {
    loop {
        match c.recv().await {
            In::Log(f) => {
                assert_eq!(f.job_id, job);
                let at = f.offset as usize;
                assert!(at <= log.len(), "a gap: {at} after {} bytes", log.len());
                let overlap = (log.len() - at).min(f.data.len());
                assert_eq!(
                    &log[at..at + overlap],
                    &f.data[..overlap],
                    "a resend differs"
                );
                log.extend_from_slice(&f.data[overlap..]);
                if ack {
                    c.send(&ServerMsg::LogAck {
                        job_id: job,
                        offset: log.len() as u64,
                    })
                    .await;
                }
            }
            In::Msg(AgentMsg::Finished(f)) if f.job_id == job => return f,
            In::Msg(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_a_pushed_job_and_streams_its_log() {
    let mut s = server().await;
    let agent = start_agent(&s.url);
    let mut c = s.accept().await;
    let AgentMsg::Hello {
        running,
        finished,
        run_untagged,
        executor,
        ..
    } = c.recv_msg().await
    else {
        panic!("Hello first")
    };
    assert!(running.is_empty() && finished.is_empty());
    assert!(run_untagged);
    assert_eq!(executor, "shell");
    c.welcome(Vec::new()).await;
    let def = definition(
        &[
            "echo \"$GREETING from job $CI_JOB_ID\"",
            "cat file.txt",
            "echo \"the secret is $MY_SECRET and the token $CI_JOB_TOKEN\"",
            "echo built > out.txt",
        ],
        "  variables: {GREETING: hello}\n  artifacts: {paths: [out.txt]}\n",
    );
    let sent = Instant::now();
    c.send(&payload(41, def)).await;
    let mut started = false;
    let mut log = Vec::new();
    let mut heartbeats = 0;
    let fin = loop {
        match c.recv().await {
            In::Msg(AgentMsg::Started { job_id: 41 }) => {
                started = true;
                eprintln!("Started {:?} after the push", sent.elapsed());
            }
            In::Msg(AgentMsg::Heartbeat) => heartbeats += 1,
            In::Msg(AgentMsg::Finished(f)) => break f,
            In::Msg(m) => panic!("unexpected {m:?}"),
            In::Log(f) => {
                assert_eq!(f.offset, log.len() as u64);
                log.extend_from_slice(&f.data);
                c.send(&ServerMsg::LogAck {
                    job_id: 41,
                    offset: log.len() as u64,
                })
                .await;
            }
        }
    };
    let text = String::from_utf8_lossy(&log);
    assert!(started);
    assert_eq!(fin.status, JobStatus::Success, "{text}");
    assert_eq!(fin.log_len, log.len() as u64);
    assert!(fin.artifacts);
    assert!(text.contains("hello from job 41"), "{text}");
    assert!(text.contains("from the source tar"), "{text}");
    assert!(
        text.contains("the secret is [MASKED] and the token [MASKED]"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-value") && !text.contains(JOB_TOKEN));
    let tar = s.fake.artifacts.lock().unwrap().get(&41).cloned().unwrap();
    let out = tempfile::tempdir().unwrap();
    gantry_runner::tarball::unpack(&tar[..], out.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("out.txt")).unwrap(),
        "built\n"
    );
    c.send(&ServerMsg::FinishedAck { job_id: 41 }).await;
    // Heartbeats keep coming while idle.
    while heartbeats < 2 {
        if let In::Msg(AgentMsg::Heartbeat) = c.recv().await {
            heartbeats += 1;
        }
    }
    assert_eq!(s.fake.registrations.load(Ordering::SeqCst), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resumes_the_log_without_loss_or_duplication() {
    let mut s = server().await;
    let agent = start_agent(&s.url);
    let mut c = s.accept().await;
    c.recv_msg().await;
    c.welcome(Vec::new()).await;
    let def = definition(
        &["for i in $(seq 1 60); do echo \"line $i\"; sleep 0.02; done"],
        "",
    );
    c.send(&payload(5, def)).await;
    // Store some frames, then lose one in flight and drop the connection, unacknowledged.
    let mut log: Vec<u8> = Vec::new();
    loop {
        if let In::Log(f) = c.recv().await {
            if String::from_utf8_lossy(&log).contains("line 5\n") {
                break; // this frame is lost
            }
            assert_eq!(f.offset, log.len() as u64);
            log.extend_from_slice(&f.data);
        }
    }
    drop(c);

    let mut c = s.accept().await;
    let AgentMsg::Hello { running, .. } = c.recv_msg().await else {
        panic!("Hello first")
    };
    assert_eq!(running, vec![5]);
    c.welcome(vec![Resume {
        job_id: 5,
        log_offset: log.len() as u64,
        keep: true,
    }])
    .await;
    // Read on, without acknowledging, and drop the connection once the job is done.
    let fin = until_finished(&mut c, 5, &mut log, false).await;
    assert_eq!(fin.status, JobStatus::Success);
    assert_eq!(fin.log_len, log.len() as u64);
    drop(c);

    // The result was not acknowledged: the next Hello repeats it, and the log is whole.
    let mut c = s.accept().await;
    let AgentMsg::Hello {
        running, finished, ..
    } = c.recv_msg().await
    else {
        panic!("Hello first")
    };
    assert!(running.is_empty());
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].job_id, 5);
    c.welcome(vec![Resume {
        job_id: 5,
        log_offset: log.len() as u64,
        keep: true,
    }])
    .await;
    c.send(&ServerMsg::FinishedAck { job_id: 5 }).await;
    let text = String::from_utf8_lossy(&log);
    for i in 1..=60 {
        let line = format!("line {i}\n");
        assert_eq!(
            text.lines().filter(|l| format!("{l}\n") == line).count(),
            1,
            "{line:?} in:\n{text}"
        );
    }
    // Nothing more of that log arrives.
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let In::Log(f) = c.recv().await {
                return f;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "resent {quiet:?}");
    assert_eq!(s.fake.registrations.load(Ordering::SeqCst), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_job_at_once() {
    let mut s = server().await;
    let agent = start_agent(&s.url);
    let mut c = s.accept().await;
    c.recv_msg().await;
    c.welcome(Vec::new()).await;
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("sleep.pid");
    let def = definition(
        &[&format!(
            "sleep 30 & echo $! > {}; echo sleeping; wait",
            pidfile.display()
        )],
        "",
    );
    c.send(&payload(9, def)).await;
    let mut log = Vec::new();
    loop {
        if let In::Log(f) = c.recv().await {
            log.extend_from_slice(&f.data);
            if String::from_utf8_lossy(&log).contains("sleeping\n") {
                break;
            }
        }
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    c.send(&ServerMsg::Cancel { job_id: 9 }).await;
    let fin = until_finished(&mut c, 9, &mut log, false).await;
    assert_eq!(fin.status, JobStatus::Canceled);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The sleep is gone (or a zombie waiting for its reaper); a SIGKILL takes effect a
    // moment after it is sent, so look for up to a second.
    let gone = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .to_string();
        (stat.is_empty() || state.starts_with('Z'), stat)
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    while !gone().0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (dead, stat) = gone();
    assert!(dead, "sleep still runs: {stat}");
    c.send(&ServerMsg::FinishedAck { job_id: 9 }).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_arrives_before_its_job_cancels_it_on_arrival() {
    let mut s = server().await;
    let agent = start_agent(&s.url);
    let mut c = s.accept().await;
    c.recv_msg().await;
    c.welcome(Vec::new()).await;
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    c.send(&ServerMsg::Cancel { job_id: 11 }).await;
    let def = definition(&[&format!("touch {}", marker.display())], "");
    c.send(&payload(11, def)).await;
    let mut log = Vec::new();
    let fin = until_finished(&mut c, 11, &mut log, true).await;
    assert_eq!(fin.status, JobStatus::Canceled);
    assert!(!marker.exists(), "the script never ran");
    c.send(&ServerMsg::FinishedAck { job_id: 11 }).await;
    agent.stop().await;
}
