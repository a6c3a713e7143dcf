//! Commit statuses at a running server: GitLab's, GitHub's and Gitea's commit status APIs
//! stood in by HTTP fakes (wiremock) that record the requests; the tests read what arrived
//! (path, token header, state, link to the pipeline), on SQLite and on PostgreSQL.

mod common;

use common::Project;
use common::fake::{body, fake, header, requests, runtime};
use common::server::{Options, Server, backends, id};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const T: Duration = Duration::from_secs(60);

/// Waits a second in `scheduled` (pending at the forge), then runs for a second (so that
/// `running` is sent before a newer state supersedes it) and passes.
const PIPELINE: &str = r#"build:
  when: delayed
  start_in: 1 second
  script: [echo built, sleep 1]
"#;

/// Waits until the success of pipeline `pipeline` is queued and nothing of the project's
/// outbox is queued or being sent any more.
fn wait_outbox_settled(s: &Server, project: i64, pipeline: i64) -> Vec<Value> {
    let end = Instant::now() + T;
    loop {
        let rows = s.outbox(project);
        if rows.iter().any(|r| is_success_of(r, pipeline))
            && rows
                .iter()
                .all(|r| !matches!(r["state"].as_str(), Some("queued" | "sending")))
        {
            return rows;
        }
        assert!(Instant::now() < end, "the outbox never settled: {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether an outbox row is the commit status of pipeline `p`'s success.
fn is_success_of(row: &Value, p: i64) -> bool {
    row["key"]
        .as_str()
        .is_some_and(|k| k.starts_with(&format!("status:pipeline:{p}:success:")))
}

/// The states posted, repeats of the same state merged.
fn states(reqs: &[Request], key: &str, name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in reqs {
        let b = body(r);
        if b[key] != name {
            continue;
        }
        let st = b["state"].as_str().unwrap().to_string();
        if out.last() != Some(&st) {
            out.push(st);
        }
    }
    out
}

#[test]
fn a_pipeline_posts_pending_running_and_success_to_gitlab_github_and_gitea() {
    let rt = runtime();
    for db in backends("status_forges") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let s = Server::start(Options::new(&db));
        let (gl, gh, gt) = (
            fake(&rt, 201, json!({"id": 1})),
            fake(&rt, 201, json!({"id": 1})),
            fake(&rt, 201, json!({"id": 1})),
        );
        let api = s.api();
        let forges = [
            ("team/gl", "gitlab", &gl, "team/gl", "glpat-secret-1"),
            ("team/gh", "github", &gh, "octo/app", "ghp_secret_2"),
            ("team/gt", "forgejo", &gt, "octo/app", "gitea_secret_3"),
        ];
        let mut pipelines = Vec::new();
        for (path, kind, fake, repository, token) in forges {
            let project = s.project(path, repo.path());
            let f = api
                .put(
                    &format!("/api/v1/projects/{project}/forge"),
                    json!({"kind": kind, "api_url": fake.uri(), "repository": repository,
                           "token": token, "job_statuses": kind == "gitlab"}),
                )
                .unwrap();
            assert_eq!(f["token_set"], true, "{name}: {f}");
            assert!(
                !f.to_string().contains(token),
                "{name}: the token is shown: {f}"
            );
            let p = s.pipeline(project, "main");
            pipelines.push((project, id(&p)));
        }
        for (project, p) in &pipelines {
            assert_eq!(s.wait_pipeline(*p, T)["status"], "success", "{name}");
            wait_outbox_settled(&s, *project, *p);
        }
        let sha = s.get_pipeline(pipelines[0].1)["sha"]
            .as_str()
            .unwrap()
            .to_string();

        // GitLab: PRIVATE-TOKEN, the project's path encoded, GitLab's states, the job too.
        let reqs = requests(&rt, &gl);
        let (project, p) = pipelines[0];
        for r in &reqs {
            assert_eq!(
                r.url.path(),
                format!("/api/v4/projects/team%2Fgl/statuses/{sha}"),
                "{name}"
            );
            assert_eq!(header(r, "PRIVATE-TOKEN"), "glpat-secret-1", "{name}");
        }
        assert_eq!(
            states(&reqs, "name", "gantry"),
            ["pending", "running", "success"],
            "{name}: {reqs:?}"
        );
        let last = body(
            reqs.iter()
                .rev()
                .find(|r| body(r)["name"] == "gantry")
                .unwrap(),
        );
        assert_eq!(
            last["target_url"],
            format!("{}/team/gl/-/pipelines/{p}", s.url),
            "{name}"
        );
        assert_eq!(last["ref"], "main", "{name}");
        assert!(
            last["description"].as_str().unwrap().contains("passed"),
            "{name}: {last}"
        );
        let job_states = states(&reqs, "name", "gantry/build");
        assert_eq!(
            job_states.last().map(String::as_str),
            Some("success"),
            "{name}"
        );
        let job_id = s.get_pipeline(p)["jobs"][0]["id"].as_i64().unwrap();
        let job_req = reqs
            .iter()
            .rev()
            .find(|r| body(r)["name"] == "gantry/build")
            .unwrap();
        assert_eq!(
            body(job_req)["target_url"],
            format!("{}/team/gl/-/jobs/{job_id}", s.url),
            "{name}"
        );
        let rows = s.outbox(project);
        assert!(rows.iter().all(|r| r["kind"] == "commit_status"), "{name}");
        assert!(
            rows.iter().any(|r| r["state"] == "done"),
            "{name}: {rows:#?}"
        );

        // GitHub: a bearer token, GitHub's states (running is pending there), a context.
        let reqs = requests(&rt, &gh);
        let p = pipelines[1].1;
        assert!(!reqs.is_empty(), "{name}: nothing reached GitHub");
        for r in &reqs {
            assert_eq!(
                r.url.path(),
                format!("/repos/octo/app/statuses/{sha}"),
                "{name}"
            );
            assert_eq!(header(r, "Authorization"), "Bearer ghp_secret_2", "{name}");
            assert_eq!(header(r, "Accept"), "application/vnd.github+json", "{name}");
            assert!(header(r, "User-Agent").starts_with("gantry/"), "{name}");
        }
        assert_eq!(
            states(&reqs, "context", "gantry"),
            ["pending", "success"],
            "{name}"
        );
        let last = body(reqs.last().unwrap());
        assert_eq!(
            last["target_url"],
            format!("{}/team/gh/-/pipelines/{p}", s.url)
        );
        assert_eq!(
            reqs.len(),
            3,
            "{name}: scheduled, running, success: {reqs:?}"
        );

        // Gitea (and Forgejo): `token …`, under /api/v1.
        let reqs = requests(&rt, &gt);
        let p = pipelines[2].1;
        for r in &reqs {
            assert_eq!(
                r.url.path(),
                format!("/api/v1/repos/octo/app/statuses/{sha}"),
                "{name}"
            );
            assert_eq!(header(r, "Authorization"), "token gitea_secret_3", "{name}");
        }
        assert_eq!(
            states(&reqs, "context", "gantry"),
            ["pending", "success"],
            "{name}"
        );
        assert_eq!(
            body(reqs.last().unwrap())["target_url"],
            format!("{}/team/gt/-/pipelines/{p}", s.url)
        );

        // No token in any answer of the API.
        for (project, _) in &pipelines {
            let answers = [
                api.get(&format!("/api/v1/projects/{project}/forge"))
                    .unwrap(),
                api.get(&format!("/api/v1/projects/{project}/outbox"))
                    .unwrap(),
                api.get(&format!("/api/v1/projects/{project}")).unwrap(),
            ];
            for a in answers {
                let text = a.to_string();
                for secret in ["glpat-secret-1", "ghp_secret_2", "gitea_secret_3"] {
                    assert!(!text.contains(secret), "{name}: {secret} in {text}");
                }
            }
        }
        // A new setting without a token keeps the stored one.
        let project = pipelines[1].0;
        let f = api
            .put(
                &format!("/api/v1/projects/{project}/forge"),
                json!({"kind": "github", "api_url": gh.uri(), "repository": "octo/other"}),
            )
            .unwrap();
        assert_eq!(
            (f["token_set"].clone(), f["repository"].clone()),
            (json!(true), json!("octo/other"))
        );
    }
}

#[test]
fn bad_forge_settings_are_refused_with_what_to_do() {
    for db in backends("status_bad_input") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let api = s.api();
        let path = format!("/api/v1/projects/{project}/forge");
        let cases = [
            (
                json!({"kind": "svn", "api_url": "https://x", "repository": "a/b", "token": "t"}),
                "gitlab, github, gitea",
            ),
            (
                json!({"kind": "gitlab", "api_url": "gitlab.example.com", "repository": "a/b", "token": "t"}),
                "https://",
            ),
            (
                json!({"kind": "github", "api_url": "https://api.github.com", "repository": "app", "token": "t"}),
                "owner/repo",
            ),
            (
                json!({"kind": "gitea", "api_url": "https://gitea.example.com", "repository": "a/b"}),
                "token is missing",
            ),
            (json!({"kind": "gitlab"}), "body"),
        ];
        for (body, says) in cases {
            let e = api.put(&path, body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{name}: {body} → {e}");
            assert!(
                e.body["message"].as_str().unwrap().contains(says),
                "{name}: {body} → {e}"
            );
        }
        assert_eq!(api.get(&path).unwrap_err().status, 404, "{name}");
        api.put(
            &path,
            json!({"kind": "gitlab", "api_url": "https://gitlab.example.com/", "repository": "7", "token": "t"}),
        )
        .unwrap();
        assert_eq!(
            api.get(&path).unwrap()["api_url"],
            "https://gitlab.example.com"
        );
        api.delete(&path).unwrap();
        assert_eq!(api.get(&path).unwrap_err().status, 404, "{name}");
    }
}

#[test]
fn a_forge_that_is_down_gets_the_status_later_and_the_pipeline_does_not_wait() {
    let rt = runtime();
    for db in backends("status_down") {
        let name = db.name();
        let repo = Project::new("build:\n  script: [echo built]\n");
        let mut opts = Options::new(&db);
        opts.server_args = vec!["--outbox-retry-ms".into(), "300".into()];
        let s = Server::start(opts);
        let forge = fake(&rt, 500, json!({"id": 1}));
        let project = s.project("team/app", repo.path());
        s.api()
            .put(
                &format!("/api/v1/projects/{project}/forge"),
                json!({"kind": "gitlab", "api_url": forge.uri(), "repository": "team/app", "token": "t"}),
            )
            .unwrap();
        let p = id(&s.pipeline(project, "main"));
        // The pipeline ends while the forge answers 500.
        assert_eq!(s.wait_pipeline(p, T)["status"], "success", "{name}");
        // The newest status (success) is retried, with growing waits. A claim
        // counts the attempt and marks the row `sending`, so wait for the row
        // to be back in the queue after its third failure.
        let end = Instant::now() + T;
        let row = loop {
            let rows = s.outbox(project);
            if let Some(r) = rows.first().filter(|r| {
                is_success_of(r, p) && r["attempts"].as_i64() >= Some(3) && r["state"] == "queued"
            }) {
                break r.clone();
            }
            assert!(Instant::now() < end, "{name}: no retries: {rows:#?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            row["last_error"].as_str().unwrap().contains("HTTP 500"),
            "{name}: {row}"
        );
        assert!(requests(&rt, &forge).len() >= 3, "{name}");
        // The forge is back: the status arrives, and an older one never after it.
        rt.block_on(async {
            forge.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(201))
                .mount(&forge)
                .await;
        });
        let rows = wait_outbox_settled(&s, project, p);
        let reqs = requests(&rt, &forge);
        assert_eq!(
            body(reqs.last().unwrap())["state"],
            "success",
            "{name}: {reqs:?}"
        );
        assert!(
            reqs.iter().all(|r| body(r)["state"] == "success"),
            "{name}: an older status was sent after the newest was queued: {reqs:?}"
        );
        assert_eq!(rows[0]["state"], "done", "{name}: {rows:#?}");
        assert!(
            rows[1..]
                .iter()
                .all(|r| r["state"] == "superseded" || r["state"] == "done"),
            "{name}: {rows:#?}"
        );
    }
}

#[test]
fn a_refused_status_fails_at_once_and_a_state_gitlab_already_has_is_no_error() {
    let rt = runtime();
    for db in backends("status_refused") {
        let name = db.name();
        let repo = Project::new("build:\n  script: [echo built]\n");
        let s = Server::start(Options::new(&db));
        let forge = rt.block_on(async {
            let f = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(
                    ResponseTemplate::new(401)
                        .set_body_json(json!({"message": "401 Unauthorized"})),
                )
                .mount(&f)
                .await;
            f
        });
        let project = s.project("team/app", repo.path());
        s.api()
            .put(
                &format!("/api/v1/projects/{project}/forge"),
                json!({"kind": "gitlab", "api_url": forge.uri(), "repository": "9", "token": "revoked"}),
            )
            .unwrap();
        let p = id(&s.pipeline(project, "main"));
        assert_eq!(s.wait_pipeline(p, T)["status"], "success", "{name}");
        let rows = wait_outbox_settled(&s, project, p);
        let last = &rows[0];
        assert_eq!(
            (last["state"].clone(), last["attempts"].clone()),
            (json!("failed"), json!(1)),
            "{name}: {rows:#?}"
        );
        assert!(
            last["last_error"].as_str().unwrap().contains("401"),
            "{name}: {last}"
        );

        rt.block_on(async {
            forge.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(400).set_body_json(
                    json!({"message": "Cannot transition status via :enqueue from :pending"}),
                ))
                .mount(&forge)
                .await;
        });
        let p = id(&s.pipeline(project, "main"));
        assert_eq!(s.wait_pipeline(p, T)["status"], "success", "{name}");
        let rows = wait_outbox_settled(&s, project, p);
        assert_eq!(rows[0]["state"], "done", "{name}: {rows:#?}");
        assert_eq!(rows[0]["pipeline_id"], p, "{name}");
    }
}
