//! Cron schedules and polling on a real engine with a manual clock: a schedule fires at its
//! minute and not before, in its time zone, once after a restart that missed several runs,
//! never while inactive, once when two engines share the database; bad input is refused and
//! stores nothing; a poll comes when its interval has passed on the same clock; a
//! replication rule's schedule queues one run per slot, which the worker retries. On SQLite always and on PostgreSQL when `GANTRY_TEST_POSTGRES_URL` is set
//! (`GANTRY_REQUIRE_POSTGRES=1` makes its absence a failure).
//!
//! Each engine lives in a runtime of its own: dropping the runtime stops it (its ticker and
//! tasks) as a stopped server would be, and a new one starts on the same database.

use gantry_api::rest::{self, Pipeline, ProjectCreate, ReplicationWrite};

use gantry_engine::engine::replication::{
    ReplicationConfig, ReplicationFailure, ReplicationReport, ReplicationTask, Replicator,
};
use gantry_engine::{Caller, Clock, Engine, EngineConfig, EngineError};
use gantry_pipeline::trigger::Trigger;
use gantry_store::blob::FsBlobStore;
use gantry_store::db::PageReq;
use gantry_store::db::replication::ReplicationCounts;
use gantry_store::logs::LogStore;
use gantry_store::secrets::ExposeSecret;
use gantry_store::{Db, Keyring};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 2026-03-02 00:00:00 UTC (a Monday), in ms.
const DAY0: i64 = 1_772_409_600_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .stdout(Stdio::null())
        .status()
        .expect("git runs");
    assert!(st.success(), "git {args:?}");
}

/// Everything a test's engines share: the data directory, the database, the repository.
struct Site {
    data: tempfile::TempDir,
    repo: tempfile::TempDir,
    db_url: String,
    backend: &'static str,
}

fn sites(test: &str) -> Vec<Site> {
    let mut urls = Vec::new();
    let sqlite_dir = tempfile::tempdir().unwrap();
    urls.push((
        format!("sqlite://{}", sqlite_dir.path().join("gantry.db").display()),
        "sqlite",
        Some(sqlite_dir),
    ));
    match std::env::var("GANTRY_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("gantry_eng_{test}_{}", std::process::id());
            for sql in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                let st = Command::new("psql")
                    .args([&base, "-q", "-c", &sql])
                    .stdout(Stdio::null())
                    .status()
                    .expect("psql runs");
                assert!(st.success(), "{sql}");
            }
            let (prefix, _) = base.rsplit_once('/').unwrap();
            urls.push((format!("{prefix}/{name}"), "postgres", None));
        }
        Err(_) if std::env::var("GANTRY_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("GANTRY_REQUIRE_POSTGRES=1 but GANTRY_TEST_POSTGRES_URL is not set")
        }
        Err(_) => eprintln!("PostgreSQL not available: SQLite only"),
    }
    urls.into_iter()
        .map(|(db_url, backend, keep)| {
            let data = keep.unwrap_or_else(|| tempfile::tempdir().unwrap());
            let repo = tempfile::tempdir().unwrap();
            git(repo.path(), &["init", "-q", "-b", "main"]);
            std::fs::write(
                repo.path().join(".gitlab-ci.yml"),
                "nightly:\n  script: [echo \"$CI_PIPELINE_SCHEDULE_DESCRIPTION\"]\n",
            )
            .unwrap();
            git(repo.path(), &["add", "-A"]);
            git(repo.path(), &["commit", "-q", "-m", "initial"]);
            git(repo.path(), &["branch", "release"]);
            Site {
                data,
                repo,
                db_url,
                backend,
            }
        })
        .collect()
}

/// An engine on `site` with `clock`, in its own runtime: drop both to stop it.
struct Running {
    rt: tokio::runtime::Runtime,
    engine: Engine,
}

impl Running {
    fn start(site: &Site, clock: &Clock) -> Running {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = site.data.path().join("engine");
        let engine = rt.block_on(async {
            std::fs::create_dir_all(&data).unwrap();
            let key = data.join("secrets.key");
            let keyring = if key.exists() {
                Keyring::load_file(&key).unwrap()
            } else {
                Keyring::create_file(&key).unwrap()
            };
            let db = Db::connect(&site.db_url).await.unwrap();
            let config = EngineConfig {
                data_dir: data.clone(),
                external_url: "http://127.0.0.1:1".into(),
                lease: Duration::from_secs(30),
                heartbeat: Duration::from_secs(1),
                keyring: Arc::new(keyring),
                secrets_key_file: None,
                clock: clock.clone(),
                audit_retention: Duration::from_secs(86_400),
                notify: Default::default(),
            };
            Engine::start(
                config,
                db,
                LogStore::open(data.join("logs")).unwrap(),
                Arc::new(FsBlobStore::open(data.join("blobs")).unwrap()),
                "admin-token",
                "registration-token",
            )
            .await
            .unwrap()
        });
        Running { rt, engine }
    }

