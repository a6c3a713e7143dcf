//! Webhooks at a running server: real HTTP requests built from the forges' documented
//! payloads (crates/gantry-engine/tests/fixtures/webhooks/), their shas, refs and branches
//! replaced by those of a test repository, signed (or not) as each forge signs them, on
//! SQLite and on PostgreSQL.

mod common;

use common::server::{Options, Server, backends, id, job, job_named};
use common::{Project, git};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Prints what a job sees of the event, and a job that runs only when `src/` changed.
const PIPELINE: &str = r#"show:
  rules:
    - when: always
  script:
    - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME tag=$CI_COMMIT_TAG"
    - echo "before=$CI_COMMIT_BEFORE_SHA user=$GITLAB_USER_LOGIN protected=$CI_COMMIT_REF_PROTECTED"
    - echo "mr=$CI_MERGE_REQUEST_IID src=$CI_MERGE_REQUEST_SOURCE_BRANCH_NAME tgt=$CI_MERGE_REQUEST_TARGET_BRANCH_NAME base=$CI_MERGE_REQUEST_DIFF_BASE_SHA"
    - echo "open=[$CI_OPEN_MERGE_REQUESTS]"
src:
  rules:
    - changes: [src/**/*]
  script: [echo src changed]
"#;

// ---- requests ---------------------------------------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = common::repo_root()
        .join("crates/gantry-engine/tests/fixtures/webhooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Hex HMAC-SHA256, computed by openssl: not by the code under test.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit(' ').next().unwrap().to_string()
}

/// POSTs a webhook; the status and the JSON answer.
fn post(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("{}{path}", s.url))
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let mut resp = r.send(body).expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A GitLab delivery: the token, the event and a fresh idempotency key.
fn gitlab(s: &Server, project: i64, token: Option<&str>, event: &str, body: &[u8]) -> (u16, Value) {
    let key = format!("key-{}", hmac_hex("k", body));
    let mut headers = vec![("X-Gitlab-Event", event), ("Idempotency-Key", key.as_str())];
    if let Some(t) = token {
        headers.push(("X-Gitlab-Token", t));
    }
    post(
        s,
        &format!("/api/v1/hooks/gitlab/{project}"),
        &headers,
        body,
    )
}

