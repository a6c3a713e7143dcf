//! Who may do what in the registry: the credentials `docker login` sends (a user's password,
//! a personal access token with a registry scope, the administrator's token, a running job's
//! `CI_JOB_TOKEN` as GitLab's `gitlab-ci-token` user) and what each may do in a project's
//! repositories (roles, the project's registry settings). The registry crate asks through its
//! `Authority` trait, which the server implements on these.

use super::{Caller, Engine};
use crate::error::{EngineError, Result};
use crate::token::hash_token;
use gantry_api::rest::{self, Page};
use gantry_api::{JobStatus, Role, Scope};
use gantry_store::db::{PageReq, RegistrySettingsRow, RobotRow};

/// Robot account tokens start with this.
const ROBOT_PREFIX: &str = "grb_";

/// Who presented registry credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryPrincipal {
    Anonymous,
    /// The administrator's token.
    Admin,
    User {
        id: i64,
        username: String,
        admin: bool,
        /// A personal access token's scopes; `None` for a password.
        scopes: Option<Vec<Scope>>,
    },
    /// A running job (`CI_JOB_TOKEN`): push and pull in its own project.
    Job {
        id: i64,
        project_id: i64,
    },
    /// A project's robot account: pull, or pull and push, in that project only.
    Robot {
        id: i64,
        project_id: i64,
        username: String,
        push: bool,
    },
}

impl RegistryPrincipal {
    /// The principal of an API or web UI caller, so that a page checks what the
    /// Distribution API would let the same user do (roles, the registry settings, a
    /// personal access token's scopes). Agents and jobs are nobody here.
    pub fn of(caller: &Caller) -> RegistryPrincipal {
        match caller {
            Caller::Admin => RegistryPrincipal::Admin,
            Caller::User(u) => RegistryPrincipal::User {
                id: u.id,
                username: u.username.clone(),
                admin: u.admin,
                scopes: u.scopes.clone(),
            },
            Caller::Agent(_) | Caller::Job(_) => RegistryPrincipal::Anonymous,
        }
    }

    /// What tokens carry and pushes record.
    pub fn name(&self) -> String {
        match self {
            RegistryPrincipal::Anonymous => String::new(),
            RegistryPrincipal::Admin => "admin-token".into(),
            RegistryPrincipal::User { username, .. } => username.clone(),
            RegistryPrincipal::Job { id, .. } => format!("job:{id}"),
            RegistryPrincipal::Robot { username, .. } => username.clone(),
        }
    }
}

/// What a principal may do in a project's repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryActions {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

/// The settings key of the registry's token signing key (sealed).
const TOKEN_KEY_SETTING: &str = "registry.token_key";
const TOKEN_KEY_AAD: &str = "setting:registry.token_key";

impl Engine {
    /// Who `docker login` credentials belong to. `None`: an anonymous visitor.
    pub async fn registry_login(
        &self,
        credentials: Option<(String, String)>,
        ip: &str,
    ) -> Result<RegistryPrincipal> {
        let Some((user, secret)) = credentials else {
            return Ok(RegistryPrincipal::Anonymous);
        };
        let hash = hash_token(&secret);
        if crate::token::constant_time_eq(&hash, &self.inner.admin_hash) {
            return Ok(RegistryPrincipal::Admin);
        }
        if secret.starts_with("gjt_") {
            return match self.inner.db.job_by_token_hash(&hash).await? {
                Some(j) if j.status == JobStatus::Running => Ok(RegistryPrincipal::Job {
                    id: j.id,
                    project_id: j.project_id,
                }),
                _ => Err(EngineError::Unauthorized(
                    "this job token is not valid: job tokens work only while their job runs".into(),
                )),
            };
        }
        if secret.starts_with(ROBOT_PREFIX) {
            let refused =
                |why: &str| EngineError::Unauthorized(format!("the robot account {user} {why}"));
            let Some(r) = self.inner.db.robot_by_token_hash(&hash).await? else {
                return Err(refused("does not exist, or its token is wrong"));
            };
            let username = self.robot_username(&r).await?;
            if username != user {
                return Err(refused(&format!(
                    "is not {username}'s token's name: log in as {username}"
                )));
            }
            if r.revoked {
                return Err(refused("was revoked"));
            }
            if r.expires_at
                .is_some_and(|at| at <= gantry_store::db::now_ms())
            {
                return Err(refused("has expired"));
            }
            self.inner.db.touch_robot(r.id).await?;
            return Ok(RegistryPrincipal::Robot {
                id: r.id,
                project_id: r.project_id,
                username,
                push: r.actions.split(',').any(|a| a == "push"),
            });
        }
        if secret.starts_with("gpat_") {
            let Some(Caller::User(u)) = self.authenticate_access_token(&secret).await? else {
                return Err(EngineError::Unauthorized(
                    "unknown personal access token".into(),
                ));
            };
            if u.username != user {
                return Err(EngineError::Unauthorized(format!(
                    "this personal access token belongs to another user than '{user}': log in as its owner"
                )));
            }
            let scopes = u.scopes.unwrap_or_default();
            if !scopes
                .iter()
                .any(|s| matches!(s, Scope::Api | Scope::ReadRegistry | Scope::WriteRegistry))
            {
                return Err(EngineError::Unauthorized(
                    "this personal access token has no registry scope: make one with read_registry or write_registry".into(),
                ));
            }
            return Ok(RegistryPrincipal::User {
                id: u.id,
                username: u.username,
                admin: u.admin,
                scopes: Some(scopes),
            });
        }
        let u = self.check_login(&user, &secret, ip).await?;
        Ok(RegistryPrincipal::User {
            id: u.id,
            username: u.username,
            admin: u.is_admin,
            scopes: None,
        })
    }

