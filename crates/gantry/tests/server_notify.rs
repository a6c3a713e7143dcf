//! Notifications at a running server: chat webhooks (Slack, DingTalk, Feishu, Teams, generic)
//! stood in by HTTP fakes (wiremock) that record what arrives, and email delivered to a real
//! SMTP server on loopback (PyPI's aiosmtpd, with STARTTLS and AUTH, its certificate from a
//! CA made here with openssl), whose received messages the test reads; on SQLite and on
//! PostgreSQL.
//!
//! The email test needs aiosmtpd: `GANTRY_TEST_SMTP_PYTHON` (set by scripts/test) names a
//! python that has it, else the cache's venv or python3 are tried; `GANTRY_REQUIRE_SMTP=1`
//! makes its absence a failure instead of a skip.

mod common;

use common::Project;
use common::fake::{bodies, fake, runtime};
use common::server::{Options, Server, backends, id};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// `test` fails when FAIL=1; `deploy` waits for a person.
const PIPELINE: &str = r#"stages: [test, deploy]
test:
  stage: test
  script:
    - test "$FAIL" != 1
deploy:
  stage: deploy
  when: manual
  script: [echo deployed]
"#;

/// Waits until `n` rows of the project's outbox are done and none is queued or sending.
fn wait_sent(s: &Server, project: i64, n: usize) -> Vec<Value> {
    let end = Instant::now() + T;
    loop {
        let rows = s.outbox(project);
        let done = rows.iter().filter(|r| r["state"] == "done").count();
        let busy = rows
            .iter()
            .any(|r| matches!(r["state"].as_str(), Some("queued" | "sending")));
        if done >= n && !busy {
            return rows;
        }
        assert!(Instant::now() < end, "{n} messages never sent: {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn add_channel(s: &Server, project: i64, body: Value) -> Value {
    s.api()
        .post(&format!("/api/v1/projects/{project}/notifications"), body)
        .unwrap_or_else(|e| panic!("notification: {e}"))
}

fn run(s: &Server, project: i64, fail: bool) -> Value {
    let p = s.pipeline_vars(project, "main", &[("FAIL", if fail { "1" } else { "0" })]);
    s.wait_pipeline(id(&p), T)
}

#[test]
fn failed_fixed_and_succeeded_reach_slack_and_dingtalk_once_each() {
    let rt = runtime();
    for db in backends("notify_chat") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let mut s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let slack = fake(&rt, 200, json!({}));
        let ding = fake(&rt, 200, json!({"errcode": 0, "errmsg": "ok"}));
        let slack_url = format!("{}/services/T0/B0/slack-secret-part", slack.uri());
        let ding_url = format!("{}/robot/send?access_token=ding-secret-part", ding.uri());
        let c = add_channel(
            &s,
            project,
            json!({"kind": "slack", "url": slack_url, "events": ["failed", "fixed", "succeeded"]}),
        );
        assert_eq!(c["url_set"], true, "{name}: {c}");
        add_channel(
            &s,
            project,
            json!({"kind": "dingtalk", "url": ding_url, "events": ["failed", "fixed", "succeeded"]}),
        );
        let listed = s
            .api()
            .get(&format!("/api/v1/projects/{project}/notifications"))
            .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2, "{name}: {listed}");
        assert!(
            !listed.to_string().contains("secret-part"),
            "{name}: {listed}"
        );

        let p1 = run(&s, project, true);
        assert_eq!(p1["status"], "failed", "{name}");
        wait_sent(&s, project, 2);
        let p2 = run(&s, project, false);
        assert_eq!(p2["status"], "success", "{name}");
        wait_sent(&s, project, 4);
        let p3 = run(&s, project, false);
        wait_sent(&s, project, 6);

        let msgs = bodies(&rt, &slack);
        let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts.len(), 3, "{name}: {texts:#?}");
        let (failed, fixed, ok) = (texts[0], texts[1], texts[2]);
        let test_job = p1["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "test")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        assert!(
            failed.contains(&format!("team/app: pipeline #{} failed on main", id(&p1))),
            "{name}: {failed}"
        );
        assert!(
            failed.contains(&format!(
                "- test (stage test): {}/team/app/-/jobs/{test_job}",
                s.url
            )),
            "{name}: the failed job and its link: {failed}"
        );
        assert!(
            failed.contains(&format!(
                "Pipeline: {}/team/app/-/pipelines/{}",
                s.url,
                id(&p1)
            )),
            "{name}: {failed}"
        );
        assert!(
            failed.contains("Commit: ") && failed.contains(" initial"),
            "{name}: {failed}"
        );
        assert!(failed.contains("Pushed by: "), "{name}: {failed}");
        assert!(
            fixed.contains(&format!("pipeline #{} fixed main", id(&p2))),
            "{name}: {fixed}"
        );
        assert!(!fixed.contains("Failed jobs"), "{name}: {fixed}");
        assert!(
            ok.contains(&format!("pipeline #{} succeeded on main", id(&p3))),
            "{name}: {ok}"
        );

        let dings = bodies(&rt, &ding);
        assert_eq!(dings.len(), 3, "{name}: {dings:#?}");
        for (m, what) in dings
            .iter()
            .zip(["failed on main", "fixed main", "succeeded on main"])
        {
            assert_eq!(m["msgtype"], "markdown", "{name}: {m}");
            assert!(
                m["markdown"]["title"].as_str().unwrap().contains(what),
                "{name}: {m}"
            );
            assert!(
                m["markdown"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("/team/app/-/pipelines/")
            );
        }
        // The manual job of the passing pipelines was not asked for.
        assert!(
            !texts.iter().any(|t| t.contains("waiting for approval")),
            "{name}"
        );

        // A restart sends nothing again.
        s.kill9();
        s.restart();
        std::thread::sleep(Duration::from_secs(2));
        wait_sent(&s, project, 6);
        assert_eq!(bodies(&rt, &slack).len(), 3, "{name}: a message sent twice");
        assert_eq!(bodies(&rt, &ding).len(), 3, "{name}: a message sent twice");
        let rows = s.outbox(project);
        assert_eq!(rows.len(), 6, "{name}: {rows:#?}");
        assert!(
            !serde_json::to_string(&rows)
                .unwrap()
                .contains("secret-part")
        );
    }
}

