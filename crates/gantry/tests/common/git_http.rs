//! A git server over smart HTTP with basic authentication, for projects registered with an
//! `http://` URL and credentials: git's own `git http-backend`, run as a CGI program behind a
//! small axum handler that checks the `Authorization` header first.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Clone)]
struct Cfg {
    root: PathBuf,
    /// `user:password`, base64-encoded as it arrives.
    basic: String,
}

pub struct GitHttp {
    pub url: String,
    runtime: tokio::runtime::Runtime,
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl GitHttp {
    /// Serves the repository at `repo` (and its siblings) to `user` with `password`; returns
    /// the server and the repository's URL.
    pub fn serve_repo(repo: &std::path::Path, user: &str, password: &str) -> (GitHttp, String) {
        let root = repo
            .parent()
            .expect("a repository in a folder")
            .to_path_buf();
        let name = repo
            .file_name()
            .expect("a named repository")
            .to_string_lossy();
        let git = GitHttp::start(root, user, password);
        let url = format!("{}/{name}", git.url);
        (git, url)
    }

    /// Serves the repositories under `root` (bare or not) to `user` with `password`.
    pub fn start(root: PathBuf, user: &str, password: &str) -> GitHttp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cfg = Cfg {
            root,
            basic: base64(format!("{user}:{password}").as_bytes()),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(cgi).with_state(cfg);
        runtime.spawn(async move { axum::serve(listener, app).await });
        GitHttp { url, runtime }
    }
}

async fn cgi(State(cfg): State<Cfg>, req: Request) -> Response {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Basic {}", cfg.basic) {
        let mut r = Response::new(Body::from("authentication required\n"));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", &cfg.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_USER", "git")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("git http-backend runs");
        child.stdin.take().unwrap().write_all(&body).unwrap();
        child.wait_with_output().unwrap().stdout
    })
    .await
    .unwrap();
    // CGI output: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        let mut r = Response::new(Body::from("bad CGI output"));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return r;
    };
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let mut headers = HeaderMap::new();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v.split_whitespace().next().and_then(|c| c.parse().ok()) {
                status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            }
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    let mut r = Response::new(Body::from(out[at + sep..].to_vec()));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}
