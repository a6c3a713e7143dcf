//! Cron schedules at a running server, on SQLite and on PostgreSQL: the API (create, list,
//! change, refuse bad input without losing what is stored, delete), a schedule run now whose
//! job sees the schedule's ref, variables and description, the CLI, and a real firing on the
//! server's own clock. The clock-driven cases (the right minute, time zones, a restart after
//! missed runs, inactive schedules) are in crates/gantry-engine/tests/triggers.rs, on a
//! manual clock.

mod common;

use common::server::{Options, Server, backends, id, job, wait_for};
use common::{Project, git};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

const PIPELINE: &str = r#"show:
  script:
    - echo "source=$CI_PIPELINE_SOURCE ref=$CI_COMMIT_REF_NAME desc=$CI_PIPELINE_SCHEDULE_DESCRIPTION nightly=$NIGHTLY user=$GITLAB_USER_LOGIN"
"#;

/// A request with any method; the status and the JSON answer.
fn call(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", s.url);
    let auth = format!("Bearer {}", s.token);
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        ("POST", b) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("content-type", "application/json")
            .send(b.unwrap_or(Value::Null).to_string()),
        ("PUT", b) => agent
            .put(&url)
            .header("Authorization", &auth)
            .header("content-type", "application/json")
            .send(b.unwrap_or(Value::Null).to_string()),
        _ => unreachable!(),
    }
    .expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn repo() -> Project {
    let p = Project::new(PIPELINE);
    git(p.path(), &["branch", "release"]);
    p
}

#[test]
fn schedules_through_the_api_refuse_bad_input_and_run_now() {
    for db in backends("schedules") {
        let s = Server::start(Options::new(&db));
        let repo = repo();
        let project = s.project("team/app", repo.path());
        let base = "/api/v1/projects/team%2Fapp/schedules";

        // Bad input: 400 with what to do, and nothing stored.
        for (body, want) in [
            (
                json!({"description": "x", "cron": "0 3 * *"}),
                "write the standard 5, minute hour day-of-month month day-of-week",
            ),
            (
                json!({"description": "x", "cron": "0 3 * * 9"}),
                "day of week (0-7 or SUN-SAT)",
            ),
            (
                json!({"description": "x", "cron": "0 3 * * *", "time_zone": "Europe/Pariss"}),
                "time_zone 'Europe/Pariss' is not an IANA time zone name: use one like",
            ),
            (
                json!({"description": "x", "cron": "0 3 * * *", "ref": "nope"}),
                "ref 'nope' is neither a branch nor a tag of team/app",
            ),
        ] {
            let (status, v) = call(&s, "POST", base, Some(body.clone()));
            assert_eq!(status, 400, "{}: {body} → {v}", db.name());
            assert_eq!(v["code"], "bad_request");
            let msg = v["message"].as_str().unwrap();
            assert!(msg.contains(want), "{msg}");
        }
        let (status, v) = call(&s, "POST", base, Some(json!({"description": "x"})));
        assert_eq!(status, 400, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("not a valid ScheduleCreate") && msg.contains("cron"),
            "{msg}"
        );
        let (_, list) = call(&s, "GET", base, None);
        assert_eq!(list["items"], json!([]));

        // A schedule in Paris: 03:00 there.
        let (status, sch) = call(
            &s,
            "POST",
            base,
            Some(json!({"description": "nightly build", "cron": "0 3 * * *",
                "time_zone": "Europe/Paris", "ref": "release",
                "variables": [{"key": "NIGHTLY", "value": "yes"}]})),
        );
        assert_eq!(status, 201, "{sch}");
        let sid = id(&sch);
        assert_eq!(sch["project_id"], project);
        assert_eq!(sch["active"], true);
        assert!(sch["next_run_at"].as_i64().unwrap() > gantry_store_now());
        let iso = sch["next_run_at_iso"].as_str().unwrap();
        assert!(
            iso.contains("T03:00:00+01:00") || iso.contains("T03:00:00+02:00"),
            "{iso}"
        );
        let (_, list) = call(&s, "GET", base, None);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // A bad change is refused and loses nothing.
        let one = format!("{base}/{sid}");
        let (status, v) = call(
            &s,
            "PUT",
            &one,
            Some(json!({"cron": "every night", "description": "changed"})),
        );
        assert_eq!(status, 400, "{v}");
        let (_, same) = call(&s, "GET", &one, None);
        assert_eq!(same, sch, "unchanged after a refused update");

        // Switched off: no next run; on again: one from now.
        let (status, off) = call(&s, "PUT", &one, Some(json!({"active": false})));
        assert_eq!(status, 200, "{off}");
        assert!(off.get("next_run_at").is_none(), "{off}");
        let (_, on) = call(
            &s,
            "PUT",
            &one,
            Some(json!({"active": true, "cron": "30 4 * * *"})),
        );
        assert!(
            on["next_run_at_iso"]
                .as_str()
                .unwrap()
                .contains("T04:30:00")
        );

        // Run now: a job sees the source, the ref, the description and the variables.
        let (status, p) = call(&s, "POST", &format!("{one}/play"), None);
        assert_eq!(status, 201, "{p}");
        assert_eq!(p["source"], "schedule");
        assert_eq!(p["ref"], "release");
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "success", "{p:#}");
        let log = s.log(id(&job(&p, "show")));
        assert!(
            log.contains(
                "source=schedule ref=release desc=nightly build nightly=yes user=schedule"
            ),
            "{log}"
        );
        let (_, after) = call(&s, "GET", &one, None);
        assert_eq!(after["last_pipeline_id"], p["id"]);
        assert_eq!(
            after["next_run_at"], on["next_run_at"],
            "a play leaves the next run"
        );

        // The CLI lists it; a bad cron through the CLI says what to do.
        let cli = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--server", &s.url, "--token", &s.token]);
            repo.gantry(&all)
        };
        let r = cli(&["schedule", "list", "team/app"]);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout.contains("nightly build") && r.stdout.contains("Europe/Paris"),
            "{}",
            r.stdout
        );
        let r = cli(&[
            "schedule",
            "create",
            "team/app",
            "--cron",
            "0 3 * * * *",
            "--description",
            "x",
        ]);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("has 6 field(s)"), "{}", r.stderr);
        let r = cli(&["schedule", "play", "team/app", &sid.to_string()]);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("source schedule"), "{}", r.stdout);

        // Deleted: gone.
        let (status, _) = call(&s, "DELETE", &one, None);
        assert_eq!(status, 204);
        let (status, v) = call(&s, "GET", &one, None);
        assert_eq!(status, 404, "{v}");
    }
}

