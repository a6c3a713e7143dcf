//! `gantry run` with the shell executor: real pipelines, real processes.

mod common;

use common::{Project, passed, state_line};

fn times(p: &Project, job: &str) -> (u128, u128) {
    let t = p.read_out(&format!("{job}.t"));
    let v: Vec<u128> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

const TIMED: &str = r#"
.timed:
  before_script: [date +%s%N > "$OUT/$CI_JOB_NAME.t"]
  after_script: [date +%s%N >> "$OUT/$CI_JOB_NAME.t"]
"#;

#[test]
fn dag_order_and_parallelism() {
    let p = Project::new(&format!(
        "{TIMED}
stages: [one, two]
a:
  stage: one
  extends: .timed
  script: [sleep 1]
b:
  stage: one
  extends: .timed
  script: [sleep 1]
c:
  stage: two
  needs: [a]
  extends: .timed
  script: [echo c]
d:
  stage: two
  extends: .timed
  script: [echo d]
"
    ));
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (a, b, c, d) = (
        times(&p, "a"),
        times(&p, "b"),
        times(&p, "c"),
        times(&p, "d"),
    );
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "a and b (one stage) ran in parallel: {a:?} {b:?}"
    );
    assert!(c.0 >= a.1, "c needs a: starts after a ends");
    assert!(
        d.0 >= a.1 && d.0 >= b.1,
        "d waits for the whole earlier stage"
    );
}

