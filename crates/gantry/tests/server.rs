//! `gantry server` with real agents and real git repositories, driven through its API, on
//! SQLite and on PostgreSQL.

mod common;

use common::server::{
    Agent, Api, Options, Server, attempts, backends, id, job, job_named, wait_for,
};
use common::{Project, git};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

#[test]
fn a_pipeline_runs_its_stages_with_artifacts_dotenv_and_a_manual_job() {
    for db in backends("basic") {
        let repo = Project::new(
            "stages: [build, test, deploy]\n\
             build:\n  stage: build\n  script:\n    - echo building $CI_COMMIT_SHORT_SHA\n    - mkdir -p out && echo artifact > out/a.txt\n    - echo VERSION=1.2 > build.env\n  \
             artifacts:\n    paths: [out/]\n    reports: {dotenv: build.env}\n\
             test:\n  stage: test\n  script: [cat out/a.txt, 'echo version $VERSION']\n\
             deploy:\n  stage: deploy\n  script: [echo deploying by $GITLAB_USER_LOGIN]\n  when: manual\n  allow_failure: false\n",
        );
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let p = s.pipeline(project, "main");
        let id = p["id"].as_i64().unwrap();
        let test = s.wait_job(id, "test", "success", T);
        let log = s.log(test["id"].as_i64().unwrap());
        assert!(
            log.contains("artifact") && log.contains("version 1.2"),
            "{}: {log}",
            db.name()
        );
        let deploy = s.wait_job(id, "deploy", "manual", T);
        // A blocking manual job holds the pipeline (its status follows the job's within
        // the same scheduling step, a moment later).
        s.wait_pipeline_status(id, "manual", Duration::from_secs(5));
        let played = s
            .api()
            .post(
                &format!("/api/v1/jobs/{}/play", deploy["id"]),
                json!({"user": "alice"}),
            )
            .unwrap();
        assert_eq!(played["played_by"], "alice");
        let p = s.wait_pipeline(id, T);
        assert_eq!(p["status"], "success", "{}: {p:#}", db.name());
        let deploy = job_named(&p, "deploy").unwrap();
        assert_eq!(deploy["played_by"], "alice");
    }
}

// ---- helpers ----------------------------------------------------------------------------

fn head(repo: &Project) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The directory jobs share with the test, as a pipeline variable.
fn shared(repo: &Project) -> String {
    repo.out().display().to_string()
}

fn wait_file(path: &Path) {
    wait_for(Duration::from_secs(30), &path.display().to_string(), || {
        path.exists().then_some(())
    });
}

fn read_ns(path: &Path) -> u128 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

// ---- stage order, needs, when, allow_failure -------------------------------------------------

const STAGES_YML: &str = r#"stages: [build, test, deploy]
quick:
  stage: build
  script: [touch $SHARED/quick.done]
slow:
  stage: build
  script:
    - for i in $(seq 1 200); do [ -e $SHARED/needer.started ] && break; sleep 0.05; done
    - if [ -e $SHARED/needer.started ]; then touch $SHARED/slow.saw_needer; fi
    - touch $SHARED/slow.done
needer:
  stage: test
  needs: [quick]
  script: [touch $SHARED/needer.started]
ordered:
  stage: test
  script:
    - test -e $SHARED/slow.done
    - touch $SHARED/ordered.ok
maybe:
  stage: test
  script: [test "$FAIL" != 1]
allowed:
  stage: test
  script: [exit 3]
  allow_failure: true
deploy:
  stage: deploy
  script: [echo deploying]
on_fail:
  stage: deploy
  script: [echo cleaning up]
  when: on_failure
always:
  stage: deploy
  script: [touch $SHARED/always.ran]
  when: always
"#;

#[test]
fn stages_needs_when_and_allow_failure() {
    for db in backends("stages") {
        let repo = Project::new(STAGES_YML);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/stages", repo.path());

        // A green run: `needer` starts while `slow` (its stage's neighbour) still runs.
        let dir1 = repo.out().join("one");
        std::fs::create_dir_all(&dir1).unwrap();
        let p = s.pipeline_vars(project, "main", &[("SHARED", &dir1.display().to_string())]);
        let p = s.wait_pipeline(id(&p), T);
        let name = db.name();
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert!(
            dir1.join("slow.saw_needer").exists(),
            "{name}: a job with needs started before the slow job of the earlier stage ended"
        );
        let (needer, slow) = (job(&p, "needer"), job(&p, "slow"));
        assert!(
            needer["started_at"].as_i64() < slow["finished_at"].as_i64(),
            "{name}: {needer:#} {slow:#}"
        );
        assert!(
            dir1.join("ordered.ok").exists(),
            "{name}: a job without needs waited for its whole earlier stage"
        );
        let ordered = job(&p, "ordered");
        assert!(ordered["started_at"].as_i64() >= slow["finished_at"].as_i64());
        let allowed = job(&p, "allowed");
        assert_eq!(allowed["status"], "failed", "{name}");
        assert_eq!(allowed["allow_failure"], true, "{name}");
        assert_eq!(allowed["exit_code"], 3, "{name}");
        assert_eq!(job(&p, "deploy")["status"], "success", "{name}");
        assert_eq!(
            job(&p, "on_fail")["status"],
            "skipped",
            "{name}: an allowed failure is no failure"
        );
        assert_eq!(job(&p, "always")["status"], "success", "{name}");

        // A red run: on_failure and always run, on_success is skipped.
        let dir2 = repo.out().join("two");
        std::fs::create_dir_all(&dir2).unwrap();
        let p = s.pipeline_vars(
            project,
            "main",
            &[("SHARED", &dir2.display().to_string()), ("FAIL", "1")],
        );
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "failed", "{name}: {p:#}");
        assert_eq!(job(&p, "maybe")["status"], "failed", "{name}");
        assert_eq!(job(&p, "maybe")["failure_reason"], "script_failure");
        assert_eq!(job(&p, "deploy")["status"], "skipped", "{name}");
        assert_eq!(job(&p, "on_fail")["status"], "success", "{name}");
        assert_eq!(job(&p, "always")["status"], "success", "{name}");
        assert!(dir2.join("always.ran").exists());
    }
}

// ---- pipeline files with problems ------------------------------------------------------------

