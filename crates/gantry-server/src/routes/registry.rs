//! The registry's settings and promotion through the REST API (the registry itself is
//! `/v2/`, see [`crate::registry`]).

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gantry_api::rest::{
    ImagePromote, ImagePromoted, RegistryGc, RegistryGcReport, RegistrySettings, RetentionReport,
    Robot, RobotCreate,
};
use gantry_engine::Caller;
use gantry_registry::ImageRef;
use gantry_store::db::RegistrySettingsRow;

pub async fn settings(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<RegistrySettings>> {
    let r = s.engine.registry_settings(&project).await?;
    Ok(Json(dto(&r)))
}

pub async fn set_settings(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Json(body): Json<RegistrySettings>,
) -> ApiResult<Json<RegistrySettings>> {
    save_settings(&s, &caller, &project, &body).await?;
    Ok(Json(body))
}

/// Changes a project's registry settings (its policy checked first): the API's `PUT` and
/// the web UI's settings form.
pub async fn save_settings(
    s: &AppState,
    caller: &Caller,
    project: &str,
    body: &RegistrySettings,
) -> ApiResult<()> {
    gantry_registry::policy::Rules::new(body.policy.clone())
        .map_err(|e| HttpError::bad_request(format!("the policy: {e}")))?;
    let row = RegistrySettingsRow {
        public: body.public,
        push_role: body.push_role.to_string(),
        promote_role: body.promote_role.to_string(),
        policy: serde_json::to_string(&body.policy).expect("serializes"),
    };
    s.engine
        .set_registry_settings(project, &row, &caller.name())
        .await?;
    Ok(())
}

pub fn dto(r: &RegistrySettingsRow) -> RegistrySettings {
    RegistrySettings {
        public: r.public,
        push_role: r.push_role.parse().unwrap_or(gantry_api::Role::Developer),
        promote_role: r
            .promote_role
            .parse()
            .unwrap_or(gantry_api::Role::Maintainer),
        policy: serde_json::from_str(&r.policy).unwrap_or_default(),
    }
}

/// `?dry_run=true`: say what retention would remove, remove nothing.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RetentionQuery {
    #[serde(default)]
    pub dry_run: bool,
}

/// Applies the project's retention rules now (they also run with each garbage collection).
pub async fn retention(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RetentionQuery>,
) -> ApiResult<Json<RetentionReport>> {
    let id = s.engine.find_project(&project).await?;
    let report = s
        .registry
        .apply_retention(id, q.dry_run)
        .await
        .map_err(registry_error)?;
    if !q.dry_run && !report.removed.is_empty() {
        s.engine
            .audit_registry(
                &caller,
                id,
                "registry.retention",
                &report.removed.join(", "),
            )
            .await;
    }
    Ok(Json(report))
}

/// Promotes an image by digest: pull in the source's project and the destination project's
/// promote role; recorded in the audit log with who and which digest.
pub async fn promote(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Json(body): Json<ImagePromote>,
) -> ApiResult<Json<ImagePromoted>> {
    Ok(Json(promote_image(&s, &caller, &body).await?))
}

