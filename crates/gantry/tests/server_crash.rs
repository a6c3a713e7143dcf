//! Survival: `kill -9` of the server and of an agent mid-pipeline, and a full disk, with a
//! real `gantry server` and real `gantry agent`s, on SQLite and on PostgreSQL.

mod common;

use common::Project;
use common::server::{Agent, Options, Server, attempts, backends, id, job, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// The numbers of the log's lines that are exactly `{word} N`, in log order.
fn numbered(log: &str, word: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix(word)?
                .strip_prefix(' ')
        })
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Touches `stop` when dropped, so that job processes left behind by a killed server or
/// agent (they wait for it) end even when the test fails.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// `retry` on runner_system_failure; an attempt that finds its marker succeeds at once,
/// the first one leaves the marker and waits (up to 30 s) for `$SHARED/stop`.
const WAITER: &str = r#"    - 'if [ -e $SHARED/$CI_JOB_NAME.ran ]; then echo "$CI_JOB_NAME: again"; exit 0; fi'
    - touch $SHARED/$CI_JOB_NAME.ran
    - for i in $(seq 1 600); do [ -e $SHARED/stop ] && break; sleep 0.05; done
  retry:
    max: 1
    when: [runner_system_failure]
"#;

// ---- kill -9 of the server ------------------------------------------------------------------

