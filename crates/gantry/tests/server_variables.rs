//! CI/CD variables and protected refs at a running server, on SQLite and PostgreSQL:
//! variables of every kind reach jobs (plain, file, scoped to an environment, instance and
//! project, with GitLab's precedence), masked values never appear in a job's log, protected
//! ones reach only pipelines of protected refs (not a fork's merge request), and no secret
//! value is ever shown back or stored in plaintext: not in API answers, errors, the server's
//! log, the SQLite files or a dump of the PostgreSQL database.

mod common;

use common::server::{Backend, Options, Server, backends, id, job};
use common::{Project, git};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

// ---- helpers --------------------------------------------------------------------------------

/// The log of job `name` of a pipeline, which must have succeeded.
fn job_log(s: &Server, pipeline: &Value, name: &str, what: &str) -> String {
    let p = s.wait_pipeline(id(pipeline), T);
    assert_eq!(p["status"], "success", "{what}: {p:#}");
    s.log(id(&job(&p, name)))
}

fn base64(text: &str) -> String {
    let mut child = Command::new("base64")
        .args(["-w", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64 runs (coreutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn assert_absent(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

/// `gantry admin rotate-key` on the server's data.
fn rotate(s: &Server) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["admin", "rotate-key", "--data-dir"])
        .arg(s.data.path())
        .env_remove("GANTRY_DATABASE_URL")
        .env_remove("GANTRY_SECRETS_KEY")
        .env_remove("GANTRY_SECRETS_KEY_FILE");
    if let Backend::Postgres(url) = &s.opts.backend {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "rotate-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw request (any body bytes); the status and the answer's text.
fn raw(s: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", s.url);
    let auth = format!("Bearer {}", s.token);
    let mut resp = match method {
        "POST" => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("content-type", "application/json")
            .send(body),
        _ => agent
            .put(&url)
            .header("Authorization", &auth)
            .header("content-type", "application/json")
            .send(body),
    }
    .expect("the server answers");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
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

/// A GitHub `pull_request` delivery from a fork's branch `head_ref` at `head_sha`, signed.
fn fork_pull_request(
    s: &Server,
    project: &str,
    secret: &str,
    head_ref: &str,
    head_sha: &str,
) -> i64 {
    let path = common::repo_root()
        .join("crates/gantry-engine/tests/fixtures/webhooks/github/pull-request-opened.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["action"] = json!("opened");
    v["number"] = json!(8);
    let pr = &mut v["pull_request"];
    pr["number"] = json!(8);
    pr["head"]["ref"] = json!(head_ref);
    pr["head"]["sha"] = json!(head_sha);
    pr["head"]["repo"]["full_name"] = json!("monalisa/Hello-World");
    pr["head"]["repo"]["id"] = json!(99);
    pr["head"]["repo"]["fork"] = json!(true);
    pr["base"]["ref"] = json!("main");
    let body = serde_json::to_vec(&v).unwrap();
    let sig = format!("sha256={}", hmac_hex(secret, &body));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{}/api/v1/hooks/github/{project}", s.url))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "fork-pr-1")
        .header("X-Hub-Signature-256", &sig)
        .send(&body[..])
        .expect("the server answers");
    let status = resp.status().as_u16();
    let reply: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 201, "{reply}");
    reply["pipeline_id"].as_i64().unwrap()
}

fn rev(repo: &Path, what: &str) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", what])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn set(s: &Server, path: &str, body: Value) -> Value {
    s.api()
        .post(path, body.clone())
        .unwrap_or_else(|e| panic!("{path} {body}: {e}"))
}

// ---- tests ----------------------------------------------------------------------------------

const EVERY_KIND: &str = r#"variables:
  OVERRIDDEN: from-yaml
plain:
  script:
    - echo "plain=$PLAIN inst=$INST_ONLY both=$BOTH over=$OVERRIDDEN trig=$TRIG"
    - echo "file=[$(cat "$CONF" | tr '\n' '+')] path-is-not-the-value=$([ "$CONF" != "$(cat "$CONF")" ] && echo yes)"
    - echo "scoped=$SCOPED"
    - echo "secret=$SECRET_TOKEN"
    - echo "b64=$(printf %s "$SECRET_TOKEN" | base64)"
    - echo "kept=$([ "$SECRET_TOKEN" = "$EXPECTED" ] && echo yes)"
review:
  environment: review/app-1
  script:
    - echo "scoped=$SCOPED"
prod:
  environment:
    name: production
  script:
    - echo "scoped=$SCOPED"
dynamic:
  environment: review/$CI_COMMIT_REF_NAME
  script:
    - echo "scoped=$SCOPED env=$CI_ENVIRONMENT_NAME"
"#;

#[test]
fn variables_of_every_kind_reach_jobs_and_masked_ones_stay_masked() {
    for db in backends("vars_kinds") {
        let name = db.name();
        let repo = Project::with_files(&[(".gitlab-ci.yml", EVERY_KIND)]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let pv = format!("/api/v1/projects/{project}/variables");
        let secret = "s3cr3t-Value-42x";

        set(
            &s,
            "/api/v1/variables",
            json!({"key": "INST_ONLY", "value": "i1"}),
        );
        set(
            &s,
            "/api/v1/variables",
            json!({"key": "BOTH", "value": "instance"}),
        );
        set(&s, &pv, json!({"key": "BOTH", "value": "project"}));
        set(&s, &pv, json!({"key": "PLAIN", "value": "p1"}));
        set(
            &s,
            &pv,
            json!({"key": "OVERRIDDEN", "value": "from-settings"}),
        );
        set(&s, &pv, json!({"key": "TRIG", "value": "from-settings"}));
        set(
            &s,
            &pv,
            json!({"key": "CONF", "value": "line1\nline2\n", "variable_type": "file"}),
        );
        set(&s, &pv, json!({"key": "SCOPED", "value": "any"}));
        set(
            &s,
            &pv,
            json!({"key": "SCOPED", "value": "review-glob", "environment_scope": "review/*"}),
        );
        set(
            &s,
            "/api/v1/variables",
            json!({"key": "SCOPED", "value": "instance-prod", "environment_scope": "production"}),
        );
        set(
            &s,
            &pv,
            json!({"key": "SCOPED", "value": "review-main", "environment_scope": "review/main"}),
        );
        set(
            &s,
            &pv,
            json!({"key": "SCOPED", "value": "prod-exact", "environment_scope": "production"}),
        );
        set(
            &s,
            &pv,
            json!({"key": "SECRET_TOKEN", "value": secret, "masked": true}),
        );
        set(&s, &pv, json!({"key": "EXPECTED", "value": secret}));

        let p = s.pipeline_vars(project, "main", &[("TRIG", "trigger")]);
        let log = job_log(&s, &p, "plain", name);
        assert!(
            log.contains("plain=p1 inst=i1 both=project over=from-settings trig=trigger"),
            "{name}: precedence: {log}"
        );
        assert!(
            log.contains("file=[line1+line2+] path-is-not-the-value=yes"),
            "{name}: {log}"
        );
        assert!(log.contains("scoped=any"), "{name}: {log}");
        assert!(log.contains("secret=[MASKED]"), "{name}: {log}");
        assert!(log.contains("b64=[MASKED]"), "{name}: {log}");
        assert!(
            log.contains("kept=yes"),
            "{name}: the job has the value: {log}"
        );
        assert_absent("the job log", &log, &[secret, &base64(secret)]);
        let log = job_log(&s, &p, "review", name);
        assert!(log.contains("scoped=review-glob"), "{name}: {log}");
        let log = job_log(&s, &p, "prod", name);
        assert!(log.contains("scoped=prod-exact"), "{name}: {log}");
        // The environment's name is expanded before it is matched.
        let log = job_log(&s, &p, "dynamic", name);
        assert!(
            log.contains("scoped=review-main env=review/main"),
            "{name}: {log}"
        );

        // Deleting a definition: the next most specific one applies.
        s.api()
            .delete(&format!("{pv}/SCOPED?environment_scope=production"))
            .unwrap();
        let p = s.pipeline(project, "main");
        let log = job_log(&s, &p, "prod", name);
        assert!(
            log.contains("scoped=any"),
            "{name}: the project's * wins: {log}"
        );
        // A key with several scopes needs one named.
        let e = s.api().delete(&format!("{pv}/SCOPED")).unwrap_err();
        assert_eq!(e.status, 409, "{name}: {e}");
    }
}

const SHOW_PROTECTED: &str = r#"show:
  rules:
    - when: always
  script:
    - echo "ref=$CI_COMMIT_REF_NAME protected=$CI_COMMIT_REF_PROTECTED prot=[$PROT] plain=[$PLAIN]"
"#;

#[test]
fn protected_variables_reach_only_protected_refs_and_never_forks() {
    for db in backends("vars_protected") {
        let name = db.name();
        let repo = Project::with_files(&[(".gitlab-ci.yml", SHOW_PROTECTED)]);
        let dir = repo.path();
        git(dir, &["branch", "feature"]);
        git(dir, &["branch", "release/1.0"]);
        git(dir, &["tag", "v1.0"]);
        let head = rev(dir, "HEAD");
        git(dir, &["update-ref", "refs/pull/8/head", &head]);
        let s = Server::start(Options::new(&db));
        let secret = "hook-secret";
        let p = s
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": "team/prot", "git_url": dir.display().to_string(), "webhook_secret": secret}),
            )
            .unwrap();
        let project = id(&p);
        let pv = format!("/api/v1/projects/{project}/variables");
        set(
            &s,
            &pv,
            json!({"key": "PROT", "value": "protected-value", "protected": true}),
        );
        set(&s, &pv, json!({"key": "PLAIN", "value": "plain-value"}));
        let refs = format!("/api/v1/projects/{project}/protected-refs");
        let r = set(&s, &refs, json!({"pattern": "release/*", "kind": "branch"}));
        set(&s, &refs, json!({"pattern": "v*", "kind": "tag"}));
        let listed = s.api().get(&refs).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2, "{name}: {listed}");
        let e = s
            .api()
            .post(&refs, json!({"pattern": "x", "kind": "branches"}))
            .unwrap_err();
        assert_eq!(e.status, 400, "{name}: {e}");

        let show = |git_ref: &str| {
            let p = s.pipeline(project, git_ref);
            job_log(&s, &p, "show", &format!("{name} {git_ref}"))
        };
        let log = show("feature");
        assert!(
            log.contains("protected=false prot=[] plain=[plain-value]"),
            "{name}: an unprotected branch: {log}"
        );
        let log = show("release/1.0");
        assert!(
            log.contains("protected=true prot=[protected-value]"),
            "{name}: a protected pattern: {log}"
        );
        let log = show("main");
        assert!(
            log.contains("protected=true prot=[protected-value]"),
            "{name}: the default branch: {log}"
        );
        let log = show("v1.0");
        assert!(
            log.contains("protected=true prot=[protected-value]"),
            "{name}: a protected tag: {log}"
        );

        // A fork's pull request from its own `main`: not protected.
        let pipeline = fork_pull_request(&s, "team/prot", secret, "main", &head);
        let p = s.get_pipeline(pipeline);
        let log = job_log(&s, &p, "show", name);
        assert!(
            log.contains("protected=false prot=[] plain=[plain-value]"),
            "{name}: a fork: {log}"
        );

        // Unprotected again: release branches lose the variable.
        s.api().delete(&format!("{refs}/{}", id(&r))).unwrap();
        let log = show("release/1.0");
        assert!(log.contains("protected=false prot=[]"), "{name}: {log}");
    }
}

const ECHO_SECRETS: &str = r#"echo:
  script:
    - echo "inst=$INST_SECRET proj=$PROJ_SECRET"
    - echo "inst-same=$([ "$INST_SECRET" = "$INST_EXPECTED" ] && echo yes) proj-same=$([ "$PROJ_SECRET" = "$PROJ_EXPECTED" ] && echo yes)"
"#;

#[test]
fn secret_values_are_write_only_and_never_stored_or_shown_in_plaintext() {
    for db in backends("vars_secrets") {
        let name = db.name();
        let repo = Project::with_files(&[(".gitlab-ci.yml", ECHO_SECRETS)]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let pv = format!("/api/v1/projects/{project}/variables");
        let inst = "Instance-Secret-0xC0FFEE";
        let first = "Project-Secret-First-1111";
        let proj = "Project-Secret-Second-2222";
        let refused_value = "Refused-Value-3333-abcd";
        let all = [inst, first, proj, refused_value];
        let mut answers = String::new();

        let a = set(
            &s,
            "/api/v1/variables",
            json!({"key": "INST_SECRET", "value": inst, "masked": true, "description": "deploys"}),
        );
        assert_eq!(a["masked"], true);
        assert!(a.get("value").is_none(), "{name}: {a}");
        answers.push_str(&a.to_string());
        let a = set(
            &s,
            &pv,
            json!({"key": "PROJ_SECRET", "value": first, "masked": true, "protected": false}),
        );
        answers.push_str(&a.to_string());
        // Replaced: the old value is gone, the new one is used.
        let a = s
            .api()
            .put(&format!("{pv}/PROJ_SECRET"), json!({"value": proj}))
            .unwrap();
        answers.push_str(&a.to_string());
        // A change without a value keeps it.
        let a = s
            .api()
            .put(
                &format!("{pv}/PROJ_SECRET"),
                json!({"description": "the database password"}),
            )
            .unwrap();
        assert_eq!(a["description"], "the database password");
        answers.push_str(&a.to_string());
        for path in ["/api/v1/variables", pv.as_str(), "/api/v1/audit-log"] {
            answers.push_str(&s.api().get(path).unwrap().to_string());
        }

        // Refused requests never quote the value.
        let mut errors = String::new();
        for (method, path, body, status) in [
            (
                "POST",
                pv.as_str(),
                json!({"key": "1BAD", "value": refused_value}).to_string(),
                400,
            ),
            (
                "POST",
                pv.as_str(),
                json!({"key": "OK", "value": refused_value, "variable_type": "yaml"}).to_string(),
                400,
            ),
            (
                "POST",
                pv.as_str(),
                json!({"key": "OK", "value": refused_value, "masked": refused_value}).to_string(),
                400,
            ),
            (
                "POST",
                pv.as_str(),
                json!({"key": "OK", "value": refused_value, "wrong": refused_value}).to_string(),
                400,
            ),
            (
                "POST",
                pv.as_str(),
                format!("{{\"key\": \"OK\", \"value\": \"{refused_value}"),
                400,
            ),
            (
                "POST",
                pv.as_str(),
                json!({"key": "PROJ_SECRET", "value": refused_value}).to_string(),
                409,
            ),
            (
                "POST",
                pv.as_str(),
                json!({"key": "SHORT", "value": "short", "masked": true}).to_string(),
                400,
            ),
            (
                "PUT",
                &format!("{pv}/NOPE"),
                json!({"value": refused_value}).to_string(),
                404,
            ),
            (
                "PUT",
                &format!("{pv}/PROJ_SECRET"),
                json!({"value": refused_value, "environment_scope": "bad scope!"}).to_string(),
                400,
            ),
        ] {
            let (got, text) = raw(&s, method, path, &body);
            assert_eq!(got, status, "{name}: {method} {path} {body}: {text}");
            errors.push_str(&text);
        }
        assert_absent(&format!("{name}: API answers"), &answers, &all);
        assert_absent(&format!("{name}: errors"), &errors, &all);

        set(&s, &pv, json!({"key": "INST_EXPECTED", "value": inst}));
        set(&s, &pv, json!({"key": "PROJ_EXPECTED", "value": proj}));
        let check_job = |what: &str| {
            let p = s.pipeline(project, "main");
            let log = job_log(&s, &p, "echo", what);
            assert!(log.contains("inst=[MASKED] proj=[MASKED]"), "{what}: {log}");
            assert!(log.contains("inst-same=yes proj-same=yes"), "{what}: {log}");
            assert_absent(what, &log, &all);
        };
        check_job(name);

        // A new key: every value is resealed and still reaches jobs.
        rotate(&s);
        check_job(&format!("{name} after rotate-key"));

        s.assert_stored_nowhere(name, &all);
        assert_absent(&format!("{name}: the server's log"), &s.stderr_text(), &all);

        // Deleted: jobs no longer get it.
        s.api().delete("/api/v1/variables/INST_SECRET").unwrap();
        let p = s.pipeline(project, "main");
        let log = job_log(&s, &p, "echo", name);
        assert!(log.contains("inst= proj=[MASKED]"), "{name}: {log}");
    }
}

#[test]
fn a_value_copied_into_another_row_does_not_open_and_the_job_fails_saying_why() {
    for db in backends("vars_moved") {
        let name = db.name();
        let repo = Project::with_files(&[(".gitlab-ci.yml", "j:\n  script: [echo \"a=$A\"]\n")]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let pv = format!("/api/v1/projects/{project}/variables");
        let a = set(&s, &pv, json!({"key": "A", "value": "value-of-a"}));
        let b = set(&s, &pv, json!({"key": "B", "value": "value-of-b-secret"}));
        let p = s.pipeline(project, "main");
        assert!(job_log(&s, &p, "j", name).contains("a=value-of-a"));
        // B's sealed value in A's row: bound to B's row, it does not open there.
        s.sql(&format!(
            "UPDATE ci_variables SET value = (SELECT value FROM ci_variables WHERE id = {}) \
                 WHERE id = {}",
            id(&b),
            id(&a)
        ));
        let p = s.wait_pipeline(id(&s.pipeline(project, "main")), T);
        assert_eq!(p["status"], "failed", "{name}: {p:#}");
        let j = job(&p, "j");
        assert_eq!(
            j["failure_reason"], "runner_system_failure",
            "{name}: {j:#}"
        );
        let log = s.log(id(&j));
        assert!(
            log.contains("variable A (id") && log.contains("cannot be opened"),
            "{name}: {log}"
        );
        assert_absent(name, &log, &["value-of-b-secret", "value-of-a"]);
    }
}
