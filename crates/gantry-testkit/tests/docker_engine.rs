//! Against a real Docker Engine (`DOCKER_HOST`): a command in a container from the locally built
//! busybox image, and two containers on a user-defined network reaching each other by alias,
//! which is what Gantry's per-job networks rely on. Skipped without an engine, failed instead
//! when `GANTRY_REQUIRE_DOCKER=1` (as `scripts/test` sets it).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use gantry_testkit::{
    container_logs, docker_for_test, ensure_busybox_image, force_remove_container, run_container,
    unique_name, wait_exit_code,
};

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

#[tokio::test]
async fn echo_in_container_from_local_image() -> Result<()> {
    let Some(docker) = docker_for_test("echo_in_container_from_local_image").await? else {
        return Ok(());
    };
    let image = ensure_busybox_image(&docker).await?;
    let name = unique_name("gantry-testkit-echo");
    let run = run_container(
        &docker,
        &name,
        ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["echo".into(), "hello-from-container".into()]),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(run.exit_code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "hello-from-container\n");
    assert_eq!(run.stderr, "");
    // run_container removed it.
    let gone = docker.inspect_container(&name, None).await;
    assert!(gone.is_err(), "container {name} still exists");
    Ok(())
}

#[tokio::test]
async fn exit_code_and_stderr_are_reported() -> Result<()> {
    let Some(docker) = docker_for_test("exit_code_and_stderr_are_reported").await? else {
        return Ok(());
    };
    let image = ensure_busybox_image(&docker).await?;
    let run = run_container(
        &docker,
        &unique_name("gantry-testkit-exit"),
        ContainerCreateBody {
            image: Some(image),
            cmd: sh("echo out; echo err >&2; exit 3"),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        (run.exit_code, run.stdout.as_str(), run.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    Ok(())
}

/// A per-job network: a server reachable by its network alias from a second container.
#[tokio::test]
async fn containers_reach_each_other_by_alias_on_user_network() -> Result<()> {
    let Some(docker) =
        docker_for_test("containers_reach_each_other_by_alias_on_user_network").await?
    else {
        return Ok(());
    };
    let image = ensure_busybox_image(&docker).await?;
    let network = unique_name("gantry-testkit-net");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {network}"))?;

    let mut containers = Vec::new();
    let result = alias_scenario(&docker, &image, &network, &mut containers).await;
    for id in &containers {
        force_remove_container(&docker, id).await?;
    }
    docker
        .remove_network(&network)
        .await
        .with_context(|| format!("removing network {network}"))?;
    result
}

async fn alias_scenario(
    docker: &Docker,
    image: &str,
    network: &str,
    containers: &mut Vec<String>,
) -> Result<()> {
    let on_network = |aliases: &[&str]| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.to_owned(),
            EndpointSettings {
                aliases: Some(aliases.iter().map(|a| (*a).to_owned()).collect()),
                ..Default::default()
            },
        )])),
    };

    // The server: busybox httpd on port 8080, known on the network as `db-service`.
    let server = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&unique_name("gantry-testkit-server"))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(image.to_owned()),
                cmd: sh("echo pong-from-server > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"),
                networking_config: Some(on_network(&["db-service"])),
                ..Default::default()
            },
        )
        .await
        .context("creating the server container")?;
    containers.push(server.id.clone());
    docker
        .start_container(&server.id, None)
        .await
        .context("starting the server container")?;

    // The client resolves the alias through the engine's embedded DNS and fetches the page,
    // retrying while httpd starts. (No `wget -T`: busybox 1.35's static wget segfaults with it.)
    let client = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&unique_name("gantry-testkit-client"))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(image.to_owned()),
                cmd: sh("for i in $(seq 1 50); do \
                           wget -q -O - http://db-service:8080/index.html && exit 0; \
                           sleep 0.1; \
                         done; \
                         nslookup db-service 127.0.0.11 >&2; exit 1"),
                networking_config: Some(on_network(&["job-step"])),
                ..Default::default()
            },
        )
        .await
        .context("creating the client container")?;
    containers.push(client.id.clone());
    docker
        .start_container(&client.id, None)
        .await
        .context("starting the client container")?;
    let exit_code = wait_exit_code(docker, &client.id, Duration::from_secs(60)).await?;
    let (stdout, stderr) = container_logs(docker, &client.id).await?;
    ensure!(
        exit_code == 0,
        "client could not reach db-service:8080 (exit {exit_code}); stdout: {stdout:?}; stderr: {stderr:?}"
    );
    assert_eq!(stdout, "pong-from-server\n");

    // ICMP by alias too, from a third container on the same network.
    let back = run_container(
        docker,
        &unique_name("gantry-testkit-ping"),
        ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: sh("ping -c 1 -W 5 db-service >/dev/null && echo reached"),
            networking_config: Some(on_network(&["job-step-2"])),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        (back.exit_code, back.stdout.as_str()),
        (0, "reached\n"),
        "stderr: {}",
        back.stderr
    );
    Ok(())
}