    fn run<T>(&self, f: impl AsyncFnOnce(&Engine) -> T) -> T {
        self.rt.block_on(f(&self.engine))
    }

    fn stop(self) {
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }

    fn project(&self, site: &Site) -> i64 {
        let req: ProjectCreate = serde_json::from_value(json!({
            "path": "team/app",
            "git_url": site.repo.path().display().to_string(),
        }))
        .unwrap();
        self.run(async |e| e.create_project(req).await.unwrap()).id
    }

    fn schedule(
        &self,
        project: i64,
        body: serde_json::Value,
    ) -> Result<rest::Schedule, EngineError> {
        let req = serde_json::from_value(body).unwrap();
        self.run(async |e| e.create_schedule(&project.to_string(), req).await)
    }

    fn get_schedule(&self, project: i64, id: i64) -> rest::Schedule {
        self.run(async |e| e.schedule(&project.to_string(), id).await.unwrap())
    }

    fn pipelines(&self, project: i64) -> Vec<Pipeline> {
        self.run(async |e| {
            e.pipelines(Some(project), PageReq::new(None, Some(100)))
                .await
                .unwrap()
                .items
        })
    }

    fn trigger(&self, pipeline: i64) -> Trigger {
        let row = self.run(async |e| e.db().pipeline(pipeline).await.unwrap().unwrap());
        serde_json::from_str(&row.trigger_json).unwrap()
    }

    /// Waits until the project has `n` pipelines, then a second more to see that no other
    /// comes; returns them.
    fn expect_pipelines(&self, project: i64, n: usize) -> Vec<Pipeline> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pipelines(project).len() < n {
            assert!(Instant::now() < deadline, "waiting for {n} pipeline(s)");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Four ticks.
        std::thread::sleep(Duration::from_millis(1000));
        let all = self.pipelines(project);
        assert_eq!(all.len(), n, "exactly {n} pipeline(s): {all:#?}");
        all
    }
}

/// Lets the ticker look at the clock a few times.
fn ticks() {
    std::thread::sleep(Duration::from_millis(1000));
}

fn var<'a>(t: &'a Trigger, name: &str) -> Option<&'a str> {
    t.variables
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_schedule_fires_at_its_minute_not_before_and_once() {
    for site in sites("minute") {
        let clock = Clock::manual(DAY0 + 11 * HOUR + 50 * MIN);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let s = e
            .schedule(
                project,
                json!({"description": "nightly build", "cron": "0 12 * * *", "ref": "release",
                    "variables": [{"key": "NIGHTLY", "value": "1"}]}),
            )
            .unwrap();
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.next_run_at, Some(DAY0 + 12 * HOUR), "{}", site.backend);
        assert_eq!(s.next_run_at_iso.as_deref(), Some("2026-03-02T12:00:00Z"));

        clock.set_ms(DAY0 + 11 * HOUR + 59 * MIN + 30_000);
        ticks();
        assert!(e.pipelines(project).is_empty(), "nothing at 11:59:30");

        clock.set_ms(DAY0 + 12 * HOUR + 5_000);
        let ps = e.expect_pipelines(project, 1);
        let p = &ps[0];
        assert_eq!(p.source, "schedule");
        assert_eq!(p.git_ref, "release");
        let t = e.trigger(p.id);
        assert_eq!(var(&t, "NIGHTLY"), Some("1"));
        // The description is the pipeline's own (predefined), not a variable of it.
        assert_eq!(
            t.context.schedule_description.as_deref(),
            Some("nightly build")
        );
        assert_eq!(var(&t, "CI_PIPELINE_SCHEDULE_DESCRIPTION"), None);
        assert_eq!(t.user.login, "schedule");

        let s = e.get_schedule(project, s.id);
        assert_eq!(s.last_pipeline_id, Some(p.id));
        assert_eq!(s.next_run_at, Some(DAY0 + DAY + 12 * HOUR), "tomorrow's");
        assert_eq!(s.last_error, None);
        e.stop();
    }
}