/// A GitHub delivery signed with `secret` (the signature of `signed` when given).
fn github(
    s: &Server,
    project: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, Value) {
    let sig = format!("sha256={}", hmac_hex(secret, body));
    let headers = [
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    post(
        s,
        &format!("/api/v1/hooks/github/{project}"),
        &headers,
        body,
    )
}

/// A push payload of `forge` for `git_ref` from `before` to `after`, whose head commit says
/// `message`.
fn push_payload(forge: &str, git_ref: &str, before: &str, after: &str, message: &str) -> Vec<u8> {
    let tag = git_ref.starts_with("refs/tags/");
    let name = match (forge, tag) {
        ("gitlab", false) => "gitlab/push.json",
        ("gitlab", true) => "gitlab/tag-push.json",
        ("github", false) => "github/push.json",
        ("github", true) => "github/push-tag.json",
        _ => "gitea/push.json",
    };
    let mut v = fixture(name);
    v["ref"] = json!(git_ref);
    v["before"] = json!(before);
    v["after"] = json!(after);
    let mut commit = fixture(if forge == "gitlab" {
        "gitlab/push.json"
    } else {
        name
    })["commits"][0]
        .clone();
    commit["id"] = json!(after);
    commit["message"] = json!(message);
    match forge {
        "gitlab" => {
            v["checkout_sha"] = json!(after);
            if !tag {
                v["commits"] = json!([commit]);
                v["total_commits_count"] = json!(1);
            }
        }
        _ => {
            v["head_commit"] = commit.clone();
            v["commits"] = json!([commit]);
            v["total_commits"] = json!(1);
            v["created"] = json!(before.bytes().all(|b| b == b'0'));
            v["deleted"] = json!(false);
            v["forced"] = json!(false);
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// A GitHub `pull_request` payload: pull request `number` from `head_ref` at `head_sha` (in
/// `head_repo`, a fork when it is not octocat/Hello-World) into `main` at `base_sha`.
fn pull_request(
    action: &str,
    number: u64,
    head_ref: &str,
    head_sha: &str,
    head_repo: &str,
    base_sha: &str,
) -> Vec<u8> {
    let mut v = fixture("github/pull-request-opened.json");
    v["action"] = json!(action);
    v["number"] = json!(number);
    let pr = &mut v["pull_request"];
    pr["number"] = json!(number);
    pr["head"]["ref"] = json!(head_ref);
    pr["head"]["sha"] = json!(head_sha);
    if head_repo != "octocat/Hello-World" {
        pr["head"]["repo"]["full_name"] = json!(head_repo);
        pr["head"]["repo"]["id"] = json!(99);
        pr["head"]["repo"]["fork"] = json!(true);
    }
    pr["base"]["ref"] = json!("main");
    pr["base"]["sha"] = json!(base_sha);
    serde_json::to_vec(&v).unwrap()
}

// ---- repository and server helpers ------------------------------------------------------------

fn rev(repo: &Path, what: &str) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", what])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn project_with_secret(s: &Server, path: &str, repo: &Path, secret: &str) -> i64 {
    let p = s
        .api()
        .post(
            "/api/v1/projects",
            json!({"path": path, "git_url": repo.display().to_string(), "webhook_secret": secret}),
        )
        .unwrap();
    assert!(
        p.get("webhook_secret").is_none(),
        "a secret given is not shown back: {p}"
    );
    id(&p)
}

/// The `show` job's log of a finished pipeline, which must have succeeded.
fn show_log(s: &Server, pipeline: i64, what: &str) -> String {
    let p = s.wait_pipeline(pipeline, T);
    assert_eq!(p["status"], "success", "{what}: {p:#}");
    s.log(id(&job(&p, "show")))
}

/// Expects a refusal with `status` and `code`.
fn refused(got: (u16, Value), status: u16, code: &str, what: &str) -> Value {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["code"], code, "{what}: {}", got.1);
    got.1
}

/// Expects a created pipeline; its id.
fn created(got: (u16, Value), what: &str) -> i64 {
    assert_eq!(got.0, 201, "{what}: {}", got.1);
    assert_eq!(got.1["created"], true, "{what}: {}", got.1);
    got.1["pipeline_id"].as_i64().unwrap()
}

// ---- GitLab ---------------------------------------------------------------------------------

#[test]
fn gitlab_pushes_start_pipelines_and_refused_requests_create_nothing() {
    for db in backends("hooks_gitlab") {
        let name = db.name();
        let repo = Project::with_files(&[(".gitlab-ci.yml", PIPELINE), ("src/a.txt", "a\n")]);
        let s = Server::start(Options::new(&db));
        let secret = "gitlab token with spaces";
        let project = project_with_secret(&s, "team/gl", repo.path(), secret);
        let c0 = rev(repo.path(), "HEAD");
        repo.write("src/a.txt", "b\n");
        repo.commit("change a");
        let c1 = rev(repo.path(), "HEAD");
        let body = push_payload("gitlab", "refs/heads/main", &c0, &c1, "change a");

        // Refused: no token, a wrong one, then a body that is not JSON.
        let e = refused(
            gitlab(&s, project, None, "Push Hook", &body),
            401,
            "unsigned",
            name,
        );
        assert!(
            e["message"].as_str().unwrap().contains("X-Gitlab-Token"),
            "{e}"
        );
        refused(
            gitlab(&s, project, Some("wrong"), "Push Hook", &body),
            403,
            "bad_signature",
            name,
        );
        let e = refused(
            gitlab(&s, project, Some(secret), "Push Hook", b"{\"ref\": "),
            400,
            "malformed",
            name,
        );
        assert!(e["message"].as_str().unwrap().contains("GitLab"), "{e}");
        refused(
            gitlab(&s, 999, Some(secret), "Push Hook", &body),
            404,
            "not_found",
            name,
        );
        assert_eq!(s.pipeline_count(project), 0, "{name}");

        // The route table says how the route is authenticated.
        let doc = s.api().get("/api/v1/openapi.json").unwrap();
        let op = &doc["paths"]["/api/v1/hooks/{forge}/{project}"]["post"];
        assert_eq!(op["x-access"], "webhook", "{op}");
        assert!(op.get("security").is_none(), "no token: {op}");

        // Over 25 MiB: refused from the headers, before any of the body is sent.
        let addr = s.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            tcp,
            "POST /api/v1/hooks/gitlab/team/gl HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/json\r\nX-Gitlab-Event: Push Hook\r\n\
             X-Gitlab-Token: {secret}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            25 * 1024 * 1024 + 1
        )
        .unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{name}: {answer}");
        assert!(answer.contains("too_large"), "{name}: {answer}");

        // The right token: a push pipeline on the pushed commit, fetched, that runs.
        let pipeline = created(gitlab(&s, project, Some(secret), "Push Hook", &body), name);
        let p = s.get_pipeline(pipeline);
        assert_eq!(
            (p["source"].as_str(), p["ref"].as_str(), p["sha"].as_str()),
            (Some("push"), Some("main"), Some(c1.as_str())),
            "{name}: {p:#}"
        );
        let first_pipeline = pipeline;
        let log = show_log(&s, pipeline, name);
        assert!(log.contains("source=push ref=main tag="), "{name}: {log}");
        assert!(
            log.contains(&format!("before={c0} user=jsmith protected=true")),
            "{name}: {log}"
        );
        // rules:changes saw the push's diff (src/a.txt).
        let p = s.get_pipeline(pipeline);
        assert!(job_named(&p, "src").is_some(), "{name}: {p:#}");

        // A deleted branch: accepted, nothing created.
        let zeros = "0".repeat(40);
        let del = push_payload("gitlab", "refs/heads/old", &c0, &zeros, "");
        let (status, reply) = gitlab(&s, project, Some(secret), "Push Hook", &del);
        assert_eq!(status, 200, "{name}: {reply}");
        assert_eq!(reply["created"], false);
        assert!(
            reply["reason"]
                .as_str()
                .unwrap()
                .contains("'old' was deleted"),
            "{reply}"
        );

        // [skip ci]: a skipped pipeline without jobs that says why.
        repo.write("README", "docs\n");
        repo.commit("docs only [skip ci]");
        let c2 = rev(repo.path(), "HEAD");
        let skip = push_payload("gitlab", "refs/heads/main", &c1, &c2, "docs only [skip ci]");
        let (status, reply) = gitlab(&s, project, Some(secret), "Push Hook", &skip);
        assert_eq!(status, 201, "{name}: {reply}");
        assert_eq!(reply["status"], "skipped", "{reply}");
        let p = s.get_pipeline(reply["pipeline_id"].as_i64().unwrap());
        assert_eq!(p["status"], "skipped", "{name}: {p:#}");
        assert_eq!(
            p["errors"], "skipped: [skip ci] in the commit message",
            "{p:#}"
        );
        assert_eq!(p["jobs"].as_array().unwrap().len(), 0, "{p:#}");

        // A tag push (GitLab lists no commits for it): CI_COMMIT_TAG.
        git(repo.path(), &["tag", "v1.0", &c1]);
        let tag = push_payload("gitlab", "refs/tags/v1.0", &zeros, &c1, "");
        let pipeline = created(
            gitlab(&s, project, Some(secret), "Tag Push Hook", &tag),
            name,
        );
        let log = show_log(&s, pipeline, name);
        assert!(log.contains("ref=v1.0 tag=v1.0"), "{name}: {log}");

        assert_eq!(s.pipeline_count(project), 3, "{name}");

        // Every request is on record, newest first, without the secret or the body.
        let list = s
            .api()
            .get("/api/v1/projects/team%2Fgl/webhook-deliveries?per_page=100")
            .unwrap();
        let statuses: Vec<u64> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["status"].as_u64().unwrap())
            .collect();
        assert_eq!(
            statuses,
            [201, 201, 200, 201, 413, 400, 403, 401],
            "{name}: {list:#}"
        );
        let first = &list["items"][7];
        assert_eq!(
            (
                first["forge"].as_str(),
                first["event"].as_str(),
                first["outcome"].as_str()
            ),
            (Some("gitlab"), Some("Push Hook"), Some("refused")),
            "{first}"
        );
        assert_eq!(list["items"][3]["outcome"], "created");
        assert_eq!(list["items"][3]["pipeline_id"], first_pipeline, "{list:#}");
        assert_eq!(list["items"][2]["outcome"], "ignored");
        assert_eq!(list["items"][1]["outcome"], "skipped");
        let text = list.to_string();
        assert!(!text.contains(secret) && !text.contains("jsmith"), "{text}");
        let log = s.stderr_text();
        assert!(
            log.contains("webhook refused"),
            "{name}: the refusals are logged"
        );
        assert!(!log.contains(secret), "{name}: no secret in the log");
    }
}

