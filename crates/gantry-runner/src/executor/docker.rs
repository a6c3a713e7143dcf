//! The Docker executor: a fresh container per step from the job's `image`, `services` as
//! sidecars on a network of the job's own (reachable by their aliases; jobs without services
//! use the engine's default network), the workspace bind-mounted at `CI_PROJECT_DIR`, and
//! everything removed at the end whatever happens.
//!
//! Pull policy: `never` uses only local images; `if-not-present` (the default for local runs,
//! so locally built images just work) pulls only when the image is missing; `always` pulls.

use super::{ExecError, Executor, JobSpec, Prepared, SHELL_DETECT, Step};
use crate::log::LogSink;
use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;
use gantry_pipeline::model::{Image, Service};
use std::collections::HashMap;

/// Label put on everything Gantry creates, so leftovers can be found.
pub const LABEL: &str = "org.gantry.job";

/// The oldest Engine API we speak: Debian 12's docker.io 20.10.
const BASE_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

pub struct DockerExecutor {
    docker: Docker,
    /// Used when a job has no `image`.
    pub default_image: Option<String>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("default_image", &self.default_image)
            .finish()
    }
}

impl DockerExecutor {
    /// Connects to `DOCKER_HOST` (or the default socket) and negotiates the API version.
    pub async fn connect() -> Result<DockerExecutor, ExecError> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 600, &BASE_API)
        } else {
            Docker::connect_with_http(&host, 600, &BASE_API)
        }
        .map_err(|e| {
            ExecError::System(format!("connecting to the Docker Engine at {host}: {e}"))
        })?;
        let docker = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            docker.negotiate_version(),
        )
        .await
        .map_err(|_| ExecError::System(format!("the Docker Engine at {host} does not answer")))?
        .map_err(|e| {
            ExecError::System(format!("the Docker Engine at {host} does not answer: {e}"))
        })?;
        Ok(DockerExecutor {
            docker,
            default_image: None,
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn ensure_image(
        &self,
        name: &str,
        policy: &[String],
        log: &LogSink,
    ) -> Result<(), ExecError> {
        let policy = policy
            .first()
            .map(String::as_str)
            .unwrap_or("if-not-present");
        let present = self.docker.inspect_image(name).await.is_ok();
        match (policy, present) {
            ("never", true) | ("if-not-present", true) => {
                log.info(&format!("Using local image {name}"));
                Ok(())
            }
            ("never", false) => Err(ExecError::System(format!(
                "image '{name}' is not on this machine and pull_policy is `never`: build or load it first (docker build / docker load)"
            ))),
            _ => {
                log.info(&format!("Pulling image {name} ..."));
                let (repo, tag) = split_image(name);
                let opts = CreateImageOptionsBuilder::new()
                    .from_image(repo)
                    .tag(tag)
                    .build();
                let mut stream = self.docker.create_image(Some(opts), None, None);
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        let hint = if present {
                            ""
                        } else {
                            ": build or load it first (docker build / docker load), or check the name"
                        };
                        return Err(ExecError::System(format!(
                            "image '{name}' could not be pulled ({}){hint}",
                            short_error(&e)
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

fn split_image(name: &str) -> (&str, &str) {
    if name.contains('@') {
        return (name, "");
    }
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}

/// `NAME=value` strings for the Engine API, later entries winning.
fn env_list<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> Vec<String> {
    pairs.map(|(k, v)| format!("{k}={v}")).collect()
}

/// A removal that finds nothing to remove has done its job.
fn ok_if_gone(r: Result<(), BollardError>) -> Result<(), BollardError> {
    match r {
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        r => r,
    }
}

fn remove_options() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build()
}

fn short_error(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// GitLab's default aliases for a service: the image name without tag, with `/` replaced by
/// `__` and by `-`.
pub fn default_aliases(image: &str) -> Vec<String> {
    let (repo, _) = split_image(image);
    let repo = repo.rsplit_once('@').map_or(repo, |(r, _)| r);
    let repo = match repo.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => rest,
        _ => repo,
    };
    let mut out = vec![repo.replace('/', "__"), repo.replace('/', "-")];
    out.dedup();
    out
}

#[async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        log: &LogSink,
    ) -> Result<Box<dyn Prepared>, (ExecError, Option<Box<dyn Prepared>>)> {
        let image = match (&job.image, &self.default_image) {
            (Some(i), _) => i.clone(),
            (None, Some(d)) => Image {
                name: d.clone(),
                ..Image::default()
            },
            (None, None) => {
                return Err((
                    ExecError::System("the job has no `image` and no default image is set: add `image:` (or `default: image:`) to the pipeline, or pass --docker-image".into()),
                    None,
                ));
            }
        };
        let mut handle = DockerJob {
            docker: self.docker.clone(),
            spec: job.clone(),
            image,
            containers: Vec::new(),
            network: None,
        };
        log.info(&format!(
            "Running with the docker executor, image {}",
            handle.image.name
        ));
        if let Err(e) = self
            .ensure_image(&handle.image.name, &handle.image.pull_policy, log)
            .await
        {
            return Err((e, Some(Box::new(handle))));
        }
        if job.services.is_empty() {
            // No sidecars to reach: the job gets the engine's default network, as with
            // `docker run`, and skips creating and removing a network of its own.
            return Ok(Box::new(handle));
        }
        let network = format!("gantry-{}", job.id);
        let req = NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels(job)),
            ..Default::default()
        };
        if let Err(e) = self.docker.create_network(req).await {
            return Err((
                ExecError::System(format!("creating the job network: {}", short_error(&e))),
                Some(Box::new(handle)),
            ));
        }
        handle.network = Some(network);
        for (i, svc) in job.services.iter().enumerate() {
            if let Err(e) = self.ensure_image(&svc.name, &svc.pull_policy, log).await {
                return Err((e, Some(Box::new(handle))));
            }
            if let Err(e) = handle.start_service(i, svc, log).await {
                return Err((e, Some(Box::new(handle))));
            }
        }
        Ok(Box::new(handle))
    }
}

fn labels(job: &JobSpec) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = job.labels.iter().cloned().collect();
    l.insert(LABEL.to_string(), job.id.clone());
    l
}

struct DockerJob {
    docker: Docker,
    spec: JobSpec,
    image: Image,
    containers: Vec<String>,
    network: Option<String>,
}

impl DockerJob {
    fn labels(&self) -> HashMap<String, String> {
        labels(&self.spec)
    }

    fn networking(&self, aliases: Vec<String>) -> Option<NetworkingConfig> {
        let net = self.network.clone()?;
        Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net,
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            )])),
        })
    }

    async fn start_service(
        &mut self,
        index: usize,
        svc: &Service,
        log: &LogSink,
    ) -> Result<(), ExecError> {
        let name = format!("gantry-{}-svc-{index}", self.spec.id);
        let mut aliases = default_aliases(&svc.name);
        aliases.extend(svc.aliases.iter().cloned());
        let service_vars: Vec<(String, String)> = svc
            .variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let env = env_list(self.spec.env.iter().chain(&service_vars));
        let body = ContainerCreateBody {
            image: Some(svc.name.clone()),
            entrypoint: svc.entrypoint.clone(),
            cmd: svc.command.clone(),
            env: Some(env),
            labels: Some(self.labels()),
            host_config: Some(HostConfig {
                network_mode: self.network.clone(),
                ..Default::default()
            }),
            networking_config: self.networking(aliases.clone()),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| {
                ExecError::System(format!(
                    "creating service {}: {}",
                    svc.name,
                    short_error(&e)
                ))
            })?;
        self.containers.push(created.id.clone());
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| {
                ExecError::System(format!(
                    "starting service {}: {}",
                    svc.name,
                    short_error(&e)
                ))
            })?;
        log.info(&format!(
            "Started service {} as {}",
            svc.name,
            aliases.join(", ")
        ));
        Ok(())
    }
}