#[test]
fn a_killed_server_restarts_remote_jobs_resume_and_local_ones_retry() {
    let yml = format!(
        "remote:\n  tags: [remote]\n  script:\n    - for i in $(seq 1 $LINES); do echo \"line $i\"; sleep 0.04; done\n\
         short:\n  tags: [remote]\n  script:\n    - for i in $(seq 1 300); do [ -e $SHARED/go ] && break; sleep 0.05; done\n    \
         - for i in $(seq 1 20); do echo \"short $i\"; done\n    - touch $SHARED/short.done\n\
         local:\n  script:\n    - 'echo \"local: started\"'\n{WAITER}"
    );
    for db in backends("crash_server") {
        let name = db.name();
        let repo = Project::new(&yml);
        let mut s = Server::start(Options::new(&db));
        let remote = Agent::start(
            &s,
            &["--tags", "remote", "--name", "remote", "--concurrency", "2"],
        );
        s.wait_agents(2);
        let project = s.project("team/crash", repo.path());

        // A pipeline that finishes before the crash: it and its logs must survive it.
        let dir1 = repo.out().join("one");
        std::fs::create_dir_all(&dir1).unwrap();
        std::fs::write(dir1.join("local.ran"), "").unwrap();
        std::fs::write(dir1.join("go"), "").unwrap();
        let vars1 = [("SHARED", dir1.to_str().unwrap()), ("LINES", "3")];
        let p1 = s.pipeline_vars(project, "main", &vars1);
        let p1 = s.wait_pipeline(id(&p1), T);
        assert_eq!(p1["status"], "success", "{name}: {p1:#}");
        let logs1: Vec<(i64, String)> = p1["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (id(j), s.log(id(j))))
            .collect();
        assert_eq!(numbered(&logs1[0].1, "line"), [1, 2, 3], "{name}");

        // The crash: the remote job has printed some of its lines, `short` (remote too) and
        // the local one wait.
        let dir2 = repo.out().join("two");
        std::fs::create_dir_all(&dir2).unwrap();
        let _stop = Stop(dir2.join("stop"));
        let lines = 150;
        let vars2 = [
            ("SHARED", dir2.to_str().unwrap()),
            ("LINES", &lines.to_string()),
        ];
        let p2 = id(&s.pipeline_vars(project, "main", &vars2));
        let r = s.wait_job(p2, "remote", "running", T);
        wait_for(T, "30 lines of the remote job", || {
            (numbered(&s.log(id(&r)), "line").len() >= 30).then_some(())
        });
        wait_for(T, "the local job to start", || {
            dir2.join("local.ran").exists().then_some(())
        });
        s.wait_job(p2, "short", "running", T);
        let before = s.get_pipeline(p2);
        assert_eq!(job(&before, "local")["status"], "running", "{name}");
        s.kill9();
        // While the server is away, `remote` goes on printing and `short` prints and ends:
        // their agent keeps the bytes and the result.
        std::fs::write(dir2.join("go"), "").unwrap();
        wait_for(T, "the short job to end", || {
            dir2.join("short.done").exists().then_some(())
        });
        std::thread::sleep(Duration::from_millis(300));
        s.restart();

        let p = s.wait_pipeline(p2, T);
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        let remote_job = job(&p, "remote");
        assert_eq!(
            attempts(&p, "remote").len(),
            1,
            "{name}: the remote job ran once, across the restart: {p:#}"
        );
        assert_eq!(remote_job["status"], "success", "{name}");
        let log = s.log(id(&remote_job));
        let expected: Vec<u32> = (1..=lines).collect();
        assert_eq!(
            numbered(&log, "line"),
            expected,
            "{name}: every line of the remote job once, in order:\n{log}"
        );
        assert_eq!(
            remote_job["log_size"].as_u64(),
            Some(log.len() as u64),
            "{name}"
        );

        let short = job(&p, "short");
        assert_eq!(short["status"], "success", "{name}: {short:#}");
        assert_eq!(short["attempt"], 1, "{name}");
        let expected: Vec<u32> = (1..=20).collect();
        assert_eq!(
            numbered(&s.log(id(&short)), "short"),
            expected,
            "{name}: the log of a job that ended while the server was away"
        );

        let local = attempts(&p, "local");
        assert_eq!(local.len(), 2, "{name}: {p:#}");
        assert_eq!(local[0]["status"], "failed", "{name}: {:#}", local[0]);
        assert_eq!(
            local[0]["failure_reason"], "runner_system_failure",
            "{name}: {:#}",
            local[0]
        );
        assert_eq!(local[0]["retried"], true, "{name}");
        let log0 = s.log(id(&local[0]));
        assert!(
            log0.contains("local: started") && log0.contains("system failure"),
            "{name}: the first attempt's log says why it failed:\n{log0}"
        );
        assert_eq!(local[1]["status"], "success", "{name}: {:#}", local[1]);
        assert!(s.log(id(&local[1])).contains("local: again"), "{name}");

        // Nothing stored before the crash is lost.
        let p1_after = s.get_pipeline(id(&p1));
        assert_eq!(p1_after, p1, "{name}: the earlier pipeline is as it was");
        for (job_id, text) in &logs1 {
            assert_eq!(&s.log(*job_id), text, "{name}: log of job {job_id}");
        }
        let list = s
            .api()
            .get(&format!("/api/v1/projects/{project}/pipelines"))
            .unwrap();
        let ids: Vec<i64> = list["items"].as_array().unwrap().iter().map(id).collect();
        assert!(
            ids.contains(&id(&p1)) && ids.contains(&p2),
            "{name}: {list:#}"
        );
        assert!(s.alive(), "{name}");
        drop(remote);
    }
}

// ---- kill -9 of an agent --------------------------------------------------------------------

#[test]
fn a_killed_agent_fails_its_job_within_the_lease_and_the_retry_runs_elsewhere() {
    let yml =
        format!("long:\n  tags: [remote]\n  script:\n    - 'echo \"long: started\"'\n{WAITER}");
    for db in backends("crash_agent") {
        let name = db.name();
        let repo = Project::new(&yml);
        let lease = 3;
        let mut opts = Options::new(&db);
        opts.lease_secs = lease;
        opts.heartbeat_secs = 1;
        let s = Server::start(opts);
        let mut a = Agent::start(&s, &["--tags", "remote", "--name", "doomed"]);
        s.wait_agents(2);
        let project = s.project("team/lease", repo.path());
        let dir = repo.out().to_path_buf();
        let _stop = Stop(dir.join("stop"));
        let p = id(&s.pipeline_vars(project, "main", &[("SHARED", dir.to_str().unwrap())]));
        let first = s.wait_job(p, "long", "running", T);
        wait_for(T, "the job to start", || {
            (dir.join("long.ran").exists() && s.log(id(&first)).contains("long: started"))
                .then_some(())
        });

        a.kill9();
        let killed = Instant::now();
        let failed = wait_for(T, "the first attempt to fail", || {
            let p = s.get_pipeline(p);
            let a = attempts(&p, "long").into_iter().next()?;
            (a["status"] == "failed").then_some(a)
        });
        let took = killed.elapsed();
        assert_eq!(
            failed["failure_reason"], "runner_system_failure",
            "{name}: {failed:#}"
        );
        assert!(
            took <= Duration::from_secs(lease) + Duration::from_millis(2500),
            "{name}: failed {took:?} after the kill; the lease is {lease} s"
        );
        assert!(
            took >= Duration::from_millis(1000),
            "{name}: failed {took:?} after the kill: the lease decides, not the connection"
        );
        let log = s.log(id(&failed));
        assert!(
            log.contains("long: started") && log.contains("lease expired"),
            "{name}: the log keeps what the agent sent and says why the job failed:\n{log}"
        );

        // The retry waits for an agent with the tag, then runs on the new one.
        let pending = s.wait_job(p, "long", "pending", T);
        assert_eq!(pending["attempt"], 2, "{name}: {pending:#}");
        let why = pending["waiting_reason"].as_str().unwrap_or_default();
        assert!(why.contains("remote"), "{name}: waiting reason: {why:?}");
        let _b = Agent::start(&s, &["--tags", "remote", "--name", "rescuer"]);
        let done = s.wait_pipeline(p, T);
        assert_eq!(done["status"], "success", "{name}: {done:#}");
        let second = job(&done, "long");
        assert_eq!(second["attempt"], 2, "{name}");
        assert_ne!(
            second["agent_id"], failed["agent_id"],
            "{name}: the retry ran on the new agent"
        );
        assert!(s.log(id(&second)).contains("long: again"), "{name}");
    }
}

// ---- a full disk ----------------------------------------------------------------------------

/// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("GANTRY_REQUIRE_TMPFS").as_deref() == Ok("1") {
                    panic!("GANTRY_REQUIRE_TMPFS=1 but mounting a tmpfs failed: {why}");
                }
                eprintln!("skipped: mounting a tmpfs failed (root is needed): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the file system of `path` with one file: chunks of decreasing size until no byte
/// more fits.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![b'x'; 1 << 16];
    for size in [1 << 16, 4096, 1] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
}