#[test]
fn broken_pipeline_files_and_unknown_refs_fail_clearly() {
    for db in backends("errors") {
        let name = db.name();
        let repo = Project::new("job:\n  script: [echo\n");
        let broken_yaml = head(&repo);
        repo.write(".gitlab-ci.yml", "job:\n  script: [echo]\n  scriptt: x\n");
        repo.commit("unknown key");
        let unknown_key = head(&repo);
        repo.write(".gitlab-ci.yml", "job:\n  script: [echo fine]\n");
        repo.commit("fixed");
        let bare = Project::with_files(&[("README.md", "no pipeline here\n")]);

        let s = Server::start(Options::new(&db));
        let project = s.project("team/errors", repo.path());
        for (sha, needles) in [
            (&broken_yaml, &[".gitlab-ci.yml:3", "YAML syntax error"][..]),
            (
                &unknown_key,
                &[
                    ".gitlab-ci.yml:3:3",
                    "unknown key 'scriptt'",
                    "did you mean 'script'",
                ][..],
            ),
        ] {
            let p = s.pipeline_with(project, json!({"ref": "main", "sha": sha}));
            assert_eq!(p["status"], "failed", "{name}: {p:#}");
            assert_eq!(p["sha"], *sha);
            let errors = p["errors"].as_str().unwrap_or_default();
            for n in needles {
                assert!(errors.contains(n), "{name}: '{n}' not in:\n{errors}");
            }
            let again = s.get_pipeline(id(&p));
            assert_eq!(again["status"], "failed");
            assert_eq!(again["jobs"], json!([]), "{name}: no jobs");
        }

        let other = s.project("team/bare", bare.path());
        let p = s.pipeline(other, "main");
        assert_eq!(p["status"], "failed", "{name}: {p:#}");
        let errors = p["errors"].as_str().unwrap_or_default();
        assert!(
            errors.contains("no pipeline file") && errors.contains(".gitlab-ci.yml"),
            "{name}: {errors}"
        );

        let e = s
            .api()
            .post(
                &format!("/api/v1/projects/{project}/pipelines"),
                json!({"ref": "no-such-branch"}),
            )
            .unwrap_err();
        assert_eq!(e.status, 400, "{name}: {e}");
        assert_eq!(e.body["code"], "bad_request", "{name}: {e}");
        assert!(
            e.body["message"]
                .as_str()
                .unwrap()
                .contains("no-such-branch"),
            "{name}: {e}"
        );

        // The server is still fine: the fixed commit runs.
        let p = s.pipeline(project, "main");
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert!(s.log(id(&job(&p, "job"))).contains("fine"));
    }
}

// ---- includes --------------------------------------------------------------------------------

#[test]
fn includes_are_read_at_the_pipeline_commit_and_from_other_projects() {
    for db in backends("includes") {
        let name = db.name();
        let templates = Project::with_files(&[(
            "templates/t.yml",
            "from_template:\n  script: [echo FROM-TEMPLATE]\n",
        )]);
        let repo = Project::with_files(&[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: inc.yml\n  - project: shared/templates\n    file: templates/t.yml\n",
            ),
            ("inc.yml", "inc_job:\n  script: [echo VERSION-ONE]\n"),
        ]);
        let first = head(&repo);
        let s = Server::start(Options::new(&db));
        s.project("shared/templates", templates.path());
        let project = s.project("team/app", repo.path());

        let p1 = s.pipeline(project, "main");
        let p1 = s.wait_pipeline(id(&p1), T);
        assert_eq!(p1["status"], "success", "{name}: {p1:#}");
        assert!(s.log(id(&job(&p1, "inc_job"))).contains("\nVERSION-ONE"));
        assert!(
            s.log(id(&job(&p1, "from_template")))
                .contains("\nFROM-TEMPLATE")
        );

        repo.write("inc.yml", "inc_job:\n  script: [echo VERSION-TWO]\n");
        repo.commit("change the include");
        let p2 = s.pipeline(project, "main");
        let p2 = s.wait_pipeline(id(&p2), T);
        assert_ne!(p2["sha"], p1["sha"]);
        assert!(s.log(id(&job(&p2, "inc_job"))).contains("\nVERSION-TWO"));

        // A pipeline for the older commit still sees the older include.
        let p3 = s.pipeline_with(project, json!({"ref": "main", "sha": first}));
        let p3 = s.wait_pipeline(id(&p3), T);
        assert_eq!(p3["sha"], first.as_str());
        let log = s.log(id(&job(&p3, "inc_job")));
        assert!(
            log.contains("\nVERSION-ONE") && !log.contains("VERSION-TWO"),
            "{name}: {log}"
        );
    }
}

// ---- variables -------------------------------------------------------------------------------

#[test]
fn api_variables_and_predefined_ids_reach_the_job() {
    for db in backends("vars") {
        let repo = Project::new(
            "show:\n  script:\n    - echo \"IDS $CI_PIPELINE_ID $CI_JOB_ID $CI_COMMIT_SHA $CI_PROJECT_PATH MYVAR=$MYVAR\"\n",
        );
        let s = Server::start(Options::new(&db));
        let project = s.project("team/vars", repo.path());
        let p = s.pipeline_vars(project, "main", &[("MYVAR", "hello world")]);
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "success", "{}: {p:#}", db.name());
        let j = job(&p, "show");
        let log = s.log(id(&j));
        let want = format!(
            "IDS {} {} {} team/vars MYVAR=hello world",
            id(&p),
            id(&j),
            head(&repo)
        );
        assert!(
            log.lines().any(|l| l == want),
            "{}: '{want}' not in:\n{log}",
            db.name()
        );
    }
}

#[test]
fn a_tag_pushed_after_the_project_was_added_runs_as_a_tag_pipeline() {
    for db in backends("tagref") {
        let repo = Project::new("show:\n  script:\n    - echo \"TAG=$CI_COMMIT_TAG\"\n");
        let s = Server::start(Options::new(&db));
        let project = s.project("team/tagged", repo.path());
        // The mirror has never seen this tag: the run fetches it (not as a branch).
        git(repo.path(), &["tag", "v1.0"]);
        let p = s.pipeline_vars(project, "v1.0", &[]);
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "success", "{}: {p:#}", db.name());
        let log = s.log(id(&job(&p, "show")));
        assert!(log.lines().any(|l| l == "TAG=v1.0"), "{}: {log}", db.name());
    }
}

