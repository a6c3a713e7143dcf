//! The registry's [`Authority`] on the engine's accounts: `docker login` credentials are
//! users' passwords, personal access tokens with a registry scope, robot accounts, the
//! administrator's token or a running job's `CI_JOB_TOKEN`; what each may do in a project is
//! `Engine::registry_actions`. The `/v2/` routes themselves are `gantry_registry::router`,
//! merged beside the route table (they authorize with registry tokens, not API tokens).

use gantry_engine::Engine;
use gantry_engine::engine::registry::RegistryPrincipal;
use gantry_engine::error::EngineError;
use gantry_registry::{Actions, Authority, Refusal};
use std::net::IpAddr;

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
