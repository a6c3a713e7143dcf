//! `gantry run` with the Docker executor, against the real engine `scripts/test` starts.
//! Without an engine these tests skip (and fail under `GANTRY_REQUIRE_DOCKER=1`).

mod common;

use common::{Project, passed, state_line};
use gantry_testkit::bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
};
use std::collections::HashMap;

/// The engine, with the local busybox image; `None` to skip.
fn engine(
    test: &str,
) -> Option<(
    tokio::runtime::Runtime,
    gantry_testkit::bollard::Docker,
    String,
)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let docker = rt
        .block_on(gantry_testkit::docker_for_test(test))
        .expect("Docker is required")?;
    let image = rt
        .block_on(gantry_testkit::ensure_busybox_image(&docker))
        .expect("building the test image");
    Some((rt, docker, image))
}

/// Containers and networks Gantry created for this test's project that still exist.
fn leftovers(
    rt: &tokio::runtime::Runtime,
    docker: &gantry_testkit::bollard::Docker,
    p: &Project,
) -> (usize, usize) {
    let name = p.path().file_name().unwrap().to_string_lossy();
    let label = format!("org.gantry.project=local/{name}");
    let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), vec![label])]);
    let containers = rt
        .block_on(
            docker.list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            )),
        )
        .unwrap();
    let networks = rt
        .block_on(docker.list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        )))
        .unwrap();
    (containers.len(), networks.len())
}

#[test]
fn jobs_run_in_containers_and_pass_artifacts() {
    let Some((rt, docker, image)) = engine("jobs_run_in_containers_and_pass_artifacts") else {
        return;
    };
    let p = Project::new(&format!(
        r#"
image: {image}
build:
  stage: build
  script:
    - mkdir -p out && echo "built in $CI_PROJECT_DIR" > out/msg
    - test -x /bin/busybox
  artifacts:
    paths: [out/]
test:
  stage: test
  script:
    - cat out/msg
    - test "$(pwd)" = "$CI_PROJECT_DIR"
"#
    ));
    let r = p.gantry(&["run", "--executor", "docker"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("built in /builds/local/"), "{}", r.stdout);
    assert_eq!(
        leftovers(&rt, &docker, &p),
        (0, 0),
        "every container and network is removed"
    );
}

#[test]
fn a_service_is_reachable_by_its_alias() {
    let Some((rt, docker, image)) = engine("a_service_is_reachable_by_its_alias") else {
        return;
    };
    let p = Project::new(&format!(
        r#"
test:
  image: {image}
  services:
    - name: {image}
      alias: web
      command: ["sh", "-c", "echo service-ok > /tmp/health; httpd -f -p 8080 -h /tmp"]
  script:
    - for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web:8080/health && exit 0; sleep 0.5; done; exit 1
"#
    ));
    let r = p.gantry(&["run", "--executor", "docker"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("service-ok"), "{}", r.stdout);
    assert_eq!(leftovers(&rt, &docker, &p), (0, 0));
}

#[test]
fn a_missing_image_fails_the_job_clearly() {
    let Some((_rt, _docker, _image)) = engine("a_missing_image_fails_the_job_clearly") else {
        return;
    };
    let p = Project::new(
        "job:\n  image:\n    name: gantry-test/does-not-exist:1.0\n    pull_policy: never\n  script: [echo]\nother:\n  image: gantry-test/does-not-exist:2.0\n  script: [echo]\n",
    );
    let started = std::time::Instant::now();
    let r = p.gantry(&["run", "--executor", "docker"]);
    assert!(started.elapsed().as_secs() < 60, "no hang");
    assert_eq!(r.code, 1);
    let line = state_line(&r, "job").unwrap();
    assert!(line.contains("runner_system_failure"), "{line}");
    assert!(r.stdout.contains("image 'gantry-test/does-not-exist:1.0' is not on this machine and pull_policy is `never`"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("image 'gantry-test/does-not-exist:2.0' could not be pulled"),
        "{}",
        r.stdout
    );
}

#[test]
fn ctrl_c_removes_containers_and_networks() {
    let Some((rt, docker, image)) = engine("ctrl_c_removes_containers_and_networks") else {
        return;
    };
    let p = Project::new(&format!(
        "long:\n  image: {image}\n  services:\n    - name: {image}\n      command: [sleep, '300']\n  script:\n    - echo started\n    - sleep 300\n"
    ));
    let child = p
        .command(&["run", "--executor", "docker", "--plain"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while leftovers(&rt, &docker, &p).0 < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        leftovers(&rt, &docker, &p).0 >= 2,
        "the job and its service run"
    );
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        leftovers(&rt, &docker, &p),
        (0, 0),
        "nothing is left behind"
    );
}

#[test]
fn timeout_and_retry_in_containers() {
    let Some((_rt, _docker, image)) = engine("timeout_and_retry_in_containers") else {
        return;
    };
    let p = Project::new(&format!(
        "slow:\n  image: {image}\n  timeout: 3s\n  retry:\n    max: 1\n    when: job_execution_timeout\n  script: [sleep 60]\n"
    ));
    let r = p.gantry(&["run", "--executor", "docker"]);
    let line = state_line(&r, "slow").unwrap();
    assert!(
        line.contains("job_execution_timeout") && line.contains("attempt 2"),
        "{}",
        r.stdout
    );
    let _ = passed;
}

#[test]
fn entrypoint_dotenv_cache_and_masking_in_containers() {
    let Some((_rt, _docker, image)) = engine("entrypoint_dotenv_cache_and_masking_in_containers")
    else {
        return;
    };
    let p = Project::new(&format!(
        r#"
default:
  image:
    name: {image}
    entrypoint: ["/bin/sh", "-c", "echo from-entrypoint; exec \"$@\"", "--"]
build:
  stage: build
  cache:
    key: deps
    paths: [deps/]
  script:
    - if [ -f deps/stamp ]; then echo cache-hit; else mkdir -p deps && touch deps/stamp && echo cache-miss; fi
    - echo "BUILD_ID=7" > build.env
  artifacts:
    reports:
      dotenv: build.env
test:
  stage: test
  script:
    - echo "id=$BUILD_ID"
    - echo "token=$TOKEN"
"#
    ));
    let args = [
        "run",
        "--executor",
        "docker",
        "--secret",
        "TOKEN=t0ps3cret-value",
    ];
    let r = p.gantry(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("from-entrypoint"),
        "the image entrypoint wraps the job shell: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("cache-miss") && r.stdout.contains("id=7"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("token=[MASKED]") && !r.stdout.contains("t0ps3cret-value"),
        "{}",
        r.stdout
    );
    let r = p.gantry(&args);
    assert!(
        r.stdout.contains("cache-hit"),
        "the cache is reused by the next run: {}",
        r.stdout
    );
}

#[test]
fn dag_and_when_with_containers() {
    let Some((_rt, _docker, image)) = engine("dag_and_when_with_containers") else {
        return;
    };
    let p = Project::new(&format!(
        r#"
image: {image}
stages: [build, test, cleanup]
fails:
  stage: build
  script: [exit 2]
  allow_failure: true
breaks:
  stage: build
  script: [exit 1]
after_breaks:
  stage: test
  script: [echo never]
cleanup:
  stage: cleanup
  when: on_failure
  script: [echo cleaning]
"#
    ));
    let r = p.gantry(&["run", "--executor", "docker"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        state_line(&r, "fails")
            .unwrap()
            .contains("failed (allowed)")
    );
    assert!(state_line(&r, "after_breaks").unwrap().contains("skipped"));
    assert!(passed(&r, "cleanup"), "{}", r.stdout);
}