// ---- retry -----------------------------------------------------------------------------------

const RETRY_YML: &str = r#"stages: [a, b]
flaky:
  stage: a
  script:
    - if [ -e $SHARED/flaky.marker ]; then echo second run; else touch $SHARED/flaky.marker; exit 1; fi
    - sleep 0.3
    - touch $SHARED/flaky.ok
auto:
  stage: a
  retry: {max: 2, when: [script_failure]}
  script:
    - n=$(cat $SHARED/auto.n 2>/dev/null || echo 0); n=$((n+1)); echo $n > $SHARED/auto.n; test $n -ge 3
single:
  stage: a
  script: [echo single]
after:
  stage: b
  script: [test -e $SHARED/flaky.ok]
"#;

#[test]
fn retries_of_pipelines_and_jobs_and_retry_max() {
    for db in backends("retry") {
        let name = db.name();
        let repo = Project::new(RETRY_YML);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/retry", repo.path());
        let p = s.pipeline_vars(project, "main", &[("SHARED", &shared(&repo))]);
        let pid = id(&p);
        let p = s.wait_pipeline(pid, T);
        assert_eq!(p["status"], "failed", "{name}: {p:#}");
        assert_eq!(job(&p, "flaky")["status"], "failed");
        assert_eq!(job(&p, "after")["status"], "skipped");

        // retry: max: 2 on script_failure: three attempts, the last one passes.
        let auto = attempts(&p, "auto");
        let states: Vec<(i64, &str, bool)> = auto
            .iter()
            .map(|j| {
                (
                    j["attempt"].as_i64().unwrap(),
                    j["status"].as_str().unwrap(),
                    j["retried"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                (1, "failed", true),
                (2, "failed", true),
                (3, "success", false)
            ],
            "{name}"
        );
        assert_eq!(auto[0]["failure_reason"], "script_failure");

        // Retrying the pipeline reruns the failed job and the one skipped after it, in
        // stage order.
        let r = s
            .api()
            .post(&format!("/api/v1/pipelines/{pid}/retry"), json!({}))
            .unwrap();
        assert_eq!(r["id"], pid);
        let p = s.wait_pipeline(pid, T);
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        let flaky = attempts(&p, "flaky");
        let after = attempts(&p, "after");
        assert_eq!(flaky.len(), 2, "{name}");
        assert_eq!(after.len(), 2, "{name}");
        assert_eq!(flaky[0]["retried"], true);
        assert_eq!(flaky[1]["status"], "success");
        assert_eq!(after[1]["status"], "success");
        assert!(after[1]["started_at"].as_i64() >= flaky[1]["finished_at"].as_i64());
        assert_eq!(attempts(&p, "auto").len(), 3, "a passed job is not retried");
        assert_eq!(
            attempts(&p, "single").len(),
            1,
            "a passed job is not retried"
        );

        // Retrying one job: attempt 2, attempt 1 marked retried.
        let single = job(&p, "single");
        let again = s
            .api()
            .post(&format!("/api/v1/jobs/{}/retry", id(&single)), json!({}))
            .unwrap();
        assert_eq!(again["attempt"], 2, "{name}: {again:#}");
        assert_ne!(id(&again), id(&single));
        let old = s
            .api()
            .get(&format!("/api/v1/jobs/{}", id(&single)))
            .unwrap();
        assert_eq!(old["retried"], true, "{name}: {old:#}");
        let p = s.wait_pipeline(pid, T);
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert_eq!(job(&p, "single")["status"], "success");
        let e = s
            .api()
            .post(&format!("/api/v1/jobs/{}/retry", id(&single)), json!({}))
            .unwrap_err();
        assert_eq!(
            e.status, 409,
            "{name}: a retried attempt is not retried again: {e}"
        );
        assert_eq!(e.body["code"], "conflict");
    }
}

// ---- cancel ----------------------------------------------------------------------------------

#[test]
fn canceling_a_running_pipeline_kills_its_job() {
    for db in backends("cancel") {
        let name = db.name();
        let repo = Project::new(
            "stages: [a, b]\nsleeper:\n  stage: a\n  script:\n    - echo $$ > $SHARED/pid\n    - sleep 60\nlater:\n  stage: b\n  script: [echo later]\n",
        );
        let s = Server::start(Options::new(&db));
        let project = s.project("team/cancel", repo.path());
        let p = s.pipeline_vars(project, "main", &[("SHARED", &shared(&repo))]);
        let pid = id(&p);
        let pidfile = repo.out().join("pid");
        wait_file(&pidfile);
        let shell: u32 = wait_for(T, "the pid", || {
            std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        assert!(Path::new(&format!("/proc/{shell}")).exists());
        let t0 = Instant::now();
        let r = s
            .api()
            .post(&format!("/api/v1/pipelines/{pid}/cancel"), json!({}))
            .unwrap();
        assert_eq!(r["id"], pid);
        s.wait_job(pid, "sleeper", "canceled", Duration::from_secs(5));
        wait_for(Duration::from_secs(5), "the job's process to end", || {
            let stat = std::fs::read_to_string(format!("/proc/{shell}/stat")).ok();
            // Gone, or a zombie about to be reaped.
            stat.is_none_or(|s| s.contains(") Z ")).then_some(())
        });
        assert!(t0.elapsed() < Duration::from_secs(5), "{name}");
        let p = s.wait_pipeline(pid, Duration::from_secs(10));
        assert_eq!(p["status"], "canceled", "{name}: {p:#}");
        assert_eq!(job(&p, "later")["status"], "canceled", "{name}");
        let log = s.log(id(&job(&p, "sleeper")));
        assert!(!log.contains("later"), "{name}");
    }
}

// ---- auto-cancel -----------------------------------------------------------------------------

#[test]
fn a_newer_pipeline_cancels_an_older_interruptible_one_only() {
    for db in backends("autocancel") {
        let name = db.name();
        let yml = |interruptible: bool| {
            format!(
                "work:\n  interruptible: {interruptible}\n  script:\n    - touch $SHARED/$CI_PIPELINE_ID.started\n    - sleep $SLEEP\n"
            )
        };
        let soft = Project::new(&yml(true));
        let hard = Project::new(&yml(false));
        let s = Server::start(Options::new(&db));
        for (repo, path, canceled) in [(&soft, "team/soft", true), (&hard, "team/hard", false)] {
            let project = s.project(path, repo.path());
            let dir = shared(repo);
            let old = s.pipeline_vars(project, "main", &[("SHARED", &dir), ("SLEEP", "60")]);
            let old = id(&old);
            s.wait_job(old, "work", "running", T);
            wait_file(&repo.out().join(format!("{old}.started")));
            if canceled {
                // A pipeline of the same commit is not redundant: the older one goes on.
                let same = s.pipeline_vars(project, "main", &[("SHARED", &dir), ("SLEEP", "0")]);
                let same = s.wait_pipeline(id(&same), T);
                assert_eq!(same["status"], "success", "{name}: {same:#}");
                assert_eq!(s.get_pipeline(old)["status"], "running", "{name}");
            }
            // A new commit on the ref makes the older pipeline redundant.
            repo.write("CHANGES", "next\n");
            repo.commit("next");
            let new = s.pipeline_vars(project, "main", &[("SHARED", &dir), ("SLEEP", "0")]);
            let new = id(&new);
            if canceled {
                let p = s.wait_pipeline_status(old, "canceled", Duration::from_secs(5));
                assert_eq!(job(&p, "work")["status"], "canceled", "{name}");
            }
            let p = s.wait_pipeline(new, T);
            assert_eq!(p["status"], "success", "{name}: {p:#}");
            if !canceled {
                let p = s.get_pipeline(old);
                assert_eq!(
                    p["status"], "running",
                    "{name}: a running non-interruptible job keeps the older pipeline: {p:#}"
                );
                s.api()
                    .post(&format!("/api/v1/pipelines/{old}/cancel"), json!({}))
                    .unwrap();
                s.wait_pipeline(old, T);
            }
        }
    }
}

// ---- resource_group --------------------------------------------------------------------------

#[test]
fn a_resource_group_is_held_by_one_job_across_pipelines() {
    for db in backends("resgroup") {
        let name = db.name();
        let repo = Project::new(
            "deploy:\n  resource_group: prod\n  script:\n    - date +%s%N > $SHARED/$CI_PIPELINE_ID.start\n    - for i in $(seq 1 300); do [ -e $SHARED/release ] && break; sleep 0.05; done\n    - sleep 0.2\n    - date +%s%N > $SHARED/$CI_PIPELINE_ID.end\n",
        );
        let s = Server::start(Options::new(&db));
        let project = s.project("team/deploy", repo.path());
        let dir = shared(&repo);
        let p1 = id(&s.pipeline_vars(project, "main", &[("SHARED", &dir)]));
        s.wait_job(p1, "deploy", "running", T);
        let p2 = id(&s.pipeline_vars(project, "main", &[("SHARED", &dir)]));
        let waiting = s.wait_job(p2, "deploy", "pending", T);
        let reason = waiting["waiting_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("resource_group 'prod'"),
            "{name}: {waiting:#}"
        );
        std::fs::write(repo.out().join("release"), "").unwrap();
        for p in [p1, p2] {
            let p = s.wait_pipeline(p, T);
            assert_eq!(p["status"], "success", "{name}: {p:#}");
        }
        let out = repo.out();
        let end1 = read_ns(&out.join(format!("{p1}.end")));
        let start2 = read_ns(&out.join(format!("{p2}.start")));
        assert!(end1 <= start2, "{name}: the two deploys overlapped");
    }
}

// ---- child pipelines -------------------------------------------------------------------------

#[test]
fn trigger_include_runs_child_pipelines_that_the_trigger_job_mirrors() {
    for db in backends("child") {
        let name = db.name();
        let repo = Project::with_files(&[
            (
                ".gitlab-ci.yml",
                "up_ok:\n  trigger:\n    include: child.yml\n    strategy: depend\nup_bad:\n  trigger:\n    include: child-bad.yml\n    strategy: depend\n",
            ),
            ("child.yml", "child_job:\n  script: [echo in the child]\n"),
            ("child-bad.yml", "child_fail:\n  script: [exit 7]\n"),
        ]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/parent", repo.path());
        let parent = id(&s.pipeline(project, "main"));
        let p = s.wait_pipeline(parent, T);
        assert_eq!(p["status"], "failed", "{name}: {p:#}");
        let (ok, bad) = (job(&p, "up_ok"), job(&p, "up_bad"));
        assert_eq!(ok["status"], "success", "{name}: {ok:#}");
        assert_eq!(bad["status"], "failed", "{name}: {bad:#}");
        let all = s.api().get("/api/v1/pipelines?per_page=100").unwrap();
        for (trigger, status, child_job) in [
            (&ok, "success", "child_job"),
            (&bad, "failed", "child_fail"),
        ] {
            let child = all["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["parent_job_id"] == trigger["id"])
                .unwrap_or_else(|| panic!("{name}: no child of {trigger:#} in {all:#}"))
                .clone();
            assert_eq!(child["source"], "parent_pipeline", "{name}");
            assert_eq!(child["status"], status, "{name}: {child:#}");
            assert_eq!(child["sha"], p["sha"]);
            let c = s.get_pipeline(id(&child));
            assert_eq!(job(&c, child_job)["status"], status, "{name}");
        }
        let log = s.log(id(&job(
            &s.get_pipeline(id(all["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["parent_job_id"] == ok["id"])
                .unwrap())),
            "child_job",
        )));
        assert!(log.contains("\nin the child"), "{name}: {log}");
    }
}

// ---- tags ------------------------------------------------------------------------------------

#[test]
fn tagged_jobs_wait_for_an_agent_with_their_tags() {
    for db in backends("tags") {
        let name = db.name();
        let gpu_repo = Project::new("gpu_job:\n  tags: [gpu]\n  script: [echo on the gpu]\n");
        let plain_repo = Project::new(
            "u1:\n  script: [sleep 0.3]\nu2:\n  script: [sleep 0.3]\nu3:\n  script: [sleep 0.3]\n",
        );
        let s = Server::start(Options::new(&db));
        let local = s.api().get("/api/v1/agents").unwrap()["items"][0].clone();
        let gpu_project = s.project("team/gpu", gpu_repo.path());
        let p = id(&s.pipeline(gpu_project, "main"));
        let waiting = s.wait_job(p, "gpu_job", "pending", T);
        assert_eq!(
            waiting["waiting_reason"], "no online agent has tags [gpu]",
            "{name}: {waiting:#}"
        );
        // Still waiting a moment later: nobody takes it.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(job(&s.get_pipeline(p), "gpu_job")["status"], "pending");

        let _gpu = Agent::start(&s, &["--tags", "gpu", "--executor", "shell"]);
        s.wait_agents(2);
        let agents = s.api().get("/api/v1/agents").unwrap();
        let items = agents["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{name}: {agents:#}");
        assert!(items.iter().all(|a| a["online"] == true));
        let gpu = items
            .iter()
            .find(|a| a["tags"] == json!(["gpu"]))
            .unwrap_or_else(|| panic!("{name}: {agents:#}"));
        assert_eq!(gpu["run_untagged"], false);
        let done = s.wait_pipeline(p, T);
        assert_eq!(done["status"], "success", "{name}: {done:#}");
        assert_eq!(job(&done, "gpu_job")["agent_id"], gpu["id"], "{name}");

        // Untagged jobs never go to the agent without --run-untagged (it is idle, and the
        // least busy agent is preferred, so it would get some if it accepted them).
        let plain = s.project("team/plain", plain_repo.path());
        let p = s.wait_pipeline(id(&s.pipeline(plain, "main")), T);
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        for n in ["u1", "u2", "u3"] {
            assert_eq!(job(&p, n)["agent_id"], local["id"], "{name}: {n}");
        }
    }
}

// ---- the Docker executor ---------------------------------------------------------------------

#[test]
fn a_docker_agent_runs_a_job_in_its_image() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(docker) = rt
        .block_on(gantry_testkit::docker_for_test("server docker agent"))
        .expect("Docker is required")
    else {
        return;
    };
    let image = rt
        .block_on(gantry_testkit::ensure_busybox_image(&docker))
        .expect("building the test image");
    let host = gantry_testkit::docker_host();
    for db in backends("docker") {
        let name = db.name();
        let repo = Project::new(&format!(
            "in_docker:\n  image: {image}\n  tags: [docker]\n  script:\n    - test -e /.dockerenv\n    - echo \"inside $(busybox | head -n 1)\"\n"
        ));
        let s = Server::start(Options::new(&db));
        let _agent = Agent::start_env(
            &s,
            &["--tags", "docker", "--executor", "docker"],
            &[("DOCKER_HOST", &host)],
        );
        s.wait_agents(2);
        let agents = s.api().get("/api/v1/agents").unwrap();
        let docker_agent = agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["executor"] == "docker")
            .unwrap_or_else(|| panic!("{name}: {agents:#}"))
            .clone();
        let project = s.project("team/docker", repo.path());
        let p = s.wait_pipeline(id(&s.pipeline(project, "main")), T);
        let j = job(&p, "in_docker");
        let log = s.log(id(&j));
        assert_eq!(p["status"], "success", "{name}: {p:#}\n{log}");
        assert_eq!(j["agent_id"], docker_agent["id"], "{name}");
        assert!(log.contains("\ninside BusyBox"), "{name}: {log}");
    }
}

// ---- logs ------------------------------------------------------------------------------------

#[test]
fn logs_whole_by_range_and_live_with_resume() {
    for db in backends("logs") {
        let name = db.name();
        let repo = Project::new(
            "chatty:\n  script:\n    - for i in $(seq 1 60); do echo \"line $i of the log\"; sleep 0.03; done\n",
        );
        let s = Server::start(Options::new(&db));
        let project = s.project("team/logs", repo.path());
        let p = id(&s.pipeline(project, "main"));
        let j = id(&s.wait_job(p, "chatty", "running", T));
        let api = s.api();
        let path = format!("/api/v1/jobs/{j}/log/stream");

        // Live: the first event, then drop the connection after one more.
        let mut sse = api.sse(&path, None);
        let first = sse.next_event().expect("a first event");
        assert_eq!(first.event, "log", "{name}: {first:?}");
        let second = sse.next_event().expect("a second event");
        assert_eq!(second.event, "log", "{name}: {second:?}");
        drop(sse);
        let text = |e: &common::server::SseEvent| -> String {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["text"].as_str().unwrap().to_string()
        };
        let mid = first.id.clone().expect("log events have ids");
        let mut got = text(&first);
        assert_eq!(mid, got.len().to_string(), "ids are offsets");

        // Resume after the first event.
        let mut sse = api.sse(&path, Some(&mid));
        let end = loop {
            let e = sse.next_event().expect("the stream ends with an end event");
            match e.event.as_str() {
                "log" => got.push_str(&text(&e)),
                "end" => break e,
                other => panic!("{name}: unexpected event {other}: {e:?}"),
            }
        };
        let end: Value = serde_json::from_str(&end.data).unwrap();
        assert_eq!(end["status"], "success", "{name}: {end}");
        let done = s.wait_pipeline(p, T);
        assert_eq!(done["status"], "success");
        let log = s.log(j);
        assert!(log.contains("line 60 of the log"), "{name}: {log}");
        assert!(mid.parse::<usize>().unwrap() < log.len());
        assert_eq!(got, log, "{name}: the resumed stream is the log, exactly");
        let len = log.len();
        assert_eq!(job(&done, "chatty")["log_size"], len as u64);

        // Ranges.
        let path = format!("/api/v1/jobs/{j}/log");
        let header = |hs: &[(String, String)], k: &str| {
            hs.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (st, hs, body) = api.get_raw(&path, &[]);
        assert_eq!((st, body.as_slice()), (200, log.as_bytes()), "{name}");
        assert_eq!(header(&hs, "content-length"), len.to_string());
        let (st, hs, body) = api.get_raw(&path, &[("Range", "bytes=0-9")]);
        assert_eq!(st, 206, "{name}");
        assert_eq!(header(&hs, "content-range"), format!("bytes 0-9/{len}"));
        assert_eq!(body, &log.as_bytes()[..10]);
        let (st, hs, body) = api.get_raw(&path, &[("Range", "bytes=10-")]);
        assert_eq!(st, 206);
        assert_eq!(
            header(&hs, "content-range"),
            format!("bytes 10-{}/{len}", len - 1)
        );
        assert_eq!(body, &log.as_bytes()[10..]);
        let (st, _, body) = api.get_raw(&path, &[("Range", "bytes=-5")]);
        assert_eq!(st, 206);
        assert_eq!(body, &log.as_bytes()[len - 5..]);
        for bad in [format!("bytes={len}-"), "bytes=x-y".to_string()] {
            let (st, hs, _) = api.get_raw(&path, &[("Range", &bad)]);
            assert_eq!(st, 416, "{name}: {bad}");
            assert_eq!(header(&hs, "content-range"), format!("bytes */{len}"));
        }
    }
}

const BIG: u64 = 200 * 1024 * 1024;

/// Bytes under `dir`, recursively.
fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    n
}

#[test]
fn a_big_log_is_stored_compressed_and_served_in_bounded_memory() {
    for db in backends("biglog") {
        let name = db.name();
        let repo = Project::new(&format!(
            "big:\n  script:\n    - (yes 'gantry big log line' || true) | head -c {BIG}\n"
        ));
        let s = Server::start(Options::new(&db));
        let project = s.project("team/big", repo.path());
        let p = id(&s.pipeline(project, "main"));
        // Sample the server's memory while the log arrives and while it is served.
        let pid = s.pid();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut max = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    max = max.max(common::server::rss_kib(pid).unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(10));
                }
                max
            })
        };
        let done = s.wait_pipeline(p, Duration::from_secs(120));
        assert_eq!(done["status"], "success", "{name}: {done:#}");
        let j = job(&done, "big");
        let len = j["log_size"].as_u64().unwrap();
        assert!(len > BIG, "{name}: {len}");
        let stored = du(&s.data.path().join("logs"));
        assert!(
            stored < BIG / 20,
            "{name}: the log is stored compressed ({stored} bytes on disk)"
        );

        let resp = s.api().open(&format!("/api/v1/jobs/{}/log", id(&j)), &[]);
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-length"].to_str().unwrap(),
            len.to_string()
        );
        let mut r = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut tail = Vec::new();
        loop {
            let n = std::io::Read::read(&mut r, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            if total == 0 {
                let head = String::from_utf8_lossy(&buf[..n.min(4096)]).into_owned();
                assert!(head.contains("gantry big log line\n"), "{name}: {head}");
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 8192);
            }
            total += n as u64;
        }
        let tail = String::from_utf8_lossy(&tail);
        assert!(
            tail.contains("gantry big log line\ngantry big log line\n"),
            "{name}: {tail}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let max_kib = sampler.join().unwrap();
        assert_eq!(total, len, "{name}: the whole log is served");
        eprintln!(
            "{name}: a log of {len} bytes, {stored} on disk, server VmRSS at most {max_kib} KiB"
        );
        assert!(
            max_kib < 150 * 1024,
            "{name}: the server's memory grew to {max_kib} KiB"
        );
    }
}

// ---- the API's shape -------------------------------------------------------------------------

/// Every endpoint the server must describe.
const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("get", "/api/v1/user"),
    ("get", "/api/v1/user/tokens"),
    ("post", "/api/v1/user/tokens"),
    ("delete", "/api/v1/user/tokens/{id}"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/audit-log"),
    ("get", "/api/v1/projects/{project}/members"),
    ("post", "/api/v1/projects/{project}/members"),
    ("delete", "/api/v1/projects/{project}/members/{username}"),
    ("post", "/api/v1/projects/{project}/triggers"),
    ("get", "/api/v1/projects/{project}/triggers"),
    ("delete", "/api/v1/projects/{project}/triggers/{id}"),
    ("post", "/api/v1/projects/{project}/trigger"),
    ("get", "/api/v1/variables"),
    ("post", "/api/v1/variables"),
    ("put", "/api/v1/variables/{key}"),
    ("delete", "/api/v1/variables/{key}"),
    ("get", "/api/v1/projects/{project}/variables"),
    ("post", "/api/v1/projects/{project}/variables"),
    ("put", "/api/v1/projects/{project}/variables/{key}"),
    ("delete", "/api/v1/projects/{project}/variables/{key}"),
    ("get", "/api/v1/projects/{project}/protected-refs"),
    ("post", "/api/v1/projects/{project}/protected-refs"),
    ("delete", "/api/v1/projects/{project}/protected-refs/{id}"),
    ("post", "/api/v1/projects"),
    ("get", "/api/v1/projects"),
    ("get", "/api/v1/projects/{project}"),
    ("post", "/api/v1/projects/{project}/webhook-secret"),
    ("post", "/api/v1/registry/promote"),
    ("post", "/api/v1/registry/gc"),
    ("post", "/api/v1/projects/{project}/registry/retention"),
    ("get", "/api/v1/projects/{project}/robots"),
    ("post", "/api/v1/projects/{project}/robots"),
    ("delete", "/api/v1/projects/{project}/robots/{id}"),
    ("get", "/api/v1/projects/{project}/registry"),
    ("put", "/api/v1/projects/{project}/registry"),
    ("get", "/api/v1/projects/{project}/replications"),
    ("post", "/api/v1/projects/{project}/replications"),
    ("get", "/api/v1/projects/{project}/replications/{id}"),
    ("put", "/api/v1/projects/{project}/replications/{id}"),
    ("delete", "/api/v1/projects/{project}/replications/{id}"),
    ("post", "/api/v1/projects/{project}/replications/{id}/run"),
    ("get", "/api/v1/projects/{project}/replications/{id}/runs"),
    ("get", "/api/v1/projects/{project}/webhook-deliveries"),
    ("get", "/api/v1/projects/{project}/schedules"),
    ("post", "/api/v1/projects/{project}/schedules"),
    ("get", "/api/v1/projects/{project}/schedules/{id}"),
    ("put", "/api/v1/projects/{project}/schedules/{id}"),
    ("delete", "/api/v1/projects/{project}/schedules/{id}"),
    ("post", "/api/v1/projects/{project}/schedules/{id}/play"),
    ("get", "/api/v1/projects/{project}/polling"),
    ("put", "/api/v1/projects/{project}/polling"),
    ("post", "/api/v1/hooks/{forge}/{project}"),
    ("put", "/api/v1/projects/{project}/forge"),
    ("get", "/api/v1/projects/{project}/forge"),
    ("delete", "/api/v1/projects/{project}/forge"),
    ("get", "/api/v1/projects/{project}/notifications"),
    ("post", "/api/v1/projects/{project}/notifications"),
    ("delete", "/api/v1/projects/{project}/notifications/{id}"),
    ("get", "/api/v1/projects/{project}/outbox"),
    ("post", "/api/v1/projects/{project}/pipelines"),
    ("get", "/api/v1/projects/{project}/pipelines"),
    ("get", "/api/v1/pipelines"),
    ("get", "/api/v1/pipelines/{id}"),
    ("post", "/api/v1/pipelines/{id}/cancel"),
    ("post", "/api/v1/pipelines/{id}/retry"),
    ("get", "/api/v1/pipelines/{id}/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/retry"),
    ("post", "/api/v1/jobs/{id}/play"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/jobs/{id}/log"),
    ("get", "/api/v1/jobs/{id}/log/stream"),
    ("get", "/api/v1/job"),
    ("get", "/api/v1/jobs/{id}/artifacts"),
    ("put", "/api/v1/jobs/{id}/artifacts"),
    ("get", "/api/v1/jobs/{id}/source"),
    ("get", "/api/v1/jobs/{id}/cache/{key}"),
    ("put", "/api/v1/jobs/{id}/cache/{key}"),
    ("get", "/api/v1/agents"),
    ("delete", "/api/v1/agents/{id}"),
    ("post", "/api/v1/agents/register"),
    ("get", "/api/v1/agents/connect"),
];

fn check_pages(api: &Api, path: &str, total: usize, what: &str) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let doc = api
            .get(&format!("{path}{sep}page={page}&per_page=2"))
            .unwrap();
        assert_eq!(doc["page"], page, "{what}: {doc:#}");
        assert_eq!(doc["per_page"], 2, "{what}");
        let items = doc["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{what}");
        seen.extend(items.iter().map(id));
        match doc["next_page"].as_u64() {
            Some(n) => {
                assert_eq!(n, page + 1, "{what}");
                assert_eq!(items.len(), 2, "{what}: a full page before a next one");
                page = n;
            }
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), total, "{what}: {seen:?}");
    assert_eq!(unique.len(), total, "{what}: no item twice: {seen:?}");
}

