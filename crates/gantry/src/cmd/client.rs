//! What the API commands (`project`, `pipeline`, `job`, `agent list`) share: where the server
//! is and which token to send (`--server`, `--token` and the token file the server writes),
//! an HTTP client over reqwest that turns the API's `{"code","message"}` errors into
//! [`ApiFailure`]s with the exit code a script can act on, the server-sent-events parser of
//! `gantry job log -f`, and small text helpers (tables, ages).
//!
//! Exit codes: 0 success, 1 a failure the server reports or a server that cannot be reached,
//! 2 a usage error (bad arguments, a 4xx answer).

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `--server` and `--token`, taken by every command that talks to the API.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The Gantry server's URL.
    #[arg(long, env = "GANTRY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The administrator's token [default: $GANTRY_DATA_DIR/admin-token, else
    /// ~/.local/share/gantry/admin-token, when the file exists].
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `--format text|json`: json prints the API's document as it came.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Output {
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::Format,
}

impl Output {
    pub fn json(&self) -> bool {
        self.format == super::Format::Json
    }
}

/// `--page` and `--per-page` of list commands.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Paging {
    /// The page to show, from 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Items per page (1-100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub per_page: u32,
}

impl Paging {
    pub fn query(&self) -> String {
        format!("page={}&per_page={}", self.page, self.per_page)
    }
}

/// The token file `gantry server` writes, found the way the server picks its data directory:
/// `$GANTRY_DATA_DIR`, else `$XDG_DATA_HOME/gantry`, else `~/.local/share/gantry`.
pub fn token_file(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let dir = set("GANTRY_DATA_DIR").map(PathBuf::from).or_else(|| {
        set("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .map(|d| d.join("gantry"))
    })?;
    Some(dir.join("admin-token"))
}

/// The token to send: `--token`/`GANTRY_TOKEN`, else the server's token file if readable.
pub fn discover_token(
    explicit: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<String> {
    if let Some(t) = explicit.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    let text = std::fs::read_to_string(token_file(env)?).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// A failed API call: what to print after `error: ` and the exit code.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub message: String,
    pub exit: u8,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    fn new(message: impl Into<String>, exit: u8) -> ApiFailure {
        ApiFailure {
            message: message.into(),
            exit,
            status: None,
        }
    }

    /// Whether trying again may help (no answer, or a 5xx), as opposed to a refusal.
    pub fn transient(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// An answer that is not 2xx → its `ApiFailure` (4xx exit 2, else 1).
pub fn failure_from(status: StatusCode, body: &[u8], has_token: bool) -> ApiFailure {
    let parsed: Option<gantry_api::rest::ApiError> = serde_json::from_slice(body).ok();
    let mut message = match parsed {
        Some(e) if !e.message.is_empty() => e.message,
        Some(e) => e.code,
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("the server answered {status}")
            } else {
                format!("the server answered {status}: {text}")
            }
        }
    };
    if status == StatusCode::UNAUTHORIZED && !has_token {
        message.push_str(
            " (no token: pass --token, set GANTRY_TOKEN, or run where the server's \
             admin-token file is readable)",
        );
    }
    ApiFailure {
        message,
        exit: if status.is_client_error() { 2 } else { 1 },
        status: Some(status.as_u16()),
    }
}

/// Runs `f` on a small runtime and turns an [`ApiFailure`] into `error: …` and its exit code;
/// other errors go to `main`, which prints them and exits 2.
pub fn run<F>(f: F) -> Result<ExitCode>
where
    F: Future<Output = Result<ExitCode>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(f) {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) => {
                eprintln!("error: {}", f.message);
                Ok(ExitCode::from(f.exit))
            }
            None => Err(e),
        },
    }
}

