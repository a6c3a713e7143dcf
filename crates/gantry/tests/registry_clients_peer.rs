//! The registry clients Gantry's registry must serve (skopeo, buildah, the docker CLI, umoci,
//! oras),
//! checked against a peer registry (CNCF Distribution, Debian's `docker-registry`) on this
//! machine: that the tools, the images made locally and the checks themselves work. The same
//! checks (`gantry_testkit::registry::check_*`) run against `gantry server`'s `/v2/` with a
//! `Target` naming its address, a user's credentials and a project.
//!
//! Each test skips (with a note) when its tools are missing, unless
//! `GANTRY_REQUIRE_REGISTRY_TOOLS=1` (`scripts/test` sets it after installing them).

use gantry_testkit::registry::{
    Creds, PeerRegistry, Target, check_anonymous_push_refused, check_buildah_push,
    check_docker_pulls_oci_image, check_docker_push_pull, check_oras_push_pull,
    check_skopeo_round_trip, oras_for_test, tools_for_test,
};

fn peer() -> (PeerRegistry, Target) {
    let reg = PeerRegistry::start().expect("docker-registry starts");
    let target = Target {
        addr: reg.addr().to_string(),
        creds: None,
        prefix: "team/".into(),
    };
    (reg, target)
}

#[test]
fn skopeo_copies_a_local_oci_layout_to_the_peer_and_back_with_its_digest() {
    if !tools_for_test("skopeo round trip", &["skopeo", "umoci", "docker-registry"]).unwrap() {
        return;
    }
    let (reg, target) = peer();
    let digest = check_skopeo_round_trip(&target, "app")
        .unwrap_or_else(|e| panic!("{e:#}\nregistry log:\n{}", reg.log()));
    assert!(digest.starts_with("sha256:"));
    eprintln!("skopeo: {digest} to {} and back", target.addr);
}

#[test]
fn buildah_pushes_an_image_built_from_scratch_to_the_peer() {
    if !tools_for_test("buildah push", &["buildah", "skopeo", "docker-registry"]).unwrap() {
        return;
    }
    let (reg, target) = peer();
    let digest = check_buildah_push(&target, "built")
        .unwrap_or_else(|e| panic!("{e:#}\nregistry log:\n{}", reg.log()));
    eprintln!("buildah: pushed {digest} to {}", target.addr);
}

#[test]
fn oras_pushes_and_pulls_an_artifact_with_the_peer() {
    if !tools_for_test("oras push/pull", &["docker-registry"]).unwrap() {
        return;
    }
    let Some(oras) = oras_for_test("oras push/pull").unwrap() else {
        return;
    };
    let (reg, target) = peer();
    let digest = check_oras_push_pull(&oras, &target, "artifact")
        .unwrap_or_else(|e| panic!("{e:#}\nregistry log:\n{}", reg.log()));
    eprintln!("oras: pushed and pulled {digest} ({})", target.addr);
}

#[tokio::test]
async fn docker_pushes_and_pulls_locally_built_images_with_the_peer() {
    if !tools_for_test("docker push/pull", &["docker", "docker-registry"]).unwrap() {
        return;
    }
    let Some(engine) = gantry_testkit::docker_for_test("docker push/pull")
        .await
        .unwrap()
    else {
        return;
    };
    gantry_testkit::ensure_busybox_image(&engine).await.unwrap();
    let (reg, target) = peer();
    let (busybox, imported) = check_docker_push_pull(&target, "busybox")
        .unwrap_or_else(|e| panic!("{e:#}\nregistry log:\n{}", reg.log()));
    assert_ne!(busybox, imported);
    eprintln!(
        "docker: pushed {busybox}, pushed and pulled {imported} ({})",
        target.addr
    );
}

/// The same clients with credentials (HTTP Basic on the peer; Gantry answers with its token
/// realm instead), and a push without them refused.
#[tokio::test]
async fn every_client_logs_in_to_a_peer_with_basic_auth() {
    if !tools_for_test(
        "registry clients with credentials",
        &["skopeo", "umoci", "buildah", "docker", "docker-registry"],
    )
    .unwrap()
    {
        return;
    }
    let Some(engine) = gantry_testkit::docker_for_test("registry clients with credentials")
        .await
        .unwrap()
    else {
        return;
    };
    gantry_testkit::ensure_busybox_image(&engine).await.unwrap();
    let creds = Creds::new("dev", "s3cret-Passw0rd");
    let reg = PeerRegistry::start_with_auth(Some(&creds)).expect("docker-registry starts");
    let target = Target {
        addr: reg.addr().to_string(),
        creds: Some(creds),
        prefix: "team/".into(),
    };
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}\nregistry log:\n{}", reg.log()) };
    check_anonymous_push_refused(&target, "app").unwrap_or_else(|e| fail(e));
    check_skopeo_round_trip(&target, "app").unwrap_or_else(|e| fail(e));
    check_buildah_push(&target, "built").unwrap_or_else(|e| fail(e));
    check_docker_push_pull(&target, "busybox").unwrap_or_else(|e| fail(e));
    let digest = check_docker_pulls_oci_image(&target, "oci").unwrap_or_else(|e| fail(e));
    if let Some(oras) = oras_for_test("oras with credentials").unwrap() {
        check_oras_push_pull(&oras, &target, "artifact").unwrap_or_else(|e| fail(e));
    }
    eprintln!("with credentials: every check passed; docker pulled the OCI image {digest}");
}