#[test]
fn api_pagination_errors_openapi_and_metrics() {
    for db in backends("api") {
        let name = db.name();
        let repo = Project::new(
            "tok:\n  script:\n    - echo $CI_JOB_TOKEN > $SHARED/token.tmp && mv $SHARED/token.tmp $SHARED/token\n    - echo \"the token is $CI_JOB_TOKEN\"\n    - for i in $(seq 1 300); do [ -e $SHARED/release ] && break; sleep 0.05; done\nb:\n  script: [echo b]\nc:\n  script: [echo c]\n",
        );
        let s = Server::start(Options::new(&db));
        let api = s.api();
        let project = s.project("team/api", repo.path());
        s.project("team/api2", repo.path());
        s.project("team/api3", repo.path());

        // Errors are JSON with a code and a message.
        let e = api.get("/api/v1/pipelines/999999").unwrap_err();
        assert_eq!(
            (e.status, e.body["code"].as_str()),
            (404, Some("not_found")),
            "{name}"
        );
        assert!(!e.body["message"].as_str().unwrap().is_empty());
        let e = api.get("/api/v1/jobs/999999").unwrap_err();
        assert_eq!(e.status, 404, "{name}");
        let anon = Api {
            url: s.url.clone(),
            token: None,
        };
        let e = anon.get("/api/v1/projects").unwrap_err();
        assert_eq!(
            (e.status, e.body["code"].as_str()),
            (401, Some("unauthorized")),
            "{name}"
        );
        assert!(!e.body["message"].as_str().unwrap().is_empty());
        let wrong = Api {
            url: s.url.clone(),
            token: Some("gadm_wrong".into()),
        };
        assert_eq!(wrong.get("/api/v1/projects").unwrap_err().status, 401);
        let e = api
            .post(
                "/api/v1/projects",
                json!({"path": "bad path!", "git_url": "x"}),
            )
            .unwrap_err();
        assert_eq!(
            (e.status, e.body["code"].as_str()),
            (400, Some("bad_request")),
            "{name}"
        );

        // Three pipelines; the first holds a job token while it runs.
        let dir = shared(&repo);
        let first = id(&s.pipeline_vars(project, "main", &[("SHARED", &dir)]));
        wait_file(&repo.out().join("token"));
        let token = std::fs::read_to_string(repo.out().join("token")).unwrap();
        let job_api = Api {
            url: s.url.clone(),
            token: Some(token.trim().to_string()),
        };
        let e = job_api.get("/api/v1/projects").unwrap_err();
        assert_eq!(
            (e.status, e.body["code"].as_str()),
            (403, Some("forbidden")),
            "{name}: {e}"
        );
        // While it runs, the token reaches its own job's files (none stored yet: 404).
        let running = s.get_pipeline(first);
        let tok_job = id(&job(&running, "tok"));
        let artifacts = format!("/api/v1/jobs/{tok_job}/artifacts");
        let e = job_api.get(&artifacts).unwrap_err();
        assert_eq!(e.status, 404, "{name}: {e}");
        let me = job_api.get("/api/v1/job").unwrap();
        assert_eq!(
            (me["id"].as_i64(), &me["status"]),
            (Some(tok_job), &json!("running"))
        );
        std::fs::write(repo.out().join("release"), "").unwrap();
        let p = s.wait_pipeline(first, T);
        // The job token is a secret: masked before the log is stored.
        let log = s.log(id(&job(&p, "tok")));
        assert!(
            log.contains("\nthe token is [MASKED]") && !log.contains(token.trim()),
            "{name}: {log}"
        );
        let e = job_api.get("/api/v1/projects").unwrap_err();
        assert_eq!(e.status, 401, "{name}: a finished job's token is worthless");
        let e = job_api.get(&artifacts).unwrap_err();
        assert_eq!(e.status, 401, "{name}: even for its own job's files");
        assert_eq!(
            job_api.get("/api/v1/job").unwrap_err().status,
            401,
            "{name}"
        );
        for _ in 0..2 {
            let p = id(&s.pipeline_vars(project, "main", &[("SHARED", &dir)]));
            s.wait_pipeline(p, T);
        }
        for (i, reg) in ["x1", "x2"].iter().enumerate() {
            let r = anon
                .post(
                    "/api/v1/agents/register",
                    json!({"token": s.registration, "name": reg, "tags": [], "run_untagged": true,
                           "executor": "shell", "concurrency": 1, "version": "test"}),
                )
                .unwrap_or_else(|e| panic!("{name}: register {i}: {e}"));
            assert!(r["token"].as_str().unwrap().starts_with("gat_"));
        }

        check_pages(&api, "/api/v1/projects", 3, "projects");
        check_pages(&api, "/api/v1/pipelines", 3, "pipelines");
        check_pages(
            &api,
            &format!("/api/v1/projects/{project}/pipelines"),
            3,
            "a project's pipelines",
        );
        check_pages(&api, &format!("/api/v1/pipelines/{first}/jobs"), 3, "jobs");
        check_pages(&api, "/api/v1/agents", 3, "agents");
        // per_page is kept within 1..=100.
        let big = api.get("/api/v1/projects?per_page=1000").unwrap();
        assert_eq!(big["per_page"], 100, "{name}");
        let small = api.get("/api/v1/projects?per_page=0").unwrap();
        assert_eq!(small["per_page"], 1, "{name}");

        // The OpenAPI document lists every route.
        let doc = anon.get("/api/v1/openapi.json").unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ENDPOINTS {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{name}: {method} {path} is not in the OpenAPI document"
            );
        }
        let n: usize = paths.values().map(|v| v.as_object().unwrap().len()).sum();
        assert_eq!(n, ENDPOINTS.len(), "{name}: unexpected routes");

        // Metrics.
        let (st, text) = anon.get_with("/metrics", &[]);
        assert_eq!(st, 200);
        for needle in [
            "gantry_queue_length 0",
            "gantry_job_pickup_seconds_bucket",
            "gantry_job_pickup_seconds_count",
            "gantry_jobs{state=\"success\"} 9",
            "gantry_jobs{state=\"pending\"} 0",
            "gantry_agents_online 1",
        ] {
            assert!(text.contains(needle), "{name}: '{needle}' not in:\n{text}");
        }
    }
}

