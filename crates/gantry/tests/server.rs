//! `gantry server` with real agents and real git repositories, driven through its API, on
//! SQLite and on PostgreSQL.

mod common;

use common::Project;
use common::server::{Options, Server, backends, job_named};
use serde_json::json;
use std::time::Duration;

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
        let p = s.api().get(&format!("/api/v1/pipelines/{id}")).unwrap();
        assert_eq!(
            p["status"], "manual",
            "a blocking manual job holds the pipeline"
        );
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