    /// What `who` may do in the repositories of project `project_id`: pull as a reporter (or
    /// anyone when the project is public), push at the project's push role (developer by
    /// default), delete as a maintainer; a token's registry scopes cut that down; a job
    /// pushes and pulls in its own project and pulls from public ones.
    pub async fn registry_actions(
        &self,
        who: &RegistryPrincipal,
        project_id: i64,
    ) -> Result<RegistryActions> {
        let settings = self.inner.db.registry_settings(project_id).await?;
        let public = settings.public;
        let role = match who {
            RegistryPrincipal::Anonymous => None,
            RegistryPrincipal::Admin => Some(Role::Owner),
            RegistryPrincipal::User { admin: true, .. } => Some(Role::Owner),
            RegistryPrincipal::User { id, .. } => self.inner.db.role_of(project_id, *id).await?,
            RegistryPrincipal::Robot {
                project_id: own,
                push,
                ..
            } => {
                return Ok(RegistryActions {
                    pull: *own == project_id || public,
                    push: *own == project_id && *push,
                    delete: false,
                });
            }
            RegistryPrincipal::Job {
                project_id: own, ..
            } => {
                return Ok(RegistryActions {
                    pull: *own == project_id || public,
                    push: *own == project_id,
                    delete: false,
                });
            }
        };
        let push_role: Role = settings.push_role.parse().unwrap_or(Role::Developer);
        let mut a = RegistryActions {
            pull: public || role.is_some_and(|r| r >= Role::Reporter),
            push: role.is_some_and(|r| r >= push_role),
            delete: role.is_some_and(|r| r >= Role::Maintainer),
        };
        if let RegistryPrincipal::User {
            scopes: Some(scopes),
            ..
        } = who
        {
            let write = scopes
                .iter()
                .any(|s| matches!(s, Scope::Api | Scope::WriteRegistry));
            a.push &= write;
            a.delete &= write;
        }
        Ok(a)
    }

    /// The projects whose repositories `who` may list; `None`: all.
    pub async fn registry_visible_projects(
        &self,
        who: &RegistryPrincipal,
    ) -> Result<Option<Vec<i64>>> {
        match who {
            RegistryPrincipal::Admin | RegistryPrincipal::User { admin: true, .. } => Ok(None),
            RegistryPrincipal::User { id, .. } => Ok(Some(
                self.inner.db.registry_visible_projects(Some(*id)).await?,
            )),
            RegistryPrincipal::Job { project_id, .. }
            | RegistryPrincipal::Robot { project_id, .. } => {
                let mut v = self.inner.db.registry_visible_projects(None).await?;
                v.push(*project_id);
                Ok(Some(v))
            }
            RegistryPrincipal::Anonymous => {
                Ok(Some(self.inner.db.registry_visible_projects(None).await?))
            }
        }
    }

