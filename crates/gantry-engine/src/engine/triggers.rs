//! Trigger tokens: `POST /api/v1/projects/{project}/trigger` with one of a project's tokens
//! starts a pipeline of that project (source `trigger`, `CI_PIPELINE_TRIGGERED=true`), for a
//! ref and with variables, as GitLab's pipeline trigger API. A token is shown once, when it
//! is made; Gantry keeps its SHA-256 (it has 256 random bits: a slow hash would add nothing)
//! and its first characters to tell tokens apart. A token only ever starts pipelines of its
//! own project, as the user who made it.

use super::{Caller, Engine};
use crate::error::{EngineError, Result};
use crate::token::{hash_token, new_token};
use gantry_api::rest::{self, KeyValue, PipelineCreate, TriggerRequest, TriggerTokenCreate};
use gantry_pipeline::trigger::Source;
use gantry_store::db::TriggerTokenRow;

/// What a trigger token starts with (GitLab's are `glptt-`).
const PREFIX: &str = "gtt_";
/// How many characters of a token are kept to tell it apart.
const HINT: usize = PREFIX.len() + 4;
const MAX_DESCRIPTION: usize = 255;

impl Engine {
    /// Makes a trigger token for a project; the answer holds the token, this once.
    pub async fn create_trigger_token(
        &self,
        project: &str,
        req: TriggerTokenCreate,
        caller: &Caller,
    ) -> Result<rest::TriggerToken> {
        let user = match caller {
            Caller::User(u) => u.username.clone(),
            _ => "admin".to_string(),
        };
        let p = self.find_project_row(project).await?;
        let description = req.description.trim();
        if description.len() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
            return Err(EngineError::BadRequest(format!(
                "a trigger token's description is one line of at most {MAX_DESCRIPTION} bytes"
            )));
        }
        let token = new_token(PREFIX);
        let hint = token[..HINT].to_string();
        let id = self
            .inner
            .db
            .insert_trigger_token(p.id, description, &hash_token(&token), &hint, &user)
            .await?;
        tracing::info!(project = %p.path, id, %hint, "trigger token made");
        self.audit(
            caller,
            "trigger.create",
            Some(p.id),
            &format!("trigger token {id} ({hint})"),
            None,
        )
        .await;
        let row = self
            .inner
            .db
            .trigger_tokens(p.id)
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| EngineError::not_found(format!("trigger token {id}")))?;
        Ok(rest::TriggerToken {
            token: Some(token),
            ..token_dto(row)
        })
    }

    /// A project's trigger tokens, without the tokens.
    pub async fn trigger_tokens(&self, project: &str) -> Result<Vec<rest::TriggerToken>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.trigger_tokens(p.id).await?;
        Ok(rows.into_iter().map(token_dto).collect())
    }

    /// Revokes a trigger token: it starts nothing from now on.
    pub async fn delete_trigger_token(
        &self,
        project: &str,
        id: i64,
        caller: &Caller,
    ) -> Result<()> {
        let p = self.find_project_row(project).await?;
        if !self.inner.db.delete_trigger_token(p.id, id).await? {
            return Err(EngineError::not_found(format!(
                "trigger token {id} of {}",
                p.path
            )));
        }
        tracing::info!(project = %p.path, id, "trigger token revoked");
        self.audit(
            caller,
            "trigger.revoke",
            Some(p.id),
            &format!("trigger token {id}"),
            None,
        )
        .await;
        Ok(())
    }

    /// Starts a pipeline with a trigger token of the project: 401 without a token, 403 with
    /// one that is not among the project's (revoked, or another project's).
    pub async fn trigger_pipeline(
        &self,
        project: &str,
        req: TriggerRequest,
    ) -> Result<rest::Pipeline> {
        let p = self.find_project_row(project).await?;
        if req.token.is_empty() {
            return Err(EngineError::Unauthorized(
                "a trigger needs the project's trigger token: send `token` in the body, as a \
                 form field or in the query string"
                    .into(),
            ));
        }
        let Some(token) = self
            .inner
            .db
            .use_trigger_token(p.id, &hash_token(&req.token))
            .await?
        else {
            tracing::warn!(project = %p.path, "trigger refused: not one of the project's trigger tokens");
            return Err(EngineError::Forbidden(format!(
                "this is not a trigger token of {}: it was revoked, or belongs to another \
                 project (see GET /api/v1/projects/{}/triggers)",
                p.path, p.id
            )));
        };
        for key in req.variables.keys() {
            check_variable_name(key)?;
        }
        let create = PipelineCreate {
            git_ref: req.git_ref,
            sha: None,
            variables: req
                .variables
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        };
        let pipeline = self
            .create_pipeline(
                &p.id.to_string(),
                create,
                Source::Trigger,
                &token.created_by,
            )
            .await?;
        tracing::info!(
            project = %p.path,
            token = token.id,
            hint = %token.hint,
            pipeline = pipeline.id,
            "pipeline triggered"
        );
        Ok(pipeline)
    }
}

/// A variable's name: what a shell can export.
fn check_variable_name(key: &str) -> Result<()> {
    let mut chars = key.chars();
    let good = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if good {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "variable name '{key}' is not valid: use letters, digits and _, not starting with \
             a digit"
        )))
    }
}

fn token_dto(t: TriggerTokenRow) -> rest::TriggerToken {
    rest::TriggerToken {
        id: t.id,
        project_id: t.project_id,
        description: t.description,
        hint: t.hint,
        created_by: t.created_by,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        token: None,
    }
}