#[async_trait]
impl Prepared for DockerJob {
    async fn run(
        &mut self,
        step: Step,
        script: &str,
        extra_env: &[(String, String)],
        log: &LogSink,
    ) -> Result<i32, ExecError> {
        self.spec.write_script(step, script).await?;
        let scripts = &self.spec.scratch;
        let env = env_list(self.spec.env.iter().chain(extra_env));
        let binds = vec![
            format!(
                "{}:{}",
                self.spec.workspace.display(),
                self.spec.project_dir
            ),
            format!("{}:/gantry/scripts:ro", scripts.display()),
        ];
        let body = ContainerCreateBody {
            image: Some(self.image.name.clone()),
            entrypoint: self.image.entrypoint.clone(),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                SHELL_DETECT.into(),
                "sh".into(),
                format!("/gantry/scripts/{}", step.file_name()),
            ]),
            env: Some(env),
            working_dir: Some(self.spec.project_dir.clone()),
            user: self.image.user.clone(),
            labels: Some(self.labels()),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: self.network.clone(),
                ..Default::default()
            }),
            networking_config: self.networking(Vec::new()),
            ..Default::default()
        };
        let name = format!(
            "gantry-{}-{}",
            self.spec.id,
            match step {
                Step::Script => "build",
                Step::AfterScript => "after",
            }
        );
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| {
                ExecError::System(format!("creating the job container: {}", short_error(&e)))
            })?;
        self.containers.push(created.id.clone());
        let mut logs = self.docker.logs(
            &created.id,
            Some(
                LogsOptionsBuilder::new()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| {
                ExecError::System(format!("starting the job container: {}", short_error(&e)))
            })?;
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(out) => log.write(&out.into_bytes()),
                Err(e) => {
                    log.info(&format!("(log stream interrupted: {})", short_error(&e)));
                    break;
                }
            }
        }
        let mut wait = self.docker.wait_container(&created.id, None);
        let code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(ExecError::System(format!(
                    "waiting for the job container: {}",
                    short_error(&e)
                )));
            }
            None => return Err(ExecError::System("the job container vanished".into())),
        };
        let _ = self
            .docker
            .remove_container(&created.id, Some(remove_options()))
            .await;
        self.containers.retain(|c| c != &created.id);
        Ok(code as i32)
    }

    async fn cleanup(&mut self, log: &LogSink) {
        for id in std::mem::take(&mut self.containers) {
            match ok_if_gone(
                self.docker
                    .remove_container(&id, Some(remove_options()))
                    .await,
            ) {
                Ok(()) => {}
                Err(e) => log.info(&format!(
                    "could not remove container {id}: {}",
                    short_error(&e)
                )),
            }
        }
        if let Some(net) = self.network.take() {
            match ok_if_gone(self.docker.remove_network(&net).await) {
                Ok(()) => {}
                Err(e) => log.info(&format!(
                    "could not remove network {net}: {}",
                    short_error(&e)
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_aliases_as_gitlab() {
        assert_eq!(default_aliases("postgres:15"), vec!["postgres"]);
        assert_eq!(
            default_aliases("tutum/wordpress:latest"),
            vec!["tutum__wordpress", "tutum-wordpress"]
        );
        assert_eq!(
            default_aliases("registry.example.com:5000/group/redis:7"),
            vec!["group__redis", "group-redis"]
        );
    }
}