// ---- the CLI ---------------------------------------------------------------------------------

#[test]
fn the_cli_adds_projects_runs_pipelines_and_follows_logs() {
    for db in backends("cli") {
        let name = db.name();
        let repo = Project::new(
            "chatty:\n  script:\n    - for i in $(seq 1 30); do echo \"cli line $i\"; sleep 0.03; done\n    - test \"$FAIL\" != 1\n",
        );
        let s = Server::start(Options::new(&db));
        let cli = |args: &[&str]| -> (i32, String, String) {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
                .args(args)
                .env("GANTRY_SERVER", &s.url)
                .env("GANTRY_TOKEN", &s.token)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into(),
                String::from_utf8_lossy(&o.stderr).into(),
            )
        };
        let git_url = repo.path().display().to_string();
        let (code, out, err) = cli(&["project", "add", "team/cli", "--git-url", &git_url]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let projects = s.api().get("/api/v1/projects").unwrap();
        assert_eq!(projects["items"][0]["path"], "team/cli", "{name}");

        let (code, out, err) = cli(&["pipeline", "run", "team/cli", "--wait"]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let (code, out, err) = cli(&["pipeline", "run", "team/cli", "--var", "FAIL=1", "--wait"]);
        assert_ne!(
            code, 0,
            "{name}: a failed pipeline fails --wait: {out}{err}"
        );
        let list = s.api().get("/api/v1/pipelines").unwrap();
        let states: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["failed", "success"], "{name}");

        // Follow a running job's log to its end.
        let p = id(&s.pipeline(1, "main"));
        let j = id(&s.wait_job(p, "chatty", "running", T));
        let (code, out, err) = cli(&["job", "log", "-f", &j.to_string()]);
        assert_eq!(code, 0, "{name}: {err}");
        let log = s.log(j);
        assert!(log.contains("cli line 30"), "{name}: {log}");
        assert_eq!(out, log, "{name}: -f prints the whole log, once");
    }
}