/// A pipeline of the disk test's project at `sha`, whose job prints `{word} N` lines.
fn run(
    s: &Server,
    project: i64,
    sha: &str,
    word: &str,
    lines: usize,
) -> Result<Value, common::server::HttpErr> {
    s.api().post(
        &format!("/api/v1/projects/{project}/pipelines"),
        json!({"ref": "main", "sha": sha, "variables": [
            {"key": "WORD", "value": word},
            {"key": "LINES", "value": lines.to_string()},
        ]}),
    )
}

#[test]
fn a_full_disk_fails_writes_clearly_and_the_store_stays_consistent() {
    let yml = "job:\n  script:\n    - for i in $(seq 1 $LINES); do echo \"$WORD $i\"; done\n";
    for db in backends("crash_disk") {
        let name = db.name();
        let Some(disk) = Tmpfs::mount("8m") else {
            return;
        };
        let repo = Project::new(yml);
        let mut opts = Options::new(&db);
        opts.data_in = Some(disk.path().to_path_buf());
        // The jobs run on an agent whose disk is not the full one: the server's writes are
        // what this is about.
        opts.local_agent = false;
        let mut s = Server::start(opts);
        let _agent = Agent::start(&s, &[]);
        s.wait_agents(1);
        let project = s.project("team/disk", repo.path());
        let sha = String::from_utf8(
            std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(["rev-parse", "HEAD"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let before = run(&s, project, &sha, "before", 50).unwrap();
        let before = s.wait_pipeline(id(&before), T);
        assert_eq!(before["status"], "success", "{name}: {before:#}");
        let before_job = id(&job(&before, "job"));
        let before_log = s.log(before_job);
        assert_eq!(numbered(&before_log, "before").len(), 50, "{name}");

        let filler = s.data.path().join("filler");
        let reserve = s.data.path().join("reserve");
        std::fs::write(&reserve, vec![b'r'; 96 << 10]).unwrap();
        fill(&filler);

        // While the disk is full: a JSON error (507 storage_full), or a pipeline whose job
        // cannot store its log yet.
        let during = run(&s, project, &sha, "during", 20_000);
        eprintln!("{name}: during: {during:?}");
        let during = match during {
            Err(e) => {
                assert_eq!(e.status, 507, "{name}: {e}");
                assert_eq!(e.body["code"], "storage_full", "{name}: {e}");
                let msg = e.body["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("disk is full") || msg.contains("no space left"),
                    "{name}: the message says the disk is full: {msg}"
                );
                None
            }
            Ok(p) => Some(id(&p)),
        };
        if matches!(db, common::server::Backend::Sqlite) {
            // Room for a small write, not for a big one: a pipeline whose row fits but
            // whose plan (a 1 MiB variable in its trigger) does not. (The write-ahead log
            // keeps its size after a checkpoint and is written over from its start: writes
            // smaller than it need no new disk space.)
            std::fs::remove_file(&reserve).unwrap();
            let big = "v".repeat(1 << 20);
            let r = s.api().post(
                &format!("/api/v1/projects/{project}/pipelines"),
                json!({"ref": "main", "sha": sha, "variables": [
                    {"key": "WORD", "value": "big"}, {"key": "LINES", "value": "1"},
                    {"key": "BIG", "value": big},
                ]}),
            );
            let e = r.expect_err("no room for the plan");
            assert_eq!(e.status, 507, "{name}: {e}");
            assert_eq!(e.body["code"], "storage_full", "{name}: {e}");
            // Nothing half-made: no pipeline, or a failed one that says why (besides the
            // one made while the disk was full, whose job waits for room: below).
            let list = s
                .api()
                .get(&format!("/api/v1/projects/{project}/pipelines"))
                .unwrap();
            for p in list["items"].as_array().unwrap() {
                // The pipeline made before (whose log waits for room) is checked below.
                if p["status"] != "success" && Some(id(p)) != during {
                    assert_eq!(p["status"], "failed", "{name}: {p:#}");
                    let errors = p["errors"].as_str().unwrap_or_default();
                    assert!(errors.contains("disk is full"), "{name}: {p:#}");
                }
            }
        }
        if let Some(p) = during {
            // The job's output cannot be stored: the job waits for its whole log (its
            // agent keeps the bytes) instead of ending with a hole in it.
            std::thread::sleep(Duration::from_secs(2));
            let p = s.get_pipeline(p);
            let j = job(&p, "job");
            assert_eq!(p["status"], "running", "{name}: {p:#}");
            let stored = numbered(&s.log(id(&j)), "during").len();
            assert!(
                stored < 20_000,
                "{name}: {stored} lines stored on a full disk"
            );
        }
        assert!(s.alive(), "{name}: the server survives a full disk");
        // Reads still work.
        assert_eq!(s.log(before_job), before_log, "{name}");
        assert_eq!(s.get_pipeline(id(&before)), before, "{name}");

        std::fs::remove_file(&filler).unwrap();
        if let Some(p) = during {
            let p = s.wait_pipeline(p, T);
            eprintln!("{name}: during pipeline: {p:#}");
            let j = job(&p, "job");
            let log = s.log(id(&j));
            if p["status"] == "success" {
                let expected: Vec<u32> = (1..=20_000).collect();
                assert_eq!(numbered(&log, "during"), expected, "{name}");
            } else {
                assert!(log.contains("space"), "{name}: a clear reason:\n{log}");
            }
        }
        let after = run(&s, project, &sha, "after", 50).unwrap();
        let after = s.wait_pipeline(id(&after), T);
        assert_eq!(after["status"], "success", "{name}: {after:#}");
        assert_eq!(
            numbered(&s.log(id(&job(&after, "job"))), "after").len(),
            50,
            "{name}"
        );
        assert_eq!(s.log(before_job), before_log, "{name}");
        // Nothing half-made stays behind: every pipeline is finished.
        let list = s
            .api()
            .get(&format!("/api/v1/projects/{project}/pipelines"))
            .unwrap();
        for p in list["items"].as_array().unwrap() {
            assert!(
                matches!(p["status"].as_str(), Some("success" | "failed")),
                "{name}: {list:#}"
            );
        }
        assert!(s.alive(), "{name}");
        drop(s);
        drop(disk);
    }
}