#[test]
fn a_manual_job_waiting_notifies_feishu_teams_and_generic() {
    let rt = runtime();
    for db in backends("notify_manual") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let feishu = fake(&rt, 200, json!({"code": 0, "msg": "success"}));
        let teams = fake(&rt, 200, json!({}));
        let generic = fake(&rt, 200, json!({}));
        for (kind, fake) in [
            ("feishu", &feishu),
            ("teams", &teams),
            ("generic", &generic),
        ] {
            add_channel(
                &s,
                project,
                json!({"kind": kind, "url": format!("{}/hook", fake.uri()), "events": ["manual"]}),
            );
        }
        let p = run(&s, project, false);
        assert_eq!(p["status"], "success", "{name}");
        wait_sent(&s, project, 3);
        let deploy = p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "deploy")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        let job_url = format!("{}/team/app/-/jobs/{deploy}", s.url);

        let f = bodies(&rt, &feishu);
        assert_eq!(f.len(), 1, "{name}: {f:#?}");
        assert_eq!(f[0]["msg_type"], "text");
        let text = f[0]["content"]["text"].as_str().unwrap();
        assert!(
            text.contains("job deploy is waiting for approval"),
            "{name}: {text}"
        );
        assert!(text.contains(&job_url), "{name}: {text}");

        let t = bodies(&rt, &teams);
        assert_eq!(t.len(), 1, "{name}: {t:#?}");
        let card = &t[0]["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert!(card.to_string().contains(&job_url), "{name}: {card}");

        let g = bodies(&rt, &generic);
        assert_eq!(g.len(), 1, "{name}: {g:#?}");
        assert_eq!(g[0]["event"], "manual", "{name}: {}", g[0]);
        assert_eq!(g[0]["job"]["name"], "deploy");
        assert_eq!(g[0]["job"]["url"], job_url.as_str());
        assert_eq!(g[0]["pipeline"]["id"], id(&p));
        assert_eq!(g[0]["project"]["path"], "team/app");
    }
}