// ---- GitHub, Gitea, Forgejo -------------------------------------------------------------------

#[test]
fn github_gitea_and_forgejo_deliveries_are_verified_and_never_replayed() {
    for db in backends("hooks_github") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let s = Server::start(Options::new(&db));
        // No secret given: one is made and shown once.
        let made = s
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": "team/gh", "git_url": repo.path().display().to_string()}),
            )
            .unwrap();
        let project = id(&made);
        let secret = made["webhook_secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("gwh_") && secret.len() == 68, "{made}");
        let shown = s.api().get(&format!("/api/v1/projects/{project}")).unwrap();
        assert!(shown.get("webhook_secret").is_none(), "{shown}");
        assert!(
            !s.api()
                .get("/api/v1/projects")
                .unwrap()
                .to_string()
                .contains(&secret)
        );

        let c0 = rev(repo.path(), "HEAD");
        repo.commit("one");
        let c1 = rev(repo.path(), "HEAD");
        let body = push_payload("github", "refs/heads/main", &c0, &c1, "one");

        // Signed over another body, or not signed at all: refused.
        let sig = format!("sha256={}", hmac_hex(&secret, b"{}"));
        let forged = post(
            &s,
            "/api/v1/hooks/github/team/gh",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "d-forged"),
                ("X-Hub-Signature-256", &sig),
            ],
            &body,
        );
        refused(forged, 403, "bad_signature", name);
        let unsigned = post(
            &s,
            "/api/v1/hooks/github/team/gh",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "d-unsigned"),
            ],
            &body,
        );
        refused(unsigned, 401, "unsigned", name);
        refused(
            github(&s, "team/gh", "another secret", "push", "d-other", &body),
            403,
            "bad_signature",
            name,
        );

        // Signed right: a pipeline; the same delivery again, or its payload under a new id,
        // is a replay and creates nothing.
        let pipeline = created(github(&s, "team/gh", &secret, "push", "d-1", &body), name);
        let log = show_log(&s, pipeline, name);
        assert!(
            log.contains(&format!("before={c0} user=octocat protected=true")),
            "{name}: {log}"
        );
        let e = refused(
            github(&s, "team/gh", &secret, "push", "d-1", &body),
            409,
            "replayed",
            name,
        );
        assert!(e["message"].as_str().unwrap().contains("d-1"), "{e}");
        refused(
            github(&s, "team/gh", &secret, "push", "d-1-again", &body),
            409,
            "replayed",
            name,
        );
        assert_eq!(s.pipeline_count(project), 1, "{name}");

        // Two copies of one delivery at the same moment: one pipeline.
        repo.commit("two");
        let c2 = rev(repo.path(), "HEAD");
        let body2 = push_payload("github", "refs/heads/main", &c1, &c2, "two");
        let statuses: Vec<u16> = std::thread::scope(|sc| {
            let copies: Vec<_> = (0..3)
                .map(|_| sc.spawn(|| github(&s, "team/gh", &secret, "push", "d-2", &body2).0))
                .collect();
            copies.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [201, 409, 409], "{name}: {statuses:?}");
        assert_eq!(s.pipeline_count(project), 2, "{name}");

        // A ping and a malformed payload.
        let ping = serde_json::to_vec(&fixture("github/ping.json")).unwrap();
        let (status, reply) = github(&s, "team/gh", &secret, "ping", "d-ping", &ping);
        assert_eq!((status, &reply["created"]), (200, &json!(false)), "{reply}");
        assert!(
            reply["reason"].as_str().unwrap().contains("ping"),
            "{reply}"
        );
        refused(
            github(&s, "team/gh", &secret, "push", "d-bad", b"[1, 2"),
            400,
            "malformed",
            name,
        );

        // Gitea, then Forgejo (Gitea's format under its own header names).
        for (forge, prefix) in [("gitea", "X-Gitea"), ("forgejo", "X-Forgejo")] {
            let before = rev(repo.path(), "HEAD");
            repo.commit(forge);
            let after = rev(repo.path(), "HEAD");
            let body = push_payload("gitea", "refs/heads/main", &before, &after, forge);
            let sig = hmac_hex(&secret, &body);
            let (event, delivery, signature) = (
                format!("{prefix}-Event"),
                format!("{prefix}-Delivery"),
                format!("{prefix}-Signature"),
            );
            let headers = [
                (event.as_str(), "push"),
                (delivery.as_str(), forge),
                (signature.as_str(), sig.as_str()),
            ];
            let path = format!("/api/v1/hooks/{forge}/{project}");
            let pipeline = created(post(&s, &path, &headers, &body), forge);
            let p = s.wait_pipeline(pipeline, T);
            assert_eq!(p["status"], "success", "{name} {forge}: {p:#}");
            assert_eq!(p["sha"], after.as_str(), "{name} {forge}");
            let wrong = hmac_hex("nope", &body);
            let headers = [
                (event.as_str(), "push"),
                (delivery.as_str(), "x"),
                (signature.as_str(), wrong.as_str()),
            ];
            refused(
                post(&s, &path, &headers, &body),
                403,
                "bad_signature",
                forge,
            );
        }
        refused(
            post(
                &s,
                &format!("/api/v1/hooks/bitbucket/{project}"),
                &[],
                b"{}",
            ),
            404,
            "unknown_forge",
            name,
        );

        // A new secret: the old one stops working.
        let fresh = s
            .api()
            .post(
                &format!("/api/v1/projects/{project}/webhook-secret"),
                json!({}),
            )
            .unwrap();
        let fresh = fresh["webhook_secret"].as_str().unwrap().to_string();
        assert_ne!(fresh, secret);
        repo.commit("three");
        let c3 = rev(repo.path(), "HEAD");
        let before = rev(repo.path(), "HEAD~1");
        let body3 = push_payload("github", "refs/heads/main", &before, &c3, "three");
        refused(
            github(&s, "team/gh", &secret, "push", "d-3", &body3),
            403,
            "bad_signature",
            name,
        );
        created(github(&s, "team/gh", &fresh, "push", "d-3", &body3), name);
        let err = s
            .api()
            .post("/api/v1/projects/404/webhook-secret", json!({}))
            .unwrap_err();
        assert_eq!(err.status, 404);
    }
}