#[test]
fn the_time_zone_decides_the_minute() {
    for site in sites("zone") {
        // 09:00 in Paris is 08:00 UTC in March (CET, UTC+1), 13:00 UTC in New York (EST).
        let clock = Clock::manual(DAY0 + 7 * HOUR);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let paris = e
            .schedule(
                project,
                json!({"description": "paris", "cron": "0 9 * * 1-5", "time_zone": "Europe/Paris"}),
            )
            .unwrap();
        assert_eq!(paris.next_run_at, Some(DAY0 + 8 * HOUR), "{}", site.backend);
        assert_eq!(
            paris.next_run_at_iso.as_deref(),
            Some("2026-03-02T09:00:00+01:00")
        );
        let ny = e
            .schedule(
                project,
                json!({"description": "ny", "cron": "0 9 * * 1-5", "time_zone": "America/New_York"}),
            )
            .unwrap();
        assert_eq!(ny.next_run_at, Some(DAY0 + 14 * HOUR));

        // 09:00 UTC would be the minute without the zone: past it, only Paris fired.
        clock.set_ms(DAY0 + 8 * HOUR + MIN);
        let ps = e.expect_pipelines(project, 1);
        assert_eq!(
            e.trigger(ps[0].id).context.schedule_description.unwrap(),
            "paris"
        );
        clock.set_ms(DAY0 + 13 * HOUR + 59 * MIN);
        ticks();
        assert_eq!(e.pipelines(project).len(), 1, "New York's 09:00 is not yet");
        clock.set_ms(DAY0 + 14 * HOUR + 1_000);
        let ps = e.expect_pipelines(project, 2);
        assert_eq!(
            e.trigger(ps[0].id).context.schedule_description.unwrap(),
            "ny"
        );
        e.stop();
    }
}

#[test]
fn runs_missed_while_stopped_fire_once_after_a_restart() {
    for site in sites("missed") {
        let clock = Clock::manual(DAY0 + 11 * HOUR);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let s = e
            .schedule(
                project,
                json!({"description": "daily", "cron": "0 12 * * *"}),
            )
            .unwrap();
        e.stop();

        // Three days and a few hours later: four slots were missed.
        clock.set_ms(DAY0 + 3 * DAY + 15 * HOUR);
        let e = Running::start(&site, &clock);
        let ps = e.expect_pipelines(project, 1);
        assert_eq!(ps[0].source, "schedule", "{}", site.backend);
        let s = e.get_schedule(project, s.id);
        let next = s.next_run_at.unwrap();
        assert!(next > clock.now_ms(), "the next run is in the future");
        assert_eq!(next, DAY0 + 4 * DAY + 12 * HOUR);
        e.stop();
    }
}

#[test]
fn an_inactive_schedule_does_not_fire_and_reactivating_starts_from_now() {
    for site in sites("inactive") {
        let clock = Clock::manual(DAY0 + 11 * HOUR);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let s = e
            .schedule(
                project,
                json!({"description": "off", "cron": "0 12 * * *", "active": false}),
            )
            .unwrap();
        assert_eq!(s.next_run_at, None);
        clock.set_ms(DAY0 + 12 * HOUR + 30_000);
        ticks();
        assert!(e.pipelines(project).is_empty(), "{}", site.backend);

        // Switched off after it was due: still nothing.
        let on = e
            .schedule(project, json!({"description": "on", "cron": "0 13 * * *"}))
            .unwrap();
        let upd = serde_json::from_value(json!({"active": false})).unwrap();
        e.run(async |e| {
            e.update_schedule(&project.to_string(), on.id, upd)
                .await
                .unwrap()
        });
        clock.set_ms(DAY0 + 13 * HOUR + 30_000);
        ticks();
        assert!(e.pipelines(project).is_empty());

        // Reactivated at 13:00:30: the next run is tomorrow's, today's is not made up.
        let upd = serde_json::from_value(json!({"active": true})).unwrap();
        let s = e.run(async |e| {
            e.update_schedule(&project.to_string(), s.id, upd)
                .await
                .unwrap()
        });
        assert_eq!(s.next_run_at, Some(DAY0 + DAY + 12 * HOUR));
        ticks();
        assert!(e.pipelines(project).is_empty());
        e.stop();
    }
}