/// The API's client: the server's base URL and the token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(conn: &Conn) -> Result<Client> {
        let env = |k: &str| std::env::var_os(k);
        Client::with_token(&conn.server, discover_token(conn.token.as_deref(), &env))
    }

    pub fn with_token(server: &str, token: Option<String>) -> Result<Client> {
        let base = server.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server takes an http:// or https:// URL, got '{server}'");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { base, token, http })
    }

    /// The token it sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The server's URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/api/v1/…`) with the token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// A transport error → "cannot reach …" (exit 1).
    pub fn unreachable(&self, e: &reqwest::Error) -> ApiFailure {
        if e.is_connect() {
            ApiFailure::new(
                format!(
                    "cannot reach the Gantry server at {}: is `gantry server` running?",
                    self.base
                ),
                1,
            )
        } else if e.is_timeout() {
            ApiFailure::new(format!("the Gantry server at {} timed out", self.base), 1)
        } else {
            let mut msg = format!("talking to the Gantry server at {}: {e}", self.base);
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            ApiFailure::new(msg, 1)
        }
    }

    /// Sends `rb`; a 2xx response comes back, anything else is an [`ApiFailure`].
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiFailure> {
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(failure_from(status, &body, self.token.is_some()))
    }

    /// A JSON call: the document as it came.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiFailure> {
        let mut rb = self
            .request(method, path)
            .timeout(Duration::from_secs(300))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiFailure::new(
                format!("the server's answer is not the expected JSON: {e}"),
                1,
            )
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiFailure> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ApiFailure> {
        self.call(Method::POST, path, body).await
    }
}

/// A document as its `gantry_api` type.
pub fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, ApiFailure> {
    T::deserialize(v).map_err(|e| {
        ApiFailure::new(
            format!(
                "the server's answer does not match this client's API ({e}); \
                 is the server the same version as this gantry?"
            ),
            1,
        )
    })
}

