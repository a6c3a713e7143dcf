//! Users, sessions, personal access tokens, project members and the audit log.

use crate::AppState;
use crate::auth::{Auth, SESSION_COOKIE, session_cookie};
use crate::error::{ApiResult, HttpError};
use crate::routes::api::PageQuery;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_api::rest::{
    AccessToken, AccessTokenCreate, AuditEvent, Login, Member, MemberSet, Page, User, UserCreate,
};
use gantry_engine::Caller;
use std::net::SocketAddr;

/// The client's address, for the per-address limit on failed sign-ins (the TCP peer: a
/// header saying otherwise could be forged).
#[derive(Debug)]
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, HttpError> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string()),
        ))
    }
}

/// `POST /api/v1/session`: the session in an HTTP-only cookie (`Secure` when the server's
/// external URL is https), its CSRF token in the body.
pub async fn login(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(req): Json<Login>,
) -> ApiResult<Response> {
    let session = s.engine.login(&req.username, &req.password, &ip).await?;
    let secure = if s.engine.config().external_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let max_age = (session.expires_at - gantry_store::db::now_ms()) / 1000;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        session.session
    );
    let mut resp = (StatusCode::CREATED, Json(&session)).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| {
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?,
    );
    Ok(resp)
}

/// `DELETE /api/v1/session`: the session ends and its cookie is cleared.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (mut parts, _) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    if let Some(cookie) = session_cookie(&parts) {
        s.engine.logout(&cookie).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gantry_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(resp)
}

pub async fn me(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<User>> {
    match caller {
        Caller::User(u) => Ok(Json(s.engine.user(u.id).await?)),
        _ => Err(HttpError::forbidden("not a user")),
    }
}

pub async fn tokens(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Vec<AccessToken>>> {
    Ok(Json(s.engine.access_tokens(&caller).await?))
}

pub async fn create_token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Json(req): Json<AccessTokenCreate>,
) -> ApiResult<(StatusCode, Json<AccessToken>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.create_access_token(&caller, req).await?),
    ))
}

pub async fn revoke_token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    s.engine.revoke_access_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn users(State(s): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.engine.users().await?))
}

pub async fn create_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Json(req): Json<UserCreate>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.create_user(req, &caller).await?),
    ))
}

pub async fn audit_log(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<AuditEvent>>> {
    Ok(Json(s.engine.audit_log(q.req()).await?))
}

pub async fn members(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Member>>> {
    Ok(Json(s.engine.members(&project).await?))
}

pub async fn set_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    Json(req): Json<MemberSet>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.engine.set_member(&caller, &project, req).await?))
}

pub async fn remove_member(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, username)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.engine.remove_member(&caller, &project, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The session document never carries the cookie's value (it is only in `Set-Cookie`).
#[cfg(test)]
mod tests {
    #[test]
    fn the_session_value_is_not_serialized() {
        let s = gantry_api::rest::Session {
            user: gantry_api::rest::User {
                id: 1,
                username: "a".into(),
                name: "a".into(),
                email: String::new(),
                admin: false,
                blocked: false,
                created_at: 0,
                last_login_at: None,
            },
            session: "gses_secret".into(),
            csrf_token: "c".into(),
            expires_at: 1,
        };
        assert!(!serde_json::to_string(&s).unwrap().contains("gses_secret"));
    }
}
