//! The API commands (`project`, `pipeline`, `job`, `agent list`) against a small fake server
//! made with axum: what they send, what they print, their exit codes, and `job log -f`
//! resuming after a dropped connection without printing a byte twice.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request the fake server saw: method and URI, Last-Event-ID, Authorization.
type Request = (String, Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn note(&self, method: &str, uri: &Uri, h: &HeaderMap) -> usize {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(String::from);
        let mut v = self.0.lock().unwrap();
        v.push((
            format!("{method} {uri}"),
            get("last-event-id"),
            get("authorization"),
        ));
        v.len()
    }

    fn all(&self) -> Vec<Request> {
        self.0.lock().unwrap().clone()
    }
}

/// Serves `app` on a free port on a runtime of its own; returns its URL.
fn serve(app: Router) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rt)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `gantry ARGS` with no token or server from the caller's environment and HOME in `home`.
fn gantry(home: &Path, server: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
    c.args(args)
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", home)
        .env("GANTRY_SERVER", server);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("running gantry");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn log_event(offset: u64, text: &str) -> String {
    let end = offset + text.len() as u64;
    format!(
        "event: log\nid: {end}\ndata: {}\n\n",
        json!({"offset": offset, "text": text})
    )
}

#[test]
fn job_log_follow_resumes_after_a_dropped_connection() {
    let seen = Seen::default();
    async fn stream(State(seen): State<Seen>, uri: Uri, h: HeaderMap) -> Response {
        let n = seen.note("GET", &uri, &h);
        let pieces: Vec<Result<String, std::io::Error>> = if n == 1 {
            // Two events, the second split mid-line across writes, a keep-alive, then the
            // connection breaks before the job ends.
            let second = log_event(6, "wörld\n");
            let (a, b) = second.split_at(20);
            vec![
                Ok(log_event(0, "hello\n")),
                Ok(a.to_string()),
                Ok(format!("{b}: keep-alive\n\n")),
                Err(std::io::Error::other("connection reset")),
            ]
        } else {
            // The resumed stream repeats the last event (a server may): it must not print
            // twice.
            vec![
                Ok(log_event(6, "wörld\n")),
                Ok(log_event(13, "multi\nline\n")),
                Ok("event: end\ndata: {\"status\":\"failed\",\"offset\":24}\n\n".into()),
            ]
        };
        // A pause before each piece lets every write reach the client before the break.
        let pieces = futures_util::stream::iter(pieces).then(|p| async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            p
        });
        (
            [("content-type", "text/event-stream")],
            Body::from_stream(pieces),
        )
            .into_response()
    }
    let app = Router::new()
        .route("/api/v1/jobs/7/log/stream", get(stream))
        .with_state(seen.clone());
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("admin-token"), "gadm_from_file\n").unwrap();

    let r = gantry(
        home.path(),
        &url,
        &["job", "log", "7", "-f"],
        &[("GANTRY_DATA_DIR", data.path().to_str().unwrap())],
    );
    assert_eq!(r.stdout, "hello\nwörld\nmulti\nline\n", "{}", r.stderr);
    assert_eq!(r.code, 1, "a failed job exits 1: {}", r.stderr);
    assert!(r.stderr.contains("job 7 failed"), "{}", r.stderr);
    let reqs = seen.all();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].1, None);
    assert_eq!(
        reqs[1].1.as_deref(),
        Some("13"),
        "resumes after the last byte printed"
    );
    for (_, _, auth) in &reqs {
        assert_eq!(auth.as_deref(), Some("Bearer gadm_from_file"));
    }
}

#[test]
fn job_log_streams_the_whole_log_and_follow_succeeds() {
    async fn whole() -> Response {
        let pieces: Vec<Result<String, std::io::Error>> =
            vec![Ok("line 1\n".into()), Ok("line 2\n".into())];
        Body::from_stream(futures_util::stream::iter(pieces)).into_response()
    }
    async fn stream() -> Response {
        (
            [("content-type", "text/event-stream")],
            format!(
                "{}event: end\ndata: {{\"status\":\"success\"}}\n\n",
                log_event(0, "ok\n")
            ),
        )
            .into_response()
    }
    let app = Router::new()
        .route("/api/v1/jobs/3/log", get(whole))
        .route("/api/v1/jobs/3/log/stream", get(stream));
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();
    let r = gantry(home.path(), &url, &["job", "log", "3"], &[]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "line 1\nline 2\n"),
        "{}",
        r.stderr
    );
    let r = gantry(home.path(), &url, &["job", "log", "3", "--follow"], &[]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "ok\n"), "{}", r.stderr);
}