// ---- merge requests -------------------------------------------------------------------------

#[test]
fn merge_request_pipelines_for_branches_and_forks() {
    for db in backends("hooks_mr") {
        let name = db.name();
        let repo = Project::with_files(&[
            (".gitlab-ci.yml", PIPELINE),
            ("src/lib.txt", "1\n"),
            ("docs/guide.md", "1\n"),
        ]);
        let dir = repo.path();
        let fork_point = rev(dir, "HEAD");
        // `feature` changes the docs only; then main changes src/ (after the fork point).
        git(dir, &["checkout", "-q", "-b", "feature"]);
        repo.write("docs/guide.md", "2\n");
        repo.commit("better docs");
        let feature = rev(dir, "HEAD");
        git(dir, &["update-ref", "refs/pull/7/head", &feature]);
        git(dir, &["update-ref", "refs/merge-requests/1/head", &feature]);
        // A fork's `main` with a change to src/, known here only as refs/pull/8/head.
        git(dir, &["checkout", "-q", "-b", "fork-main", &fork_point]);
        repo.write("src/lib.txt", "fork\n");
        repo.commit("fork change");
        let fork = rev(dir, "HEAD");
        git(dir, &["update-ref", "refs/pull/8/head", &fork]);
        git(dir, &["checkout", "-q", "main"]);
        git(dir, &["branch", "-q", "-D", "fork-main"]);
        repo.write("src/lib.txt", "main moved on\n");
        repo.commit("main moves");
        let main = rev(dir, "HEAD");

        let s = Server::start(Options::new(&db));
        let secret = "mr-secret";
        let project = project_with_secret(&s, "team/mr", dir, secret);

        // A pull request within the repository.
        let body = pull_request(
            "opened",
            7,
            "feature",
            &feature,
            "octocat/Hello-World",
            &main,
        );
        let pipeline = created(
            github(&s, "team/mr", secret, "pull_request", "pr-1", &body),
            name,
        );
        let p = s.get_pipeline(pipeline);
        assert_eq!(p["source"], "merge_request_event", "{name}: {p:#}");
        assert_eq!(p["ref"], "refs/merge-requests/7/head", "{name}: {p:#}");
        assert_eq!(p["sha"], feature.as_str());
        let log = show_log(&s, pipeline, name);
        assert!(
            log.contains("source=merge_request_event ref=feature"),
            "{name}: {log}"
        );
        assert!(
            log.contains(&format!("mr=7 src=feature tgt=main base={fork_point}")),
            "{name}: {log}"
        );
        assert!(log.contains("protected=false"), "{name}: {log}");
        // rules:changes compares with the target branch from the merge base: main's own
        // change to src/ after the fork point is not the merge request's.
        let p = s.get_pipeline(pipeline);
        assert!(job_named(&p, "src").is_none(), "{name}: {p:#}");
        assert!(log.contains("open=[team/mr!7]"), "{name}: {log}");
        // The branch's own pipelines name its open merge request.
        let p = s.pipeline(project, "feature");
        let log = show_log(&s, id(&p), name);
        assert!(log.contains("open=[team/mr!7]"), "{name}: {log}");

        // A fork's pull request from its `main`: not protected, although `main` is.
        let body = pull_request(
            "synchronize",
            8,
            "main",
            &fork,
            "monalisa/Hello-World",
            &main,
        );
        let pipeline = created(
            github(&s, "team/mr", secret, "pull_request", "pr-2", &body),
            name,
        );
        let log = show_log(&s, pipeline, name);
        assert!(log.contains("ref=main"), "{name}: {log}");
        assert!(log.contains("protected=false"), "{name}: {log}");
        assert!(log.contains("mr=8 src=main"), "{name}: {log}");
        let p = s.get_pipeline(pipeline);
        assert_eq!(
            job(&p, "src")["status"],
            "success",
            "{name}: the fork changed src/"
        );
        // The same branch pushed in the project itself is protected.
        let p = s.pipeline(project, "main");
        let log = show_log(&s, id(&p), name);
        assert!(log.contains("protected=true"), "{name}: {log}");
        // A fork's `main` is not this project's `main`.
        assert!(log.contains("open=[]"), "{name}: {log}");

        // A closed pull request starts nothing.
        let body = pull_request(
            "closed",
            7,
            "feature",
            &feature,
            "octocat/Hello-World",
            &main,
        );
        let (status, reply) = github(&s, "team/mr", secret, "pull_request", "pr-3", &body);
        assert_eq!((status, &reply["created"]), (200, &json!(false)), "{reply}");
        // ... and is no longer listed in its branch's pipelines.
        let p = s.pipeline(project, "feature");
        let log = show_log(&s, id(&p), name);
        assert!(log.contains("open=[]"), "{name}: {log}");

        // GitLab's merge request hook (no target sha in it: the target branch is fetched).
        let mut v = fixture("gitlab/merge-request-open.json");
        let oa = &mut v["object_attributes"];
        oa["iid"] = json!(1);
        oa["source_branch"] = json!("feature");
        oa["target_branch"] = json!("main");
        oa["last_commit"]["id"] = json!(feature);
        oa["last_commit"]["message"] = json!("better docs");
        let body = serde_json::to_vec(&v).unwrap();
        let pipeline = created(
            gitlab(&s, project, Some(secret), "Merge Request Hook", &body),
            name,
        );
        let log = show_log(&s, pipeline, name);
        assert!(
            log.contains(&format!("mr=1 src=feature tgt=main base={fork_point}")),
            "{name}: {log}"
        );
        assert_eq!(
            s.get_pipeline(pipeline)["ref"],
            "refs/merge-requests/1/head",
            "{name}"
        );
    }
}
