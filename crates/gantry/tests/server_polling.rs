//! Polling at a running server, on SQLite and on PostgreSQL: a project whose remote (a bare
//! repository on this machine) is listed every second. The first poll records the heads and
//! starts nothing; a pushed commit starts exactly one push pipeline with the right sha and
//! before sha; a poll without change starts nothing; a new tag starts a tag pipeline, a
//! deleted branch nothing; a broken remote records its error, starts nothing and is tried
//! again; bad intervals are refused without storing anything.

mod common;

use common::server::{Options, Server, backends, id, job, wait_for};
use common::{Project, git};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

const PIPELINE: &str = r#"show:
  script:
    - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME tag=$CI_COMMIT_TAG sha=$CI_COMMIT_SHA before=$CI_COMMIT_BEFORE_SHA"
"#;

fn rev(dir: &Path, r: &str) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", r])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn pipelines(s: &Server, project: i64) -> Vec<Value> {
    let list = s
        .api()
        .get(&format!(
            "/api/v1/projects/{project}/pipelines?per_page=100"
        ))
        .unwrap();
    let mut items = list["items"].as_array().unwrap().clone();
    items.reverse(); // oldest first
    items
}

fn polling(s: &Server, project: i64) -> Value {
    s.api()
        .get(&format!("/api/v1/projects/{project}/polling"))
        .unwrap()
}

/// Waits for two more polls than the last one seen (so a full poll ran after this call).
fn two_polls(s: &Server, project: i64) {
    for _ in 0..2 {
        let before = polling(s, project)["last_poll_at"].as_i64().unwrap_or(0);
        wait_for(Duration::from_secs(20), "a poll", || {
            (polling(s, project)["last_poll_at"].as_i64().unwrap_or(0) > before).then_some(())
        });
    }
}

fn put(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .put(&format!("{}{path}", s.url))
        .header("Authorization", &format!("Bearer {}", s.token))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn show_line(s: &Server, p: &Value) -> String {
    let p = s.wait_pipeline(id(p), T);
    assert_eq!(p["status"], "success", "{p:#}");
    let log = s.log(id(&job(&p, "show")));
    log.lines()
        .find(|l| l.starts_with("source="))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string()
}

#[test]
fn polling_starts_one_pipeline_per_new_commit() {
    for db in backends("polling") {
        let s = Server::start(Options::new(&db));
        let work = Project::new(PIPELINE);
        let remotes = tempfile::tempdir().unwrap();
        let remote = remotes.path().join("app.git");
        let st = Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(work.path())
            .arg(&remote)
            .status()
            .unwrap();
        assert!(st.success());
        git(
            work.path(),
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );

        // Refused intervals store nothing.
        let err = s
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": "team/bad", "git_url": remote.display().to_string(), "poll_interval_secs": 0}),
            )
            .unwrap_err();
        assert_eq!(err.status, 400, "{}: {err}", db.name());
        assert!(
            err.body["message"].as_str().unwrap().contains("from 1 to"),
            "{err}"
        );
        assert_eq!(
            s.api()
                .get("/api/v1/projects/team%2Fbad")
                .unwrap_err()
                .status,
            404
        );

        let p = s
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": "team/app", "git_url": remote.display().to_string(), "poll_interval_secs": 1}),
            )
            .unwrap();
        let project = id(&p);
        let (status, v) = put(
            &s,
            &format!("/api/v1/projects/{project}/polling"),
            json!({"interval_secs": -5}),
        );
        assert_eq!(status, 400, "{v}");
        assert_eq!(polling(&s, project)["interval_secs"], 1, "unchanged");

        // The first poll records main and starts nothing.
        wait_for(T, "the first poll", || {
            (polling(&s, project)["refs_seen"] == 1).then_some(())
        });
        two_polls(&s, project);
        assert!(
            pipelines(&s, project).is_empty(),
            "the first poll starts nothing"
        );

        // A pushed commit: one push pipeline, its sha, the previous head as before sha.
        let old = rev(work.path(), "main");
        work.write("src/a.txt", "a");
        work.commit("a change");
        let new = rev(work.path(), "main");
        git(work.path(), &["push", "-q", "origin", "main"]);
        let p = wait_for(T, "the polled pipeline", || {
            pipelines(&s, project).first().cloned()
        });
        assert_eq!(p["sha"], new.as_str());
        assert_eq!(p["source"], "push");
        assert_eq!(p["ref"], "main");
        assert_eq!(
            show_line(&s, &p),
            format!("source=push ref=main tag= sha={new} before={old}")
        );
        two_polls(&s, project);
        assert_eq!(pipelines(&s, project).len(), 1, "no change, no pipeline");

        // A new tag: a tag pipeline. A new branch, then deleted: one pipeline, then nothing.
        git(work.path(), &["tag", "-a", "-m", "one", "v1"]);
        git(work.path(), &["push", "-q", "origin", "v1"]);
        git(work.path(), &["push", "-q", "origin", "main:feature"]);
        let all = wait_for(T, "two more pipelines", || {
            let all = pipelines(&s, project);
            (all.len() == 3).then_some(all)
        });
        let by_ref = |r: &str| all.iter().find(|p| p["ref"] == r).cloned().unwrap();
        assert_eq!(
            show_line(&s, &by_ref("v1")),
            format!(
                "source=push ref=v1 tag=v1 sha={new} before={}",
                "0".repeat(40)
            )
        );
        assert_eq!(
            show_line(&s, &by_ref("feature")),
            format!(
                "source=push ref=feature tag= sha={new} before={}",
                "0".repeat(40)
            )
        );
        git(work.path(), &["push", "-q", "origin", ":feature"]);
        two_polls(&s, project);
        assert_eq!(
            pipelines(&s, project).len(),
            3,
            "a deleted branch starts nothing"
        );
        assert_eq!(polling(&s, project)["refs_seen"], 2, "main and v1");

        // A broken remote: the error is recorded, nothing starts, nothing is forgotten.
        let moved = remotes.path().join("moved.git");
        std::fs::rename(&remote, &moved).unwrap();
        let err = wait_for(T, "a poll error", || {
            polling(&s, project)["last_error"]
                .as_str()
                .map(String::from)
        });
        assert!(err.contains("app.git"), "{err}");
        two_polls(&s, project);
        assert_eq!(pipelines(&s, project).len(), 3);
        assert_eq!(polling(&s, project)["refs_seen"], 2);

        // Back, with a commit pushed meanwhile: the next poll starts its pipeline.
        std::fs::rename(&moved, &remote).unwrap();
        work.write("src/b.txt", "b");
        work.commit("another change");
        git(work.path(), &["push", "-q", "origin", "main"]);
        let all = wait_for(T, "the pipeline after the repair", || {
            let all = pipelines(&s, project);
            (all.len() == 4).then_some(all)
        });
        assert_eq!(all[3]["sha"], rev(work.path(), "main").as_str());
        // The poll that made it clears the error when it ends.
        wait_for(T, "the error cleared", || {
            polling(&s, project)
                .get("last_error")
                .is_none()
                .then_some(())
        });

        // Stopped: nothing more.
        let (status, v) = put(
            &s,
            &format!("/api/v1/projects/{project}/polling"),
            json!({"interval_secs": null}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["interval_secs"], Value::Null);
    }
}