#[test]
fn concurrency_limit_is_respected() {
    let p = Project::new(&format!(
        "{TIMED}\na:\n  extends: .timed\n  script: [sleep 1]\nb:\n  extends: .timed\n  script: [sleep 1]\n"
    ));
    let r = p.gantry(&["run", "--executor", "shell", "-j", "1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (a, b) = (times(&p, "a"), times(&p, "b"));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "with -j 1 jobs do not overlap: {a:?} {b:?}"
    );
}

#[test]
fn every_when() {
    let p = Project::new(
        r#"
stages: [build, test, cleanup, deploy]
build:
  stage: build
  script: [exit 1]
test:
  stage: test
  script: [echo never]
on_fail:
  stage: cleanup
  when: on_failure
  script: [echo "cleaning up after a failure"]
always:
  stage: cleanup
  when: always
  script: [echo always]
deploy:
  stage: deploy
  when: manual
  script: [echo deploy]
"#,
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(state_line(&r, "build").unwrap().contains("failed"));
    assert!(
        state_line(&r, "test").unwrap().contains("skipped"),
        "{}",
        r.stdout
    );
    assert!(passed(&r, "on_fail"), "{}", r.stdout);
    assert!(passed(&r, "always"));
    assert!(
        state_line(&r, "deploy").unwrap().contains("skipped"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Pipeline failed"), "{}", r.stdout);

    let ok = Project::new(
        r#"
build:
  stage: build
  script: [echo ok]
on_fail:
  stage: test
  when: on_failure
  script: [echo never]
later:
  stage: deploy
  when: delayed
  start_in: 1 second
  script: [echo delayed]
manual:
  stage: deploy
  when: manual
  script: [echo "manual ran" > "$OUT/manual"]
"#,
    );
    let r = ok.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(state_line(&r, "on_fail").unwrap().contains("skipped"));
    assert!(passed(&r, "later"));
    assert!(state_line(&r, "manual").unwrap().contains("manual"));
    assert_eq!(ok.read_out("manual"), "");
    let r = ok.gantry(&["run", "--executor", "shell", "--manual"]);
    assert!(passed(&r, "manual"), "{}", r.stdout);
    assert_eq!(ok.read_out("manual"), "manual ran\n");
}

#[test]
fn blocking_manual_job_blocks_the_pipeline() {
    let p = Project::new(
        "gate:\n  stage: build\n  script: [echo]\n  rules:\n    - when: manual\nafter:\n  stage: test\n  script: [echo after]\n",
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert!(r.stdout.contains("Pipeline blocked"), "{}", r.stdout);
    assert!(
        state_line(&r, "after")
            .unwrap()
            .contains("waits for manual job gate"),
        "{}",
        r.stdout
    );
    let r = p.gantry(&["run", "--executor", "shell", "gate", "after"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(passed(&r, "after"));
}

#[test]
fn allow_failure_and_exit_codes() {
    let p = Project::new(
        r#"
soft:
  script: [exit 3]
  allow_failure:
    exit_codes: [3]
hard:
  script: [exit 4]
  allow_failure:
    exit_codes: [3]
"#,
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 1);
    assert!(
        state_line(&r, "soft").unwrap().contains("failed (allowed)"),
        "{}",
        r.stdout
    );
    let hard = state_line(&r, "hard").unwrap();
    assert!(
        hard.contains("hard failed in") && hard.contains("(script_failure, exit code 4)"),
        "{}",
        r.stdout
    );
    let p = Project::new("soft:\n  script: [exit 1]\n  allow_failure: true\n");
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Pipeline passed with warnings"));
}

#[test]
fn retry_by_class_and_exit_code() {
    let p = Project::new(
        r#"
flaky:
  retry: 2
  script:
    - echo x >> "$OUT/flaky"
    - test "$(wc -l < "$OUT/flaky")" -ge 2
only_system:
  retry:
    max: 2
    when: runner_system_failure
  script:
    - echo x >> "$OUT/only_system"
    - exit 1
codes:
  retry:
    max: 2
    exit_codes: [42]
  script:
    - echo x >> "$OUT/codes"
    - exit 42
"#,
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert!(passed(&r, "flaky"), "{}", r.stdout);
    assert!(
        state_line(&r, "flaky").unwrap().contains("attempt 2"),
        "{}",
        r.stdout
    );
    assert_eq!(
        p.read_out("only_system").lines().count(),
        1,
        "a script failure is not retried for when: runner_system_failure"
    );
    assert_eq!(
        p.read_out("codes").lines().count(),
        3,
        "exit code 42 is retried twice"
    );
}

#[test]
fn timeout_stops_the_job_and_its_processes() {
    let marker = format!("gantry-timeout-marker-{}", std::process::id());
    let p = Project::new(&format!(
        "slow:\n  timeout: 2s\n  script:\n    - sh -c 'sleep 300; true {marker}'\n"
    ));
    let started = std::time::Instant::now();
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert!(
        started.elapsed().as_secs() < 60,
        "the timeout ended the job"
    );
    assert!(
        state_line(&r, "slow")
            .unwrap()
            .contains("job_execution_timeout"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("execution took longer than 2s"),
        "{}",
        r.stdout
    );
    assert!(!leftover(&marker), "the job's processes were killed");
}

fn leftover(marker: &str) -> bool {
    let o = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    !o.stdout.is_empty()
}

#[test]
fn artifacts_and_dotenv_pass_between_jobs() {
    let p = Project::new(
        r#"
build:
  stage: build
  script:
    - mkdir -p out/sub && echo built > out/sub/file.txt && echo skip > out/skip.log
    - echo "BUILD_ID=42" > build.env
  artifacts:
    paths: [out/]
    exclude: ["out/*.log"]
    reports:
      dotenv: build.env
test:
  stage: test
  script:
    - cat out/sub/file.txt > "$OUT/file"
    - test ! -e out/skip.log
    - echo "$BUILD_ID" > "$OUT/id"
isolated:
  stage: test
  dependencies: []
  script:
    - test ! -e out/sub/file.txt
"#,
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(p.read_out("file"), "built\n");
    assert_eq!(p.read_out("id"), "42\n");
}

#[test]
fn cache_is_reused_between_runs() {
    let p = Project::new(
        r#"
job:
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [deps/]
  script:
    - if [ -f deps/stamp ]; then echo hit >> "$OUT/log"; else mkdir -p deps && date > deps/stamp && echo miss >> "$OUT/log"; fi
"#,
    );
    assert_eq!(p.gantry(&["run", "--executor", "shell"]).code, 0);
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(p.read_out("log"), "miss\nhit\n");
    assert!(
        r.stdout.contains("Restored cache deps-main"),
        "{}",
        r.stdout
    );
}

#[test]
fn secrets_are_masked_in_every_form() {
    let p = Project::new(
        r#"
leak:
  script:
    - |
      printf 'whole: %s\n' "$TOKEN"
    - |
      printf 'split: s3cr3t'; sleep 0.2; printf 'V4lue!\n'
    - |
      printf 'b64: %s\n' "$(printf %s "$TOKEN" | base64)"
    - |
      printf 'multi: %s\n' "$MULTI"
"#,
    );
    let mut c = p.command(&[
        "run",
        "--executor",
        "shell",
        "--plain",
        "--secret",
        "TOKEN=s3cr3tV4lue!",
        "--secret",
        "MULTI",
    ]);
    c.env("MULTI", "first-line-secret\nsecond-line-secret");
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for leaked in [
        "s3cr3tV4lue!",
        "czNjcjN0VjRsdWUh",
        "first-line-secret",
        "second-line-secret",
    ] {
        assert!(!out.contains(leaked), "{leaked} leaked:\n{out}");
    }
    assert!(
        out.contains("whole: [MASKED]")
            && out.contains("split: [MASKED]")
            && out.contains("b64: [MASKED]"),
        "{out}"
    );
}

#[test]
fn ctrl_c_stops_everything() {
    let marker = format!("gantry-ctrlc-marker-{}", std::process::id());
    let p = Project::new(&format!(
        "long:\n  script:\n    - echo started > \"$OUT/started\"\n    - sh -c 'sleep 300; true {marker}'\n"
    ));
    let out_var = format!("OUT={}", p.out().display());
    let child = p
        .command(&["run", "--executor", "shell", "--plain", "--var", &out_var])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !leftover(&marker) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(leftover(&marker), "the job runs");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{out}");
    assert!(out.contains("Pipeline canceled"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!leftover(&marker), "no process is left behind");
}

#[test]
fn resource_group_is_a_mutex() {
    let p = Project::new(&format!(
        "{TIMED}\na:\n  extends: .timed\n  resource_group: prod\n  script: [sleep 1]\nb:\n  extends: .timed\n  resource_group: prod\n  script: [sleep 1]\n"
    ));
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (a, b) = (times(&p, "a"), times(&p, "b"));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "jobs of one resource group never overlap: {a:?} {b:?}"
    );
}

#[test]
fn after_script_sees_the_job_status_and_runs_on_failure() {
    let p = Project::new(
        "job:\n  script: [exit 1]\n  after_script: ['echo \"$CI_JOB_STATUS\" > \"$OUT/status\"']\n",
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 1);
    assert_eq!(p.read_out("status"), "failed\n");
}

#[test]
fn a_bad_pipeline_runs_nothing() {
    let p = Project::new(
        "build:\n  script: [touch \"$OUT/ran\"]\ntest:\n  needs: [biuld]\n  script: [echo]\n",
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("error[E0203]: job 'test' needs 'biuld', which is not defined"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("did you mean 'build'?"));
    assert!(!p.out().join("ran").exists(), "nothing ran");
}

#[test]
fn named_jobs_run_with_what_they_need() {
    let p = Project::new(
        "a:\n  stage: build\n  script: [touch \"$OUT/a\"]\nb:\n  stage: build\n  script: [touch \"$OUT/b\"]\nc:\n  stage: test\n  needs: [a]\n  script: [touch \"$OUT/c\"]\n",
    );
    let r = p.gantry(&["run", "--executor", "shell", "c"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(p.out().join("a").exists() && p.out().join("c").exists());
    assert!(!p.out().join("b").exists(), "b is not needed by c");
    let r = p.gantry(&["run", "--executor", "shell", "nope"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no job 'nope'"), "{}", r.stderr);
}

#[test]
fn committed_state_by_default_dirty_on_request() {
    let p = Project::new("job:\n  script: ['cat file.txt > \"$OUT/seen\"']\n");
    p.write("file.txt", "committed\n");
    p.commit("add file");
    p.write("file.txt", "uncommitted\n");
    p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(p.read_out("seen"), "committed\n");
    p.gantry(&["run", "--executor", "shell", "--dirty"]);
    assert_eq!(p.read_out("seen"), "uncommitted\n");
}

#[test]
fn junit_reports_are_summarised() {
    let p = Project::new(
        "test:\n  script:\n    - echo '<testsuite><testcase name=\"a\"/><testcase name=\"b\"><failure/></testcase></testsuite>' > junit.xml\n  artifacts:\n    reports:\n      junit: junit.xml\n",
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert!(
        r.stdout
            .contains("Tests: 1 passed, 1 failed, 0 errors, 0 skipped"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_example_project_runs() {
    let root = common::repo_root().join("examples/hello");
    let cache = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["run", "--executor", "shell", "--plain", "--dirty", "-C"])
        .arg(&root)
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("Tests: 3 passed, 0 failed"), "{out}");
    assert!(out.contains("Pipeline passed"), "{out}");
}

#[test]
fn local_variables_file_sets_and_masks() {
    let p = Project::new(
        "job:\n  script:\n    - echo \"plain=$GREETING token=$DEPLOY_TOKEN\"\n    - echo \"conf=[$(tr '\\n' '+' < \"$CONF\")]\"\n",
    );
    p.write(
        ".gantry/variables",
        "GREETING: hello\nDEPLOY_TOKEN:\n  value: v3ry-s3cret-t0ken\n  masked: true\n\
         CONF:\n  value: \"a: 1\\nb: 2\\n\"\n  file: true\n",
    );
    let r = p.gantry(&["run", "--executor", "shell"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("plain=hello token=[MASKED]"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("v3ry-s3cret-t0ken"), "{}", r.stdout);
    assert!(r.stdout.contains("conf=[a: 1+b: 2+]"), "{}", r.stdout);
}