/// The server's own clock fires a schedule due every minute, once per minute.
#[test]
fn a_schedule_fires_on_the_servers_clock() {
    let dbs = backends("schedule_fires");
    // Both backends at once: each waits for the next minute.
    let runs: Vec<_> = dbs
        .into_iter()
        .map(|db| {
            std::thread::spawn(move || {
                let s = Server::start(Options::new(&db));
                let repo = repo();
                let project = s.project("team/app", repo.path());
                let (status, sch) = call(
                    &s,
                    "POST",
                    "/api/v1/projects/team%2Fapp/schedules",
                    Some(json!({"description": "every minute", "cron": "* * * * *",
                        "variables": [{"key": "NIGHTLY", "value": "minutely"}]})),
                );
                assert_eq!(status, 201, "{sch}");
                let due = sch["next_run_at"].as_i64().unwrap();
                let p = wait_for(Duration::from_secs(90), "a scheduled pipeline", || {
                    let list = s
                        .api()
                        .get(&format!("/api/v1/projects/{project}/pipelines"))
                        .ok()?;
                    list["items"].as_array()?.first().cloned()
                });
                assert!(
                    gantry_store_now() >= due,
                    "{}: not before its minute",
                    db.name()
                );
                assert_eq!(p["source"], "schedule");
                let p = s.wait_pipeline(id(&p), T);
                let log = s.log(id(&job(&p, "show")));
                assert!(log.contains("desc=every minute nightly=minutely"), "{log}");
                let (_, after) = call(
                    &s,
                    "GET",
                    &format!("/api/v1/projects/team%2Fapp/schedules/{}", id(&sch)),
                    None,
                );
                assert_eq!(after["next_run_at"].as_i64().unwrap(), due + 60_000);
                let list = s
                    .api()
                    .get(&format!("/api/v1/projects/{project}/pipelines"))
                    .unwrap();
                assert_eq!(list["items"].as_array().unwrap().len(), 1, "once");
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}

fn gantry_store_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
