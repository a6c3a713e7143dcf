//! The registry clients (skopeo, buildah, the docker CLI, umoci) against `gantry server`'s
//! `/v2/`: the same checks `registry_clients_peer.rs` runs against CNCF Distribution, with a
//! Gantry user (password, then a personal access token) and a project.
//!
//! Tools missing: skipped with a note, unless `GANTRY_REQUIRE_REGISTRY_TOOLS=1`.

mod common;

use common::registry::{has_registry, personal_token, project_target, user};
use common::server::{Backend, Options, Server};
use gantry_testkit::registry::{
    check_anonymous_push_refused, check_buildah_push, check_docker_pulls_oci_image,
    check_docker_push_pull, check_oras_push_pull, check_skopeo_round_trip, oras_for_test,
    tools_for_test,
};

fn server() -> Server {
    let mut opts = Options::new(&Backend::Sqlite);
    opts.local_agent = false;
    Server::start(opts)
}

#[tokio::test]
async fn every_client_pushes_and_pulls_with_gantry() {
    if !tools_for_test(
        "registry clients against gantry",
        &["skopeo", "umoci", "buildah", "docker"],
    )
    .unwrap()
    {
        return;
    }
    let s = server();
    let dev = user(&s, "dev", "correct horse battery", true);
    let (target, _repo) = project_target(&s, "team", dev.clone());
    let pat = personal_token(&s, &dev, &["read_registry", "write_registry"]);
    let (pat_target, _repo2) = project_target(&s, "tokens", pat);
    assert!(has_registry(&s), "GET /v2/ answers");
    let Some(engine) = gantry_testkit::docker_for_test("registry clients against gantry")
        .await
        .unwrap()
    else {
        return;
    };
    gantry_testkit::ensure_busybox_image(&engine).await.unwrap();
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}\nserver log:\n{}", s.stderr_text()) };
    check_anonymous_push_refused(&target, "app").unwrap_or_else(|e| fail(e));
    check_skopeo_round_trip(&target, "app").unwrap_or_else(|e| fail(e));
    check_buildah_push(&target, "built").unwrap_or_else(|e| fail(e));
    check_docker_push_pull(&target, "busybox").unwrap_or_else(|e| fail(e));
    check_docker_pulls_oci_image(&target, "oci").unwrap_or_else(|e| fail(e));
    if let Some(oras) = oras_for_test("oras against gantry").unwrap() {
        check_oras_push_pull(&oras, &target, "artifact").unwrap_or_else(|e| fail(e));
    }
    // The same with a personal access token instead of the password.
    check_skopeo_round_trip(&pat_target, "app").unwrap_or_else(|e| fail(e));
    check_docker_push_pull(&pat_target, "busybox").unwrap_or_else(|e| fail(e));
    // And with a robot account of the project (docker login -u 'robot$team+ci').
    let robot = s
        .api()
        .post(
            "/api/v1/projects/team/robots",
            serde_json::json!({"name": "ci", "actions": ["pull", "push"]}),
        )
        .unwrap();
    let robot_target = gantry_testkit::registry::Target {
        creds: Some(gantry_testkit::registry::Creds::new(
            robot["username"].as_str().unwrap(),
            robot["token"].as_str().unwrap(),
        )),
        ..target.clone()
    };
    check_docker_push_pull(&robot_target, "robot").unwrap_or_else(|e| fail(e));
    check_skopeo_round_trip(&robot_target, "robot-oci").unwrap_or_else(|e| fail(e));
}
