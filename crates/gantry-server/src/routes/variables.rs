//! CI/CD variables (of the instance and of projects) and protected refs. Values are
//! write-only: bodies are parsed here rather than by axum's `Json`, whose rejections quote
//! what they could not read (a value among it); ours say where, never what.

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gantry_api::rest::{ProtectedRef, ProtectedRefCreate, Variable, VariableWrite};
use serde::Deserialize;
use serde_json::{Value, json};

/// `?environment_scope=`: which definition of a key a change is for, when it has several.
#[derive(Debug, Default, Deserialize)]
pub struct ScopeQuery {
    pub environment_scope: Option<String>,
}

/// The body as a [`VariableWrite`]; the error names the line and column, not the text.
fn body(bytes: &Bytes) -> ApiResult<VariableWrite> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field of the wrong type or an unknown field",
            _ => "not JSON",
        };
        HttpError::bad_request(format!(
            "the body is not a variable ({what}, at line {} column {}): send JSON {{\"key\": \
             \"NAME\", \"value\": \"…\", \"masked\": bool, \"protected\": bool, \
             \"variable_type\": \"env_var\" | \"file\", \"environment_scope\": \"*\", \
             \"description\": \"…\"}}",
            e.line(),
            e.column()
        ))
    })
}

pub async fn list_instance(State(s): State<AppState>) -> ApiResult<Json<Vec<Variable>>> {
    Ok(Json(s.engine.variables(None).await?))
}

pub async fn create_instance(
    State(s): State<AppState>,
    Auth(caller): Auth,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Variable>)> {
    let v = s
        .engine
        .create_variable(None, body(&bytes)?, &caller)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn update_instance(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
    bytes: Bytes,
) -> ApiResult<Json<Variable>> {
    let v = s
        .engine
        .update_variable(
            None,
            &key,
            q.environment_scope.as_deref(),
            body(&bytes)?,
            &caller,
        )
        .await?;
    Ok(Json(v))
}

pub async fn delete_instance(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    s.engine
        .delete_variable(None, &key, q.environment_scope.as_deref(), &caller)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_project(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Variable>>> {
    Ok(Json(s.engine.variables(Some(&project)).await?))
}

pub async fn create_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Variable>)> {
    let v = s
        .engine
        .create_variable(Some(&project), body(&bytes)?, &caller)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn update_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, key)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
    bytes: Bytes,
) -> ApiResult<Json<Variable>> {
    let v = s
        .engine
        .update_variable(
            Some(&project),
            &key,
            q.environment_scope.as_deref(),
            body(&bytes)?,
            &caller,
        )
        .await?;
    Ok(Json(v))
}

pub async fn delete_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, key)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    s.engine
        .delete_variable(
            Some(&project),
            &key,
            q.environment_scope.as_deref(),
            &caller,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_protected(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<ProtectedRef>>> {
    Ok(Json(s.engine.protected_refs(&project).await?))
}

pub async fn create_protected(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Json(req): Json<ProtectedRefCreate>,
) -> ApiResult<(StatusCode, Json<ProtectedRef>)> {
    let r = s
        .engine
        .create_protected_ref(&project, req, &caller)
        .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub async fn delete_protected(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_protected_ref(&project, id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI schemas of these bodies.
pub fn schemas() -> Value {
    let props = json!({"key": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "value": {"type": "string", "writeOnly": true},
        "masked": {"type": "boolean"}, "protected": {"type": "boolean"},
        "variable_type": {"type": "string", "enum": ["env_var", "file"]},
        "environment_scope": {"type": "string"}, "description": {"type": "string"}});
    json!({
        "VariableCreate": {"type": "object", "required": ["key", "value"], "properties": props},
        "VariableUpdate": {"type": "object", "properties": props},
        "ProtectedRefCreate": {"type": "object", "required": ["pattern"],
            "properties": {"pattern": {"type": "string"},
                "kind": {"type": "string", "enum": ["branch", "tag", "any"]}}},
    })
}
