//! The registry's [`Authority`] on the engine's accounts: `docker login` credentials are
//! users' passwords, personal access tokens with a registry scope, robot accounts, the
//! administrator's token or a running job's `CI_JOB_TOKEN`; what each may do in a project is
//! `Engine::registry_actions`. The `/v2/` routes themselves are `gantry_registry::router`,
//! merged beside the route table (they authorize with registry tokens, not API tokens).
//! [`RegistryReplicator`] lends the registry's copy to the engine's replication worker.

use gantry_engine::Engine;
use gantry_engine::engine::registry::RegistryPrincipal;
use gantry_engine::engine::replication::{
    ReplicationFailure, ReplicationReport, ReplicationTask, Replicator,
};
use gantry_engine::error::EngineError;
use gantry_registry::client::Credentials;
use gantry_registry::replicate::{Destination, Filters, Selection};
use gantry_registry::{Actions, Authority, Refusal};
use gantry_store::db::replication::ReplicationCounts;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// The engine as the registry's authority.
#[derive(Debug, Clone)]
pub struct EngineAuthority(pub Engine);

/// The registry of a server.
pub type ServerRegistry = gantry_registry::Registry<EngineAuthority>;

impl Authority for EngineAuthority {
    type Principal = RegistryPrincipal;

    async fn authenticate(
        &self,
        credentials: Option<(String, String)>,
        peer: IpAddr,
    ) -> Result<RegistryPrincipal, Refusal> {
        match self.0.registry_login(credentials, &peer.to_string()).await {
            Ok(p) => Ok(p),
            Err(EngineError::TooManyRequests(m)) => Err(Refusal::TooMany(m)),
            Err(EngineError::Unauthorized(m)) => Err(Refusal::Unauthorized(m)),
            Err(e) => {
                tracing::error!("registry login: {e}");
                Err(Refusal::Unauthorized(format!(
                    "the credentials could not be checked ({e}); try again"
                )))
            }
        }
    }

    fn name(&self, who: &RegistryPrincipal) -> String {
        who.name()
    }

    async fn allowed(&self, who: &RegistryPrincipal, project_id: i64) -> Actions {
        match self.0.registry_actions(who, project_id).await {
            Ok(a) => Actions {
                pull: a.pull,
                push: a.push,
                delete: a.delete,
            },
            Err(e) => {
                tracing::error!("registry permissions: {e}");
                Actions::NONE
            }
        }
    }

    async fn event(&self, e: gantry_registry::Event) {
        // Deletions are in the audit log, whoever made them (the Distribution API's
        // `DELETE`, the web UI): the project's registry history shows them.
        if e.kind == "image_deleted" {
            self.0
                .audit_registry_delete(
                    &e.actor,
                    e.project_id,
                    &e.repository,
                    e.tag.as_deref(),
                    &e.digest,
                )
                .await;
        }
        let doc = serde_json::json!({
            "repository": e.repository,
            "tag": e.tag,
            "digest": e.digest,
            "actor": e.actor,
        });
        self.0.registry_event(e.project_id, e.kind, doc).await;
    }

    async fn visible_projects(&self, who: &RegistryPrincipal) -> Option<Vec<i64>> {
        match self.0.registry_visible_projects(who).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("registry catalog: {e}");
                Some(Vec::new())
            }
        }
    }
}

/// The registry as the engine's [`Replicator`]: filters are `gantry_registry::replicate`'s,
/// and a run is the registry's copy of what the rule selects to its destination.
#[derive(Debug, Clone)]
pub struct RegistryReplicator {
    pub registry: ServerRegistry,
    /// Connecting to the destination, and each read from it, at most this long.
    pub timeout: std::time::Duration,
}

impl Replicator for RegistryReplicator {
    fn check_filters(&self, repositories: &str, tags: &str) -> Result<(), String> {
        Filters::new(repositories, tags).map(drop)
    }

    fn matches(&self, repositories: &str, tags: &str, repository: &str, tag: &str) -> bool {
        Filters::new(repositories, tags).is_ok_and(|f| f.matches(repository, tag))
    }

    fn replicate(
        &self,
        task: ReplicationTask,
    ) -> Pin<Box<dyn Future<Output = ReplicationReport> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move {
            let sel = Selection {
                project_id: task.project_id,
                project_path: task.project_path,
                repositories: task.repositories,
                tags: task.tags,
                image: task.image,
            };
            let credentials =
                (!task.username.is_empty() || task.password.is_some()).then(|| Credentials {
                    username: task.username,
                    password: task.password.unwrap_or_else(|| String::new().into()),
                });
            let dest = Destination {
                url: task.url,
                namespace: task.namespace,
                credentials,
                insecure: task.insecure,
                timeout: this.timeout,
            };
            let (stats, result) = this.registry.replicate(&sel, &dest).await;
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            ReplicationReport {
                counts: ReplicationCounts {
                    images_copied: n(stats.images_copied),
                    images_skipped: n(stats.images_skipped),
                    blobs_copied: n(stats.blobs_copied),
                    blobs_mounted: n(stats.blobs_mounted),
                    blobs_skipped: n(stats.blobs_skipped),
                    bytes_copied: n(stats.bytes_copied),
                },
                failure: result.err().map(|e| ReplicationFailure {
                    retry: e.retryable(),
                    message: e.message,
                }),
            }
        })
    }
}