// ---- rules:exists ------------------------------------------------------------------------------

#[test]
fn rules_exists_sees_the_files_of_the_pipeline_commit() {
    for db in backends("exists") {
        let repo = Project::with_files(&[
            (
                ".gitlab-ci.yml",
                "image-build:\n  rules: [{exists: [docker/Dockerfile]}]\n  script: [echo image]\n\
                 helm:\n  rules: [{exists: ['chart/*.yaml']}]\n  script: [echo chart]\n\
                 always:\n  script: [echo always]\n",
            ),
            ("docker/Dockerfile", "FROM scratch\n"),
        ]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/exists", repo.path());
        let p = s.pipeline(project, "main");
        let p = s.wait_pipeline(id(&p), T);
        assert_eq!(p["status"], "success", "{}: {p:#}", db.name());
        let names: Vec<&str> = p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["image-build", "always"], "{}", db.name());
    }
}

#[test]
fn a_revoked_agent_is_cut_off_and_cannot_come_back() {
    let db = &backends("agent_revoke")[0];
    let mut opts = Options::new(db);
    opts.local_agent = false;
    let s = Server::start(opts);
    let agent = Agent::start(&s, &[]);
    s.wait_agents(1);
    let agents = s.api().get("/api/v1/agents").unwrap();
    let id = agents["items"][0]["id"].as_i64().unwrap();
    // Only administrators revoke; an unknown agent is 404.
    assert_eq!(
        s.api().delete("/api/v1/agents/999999").unwrap_err().status,
        404
    );
    s.api().delete(&format!("/api/v1/agents/{id}")).unwrap();
    wait_for(Duration::from_secs(20), "the agent offline", || {
        let a = s.api().get("/api/v1/agents").ok()?;
        (a["items"][0]["online"] == false).then_some(())
    });
    // It keeps trying with its old token and stays out.
    std::thread::sleep(Duration::from_secs(3));
    let a = s.api().get("/api/v1/agents").unwrap();
    assert_eq!(a["items"][0]["online"], false, "{a}");
    let _ = agent.stderr_text();
    let log = s.api().get("/api/v1/audit-log?per_page=50").unwrap();
    assert!(log.to_string().contains("agent.revoke"), "{log}");
}