#[test]
fn api_errors_print_their_message_with_the_right_exit_code() {
    async fn not_found() -> Response {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": "not_found", "message": "no pipeline 99"})),
        )
            .into_response()
    }
    async fn broken() -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"code": "internal", "message": "the database is gone"})),
        )
            .into_response()
    }
    async fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": "unauthorized", "message": "a token is needed"})),
        )
            .into_response()
    }
    let app = Router::new()
        .route("/api/v1/pipelines/99", get(not_found))
        .route("/api/v1/pipelines/5/cancel", post(broken))
        .route("/api/v1/agents", get(unauthorized));
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();

    let r = gantry(home.path(), &url, &["pipeline", "show", "99"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr, "error: no pipeline 99\n");
    let r = gantry(home.path(), &url, &["pipeline", "cancel", "5"], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr, "error: the database is gone\n");
    let r = gantry(home.path(), &url, &["agent", "list"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: a token is needed (no token:"),
        "{}",
        r.stderr
    );

    // Nobody listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let r = gantry(home.path(), &down, &["pipeline", "list"], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!("error: cannot reach the Gantry server at {down}: is `gantry server` running?\n")
    );
}

fn pipeline_doc(id: i64, status: &str, jobs: Value) -> Value {
    json!({
        "id": id, "project_id": 1, "ref": "main", "sha": "0123456789abcdef0123",
        "status": status, "source": "api", "created_at": 0, "jobs": jobs,
    })
}

fn job_doc(id: i64, name: &str, status: &str, failure: Option<&str>) -> Value {
    let mut j = json!({
        "id": id, "pipeline_id": 5, "name": name, "stage": "test", "status": status,
        "attempt": 1, "retried": false, "allow_failure": false, "log_size": 0, "created_at": 0,
    });
    if let Some(f) = failure {
        j["failure_reason"] = json!(f);
    }
    j
}

#[test]
fn pipeline_run_encodes_the_path_sends_variables_and_waits() {
    let seen = Seen::default();
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let polls: Arc<AtomicUsize> = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/projects/{project}/pipelines",
            post({
                let seen = seen.clone();
                let bodies = bodies.clone();
                move |uri: Uri, h: HeaderMap, axum::Json(b): axum::Json<Value>| async move {
                    seen.note("POST", &uri, &h);
                    let bad = b["ref"] == "bad";
                    bodies.lock().unwrap().push(b);
                    let mut p = pipeline_doc(5, "pending", json!(null));
                    if bad {
                        p = pipeline_doc(6, "failed", json!(null));
                        p["errors"] =
                            json!(".gitlab-ci.yml:3:1: error[E0201]: unknown key 'scirpt'");
                    }
                    (StatusCode::CREATED, axum::Json(p))
                }
            }),
        )
        .route(
            "/api/v1/pipelines/5",
            get({
                let seen = seen.clone();
                let polls = polls.clone();
                move |uri: Uri, h: HeaderMap| async move {
                    seen.note("GET", &uri, &h);
                    let p = match polls.fetch_add(1, Ordering::SeqCst) {
                        0 => pipeline_doc(
                            5,
                            "running",
                            json!([
                                job_doc(10, "build", "running", None),
                                job_doc(11, "test", "created", None)
                            ]),
                        ),
                        1 => pipeline_doc(
                            5,
                            "running",
                            json!([
                                job_doc(10, "build", "success", None),
                                job_doc(11, "test", "running", None)
                            ]),
                        ),
                        _ => pipeline_doc(
                            5,
                            "failed",
                            json!([
                                job_doc(10, "build", "success", None),
                                job_doc(11, "test", "failed", Some("script_failure"))
                            ]),
                        ),
                    };
                    axum::Json(p)
                }
            }),
        );
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();

    let r = gantry(
        home.path(),
        &url,
        &[
            "pipeline",
            "run",
            "group/sub project",
            "--ref",
            "main",
            "--var",
            "A=1",
            "--var",
            "B=x=y",
            "--wait",
            "--token",
            "t0k",
        ],
        &[],
    );
    assert_eq!(
        r.code, 1,
        "a failed pipeline exits 1: {}\n{}",
        r.stdout, r.stderr
    );
    let reqs = seen.all();
    assert_eq!(
        reqs[0].0,
        "POST /api/v1/projects/group%2Fsub%20project/pipelines"
    );
    assert_eq!(reqs[0].2.as_deref(), Some("Bearer t0k"));
    assert_eq!(
        bodies.lock().unwrap()[0],
        json!({"ref": "main", "variables": [{"key": "A", "value": "1"}, {"key": "B", "value": "x=y"}]})
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "pipeline 5: pending (ref main, sha 0123456789ab)",
            "  running   build [job 10]",
            "  success   build [job 10]",
            "  running   test [job 11]",
            "  failed    test [job 11, script_failure]",
            "pipeline 5 failed",
        ],
        "{}",
        r.stdout
    );

    // A pipeline file with errors: they are printed and the command fails.
    let r = gantry(
        home.path(),
        &url,
        &["pipeline", "run", "7", "--ref", "bad"],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.starts_with("pipeline 6: failed"), "{}", r.stdout);
    assert!(r.stderr.contains("unknown key 'scirpt'"), "{}", r.stderr);
    assert_eq!(
        seen.all().last().unwrap().0,
        "POST /api/v1/projects/7/pipelines"
    );

    // --format json prints the document as the API sent it.
    let r = gantry(
        home.path(),
        &url,
        &["pipeline", "run", "7", "--format", "json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["id"], 5);
}

#[test]
fn agent_list_lives_beside_the_agent_s_own_flags() {
    async fn agents() -> axum::Json<Value> {
        axum::Json(json!({"items": [{
            "id": 1, "name": "box (local)", "tags": ["docker"], "run_untagged": false,
            "executor": "shell", "concurrency": 2, "online": true, "running": 1,
            "version": "0.1.0"
        }], "page": 1, "per_page": 20}))
    }
    let app = Router::new().route("/api/v1/agents", get(agents));
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();

    // GANTRY_SERVER (which `gantry agent` reads too) is set by `gantry()`.
    let r = gantry(home.path(), &url, &["agent", "list"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("ID  NAME"), "{}", r.stdout);
    assert!(
        lines[1].contains("box (local)") && lines[1].contains("yes") && lines[1].contains("1/2"),
        "{}",
        r.stdout
    );

    // `gantry agent` keeps its flags: without --server it still asks for one...
    let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
    let o = c
        .args(["agent", "--tags", "x"])
        .env_remove("GANTRY_SERVER")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--server"));
    // ...and its flags do not mix with `list`.
    let r = gantry(home.path(), &url, &["agent", "--tags", "x", "list"], &[]);
    assert_eq!(r.code, 2, "{}", r.stdout);
}

#[test]
fn every_api_command_has_help() {
    for args in [
        &["project", "add", "--help"][..],
        &["project", "list", "--help"],
        &["pipeline", "run", "--help"],
        &["pipeline", "list", "--help"],
        &["pipeline", "show", "--help"],
        &["pipeline", "cancel", "--help"],
        &["pipeline", "retry", "--help"],
        &["job", "log", "--help"],
        &["job", "retry", "--help"],
        &["job", "play", "--help"],
        &["job", "cancel", "--help"],
        &["agent", "list", "--help"],
        &["agent", "--help"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("Usage:"), "{args:?}: {out}");
        if args[0] != "agent" || args[1] == "list" {
            assert!(
                out.contains("--server") && out.contains("--token"),
                "{args:?}: {out}"
            );
        }
    }
}

#[test]
fn project_add_reads_secrets_from_the_environment_or_files() {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new().route(
        "/api/v1/projects",
        post({
            let bodies = bodies.clone();
            move |axum::Json(b): axum::Json<Value>| async move {
                let doc = json!({
                    "id": 4, "path": b["path"], "git_url": b["git_url"],
                    "default_branch": "main", "created_at": 0,
                });
                bodies.lock().unwrap().push(b);
                (StatusCode::CREATED, axum::Json(doc))
            }
        }),
    );
    let (url, _rt) = serve(app);
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").unwrap();

    let r = gantry(
        home.path(),
        &url,
        &[
            "project",
            "add",
            "group/app",
            "--git-url",
            "https://git.example/app.git",
            "--username",
            "ci",
            "--password-env",
            "APP_TOKEN",
        ],
        &[("APP_TOKEN", "s3cret")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("project 4 group/app\n"),
        "{}",
        r.stdout
    );
    let r = gantry(
        home.path(),
        &url,
        &[
            "project",
            "add",
            "lib",
            "--git-url",
            "ssh://git.example/lib.git",
            "--ssh-key-file",
            key.to_str().unwrap(),
            "--default-branch",
            "trunk",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let b = bodies.lock().unwrap().clone();
    assert_eq!(
        b[0],
        json!({"path": "group/app", "git_url": "https://git.example/app.git",
               "username": "ci", "password": "s3cret"})
    );
    assert_eq!(
        b[1]["ssh_key"],
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"
    );
    assert_eq!(b[1]["default_branch"], "trunk");

    // A password needs a user name, an unset variable is an error, and nothing is sent.
    let r = gantry(
        home.path(),
        &url,
        &[
            "project",
            "add",
            "x",
            "--git-url",
            "https://h/x.git",
            "--password-env",
            "NOPE",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = gantry(
        home.path(),
        &url,
        &[
            "project",
            "add",
            "x",
            "--git-url",
            "https://h/x.git",
            "--username",
            "u",
            "--password-env",
            "GANTRY_TEST_UNSET_VAR",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("GANTRY_TEST_UNSET_VAR"), "{}", r.stderr);
    assert_eq!(bodies.lock().unwrap().len(), 2);
}