/// A list command: GET `path`, then the document as is (`--format json`), `empty` when the
/// first page has nothing, or the table `render` makes of the page and a hint when there is a
/// next one.
pub async fn list<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    output: &Output,
    paging: &Paging,
    empty: &str,
    render: impl Fn(&[T]) -> String,
) -> Result<ExitCode> {
    let v = client.get(path).await?;
    if output.json() {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let page: gantry_api::rest::Page<T> = typed(&v)?;
    if page.items.is_empty() && paging.page == 1 {
        println!("{empty}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&page.items));
    if let Some(n) = page.next_page {
        println!("(more: --page {n})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a document for `--format json`.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A path segment, percent-encoded: everything but RFC 3986's unreserved characters, so a
/// project path `group/name` becomes `group%2Fname`.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A column-aligned table; empty cells show as `-`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                let pad = widths[i] - c.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `12s ago`, `3m ago`, `2h ago`, `5d ago` for a time in ms since the epoch.
pub fn ago(ms: i64) -> String {
    let s = (now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `1.2s`, `3m04s`, `1h02m` for a span in ms.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`; `message` when the event names none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far in the stream (ids persist across events).
    pub id: Option<String>,
}

/// An incremental parser of `text/event-stream` (the WHATWG rules): bytes go in as they
/// arrive, in any pieces; whole events come out. Comments (`:` lines, the keep-alives) and
/// `retry:` are skipped; lines end with `\n`, `\r\n` or `\r`.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    started: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds a piece of the stream; returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        if !self.started {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return Vec::new();
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            self.started = true;
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(rel) = self.buf[pos..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = pos + rel;
            let next = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    // A `\r` at the end of what came: a `\n` may follow in the next piece.
                    None => break,
                }
            } else {
                end + 1
            };
            let line = String::from_utf8_lossy(&self.buf[pos..end]).into_owned();
            pos = next;
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        self.buf.drain(..pos);
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                },
                data,
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.feed(c)).collect()
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(String::from),
        }
    }

    #[test]
    fn sse_events_whole_and_split_at_every_byte() {
        let stream: &[u8] = b"event: log\nid: 5\ndata: {\"offset\":0,\"text\":\"hello\"}\n\n\
              : keep-alive\n\n\
              event: end\ndata: {\"status\":\"success\"}\n\n";
        let want = vec![
            ev("log", "{\"offset\":0,\"text\":\"hello\"}", Some("5")),
            ev("end", "{\"status\":\"success\"}", Some("5")),
        ];
        assert_eq!(all(&[stream]), want);
        for cut in 0..=stream.len() {
            assert_eq!(all(&[&stream[..cut], &stream[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), want);
    }

    #[test]
    fn sse_multi_line_data_crlf_cr_comments_and_bom() {
        let got = all(&[
            b"\xEF\xBB",
            b"\xBF:comment first\r\ndata: one\r\ndata:two\r\ndata\r\n\r\n",
            b"retry: 100\rdata: three\r",
            b"\rid\nevent: x\ndata: four\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                ev("message", "one\ntwo\n", None),
                ev("message", "three", None),
                ev("x", "four", Some("")),
            ]
        );
        // An event without data is not dispatched, and a trailing event without its blank
        // line is not either.
        assert_eq!(all(&[b"event: log\n\nid: 3\ndata: x\n"]), vec![]);
    }

    #[test]
    fn sse_utf8_split_inside_a_character() {
        let s = "data: héllo\n\n".as_bytes();
        let i = s.iter().position(|&b| b == 0xC3).unwrap();
        assert_eq!(
            all(&[&s[..i + 1], &s[i + 1..]]),
            vec![ev("message", "héllo", None)]
        );
    }

    #[test]
    fn project_paths_are_one_segment() {
        assert_eq!(encode_segment("group/name"), "group%2Fname");
        assert_eq!(encode_segment("a/b/c.d_e-f~"), "a%2Fb%2Fc.d_e-f~");
        assert_eq!(encode_segment("42"), "42");
        assert_eq!(encode_segment("sp ace%"), "sp%20ace%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn token_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("admin-token"), "gadm_file\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".local/share/gantry")).unwrap();
        std::fs::write(home.join(".local/share/gantry/admin-token"), "gadm_home\n").unwrap();

        let env = |vars: Vec<(&'static str, PathBuf)>| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone().into_os_string())
            }
        };
        let with_data = env(vec![
            ("GANTRY_DATA_DIR", data.clone()),
            ("HOME", home.clone()),
        ]);
        assert_eq!(
            discover_token(Some("explicit"), &with_data).as_deref(),
            Some("explicit")
        );
        assert_eq!(
            discover_token(None, &with_data).as_deref(),
            Some("gadm_file")
        );
        assert_eq!(
            discover_token(Some("  "), &with_data).as_deref(),
            Some("gadm_file"),
            "an empty --token is no token"
        );
        let home_only = env(vec![("HOME", home.clone())]);
        assert_eq!(
            discover_token(None, &home_only).as_deref(),
            Some("gadm_home")
        );
        let xdg = env(vec![
            ("XDG_DATA_HOME", dir.path().to_path_buf()),
            ("HOME", home),
        ]);
        assert_eq!(
            token_file(&xdg),
            Some(dir.path().join("gantry/admin-token"))
        );
        assert_eq!(discover_token(None, &xdg), None, "no file there");
        assert_eq!(discover_token(None, &env(vec![])), None);
    }

    #[test]
    fn api_errors_and_exit_codes() {
        let f = failure_from(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"no pipeline 9"}"#,
            true,
        );
        assert_eq!((f.message.as_str(), f.exit), ("no pipeline 9", 2));
        let f = failure_from(StatusCode::INTERNAL_SERVER_ERROR, b"boom", true);
        assert_eq!(f.exit, 1);
        assert!(f.message.contains("boom"), "{}", f.message);
        assert!(f.transient());
        let f = failure_from(
            StatusCode::UNAUTHORIZED,
            br#"{"code":"unauthorized","message":"a token is needed"}"#,
            false,
        );
        assert!(f.message.contains("GANTRY_TOKEN"), "{}", f.message);
        assert!(!f.transient());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "build".into()],
                vec!["12".into(), String::new()],
            ],
        );
        assert_eq!(t, "ID  NAME\n1   build\n12  -\n");
    }
}
