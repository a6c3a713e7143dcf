//! The registry's settings and promotion through the REST API (the registry itself is
//! `/v2/`, see [`crate::registry`]).

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{Path, State};
use gantry_api::rest::RegistrySettings;
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
    let row = RegistrySettingsRow {
        public: body.public,
        push_role: body.push_role.to_string(),
        promote_role: body.promote_role.to_string(),
    };
    s.engine
        .set_registry_settings(&project, &row, &caller.name())
        .await?;
    Ok(Json(body))
}

fn dto(r: &RegistrySettingsRow) -> RegistrySettings {
    RegistrySettings {
        public: r.public,
        push_role: r.push_role.parse().unwrap_or(gantry_api::Role::Developer),
        promote_role: r
            .promote_role
            .parse()
            .unwrap_or(gantry_api::Role::Maintainer),
    }
}