/// A promotion as `POST /api/v1/registry/promote` and the web UI's promote form make it:
/// the references read, the caller's right checked (`Engine::registry_may_promote`), the
/// manifests linked, the audit entry and the `image_promoted` event.
pub async fn promote_image(
    s: &AppState,
    caller: &Caller,
    body: &ImagePromote,
) -> ApiResult<ImagePromoted> {
    let parse = |what: &str, v: &str| {
        ImageRef::parse(v).map_err(|e| HttpError::bad_request(format!("the {what}: {e}")))
    };
    let source = parse("source", &body.source)?;
    let destination = parse("destination", &body.destination)?;
    let project = |name: &str| {
        let reg = s.registry.clone();
        let name = name.to_string();
        async move {
            reg.project_of(&name)
                .await
                .map_err(registry_error)?
                .ok_or_else(|| {
                    HttpError::not_found(format!("no project owns {name}: images are PROJECT/NAME"))
                })
        }
    };
    let from = project(&source.name).await?;
    let to = project(&destination.name).await?;
    s.engine.registry_may_promote(caller, from, to).await?;
    let done = s
        .registry
        .promote(&source, &destination, &caller.name())
        .await
        .map_err(registry_error)?;
    s.engine
        .audit_promotion(
            caller,
            to,
            &done.destination,
            serde_json::json!({"digest": done.digest, "source": done.source}).to_string(),
        )
        .await;
    let (repository, tag) = done
        .destination
        .rsplit_once(':')
        .map_or((done.destination.clone(), None), |(r, t)| {
            (r.to_string(), Some(t.to_string()))
        });
    s.engine
        .registry_event(
            to,
            "image_promoted",
            serde_json::json!({
                "repository": repository, "tag": tag, "digest": done.digest,
                "actor": caller.name(), "source": done.source,
            }),
        )
        .await;
    Ok(ImagePromoted {
        digest: done.digest,
        source: done.source,
        destination: done.destination,
        manifests: done.manifests,
    })
}

/// A registry error as the API's JSON error.
fn registry_error(e: gantry_registry::error::RegistryError) -> HttpError {
    HttpError::from(e)
}

/// Collects the registry's garbage now (it also runs every `--registry-gc-interval`).
pub async fn gc(
    State(s): State<AppState>,
    body: Option<Json<RegistryGc>>,
) -> ApiResult<Json<RegistryGcReport>> {
    let grace = body
        .and_then(|Json(b)| b.grace_secs)
        .map_or(s.registry.gc_grace(), std::time::Duration::from_secs);
    let r = s
        .registry
        .collect_garbage(grace)
        .await
        .map_err(registry_error)?;
    Ok(Json(RegistryGcReport {
        uploads_removed: r.uploads_removed,
        links_removed: r.links_removed,
        blobs_removed: r.blobs_removed,
        bytes_freed: r.bytes_freed,
    }))
}

pub async fn robots(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Robot>>> {
    Ok(Json(s.engine.robots(&project).await?))
}

pub async fn create_robot(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Json(body): Json<RobotCreate>,
) -> ApiResult<(StatusCode, Json<Robot>)> {
    let r = s
        .engine
        .create_robot(&project, &body, &caller.name())
        .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub async fn revoke_robot(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.revoke_robot(&project, id, &caller.name()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI schemas of the bodies these routes take.
pub fn schemas() -> serde_json::Value {
    let role = serde_json::json!({"type": "string",
        "enum": ["guest", "reporter", "developer", "maintainer", "owner"]});
    let globs = serde_json::json!({"type": "array", "items": {"type": "string"}});
    serde_json::json!({
        "ImagePromote": {"type": "object", "required": ["source", "destination"],
            "properties": {
                "source": {"type": "string", "description": "PROJECT/NAME:TAG or PROJECT/NAME@sha256:…"},
                "destination": {"type": "string", "description": "PROJECT/NAME:TAG"}}},
        "RegistryGc": {"type": "object",
            "properties": {"grace_secs": {"type": "integer", "minimum": 0}}},
        "RobotCreate": {"type": "object", "required": ["name", "actions"],
            "properties": {"name": {"type": "string"},
                "actions": {"type": "array", "items": {"type": "string", "enum": ["pull", "push"]}},
                "expires_at": {"type": "integer", "description": "ms since the epoch"}}},
        "RegistrySettings": {"type": "object", "required": ["public", "push_role", "promote_role"],
            "properties": {"public": {"type": "boolean"}, "push_role": role, "promote_role": role,
                "policy": {"type": "object", "properties": {
                    "immutable_tags": globs, "mutable_tags": globs,
                    "retention": {"type": "array", "items": {"type": "object", "required": ["tags"],
                        "properties": {"tags": {"type": "string"},
                            "keep_last": {"type": "integer", "minimum": 0},
                            "pulled_within_days": {"type": "integer", "minimum": 0}}}}}}}},
    })
}
