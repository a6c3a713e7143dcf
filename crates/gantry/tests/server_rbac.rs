//! Roles on every endpoint, derived from the route table (`gantry_server::routes::ROUTES`):
//! each route is called by each kind of caller (anonymous, an expired token, a user of no
//! role, guest, reporter, developer, maintainer, owner, an administrator user, the
//! administrator's token) and must be refused or let through exactly as its declared access
//! says. A new endpoint is in the table, so it is in this test. On SQLite and PostgreSQL.
//!
//! Pages of the web UI (`Access::Page`) are in the table too: a signed-out visitor is
//! redirected to the sign-in page instead of a 401, and refusals are pages (ui_rbac.rs tests
//! what only a browser does: forms and their CSRF field).
//!
//! Then what the table cannot say: sessions and their CSRF token, token scopes, sign-in
//! limits, the audit log.

mod common;

use common::Project;
use common::server::{Options, Server, backends, id, job};
use gantry_api::Role;
use gantry_server::routes::{Access, PageAccess, ROUTES, Route};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

const PIPELINE: &str = r#"build:
  script: [echo built > out.txt]
  artifacts:
    paths: [out.txt]
deploy:
  when: manual
  script: [echo deployed]
"#;

/// How a request authenticates.
#[derive(Debug, Clone)]
enum Cred {
    None,
    Bearer(String),
    Session { cookie: String, csrf: String },
}

/// One HTTP call: status and JSON body.
fn call(s: &Server, method: &str, path: &str, cred: &Cred, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .max_redirects(0)
        .build()
        .into();
    let url = format!("{}{path}", s.url);
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => req = req.header("Authorization", format!("Bearer {t}")),
        Cred::Session { cookie, csrf } => {
            req = req
                .header("Cookie", format!("gantry_session={cookie}"))
                .header("X-CSRF-Token", csrf.as_str());
        }
    }
    let mut resp = match body {
        Some(b) => {
            let req = req.header("content-type", "application/json");
            agent.run(req.body(b.to_string()).unwrap())
        }
        None => agent.run(req.body(()).unwrap()),
    }
    .expect("the server answers");
    let status = resp.status().as_u16();
    // A page's redirect (to the sign-in page, or after a form).
    if (300..400).contains(&status) {
        let to = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return (status, Value::String(format!("redirect:{to}")));
    }
    // Server-sent events never end: only their first bytes matter here.
    let text = if path.ends_with("/stream") && status < 300 {
        String::new()
    } else {
        resp.body_mut().read_to_string().unwrap_or_default()
    };
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn admin(s: &Server) -> Cred {
    Cred::Bearer(s.token.clone())
}