#[test]
fn two_engines_on_one_database_fire_a_slot_once() {
    for site in sites("two") {
        let clock = Clock::manual(DAY0 + 11 * HOUR);
        let a = Running::start(&site, &clock);
        let project = a.project(&site);
        a.schedule(project, json!({"description": "once", "cron": "* * * * *"}))
            .unwrap();
        let b = Running::start(&site, &clock);
        clock.set_ms(DAY0 + 11 * HOUR + MIN + 1);
        a.expect_pipelines(project, 1);
        assert_eq!(b.pipelines(project).len(), 1, "{}", site.backend);
        a.stop();
        b.stop();
    }
}

#[test]
fn bad_input_is_refused_with_what_to_do_and_stores_nothing() {
    for site in sites("bad") {
        let clock = Clock::manual(DAY0);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let cases = [
            (
                json!({"description": "x", "cron": "0 12 * *"}),
                "has 4 field(s)",
            ),
            (
                json!({"description": "x", "cron": "61 12 * * *"}),
                "minute (0-59)",
            ),
            (
                json!({"description": "x", "cron": "0 0 31 2 *"}),
                "never matches",
            ),
            (
                json!({"description": "x", "cron": "0 12 * * *", "time_zone": "Mars/Olympus"}),
                "not an IANA time zone",
            ),
            (
                json!({"description": "x", "cron": "0 12 * * *", "ref": "nope"}),
                "neither a branch nor a tag of team/app",
            ),
            (
                json!({"description": " ", "cron": "0 12 * * *"}),
                "description is empty",
            ),
            (
                json!({"description": "x", "cron": "0 12 * * *", "variables": [{"key": "A-B", "value": "1"}]}),
                "variable name 'A-B'",
            ),
        ];
        for (body, want) in cases {
            let err = e.schedule(project, body.clone()).unwrap_err();
            assert!(
                matches!(err, EngineError::BadRequest(_)) && err.to_string().contains(want),
                "{body}: {err}"
            );
        }
        let listed = e.run(async |e| {
            e.schedules(&project.to_string(), PageReq::new(None, None))
                .await
                .unwrap()
        });
        assert!(listed.items.is_empty(), "{}", site.backend);

        // A bad change leaves the stored schedule as it was.
        let s = e
            .schedule(
                project,
                json!({"description": "keep", "cron": "0 12 * * *"}),
            )
            .unwrap();
        let upd =
            serde_json::from_value(json!({"cron": "0 25 * * *", "description": "lost"})).unwrap();
        let err = e
            .run(async |e| e.update_schedule(&project.to_string(), s.id, upd).await)
            .unwrap_err();
        assert!(err.to_string().contains("hour (0-23)"), "{err}");
        assert_eq!(e.get_schedule(project, s.id), s);
        e.stop();
    }
}

#[test]
fn polls_come_by_the_same_clock() {
    for site in sites("poll") {
        let clock = Clock::manual(DAY0);
        let e = Running::start(&site, &clock);
        let project = e.project(&site);
        let polling = |e: &Running| e.run(async |e| e.polling(&project.to_string()).await.unwrap());
        let p = e.run(async |e| {
            e.set_polling(&project.to_string(), Some(3600))
                .await
                .unwrap()
        });
        assert_eq!(p.interval_secs, Some(3600));
        // The first poll is due at once and records the heads (main, release) only.
        let deadline = Instant::now() + Duration::from_secs(30);
        while polling(&e).refs_seen != 2 {
            assert!(Instant::now() < deadline, "the first poll");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(polling(&e).next_poll_at, Some(DAY0 + HOUR));
        assert!(e.pipelines(project).is_empty(), "{}", site.backend);

        std::fs::write(site.repo.path().join("new.txt"), "new").unwrap();
        git(site.repo.path(), &["add", "-A"]);
        git(site.repo.path(), &["commit", "-q", "-m", "new"]);
        clock.set_ms(DAY0 + 59 * MIN);
        ticks();
        assert!(e.pipelines(project).is_empty(), "not before the hour");
        clock.set_ms(DAY0 + HOUR + 1);
        let ps = e.expect_pipelines(project, 1);
        assert_eq!(
            (ps[0].source.as_str(), ps[0].git_ref.as_str()),
            ("push", "main")
        );
        assert_eq!(e.trigger(ps[0].id).user.login, "polling");
        e.stop();
    }
}

/// A replicator that records its tasks, fails the first one for a reason that may pass, and
/// succeeds afterwards.
#[derive(Default)]
struct FakeReplicator {
    tasks: std::sync::Mutex<Vec<ReplicationTask>>,
}

impl Replicator for FakeReplicator {
    fn check_filters(&self, repositories: &str, _tags: &str) -> Result<(), String> {
        (repositories != "[").then_some(()).ok_or("bad glob".into())
    }

    fn matches(&self, _: &str, _: &str, _: &str, _: &str) -> bool {
        true
    }

    fn replicate(
        &self,
        task: ReplicationTask,
    ) -> std::pin::Pin<Box<dyn Future<Output = ReplicationReport> + Send + 'static>> {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.push(task);
        let first = tasks.len() == 1;
        Box::pin(async move {
            ReplicationReport {
                counts: ReplicationCounts {
                    images_copied: i64::from(!first),
                    ..Default::default()
                },
                failure: first.then(|| ReplicationFailure {
                    message: "peer.example.com cannot be reached".into(),
                    retry: true,
                }),
            }
        })
    }
}