    /// Whether `caller` may promote an image of project `from` into project `to`: pull in
    /// the source (reporter, or a public project) and the destination's promote role
    /// (maintainer by default), so that developers push to `dev` while only those given
    /// the role promote into `test` or `release`.
    pub async fn registry_may_promote(&self, caller: &Caller, from: i64, to: i64) -> Result<()> {
        if caller.is_admin() {
            return Ok(());
        }
        let Caller::User(u) = caller else {
            return Err(EngineError::Forbidden(
                "only users promote images (agents and jobs do not)".into(),
            ));
        };
        let from_settings = self.inner.db.registry_settings(from).await?;
        let from_role = self.inner.db.role_of(from, u.id).await?;
        if !from_settings.public && from_role.is_none_or(|r| r < Role::Reporter) {
            return Err(EngineError::NotFound(
                "the source image's project was not found (or you are not a member)".into(),
            ));
        }
        let to_settings = self.inner.db.registry_settings(to).await?;
        let need: Role = to_settings.promote_role.parse().unwrap_or(Role::Maintainer);
        let to_role = self.inner.db.role_of(to, u.id).await?;
        if to_role.is_none_or(|r| r < need) {
            let project = self
                .inner
                .db
                .project(to)
                .await?
                .map(|p| p.path)
                .unwrap_or_default();
            return Err(EngineError::Forbidden(format!(
                "promoting into {project} needs the {need} role there (you have {}): ask one of its owners",
                to_role.map_or_else(|| "none".to_string(), |r| r.to_string())
            )));
        }
        Ok(())
    }