/// Signs in: the session cookie (from Set-Cookie) and the CSRF token.
fn login(s: &Server, user: &str, password: &str) -> Result<Cred, (u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{}/api/v1/session", s.url))
        .header("content-type", "application/json")
        .send(json!({"username": user, "password": password}).to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let cookie_header = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status != 201 {
        return Err((status, body));
    }
    let cookie_header = cookie_header.expect("a session cookie");
    assert!(cookie_header.contains("HttpOnly"), "{cookie_header}");
    assert!(cookie_header.contains("SameSite=Lax"), "{cookie_header}");
    let cookie = cookie_header
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("gantry_session=")
        .unwrap()
        .to_string();
    assert!(
        !body.to_string().contains(&cookie),
        "the cookie's value is not in the body"
    );
    Ok(Cred::Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes a user, signs them in and makes them a token with `scopes`; the token.
fn user_token(s: &Server, name: &str, admin_user: bool, scopes: &[&str]) -> (String, Cred) {
    let (st, body) = call(
        s,
        "POST",
        "/api/v1/users",
        &admin(s),
        Some(&json!({"username": name, "password": PASSWORD, "admin": admin_user})),
    );
    assert!(st == 201 || st == 409, "{st} {body}");
    let session = login(s, name, PASSWORD).unwrap();
    let (st, t) = call(
        s,
        "POST",
        "/api/v1/user/tokens",
        &session,
        Some(&json!({"name": "test", "scopes": scopes})),
    );
    assert_eq!(st, 201, "{t}");
    (t["token"].as_str().unwrap().to_string(), session)
}

#[derive(Debug, Clone)]
struct Who {
    name: &'static str,
    cred: Cred,
    /// A user's role in the project; `Some(Owner)` for administrators.
    role: Option<Role>,
    /// A user (by token or session), not the administrator's token.
    user: bool,
    admin: bool,
    /// No valid credential: 401.
    anonymous: bool,
}

/// Whether `who` may call a route of `access` (None: the route authenticates by what the
/// request carries, checked apart).
fn may(access: Access, who: &Who) -> Option<bool> {
    if let Access::Page(p) = access {
        return may(p.api(), who);
    }
    if who.anonymous {
        return match access {
            Access::Public => Some(true),
            Access::Registration | Access::Webhook | Access::TriggerToken | Access::Agent => None,
            _ => Some(false),
        };
    }
    Some(match access {
        Access::Public => true,
        Access::Admin => who.admin,
        Access::Signed => true,
        Access::User => who.user,
        Access::Job => who.admin,
        Access::JobOr(needed) => who.role.is_some_and(|r| r >= needed),
        Access::Project(needed) => who.role.is_some_and(|r| r >= needed),
        Access::Registration | Access::Webhook | Access::TriggerToken | Access::Agent => {
            return None;
        }
        Access::Page(_) => unreachable!("pages are checked as their API access"),
    })
}

/// A refusal by the authorization layer (not the handler's own 404 of a missing thing).
fn refused(status: u16, body: &Value) -> bool {
    status == 401
        || status == 403
        || (status == 404
            && (body["message"]
                .as_str()
                .is_some_and(|m| m.contains("not a member"))
                || body
                    .as_str()
                    .is_some_and(|page| page.contains("not a member"))))
        || (status == 303
            && body
                .as_str()
                .is_some_and(|to| to.starts_with("redirect:/login?next=")))
}

struct Fixture {
    project: i64,
    pipeline: i64,
    job: i64,
    /// Per user name: a spare token's id to revoke.
    spare_tokens: HashMap<String, i64>,
    calls: usize,
}

impl Fixture {
    /// The path of `route` with its parameters filled in for a call by `who`; may make what
    /// the call will delete.
    fn path(&mut self, s: &Server, route: &Route, who: &Who) -> String {
        self.calls += 1;
        let mut path = route.path.to_string();
        if path.contains("/triggers/{id}") {
            let (_, t) = call(
                s,
                "POST",
                &format!("/api/v1/projects/{}/triggers", self.project),
                &admin(s),
                Some(&json!({})),
            );
            path = path.replace("{id}", &id(&t).to_string());
        }
        if path.contains("/agents/{id}") {
            // Revoking a real agent would stop the jobs the test runs.
            path = path.replace("{id}", "999999");
        }
        if path.contains("/user/tokens/{id}") {
            let spare = self.spare_tokens.get(who.name).copied().unwrap_or(999_999);
            path = path.replace("{id}", &spare.to_string());
        }
        if path.contains("{username}") {
            let name = format!("temp{}", self.calls);
            call(
                s,
                "POST",
                "/api/v1/users",
                &admin(s),
                Some(&json!({"username": name, "password": PASSWORD})),
            );
            call(
                s,
                "POST",
                &format!("/api/v1/projects/{}/members", self.project),
                &admin(s),
                Some(&json!({"username": name, "role": "guest"})),
            );
            path = path.replace("{username}", &name);
        }
        let id = if path.starts_with("/api/v1/jobs/") || path.starts_with("/jobs/") {
            self.job
        } else {
            self.pipeline
        };
        path.replace("{project}", "team%2Fapp")
            .replace("{id}", &id.to_string())
            .replace("{key}", "k")
            .replace("{forge}", "gitlab")
            .replace("{file}", "gantry.css")
            .replace("{*project}", "team%2Fapp")
            .replace("{*name}", "team/app/web")
            .replace("{*reference}", "team/app/web:1.0")
    }
}

#[test]
fn every_endpoint_lets_each_role_do_exactly_what_the_route_table_says() {
    for db in backends("rbac") {
        let name = db.name();
        let repo = Project::with_files(&[(".gantry.yml", PIPELINE)]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let p = s.pipeline(project, "main");
        let pipeline = id(&p);
        let done = s.wait_job(pipeline, "build", "success", T);
        let job = id(&done);

        // The callers.
        let mut who = vec![
            Who {
                name: "anonymous",
                cred: Cred::None,
                role: None,
                user: false,
                admin: false,
                anonymous: true,
            },
            Who {
                name: "admin-token",
                cred: admin(&s),
                role: Some(Role::Owner),
                user: false,
                admin: true,
                anonymous: false,
            },
        ];
        let mut spare_tokens = HashMap::new();
        let roles: [(&'static str, Option<Role>, bool); 7] = [
            ("outsider", None, false),
            ("guest", Some(Role::Guest), false),
            ("reporter", Some(Role::Reporter), false),
            ("developer", Some(Role::Developer), false),
            ("maintainer", Some(Role::Maintainer), false),
            ("owner", Some(Role::Owner), false),
            ("root", Some(Role::Owner), true),
        ];
        for (user, role, admin_user) in roles {
            let (token, session) = user_token(&s, user, admin_user, &["api"]);
            let (_, spare) = call(
                &s,
                "POST",
                "/api/v1/user/tokens",
                &session,
                Some(&json!({"name": "spare", "scopes": ["read_api"]})),
            );
            spare_tokens.insert(user.to_string(), id(&spare));
            if let Some(r) = role.filter(|_| !admin_user) {
                let (st, m) = call(
                    &s,
                    "POST",
                    &format!("/api/v1/projects/{project}/members"),
                    &admin(&s),
                    Some(&json!({"username": user, "role": r})),
                );
                assert_eq!(st, 200, "{name}: {m}");
            }
            who.push(Who {
                name: user,
                cred: Cred::Bearer(token),
                role,
                user: true,
                admin: admin_user,
                anonymous: false,
            });
        }
        // A token that expires in a moment.
        let (_, dev_session) = user_token(&s, "developer", false, &["api"]);
        let (st, expiring) = call(
            &s,
            "POST",
            "/api/v1/user/tokens",
            &dev_session,
            Some(&json!({"name": "short", "scopes": ["api"], "expires_at": now_ms() + 1500})),
        );
        assert_eq!(st, 201, "{expiring}");
        let expiring = expiring["token"].as_str().unwrap().to_string();
        let (st, _) = call(
            &s,
            "GET",
            "/api/v1/user",
            &Cred::Bearer(expiring.clone()),
            None,
        );
        assert_eq!(st, 200, "{name}: valid before it expires");
        std::thread::sleep(Duration::from_millis(1600));
        who.push(Who {
            name: "expired",
            cred: Cred::Bearer(expiring),
            role: Some(Role::Developer),
            user: true,
            admin: false,
            anonymous: true,
        });

        let mut fx = Fixture {
            project,
            pipeline,
            job,
            spare_tokens,
            calls: 0,
        };
        let mut checked = 0;
        // Refusals first (they must change nothing), then the calls let through.
        for pass in [false, true] {
            for route in ROUTES {
                for w in &who {
                    let Some(allowed) = may(route.access, w) else {
                        continue;
                    };
                    if allowed != pass {
                        continue;
                    }
                    let path = fx.path(&s, route, w);
                    let body = matches!(route.method, "POST" | "PUT").then(|| json!({}));
                    let (st, got) = call(&s, route.method, &path, &w.cred, body.as_ref());
                    let what = format!(
                        "{name}: {} {} as {} ({:?})",
                        route.method, route.path, w.name, route.access
                    );
                    if allowed {
                        assert!(!refused(st, &got), "{what}: refused with {st}: {got}");
                    } else {
                        assert!(refused(st, &got), "{what}: let through with {st}: {got}");
                        let page = matches!(route.access, Access::Page(_));
                        if w.anonymous && page {
                            assert_eq!(st, 303, "{what}: to the sign-in page: {got}");
                        } else if w.anonymous {
                            assert_eq!(st, 401, "{what}: {got}");
                        }
                        if w.name == "expired" && !page {
                            let m = got["message"].as_str().unwrap_or_default();
                            assert!(m.contains("expired"), "{what}: {got}");
                        }
                        if matches!(
                            route.access,
                            Access::Project(_) | Access::Page(PageAccess::Project(_))
                        ) && w.role.is_none()
                            && !w.anonymous
                        {
                            assert_eq!(st, 404, "{what}: non-members learn nothing");
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > ROUTES.len() * 5, "{name}: {checked} calls");

        // Routes that authenticate by what the request carries ignore user credentials.
        for route in ROUTES.iter().filter(|r| may(r.access, &who[0]).is_none()) {
            for w in &who {
                let path = fx.path(&s, route, w);
                let body = Some(json!({"token": "nope"}));
                let (st, got) = call(&s, route.method, &path, &w.cred, body.as_ref());
                assert!(
                    matches!(st, 400 | 401 | 403 | 422),
                    "{name}: {} {} as {}: {st} {got}",
                    route.method,
                    route.path,
                    w.name
                );
            }
        }
    }
}

#[test]
fn sessions_scopes_sign_in_limits_and_the_audit_log() {
    for db in backends("sessions") {
        let name = db.name();
        let repo = Project::with_files(&[(".gantry.yml", PIPELINE)]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let (_, _) = user_token(&s, "dev", false, &["api"]);
        call(
            &s,
            "POST",
            &format!("/api/v1/projects/{project}/members"),
            &admin(&s),
            Some(&json!({"username": "dev", "role": "developer"})),
        );
        let session = login(&s, "dev", PASSWORD).unwrap();

        // A change with a session needs its CSRF token; reads do not.
        let Cred::Session { cookie, csrf } = session.clone() else {
            unreachable!()
        };
        let no_csrf = Cred::Session {
            cookie: cookie.clone(),
            csrf: String::new(),
        };
        let run = format!("/api/v1/projects/{project}/pipelines");
        let (st, got) = call(&s, "POST", &run, &no_csrf, Some(&json!({})));
        assert_eq!(st, 403, "{name}: {got}");
        assert!(got["message"].as_str().unwrap().contains("CSRF"), "{got}");
        let (st, _) = call(&s, "GET", &run, &no_csrf, None);
        assert_eq!(st, 200, "{name}");
        let (st, p) = call(&s, "POST", &run, &session, Some(&json!({})));
        assert_eq!(st, 201, "{name}: {p}");
        let p = s.wait_job(id(&p), "build", "success", T);
        let _ = p;
        let pipeline = s.get_pipeline(
            call(&s, "GET", &run, &session, None).1["items"][0]["id"]
                .as_i64()
                .unwrap(),
        );
        // The pipeline is the user's (GITLAB_USER_LOGIN).
        let deploy = job(&pipeline, "deploy");
        let (st, played) = call(
            &s,
            "POST",
            &format!("/api/v1/jobs/{}/play", id(&deploy)),
            &session,
            Some(&json!({"user": "somebody-else"})),
        );
        assert_eq!(st, 200, "{name}: {played}");
        assert_eq!(
            played["played_by"], "dev",
            "{name}: a user plays as themselves"
        );
        let csrf_free = Cred::Session {
            cookie: cookie.clone(),
            csrf: csrf.clone(),
        };
        // Signing out ends the session.
        let (st, _) = call(&s, "DELETE", "/api/v1/session", &csrf_free, None);
        assert_eq!(st, 204, "{name}");
        let (st, _) = call(&s, "GET", "/api/v1/user", &csrf_free, None);
        assert_eq!(st, 401, "{name}: the session ended");

        // Scopes: read_api reads and changes nothing; registry scopes are not the API.
        let session = login(&s, "dev", PASSWORD).unwrap();
        // `gantry login` makes a token for the command line.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args([
                "login",
                "-u",
                "dev",
                "--password-env",
                "PW",
                "--server",
                &s.url,
            ])
            .env("PW", PASSWORD)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli_token = printed
            .split("GANTRY_TOKEN=")
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        let (st, me) = call(&s, "GET", "/api/v1/user", &Cred::Bearer(cli_token), None);
        assert_eq!((st, &me["username"]), (200, &json!("dev")), "{name}: {me}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args([
                "login",
                "-u",
                "dev",
                "--password-env",
                "PW",
                "--server",
                &s.url,
            ])
            .env("PW", "not the password")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("wrong user name or password"),
            "{err}"
        );

        // Users register projects from remotes, not from the server's disk; whoever registers
        // one owns it.
        let local = json!({"path": "dev/own", "git_url": repo.path().display().to_string()});
        let (st, got) = call(&s, "POST", "/api/v1/projects", &session, Some(&local));
        assert_eq!(st, 403, "{name}: {got}");
        assert!(
            got["message"].as_str().unwrap().contains("server's disk"),
            "{got}"
        );
        let (_, boss) = user_token(&s, "boss", true, &["api"]);
        let (st, own) = call(&s, "POST", "/api/v1/projects", &boss, Some(&local));
        assert_eq!(st, 201, "{name}: {own}");
        let (_, members) = call(
            &s,
            "GET",
            &format!("/api/v1/projects/{}/members", id(&own)),
            &boss,
            None,
        );
        assert_eq!(members[0]["username"], "boss", "{members}");
        assert_eq!(members[0]["role"], "owner", "{members}");

        let mut tokens = HashMap::new();
        for scope in ["read_api", "read_registry"] {
            let (st, t) = call(
                &s,
                "POST",
                "/api/v1/user/tokens",
                &session,
                Some(&json!({"name": scope, "scopes": [scope]})),
            );
            assert_eq!(st, 201, "{t}");
            assert!(t["token"].as_str().unwrap().starts_with("gpat_"));
            tokens.insert(scope, Cred::Bearer(t["token"].as_str().unwrap().into()));
        }
        let (st, _) = call(&s, "GET", &run, &tokens["read_api"], None);
        assert_eq!(st, 200, "{name}");
        let (st, got) = call(&s, "POST", &run, &tokens["read_api"], Some(&json!({})));
        assert_eq!(st, 403, "{name}: {got}");
        assert!(got["message"].as_str().unwrap().contains("scopes"), "{got}");
        let (st, _) = call(&s, "GET", &run, &tokens["read_registry"], None);
        assert_eq!(st, 403, "{name}");
        // A read_api token makes no tokens (it would give itself more).
        let (st, _) = call(
            &s,
            "POST",
            "/api/v1/user/tokens",
            &tokens["read_api"],
            Some(&json!({"name": "more", "scopes": ["api"]})),
        );
        assert_eq!(st, 403, "{name}");
        // Listing tokens never shows them; a revoked one says so.
        let (_, list) = call(&s, "GET", "/api/v1/user/tokens", &session, None);
        let Cred::Bearer(read_api) = &tokens["read_api"] else {
            unreachable!()
        };
        assert!(!list.to_string().contains(read_api.as_str()), "{list}");
        let rid = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "read_api")
            .map(id)
            .unwrap();
        let (st, _) = call(
            &s,
            "DELETE",
            &format!("/api/v1/user/tokens/{rid}"),
            &session,
            None,
        );
        assert_eq!(st, 204, "{name}");
        let (st, got) = call(&s, "GET", &run, &tokens["read_api"], None);
        assert_eq!(st, 401, "{name}");
        assert!(
            got["message"].as_str().unwrap().contains("revoked"),
            "{got}"
        );

        // Wrong passwords lock the account after five in a row (the first was `gantry login`'s
        // above), with a message that says for how long; the right password then waits too.
        for _ in 0..4 {
            let (st, got) = login(&s, "dev", "wrong password").unwrap_err();
            assert_eq!(st, 401, "{name}: {got}");
        }
        let (st, got) = login(&s, "dev", PASSWORD).unwrap_err();
        assert_eq!(st, 429, "{name}: {got}");
        assert!(got["message"].as_str().unwrap().contains("locked"), "{got}");
        // An unknown user is refused the same way as a wrong password.
        let (st, unknown) = login(&s, "nobody", PASSWORD).unwrap_err();
        assert_eq!(st, 401, "{name}: {unknown}");

        // The audit log: administrators only, what happened, no secret.
        let (st, _) = call(&s, "GET", "/api/v1/audit-log", &session, None);
        assert_eq!(st, 403, "{name}");
        let (st, log) = call(
            &s,
            "GET",
            "/api/v1/audit-log?per_page=100",
            &admin(&s),
            None,
        );
        assert_eq!(st, 200, "{name}: {log}");
        let text = log.to_string();
        for action in [
            "\"user.create\"",
            "\"login\"",
            "\"login.failed\"",
            "\"login.locked\"",
            "\"token.create\"",
            "\"token.revoke\"",
            "\"member.set\"",
            "\"job.play\"",
        ] {
            assert!(text.contains(action), "{name}: no {action} in {log:#}");
        }
        assert!(
            !text.contains(PASSWORD),
            "{name}: a password in the audit log"
        );
        assert!(
            !text.contains(read_api.as_str()),
            "{name}: a token in the audit log"
        );
        assert!(
            !text.contains(&cookie),
            "{name}: a session in the audit log"
        );
    }
}