#[test]
fn a_replication_schedule_fires_once_at_its_minute_and_its_run_is_retried() {
    for site in sites("replication") {
        // 01:00 in Paris (UTC+1 in early March).
        let clock = Clock::manual(DAY0);
        let e = Running::start(&site, &clock);
        e.project(&site);
        let fake = Arc::new(FakeReplicator::default());
        let config = ReplicationConfig {
            retry_base: Duration::from_millis(50),
            ..Default::default()
        };
        let f = fake.clone();
        e.run(async |e| e.start_replication(f, config));
        let req =
            |body: serde_json::Value| -> ReplicationWrite { serde_json::from_value(body).unwrap() };
        let bad = e.run(async |e| {
            e.create_replication(
                "team/app",
                req(json!({"name": "x", "url": "h", "repositories": "["})),
                &Caller::Admin,
            )
            .await
        });
        assert!(
            bad.unwrap_err().to_string().contains("bad glob"),
            "{}",
            site.backend
        );
        let rule = e.run(async |e| {
            e.create_replication(
                "team/app",
                req(
                    json!({"name": "nightly", "url": "peer.example.com", "username": "u",
                    "password": "pw-1", "schedule": "0 3 * * *", "time_zone": "Europe/Paris"}),
                ),
                &Caller::Admin,
            )
            .await
            .unwrap()
        });
        assert_eq!(rule.next_run_at, Some(DAY0 + 2 * HOUR), "{}", site.backend);
        assert_eq!(rule.url, "https://peer.example.com");
        let runs = || {
            e.run(async |e| {
                e.replication_runs("team/app", rule.id, PageReq::new(None, None))
                    .await
                    .unwrap()
                    .items
            })
        };

        clock.set_ms(DAY0 + 2 * HOUR - 30_000);
        ticks();
        assert!(runs().is_empty(), "{}: nothing at 02:59:30", site.backend);

        clock.set_ms(DAY0 + 2 * HOUR + 5_000);
        let deadline = Instant::now() + Duration::from_secs(30);
        let run = loop {
            let r = runs();
            if let Some(done) = r.iter().find(|r| r.status == "succeeded") {
                break done.clone();
            }
            assert!(Instant::now() < deadline, "{}: {r:#?}", site.backend);
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            (
                run.triggered_by.as_str(),
                run.actor.as_str(),
                run.attempts,
                run.images_copied
            ),
            ("schedule", "schedule", 2, 1),
            "{}: {run:?}",
            site.backend
        );
        ticks();
        assert_eq!(runs().len(), 1, "{}: once per slot", site.backend);
        let after = e.run(async |e| e.replication("team/app", rule.id).await.unwrap());
        assert_eq!(
            after.next_run_at,
            Some(DAY0 + DAY + 2 * HOUR),
            "{}",
            site.backend
        );
        let tasks = fake.tasks.lock().unwrap();
        assert_eq!(tasks.len(), 2);
        let t = &tasks[1];
        assert_eq!(
            (t.url.as_str(), t.username.as_str(), t.image.as_ref()),
            ("https://peer.example.com", "u", None)
        );
        assert_eq!(
            t.password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .as_deref(),
            Some("pw-1"),
            "the password opened for the run"
        );
        drop(tasks);
        e.stop();
    }
}