    /// The paths of the projects `caller` may promote images into (the promote role of each
    /// project's registry settings), at most `limit`, by path; for the web UI's promote form.
    pub async fn registry_promote_targets(
        &self,
        caller: &Caller,
        limit: usize,
    ) -> Result<Vec<String>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        if caller.is_admin() {
            let rows = db.projects(PageReq::new(Some(1), Some(100))).await?;
            out.extend(rows.into_iter().map(|p| p.path));
        } else if let Caller::User(u) = caller {
            for (project, role) in db.memberships(u.id).await? {
                let need: Role = db
                    .registry_settings(project)
                    .await?
                    .promote_role
                    .parse()
                    .unwrap_or(Role::Maintainer);
                if role >= need
                    && let Some(p) = db.project(project).await?
                {
                    out.push(p.path);
                }
            }
        }
        out.sort();
        out.truncate(limit);
        Ok(out)
    }

    /// Records a deletion in the registry (a tag, or a manifest by digest) in the audit log:
    /// by the Distribution API (`DELETE /v2/…/manifests/…`) or the web UI; `actor` as the
    /// registry token names it.
    pub async fn audit_registry_delete(
        &self,
        actor: &str,
        project: i64,
        repository: &str,
        tag: Option<&str>,
        digest: &str,
    ) {
        let target = match tag {
            Some(t) => format!("{repository}:{t}"),
            None => format!("{repository}@{digest}"),
        };
        let actor = if actor.is_empty() { "anonymous" } else { actor };
        self.audit_as(
            actor,
            "registry.delete",
            Some(project),
            &target,
            Some(serde_json::json!({"digest": digest}).to_string()),
            None,
        )
        .await;
    }

    /// A page of a project's registry history, newest first: promotions into it, deletions
    /// and what API-run retention removed, from the audit log.
    pub async fn registry_history(
        &self,
        project: i64,
        page: PageReq,
    ) -> Result<Page<rest::AuditEvent>> {
        let rows = self.inner.db.registry_history(project, page).await?;
        Ok(super::paged(page, rows, super::accounts::audit_dto))
    }

    /// Records a promotion in the audit log.
    pub async fn audit_promotion(&self, by: &Caller, project: i64, target: &str, details: String) {
        self.audit_as(
            &by.name(),
            "registry.promote",
            Some(project),
            target,
            Some(details),
            None,
        )
        .await;
    }

    /// `robot$PROJECT+NAME`, as Harbor names robot accounts.
    async fn robot_username(&self, r: &RobotRow) -> Result<String> {
        let project = self.project_row(r.project_id).await?;
        Ok(format!("robot${}+{}", project.path, r.name))
    }

    async fn robot_dto(&self, r: &RobotRow, token: Option<String>) -> Result<rest::Robot> {
        Ok(rest::Robot {
            id: r.id,
            username: self.robot_username(r).await?,
            actions: r.actions.split(',').map(String::from).collect(),
            hint: r.hint.clone(),
            expires_at: r.expires_at,
            revoked: r.revoked,
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            token,
        })
    }

    /// Makes a robot account of a project; its token is in this answer only.
    pub async fn create_robot(
        &self,
        project: &str,
        req: &rest::RobotCreate,
        by: &str,
    ) -> Result<rest::Robot> {
        let id = self.find_project(project).await?;
        let name_ok = !req.name.is_empty()
            && req.name.len() <= 64
            && req
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !name_ok {
            return Err(EngineError::BadRequest(format!(
                "robot name '{}' is not valid: 1-64 lowercase letters, digits, '-', '_' or '.'",
                req.name
            )));
        }
        let mut actions: Vec<&str> = req.actions.iter().map(String::as_str).collect();
        actions.sort_unstable();
        actions.dedup();
        let actions = match actions.as_slice() {
            ["pull"] => "pull",
            ["pull", "push"] | ["push"] => "pull,push",
            _ => {
                return Err(EngineError::BadRequest(format!(
                    "robot actions {:?} are not valid: [\"pull\"] or [\"pull\", \"push\"]",
                    req.actions
                )));
            }
        };
        if req
            .expires_at
            .is_some_and(|at| at <= gantry_store::db::now_ms())
        {
            return Err(EngineError::BadRequest("expires_at is in the past".into()));
        }
        let token = crate::token::new_token(ROBOT_PREFIX);
        let hint = token[..ROBOT_PREFIX.len() + 6].to_string();
        let rid = self
            .inner
            .db
            .insert_robot(
                id,
                &req.name,
                &hash_token(&token),
                &hint,
                actions,
                req.expires_at,
                by,
            )
            .await?;
        self.audit_as(by, "robot.create", Some(id), &req.name, None, None)
            .await;
        let row = self
            .inner
            .db
            .robots(id)
            .await?
            .into_iter()
            .find(|r| r.id == rid)
            .ok_or_else(|| EngineError::not_found(format!("robot {rid}")))?;
        self.robot_dto(&row, Some(token)).await
    }

    pub async fn robots(&self, project: &str) -> Result<Vec<rest::Robot>> {
        let id = self.find_project(project).await?;
        let mut out = Vec::new();
        for r in self.inner.db.robots(id).await? {
            out.push(self.robot_dto(&r, None).await?);
        }
        Ok(out)
    }

    pub async fn revoke_robot(&self, project: &str, robot: i64, by: &str) -> Result<()> {
        let id = self.find_project(project).await?;
        if !self.inner.db.revoke_robot(id, robot).await? {
            return Err(EngineError::not_found(format!("robot account {robot}")));
        }
        self.audit_as(by, "robot.revoke", Some(id), &robot.to_string(), None, None)
            .await;
        Ok(())
    }

    /// Records a registry change (retention, …) in the audit log.
    pub async fn audit_registry(&self, by: &Caller, project: i64, action: &str, target: &str) {
        self.audit_as(&by.name(), action, Some(project), target, None, None)
            .await;
    }

    /// A project's registry settings.
    pub async fn registry_settings(&self, project: &str) -> Result<RegistrySettingsRow> {
        let id = self.find_project(project).await?;
        Ok(self.inner.db.registry_settings(id).await?)
    }

    /// Changes a project's registry settings.
    pub async fn set_registry_settings(
        &self,
        project: &str,
        settings: &RegistrySettingsRow,
        by: &str,
    ) -> Result<()> {
        let id = self.find_project(project).await?;
        for r in [&settings.push_role, &settings.promote_role] {
            r.parse::<Role>().map_err(EngineError::BadRequest)?;
        }
        self.inner.db.set_registry_settings(id, settings).await?;
        self.audit_as(
            by,
            "registry.settings",
            Some(id),
            &format!(
                "public={} push_role={} promote_role={} policy={}",
                settings.public, settings.push_role, settings.promote_role, settings.policy
            ),
            None,
            None,
        )
        .await;
        Ok(())
    }

    /// The secret registry tokens are signed with: made once and kept sealed in the
    /// database, so that every server of an installation signs alike. A key the keyring can
    /// no longer open is replaced (tokens live minutes; clients ask again).
    pub async fn registry_token_key(&self) -> Result<Vec<u8>> {
        let stored = self.inner.db.setting(TOKEN_KEY_SETTING).await?;
        if let Some(sealed) = &stored
            && let Some(key) = self.open_token_key(sealed)
        {
            return Ok(key);
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the system's random numbers");
        let sealed = self
            .inner
            .keys
            .seal(hex::encode(key).as_bytes(), TOKEN_KEY_AAD);
        if stored.is_some() {
            self.inner
                .db
                .set_setting(TOKEN_KEY_SETTING, &sealed)
                .await?;
            return Ok(key.to_vec());
        }
        self.inner
            .db
            .insert_setting_once(TOKEN_KEY_SETTING, &sealed)
            .await?;
        // Another server may have made one first: everybody uses what is stored.
        let stored = self.inner.db.setting(TOKEN_KEY_SETTING).await?;
        Ok(stored
            .and_then(|s| self.open_token_key(&s))
            .unwrap_or(key.to_vec()))
    }

    fn open_token_key(&self, sealed: &str) -> Option<Vec<u8>> {
        let plain = self.inner.keys.open(sealed, TOKEN_KEY_AAD).ok()?;
        let bytes = hex::decode(gantry_store::secrets::ExposeSecret::expose_secret(&plain)).ok()?;
        (bytes.len() >= 32).then_some(bytes)
    }
}
