//! Signing in and out with a form. The session is the API's (`gantry_session`, HTTP-only,
//! SameSite=Lax); its CSRF token is in every page that has forms.

use super::{Chrome, PageResult, Viewer, html, see_other};
use crate::AppState;
use crate::auth::{SESSION_COOKIE, session_cookie};
use crate::routes::accounts::ClientIp;
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    title: &'static str,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path of this server: never `//elsewhere` or `https://…`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

pub async fn login_page(Query(q): Query<NextQuery>) -> Response {
    html(&LoginPage {
        chrome: Chrome::anonymous(),
        title: "Sign in",
        next: safe_next(q.next.as_deref()),
        username: String::new(),
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    match s.engine.login(f.username.trim(), &f.password, &ip).await {
        Ok(session) => {
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
            let mut resp = see_other(&next);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            let e = crate::error::HttpError::from(e);
            let status = if e.status == StatusCode::INTERNAL_SERVER_ERROR {
                e.status
            } else {
                StatusCode::from_u16(e.status.as_u16().max(400)).unwrap_or(StatusCode::UNAUTHORIZED)
            };
            let page = LoginPage {
                chrome: Chrome::anonymous(),
                title: "Sign in",
                next,
                username: f.username,
                error: Some(e.message),
            };
            (status, html(&page)).into_response()
        }
    }
}

pub async fn logout(State(s): State<AppState>, _v: Viewer, headers: HeaderMap) -> PageResult {
    let (mut parts, _): (Parts, ()) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    if let Some(cookie) = session_cookie(&parts) {
        s.engine.logout(&cookie).await?;
    }
    let mut resp = see_other("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gantry_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(resp)
}
