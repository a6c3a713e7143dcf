//! Triggers without a forge: trigger tokens (`POST /api/v1/projects/{id}/trigger`) on SQLite
//! and PostgreSQL, and `gantry hook install` on a local bare repository, whose `git push`
//! runs the pipeline on the embedded default.

mod common;

use common::server::{Backend, Options, Server, backends, id, job};
use common::{Project, git};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

const PIPELINE: &str = r#"show:
  script:
    - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME triggered=$CI_PIPELINE_TRIGGERED"
    - echo "user=$GITLAB_USER_LOGIN greeting=$GREETING before=$CI_COMMIT_BEFORE_SHA"
    - echo "config=$CI_CONFIG_PATH"
"#;

/// POSTs `body` with a content type; the status and the answer.
fn post_raw(s: &Server, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{}{path}", s.url))
        .header("content-type", content_type)
        .send(body)
        .expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `show` job's log of a pipeline that must succeed.
fn show_log(s: &Server, pipeline: i64, what: &str) -> String {
    let p = s.wait_pipeline(pipeline, T);
    assert_eq!(p["status"], "success", "{what}: {p:#}");
    s.log(id(&job(&p, "show")))
}

fn refused(got: (u16, Value), status: u16, what: &str) -> String {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    got.1["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn trigger_tokens_start_pipelines_of_their_project_only() {
    for db in backends("triggers") {
        let name = db.name();
        let repo = Project::with_files(&[(".gantry.yml", PIPELINE)]);
        git(repo.path(), &["checkout", "-q", "-b", "release"]);
        git(repo.path(), &["checkout", "-q", "main"]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let other = s.project("team/other", repo.path());

        // Made by the administrator, shown once.
        let made = s
            .api()
            .post(
                &format!("/api/v1/projects/{project}/triggers"),
                json!({"description": "nightly"}),
            )
            .unwrap();
        let token = made["token"].as_str().unwrap().to_string();
        assert!(token.starts_with("gtt_"), "{made}");
        let listed = s
            .api()
            .get(&format!("/api/v1/projects/{project}/triggers"))
            .unwrap();
        let listed_text = listed.to_string();
        assert!(!listed_text.contains(&token), "{name}: {listed_text}");
        assert_eq!(listed[0]["description"], "nightly", "{listed}");
        assert!(token.starts_with(listed[0]["hint"].as_str().unwrap()));
        let other_token = s
            .api()
            .post(&format!("/api/v1/projects/{other}/triggers"), json!({}))
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();

        // JSON: a ref and variables.
        let trigger = format!("/api/v1/projects/{project}/trigger");
        let body = json!({"token": token, "ref": "release", "variables": {"GREETING": "hi"}});
        let (status, p) = post_raw(
            &s,
            &trigger,
            "application/json",
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 201, "{name}: {p}");
        assert_eq!(p["source"], "trigger", "{p}");
        let log = show_log(&s, id(&p), name);
        assert!(
            log.contains("source=trigger ref=release triggered=true"),
            "{name}: {log}"
        );
        assert!(log.contains("user=admin greeting=hi"), "{name}: {log}");
        assert!(log.contains("config=.gantry.yml"), "{name}: {log}");

        // GitLab's form (what `curl -F`/`--form` and `-d` send), and the query string.
        let form = format!("token={token}&ref=main&variables%5BGREETING%5D=from+a+form");
        let (status, p) = post_raw(
            &s,
            &trigger,
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        );
        assert_eq!(status, 201, "{name}: {p}");
        let log = show_log(&s, id(&p), name);
        assert!(log.contains("greeting=from a form"), "{name}: {log}");
        let boundary = "xYzZY";
        let multipart = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"variables[GREETING]\"\r\n\r\n\
             multi\r\n--{boundary}--\r\n"
        );
        let (status, p) = post_raw(
            &s,
            &format!("{trigger}?ref=release"),
            &format!("multipart/form-data; boundary={boundary}"),
            multipart.as_bytes(),
        );
        assert_eq!(status, 201, "{name}: {p}");
        let log = show_log(&s, id(&p), name);
        assert!(log.contains("ref=release"), "{name}: {log}");
        assert!(log.contains("greeting=multi"), "{name}: {log}");
        let count = s.pipeline_count(project);
        assert_eq!(count, 3, "{name}");

        // Refused: no token, a wrong one, another project's, a typo'd field, a bad variable
        // name, an unknown ref. None creates anything.
        let msg = refused(
            post_raw(&s, &trigger, "application/json", br#"{"ref": "main"}"#),
            401,
            name,
        );
        assert!(msg.contains("trigger token"), "{msg}");
        let wrong = json!({"token": "gtt_0000", "ref": "main"}).to_string();
        let msg = refused(
            post_raw(&s, &trigger, "application/json", wrong.as_bytes()),
            403,
            name,
        );
        assert!(msg.contains("not a trigger token of team/app"), "{msg}");
        let theirs = json!({"token": other_token}).to_string();
        refused(
            post_raw(&s, &trigger, "application/json", theirs.as_bytes()),
            403,
            name,
        );
        let typo = format!("token={token}&varables%5BX%5D=1");
        let msg = refused(
            post_raw(
                &s,
                &trigger,
                "application/x-www-form-urlencoded",
                typo.as_bytes(),
            ),
            400,
            name,
        );
        assert!(msg.contains("varables[X]"), "{msg}");
        let bad = json!({"token": token, "variables": {"1X": "y"}}).to_string();
        refused(
            post_raw(&s, &trigger, "application/json", bad.as_bytes()),
            400,
            name,
        );
        let nowhere = json!({"token": token, "ref": "no-such-branch"}).to_string();
        refused(
            post_raw(&s, &trigger, "application/json", nowhere.as_bytes()),
            400,
            name,
        );
        refused(
            post_raw(&s, &trigger, "application/json", b"{not json"),
            400,
            name,
        );
        assert_eq!(s.pipeline_count(project), count, "{name}");

        // Listed as used; once revoked, it starts nothing.
        let listed = s
            .api()
            .get(&format!("/api/v1/projects/{project}/triggers"))
            .unwrap();
        assert!(listed[0]["last_used_at"].is_i64(), "{listed}");
        let tid = listed[0]["id"].as_i64().unwrap();
        s.api()
            .delete(&format!("/api/v1/projects/{project}/triggers/{tid}"))
            .unwrap_or_else(|e| panic!("{name}: revoking: {e}"));
        let again = json!({"token": token}).to_string();
        refused(
            post_raw(&s, &trigger, "application/json", again.as_bytes()),
            403,
            name,
        );
        assert_eq!(s.pipeline_count(project), count, "{name}");
        // Only the administrator manages tokens.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent
            .get(&format!("{}/api/v1/projects/{project}/triggers", s.url))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{name}");
    }
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git {args:?}: {text}");
    text
}

fn gantry(args: &[&str], s: &Server) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .args(["--server", &s.url, "--token", &s.token])
        .output()
        .unwrap()
}

/// The pipeline number `git push` printed (`remote: gantry: pipeline N for …`).
fn pushed_pipeline(out: &str) -> i64 {
    let at = out
        .find("gantry: pipeline ")
        .unwrap_or_else(|| panic!("no pipeline in the push's output: {out}"));
    out[at + "gantry: pipeline ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_push_to_a_bare_repository_with_the_hook_runs_its_pipeline() {
    // The embedded default: SQLite, the agent in the server process.
    let s = Server::start(Options::new(&Backend::Sqlite));
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("app.git");
    run_git(
        root.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );

    // Not a bare repository: refused, with what to do.
    let out = gantry(&["hook", "install", root.path().to_str().unwrap()], &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("git init --bare"),
        "{err}"
    );

    let out = gantry(&["hook", "install", bare.to_str().unwrap()], &s);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("project 1 app"), "{text}");
    let settings = bare.join("hooks/gantry-hook.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&settings).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the hook's secret is the owner's only");
    }

    // A working copy pushes its first commit: a pipeline, to success.
    let work = root.path().join("work");
    run_git(
        root.path(),
        &["clone", "-q", bare.to_str().unwrap(), "work"],
    );
    run_git(&work, &["config", "user.email", "dev@example.com"]);
    run_git(&work, &["config", "user.name", "Dev"]);
    std::fs::write(work.join(".gantry.yml"), PIPELINE).unwrap();
    run_git(&work, &["add", "."]);
    run_git(&work, &["commit", "-q", "-m", "first"]);
    let first = run_git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    let out = run_git(&work, &["push", "origin", "HEAD:main"]);
    let p1 = pushed_pipeline(&out);
    let log = show_log(&s, p1, "first push");
    assert!(log.contains("source=push ref=main"), "{log}");
    assert_eq!(s.get_pipeline(p1)["sha"], first.as_str());

    // The second push knows what came before it.
    std::fs::write(work.join("README"), "hello\n").unwrap();
    run_git(&work, &["add", "."]);
    run_git(&work, &["commit", "-q", "-m", "second"]);
    let out = run_git(&work, &["push", "origin", "HEAD:main"]);
    let p2 = pushed_pipeline(&out);
    assert_ne!(p1, p2);
    let log = show_log(&s, p2, "second push");
    assert!(log.contains(&format!("before={first}")), "{log}");

    // Installing again keeps the project and replaces the secret: the old one is refused.
    let old: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let out = gantry(&["hook", "install", bare.to_str().unwrap()], &s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = json!({"ref": "refs/heads/main", "before": first, "after": first});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let forged = agent
        .post(&format!("{}/api/v1/hooks/git/app", s.url))
        .header("X-Gantry-Event", "push")
        .header("X-Gantry-Token", old["webhook_secret"].as_str().unwrap())
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    // A branch pushed after that still starts its pipeline (the new secret is in place).
    let out = run_git(&work, &["push", "origin", "HEAD:refs/heads/topic"]);
    let p3 = pushed_pipeline(&out);
    let log = show_log(&s, p3, "topic push");
    assert!(log.contains("ref=topic"), "{log}");
    // Deleting the branch starts nothing.
    let out = run_git(&work, &["push", "origin", ":topic"]);
    assert!(out.contains("gantry: no pipeline for topic"), "{out}");

    // A hook that Gantry did not write is kept unless --force.
    let other = root.path().join("other.git");
    run_git(root.path(), &["init", "-q", "--bare", "other.git"]);
    std::fs::write(other.join("hooks/post-receive"), "#!/bin/sh\necho mine\n").unwrap();
    let out = gantry(&["hook", "install", other.to_str().unwrap()], &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(other.join("hooks/post-receive")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
}
