//! Who is calling: the `Authorization: Bearer <token>` header (or GitLab's `PRIVATE-TOKEN`
//! and `JOB-TOKEN` headers), resolved by the engine to a [`Caller`].

use crate::AppState;
use crate::error::HttpError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gantry_engine::Caller;

/// Any authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

/// The administrator (every REST endpoint of issue 5; roles come with users).
#[derive(Debug, Clone)]
pub struct Admin;

pub fn bearer(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    if let Some(v) = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    for name in ["private-token", "job-token"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_string());
        }
    }
    None
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(HttpError::unauthorized)?;
        match state.engine.authenticate(&token).await? {
            Some(c) => Ok(Auth(c)),
            None => Err(HttpError::unauthorized()),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Auth::from_request_parts(parts, state).await?.0 {
            Caller::Admin => Ok(Admin),
            _ => Err(HttpError::forbidden(
                "this endpoint needs the administrator's token, not an agent's or a job's",
            )),
        }
    }
}