#[test]
fn bad_notification_settings_are_refused_with_what_to_do() {
    for db in backends("notify_bad_input") {
        let name = db.name();
        let repo = Project::new(PIPELINE);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let path = format!("/api/v1/projects/{project}/notifications");
        let cases = [
            (json!({"kind": "irc", "url": "https://x"}), "email, slack"),
            (json!({"kind": "slack"}), "url is missing"),
            (
                json!({"kind": "slack", "url": "hooks.slack.com/x"}),
                "https://",
            ),
            (
                json!({"kind": "slack", "url": "https://x", "events": ["broken"]}),
                "failed, fixed",
            ),
            // This server has no SMTP settings.
            (
                json!({"kind": "email", "recipients": ["a@example.com"]}),
                "--smtp-host",
            ),
        ];
        for (body, says) in cases {
            let e = s.api().post(&path, body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{name}: {body} → {e}");
            assert!(
                e.body["message"].as_str().unwrap().contains(says),
                "{name}: {body} → {e}"
            );
        }
        let c = s
            .api()
            .post(
                &path,
                json!({"kind": "generic", "url": "https://example.com/hook"}),
            )
            .unwrap();
        assert_eq!(c["events"], json!(["failed", "fixed", "manual"]), "{name}");
        s.api().delete(&format!("{path}/{}", id(&c))).unwrap();
        assert_eq!(s.api().get(&path).unwrap(), json!([]), "{name}");
    }
}

// ---- email ------------------------------------------------------------------------------------

/// A python with aiosmtpd, or `None` (then the test skips, unless GANTRY_REQUIRE_SMTP=1).
fn smtp_python() -> Option<String> {
    let cache = std::env::var("XDG_CACHE_HOME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
    let candidates = [
        std::env::var("GANTRY_TEST_SMTP_PYTHON").ok(),
        Some(format!("{cache}/gantry/aiosmtpd-venv/bin/python")),
        Some("python3".to_string()),
    ];
    for py in candidates.into_iter().flatten() {
        let ok = Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    if std::env::var("GANTRY_REQUIRE_SMTP").as_deref() == Ok("1") {
        panic!("GANTRY_REQUIRE_SMTP=1 but no python with aiosmtpd (scripts/test installs it)");
    }
    eprintln!("aiosmtpd not available: the email test is skipped");
    None
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate for 127.0.0.1 that it signed: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Gantry test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// aiosmtpd on 127.0.0.1: STARTTLS required, AUTH (LOGIN, PLAIN) required after it; each
/// message saved as a file in `out` with its envelope.
const SMTPD: &str = r#"
import email, email.policy, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, port, out, user, password = sys.argv[1:7]

class Saver:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        path = os.path.join(out, "%03d" % n)
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with open(path + ".tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "tls": session.ssl is not None, "auth": session.authenticated,
                       "subject": str(msg["subject"]), "to_header": str(msg["to"]),
                       "body": msg.get_body(("plain",)).get_content()}, f)
        os.rename(path + ".tmp", path + ".json")
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
          and auth_data.password == password.encode())
    return AuthResult(success=ok, handled=False)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Saver(), hostname="127.0.0.1", port=int(port), tls_context=ctx,
               require_starttls=True, authenticator=authenticate, auth_required=True,
               auth_require_tls=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

struct Smtpd(Child);

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_smtpd(py: &str, dir: &Path, cert: &Path, key: &Path, out: &Path) -> (Smtpd, u16) {
    std::fs::write(dir.join("smtpd.py"), SMTPD).unwrap();
    let port = free_port();
    let mut child = Command::new(py)
        .arg(dir.join("smtpd.py"))
        .arg(cert)
        .arg(key)
        .arg(port.to_string())
        .arg(out)
        .args(["gantry", "smtp-password-123"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("aiosmtpd starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    (Smtpd(child), port)
}

/// The messages aiosmtpd received.
fn received(out: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn a_failed_pipeline_is_emailed_over_starttls_with_auth() {
    let Some(py) = smtp_python() else { return };
    for db in backends("notify_email") {
        let name = db.name();
        let tmp = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificates(tmp.path());
        let out = tmp.path().join("received");
        std::fs::create_dir(&out).unwrap();
        let (_smtpd, port) = start_smtpd(&py, tmp.path(), &cert, &key, &out);
        let password_file = tmp.path().join("smtp-password");
        std::fs::write(&password_file, "smtp-password-123\n").unwrap();

        let repo = Project::new(PIPELINE);
        let mut opts = Options::new(&db);
        opts.server_args = [
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &port.to_string(),
            "--smtp-tls",
            "starttls",
            "--smtp-username",
            "gantry",
            "--smtp-from",
            "Gantry CI <ci@gantry.test>",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--smtp-password-file".to_string(),
            password_file.display().to_string(),
            "--smtp-ca-file".to_string(),
            ca.display().to_string(),
        ])
        .collect();
        let s = Server::start(opts);
        let project = s.project("team/app", repo.path());
        add_channel(
            &s,
            project,
            json!({"kind": "email", "recipients": ["dev@example.com", "ops@example.com"],
                   "events": ["failed"]}),
        );
        let p = run(&s, project, true);
        assert_eq!(p["status"], "failed", "{name}");
        wait_sent(&s, project, 1);

        let msgs = received(&out);
        assert_eq!(msgs.len(), 1, "{name}: {msgs:#?}");
        let m = &msgs[0];
        assert_eq!(m["tls"], true, "{name}: sent without STARTTLS");
        assert_eq!(m["from"], "ci@gantry.test", "{name}");
        assert_eq!(
            m["to"],
            json!(["dev@example.com", "ops@example.com"]),
            "{name}"
        );
        assert_eq!(m["auth"], true, "{name}: sent without AUTH");
        let test_job = p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "test")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        assert_eq!(m["to_header"], "dev@example.com, ops@example.com", "{name}");
        let subject = m["subject"].as_str().unwrap();
        assert!(
            subject.contains(&format!("team/app: pipeline #{} failed on main", id(&p))),
            "{name}: {subject}"
        );
        let body = m["body"].as_str().unwrap();
        assert!(
            body.contains(&format!(
                "- test (stage test): {}/team/app/-/jobs/{test_job}",
                s.url
            )),
            "{name}: the failed job and its link: {body}"
        );
        assert!(
            body.contains(&format!(
                "Pipeline: {}/team/app/-/pipelines/{}",
                s.url,
                id(&p)
            )),
            "{name}: {body}"
        );
        // The password is never in the server's output.
        assert!(!s.stderr_text().contains("smtp-password-123"), "{name}");
    }
}
