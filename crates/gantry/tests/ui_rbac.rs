//! The web UI's pages and forms as a browser uses them (a session cookie, forms with the
//! session's CSRF token in `_csrf`), for what the route-table test (server_rbac.rs) cannot
//! say: a signed-out visitor is sent to the sign-in page and back, and acts on nothing; a
//! guest sees the project but not its pipelines, settings or actions; a non-member learns
//! nothing (404); a form without the CSRF token changes nothing; a maintainer sees variable
//! keys, never their values; sign-in never redirects off the server.

mod common;

use common::Project;
use common::server::{Options, Server, backends, id, job};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";
const PIPELINE: &str = r#"build:
  script: [echo built]
deploy:
  stage: deploy
  when: manual
  environment: production
  script: [echo deployed]
"#;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, Location, body)
type Reply = (u16, String, String);

fn reply(mut r: ureq::http::Response<ureq::Body>) -> Reply {
    let status = r.status().as_u16();
    let to = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        to,
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn get(s: &Server, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = agent().get(&format!("{}{path}", s.url));
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("gantry_session={c}"));
    }
    reply(req.call().unwrap())
}

fn post(s: &Server, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
    let mut req = agent()
        .post(&format!("{}{path}", s.url))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("gantry_session={c}"));
    }
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    reply(req.send(body).unwrap())
}

/// Signs in with the form: the cookie and the CSRF token the pages carry.
fn sign_in(s: &Server, user: &str) -> (String, String) {
    let mut r = agent()
        .post(&format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!(
            "username={user}&password=correct+horse+battery&next=%2F"
        ))
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{user} signs in");
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("gantry_session=")
        .unwrap()
        .to_string();
    let _ = r.body_mut().read_to_string();
    let (st, _, page) = get(s, "/", Some(&cookie));
    assert_eq!(st, 200);
    let csrf = page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    (cookie, csrf)
}

fn user(s: &Server, name: &str, project: i64, role: Option<&str>) {
    s.api()
        .post(
            "/api/v1/users",
            json!({"username": name, "password": PASSWORD}),
        )
        .unwrap();
    if let Some(role) = role {
        s.api()
            .post(
                &format!("/api/v1/projects/{project}/members"),
                json!({"username": name, "role": role}),
            )
            .unwrap();
    }
}

#[test]
fn pages_and_forms_respect_sign_in_roles_and_csrf() {
    for db in backends("ui_rbac") {
        let name = db.name();
        let repo = Project::with_files(&[(".gantry.yml", PIPELINE)]);
        let s = Server::start(Options::new(&db));
        let project = s.project("team/app", repo.path());
        let pipeline = id(&s.pipeline(project, "main"));
        s.wait_job(pipeline, "build", "success", T);
        let deploy = id(&s.wait_job(pipeline, "deploy", "manual", T));
        let manual = || job(&s.get_pipeline(pipeline), "deploy")["status"] == "manual";
        s.api()
            .post(
                &format!("/api/v1/projects/{project}/variables"),
                json!({"key": "DEPLOY_PASSWORD", "value": "hunter2-not-shown"}),
            )
            .unwrap();
        user(&s, "gina", project, Some("guest"));
        user(&s, "dev", project, Some("developer"));
        user(&s, "maya", project, Some("maintainer"));
        user(&s, "outsider", project, None);

        // Signed out: to the sign-in page, with the way back; nothing done.
        let (st, to, _) = get(&s, &format!("/pipelines/{pipeline}"), None);
        assert_eq!(
            (st, to.as_str()),
            (
                303,
                format!("/login?next=%2Fpipelines%2F{pipeline}").as_str()
            ),
            "{name}"
        );
        let (st, to, _) = get(&s, &format!("/projects/{project}/settings"), None);
        assert_eq!(st, 303, "{name}");
        assert!(to.starts_with("/login?next="), "{name}: {to}");
        let (st, to, _) = post(&s, &format!("/jobs/{deploy}/play"), None, &[]);
        assert_eq!((st, to.as_str()), (303, "/login?next=%2F"), "{name}");
        assert!(manual(), "{name}: a signed-out visitor played nothing");
        // The links of commit statuses and notifications (GitLab's shape) lead to the page.
        let (st, to, _) = get(&s, &format!("/team/app/-/pipelines/{pipeline}"), None);
        assert_eq!(
            (st, to.as_str()),
            (308, format!("/pipelines/{pipeline}").as_str()),
            "{name}"
        );
        let (st, _, page) = get(&s, "/login?next=%2Fpipelines%2F1", None);
        assert_eq!(st, 200);
        assert!(page.contains("value=\"/pipelines/1\""), "{name}: {page}");

        // The sign-in form: a wrong password is a page saying so; `next` stays on this server.
        let (st, _, page) = post(
            &s,
            "/login",
            None,
            &[("username", "dev"), ("password", "nope"), ("next", "/")],
        );
        assert_eq!(st, 401, "{name}: {page}");
        assert!(page.contains("role=\"alert\""), "{name}: {page}");
        for evil in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
        ] {
            let (st, to, _) = post(
                &s,
                "/login",
                None,
                &[("username", "dev"), ("password", PASSWORD), ("next", evil)],
            );
            assert_eq!((st, to.as_str()), (303, "/"), "{name}: next={evil}");
        }

        // A guest sees the project, not its pipelines, settings, lint or actions.
        let (gina, gina_csrf) = sign_in(&s, "gina");
        let (st, _, page) = get(&s, &format!("/projects/{project}"), Some(&gina));
        assert_eq!(st, 200, "{name}");
        assert!(page.contains("not its pipelines"), "{name}: {page}");
        assert!(!page.contains("Run pipeline"), "{name}: no action offered");
        assert!(page.contains("gina"), "{name}: the header names the guest");
        for path in [
            format!("/projects/{project}/pipelines"),
            format!("/pipelines/{pipeline}"),
            format!("/pipelines/{pipeline}/stream"),
            format!("/jobs/{deploy}"),
            format!("/jobs/{deploy}/play"),
            format!("/projects/{project}/settings"),
            format!("/projects/{project}/lint"),
            format!("/projects/{project}/pipelines/new"),
            "/agents".to_string(),
            "/admin/audit".to_string(),
        ] {
            let (st, _, page) = get(&s, &path, Some(&gina));
            assert_eq!(st, 403, "{name}: GET {path} as a guest: {page}");
            assert!(!page.contains("DEPLOY_PASSWORD"), "{name}: {path}");
        }
        for path in [
            format!("/jobs/{deploy}/play"),
            format!("/pipelines/{pipeline}/cancel"),
            format!("/projects/{project}/pipelines"),
            format!("/projects/{project}/settings/variables"),
        ] {
            let (st, _, page) = post(
                &s,
                &path,
                Some(&gina),
                &[("_csrf", &gina_csrf), ("key", "X"), ("value", "y")],
            );
            assert_eq!(st, 403, "{name}: POST {path} as a guest: {page}");
        }
        assert!(manual(), "{name}: the guest played nothing");
        assert_eq!(s.pipeline_count(project), 1, "{name}: nor ran a pipeline");

        // A non-member learns nothing: 404, as for what does not exist.
        let (outsider, _) = sign_in(&s, "outsider");
        for path in [
            format!("/projects/{project}"),
            format!("/pipelines/{pipeline}"),
            format!("/jobs/{deploy}"),
        ] {
            let (st, _, page) = get(&s, &path, Some(&outsider));
            assert_eq!(st, 404, "{name}: GET {path} as a non-member");
            assert!(page.contains("not a member"), "{name}: {page}");
        }
        let (st, _, page) = get(&s, "/", Some(&outsider));
        assert_eq!(st, 200);
        assert!(!page.contains("team/app"), "{name}: not listed");

        // A developer's form needs the session's CSRF token.
        let (dev, dev_csrf) = sign_in(&s, "dev");
        let (st, _, page) = post(&s, &format!("/jobs/{deploy}/play"), Some(&dev), &[]);
        assert_eq!(st, 403, "{name}: {page}");
        assert!(page.contains("CSRF"), "{name}: {page}");
        let (st, _, _) = post(
            &s,
            &format!("/jobs/{deploy}/play"),
            Some(&dev),
            &[("_csrf", &gina_csrf)],
        );
        assert_eq!(st, 403, "{name}: another session's token");
        assert!(manual(), "{name}: nothing played without the token");
        // A page that fails still says who is signed in.
        let (st, _, page) = get(&s, &format!("/jobs/{deploy}/artifacts/browse"), Some(&dev));
        assert_eq!(st, 404, "{name}: {page}");
        assert!(
            page.contains("class=\"user\"") && page.contains("dev"),
            "{name}: {page}"
        );
        let (st, _, page) = get(&s, &format!("/jobs/{deploy}/play"), Some(&dev));
        assert_eq!(st, 200);
        assert!(
            page.contains("deploy") && page.contains("production"),
            "{name}: the confirmation names the job and its environment: {page}"
        );
        let (st, to, _) = post(
            &s,
            &format!("/jobs/{deploy}/play"),
            Some(&dev),
            &[("_csrf", &dev_csrf)],
        );
        assert_eq!(
            (st, to.as_str()),
            (303, format!("/pipelines/{pipeline}").as_str()),
            "{name}"
        );
        let played = s.wait_job(pipeline, "deploy", "success", T);
        assert_eq!(played["played_by"], "dev", "{name}");
        // Settings are for maintainers.
        let (st, _, _) = get(&s, &format!("/projects/{project}/settings"), Some(&dev));
        assert_eq!(st, 403, "{name}");

        // A maintainer sees the variable's key, never its value; adds one with the form.
        let (maya, maya_csrf) = sign_in(&s, "maya");
        let (st, _, page) = get(&s, &format!("/projects/{project}/settings"), Some(&maya));
        assert_eq!(st, 200, "{name}");
        assert!(page.contains("DEPLOY_PASSWORD"), "{name}");
        assert!(!page.contains("hunter2-not-shown"), "{name}: a value shown");
        let (st, _, _) = post(
            &s,
            &format!("/projects/{project}/settings/variables"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("key", "API_TOKEN"),
                ("value", "s3cret-value-1234"),
            ],
        );
        assert_eq!(st, 303, "{name}");
        let (_, _, page) = get(&s, &format!("/projects/{project}/settings"), Some(&maya));
        assert!(page.contains("API_TOKEN"), "{name}");
        assert!(!page.contains("s3cret-value-1234"), "{name}");

        // Schedules and trigger tokens: made, shown (a token once), removed.
        let settings = format!("/projects/{project}/settings");

        // A notification channel: added with its webhook URL, which no page shows; removed.
        let (st, _, page) = post(
            &s,
            &format!("{settings}/notifications"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("kind", "generic"),
                ("target", "https://hooks.example.com/secret-path-9876"),
                ("events", "failed, image_pushed"),
            ],
        );
        assert_eq!(st, 303, "{name}: {page}");
        let (_, _, page) = get(&s, &settings, Some(&maya));
        assert!(page.contains("webhook URL set"), "{name}");
        assert!(page.contains("failed, image_pushed"), "{name}");
        assert!(!page.contains("secret-path-9876"), "{name}: the URL shown");
        let channels = s
            .api()
            .get(&format!("/api/v1/projects/{project}/notifications"))
            .unwrap();
        assert_eq!(channels.as_array().unwrap().len(), 1, "{name}: {channels}");
        let channel = channels[0]["id"].as_i64().unwrap().to_string();
        let (st, _, page) = post(
            &s,
            &format!("{settings}/notifications"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("kind", "pager"), ("target", "x")],
        );
        assert_eq!(st, 400, "{name}: an unknown kind is refused: {page}");
        let (st, _, _) = post(
            &s,
            &format!("{settings}/notifications/delete"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("id", &channel)],
        );
        assert_eq!(st, 303, "{name}");
        let channels = s
            .api()
            .get(&format!("/api/v1/projects/{project}/notifications"))
            .unwrap();
        assert_eq!(channels, serde_json::json!([]), "{name}");
        let (st, _, page) = post(
            &s,
            &format!("{settings}/schedules"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("description", "nightly build"),
                ("cron", "0 3 * * *"),
                ("time_zone", "Europe/Paris"),
            ],
        );
        assert_eq!(st, 303, "{name}: {page}");
        let (_, _, page) = get(&s, &settings, Some(&maya));
        assert!(
            page.contains("nightly build") && page.contains("Europe/Paris"),
            "{name}"
        );
        let (st, _, page) = post(
            &s,
            &format!("{settings}/triggers"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("description", "release repo")],
        );
        assert_eq!(st, 200, "{name}: {page}");
        let token = page
            .split("shown this once: <code>")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .expect("the new token is shown")
            .to_string();
        assert!(token.len() > 20, "{name}: {token}");
        let (_, _, page) = get(&s, &settings, Some(&maya));
        assert!(page.contains("release repo"), "{name}");
        assert!(!page.contains(&token), "{name}: a token is shown once only");

        // Signing out ends the session: its pages send to the sign-in page again.
        let (st, to, _) = post(&s, "/logout", Some(&maya), &[("_csrf", &maya_csrf)]);
        assert_eq!((st, to.as_str()), (303, "/login"), "{name}");
        let (st, _, _) = get(&s, &format!("/projects/{project}"), Some(&maya));
        assert_eq!(st, 303, "{name}: signed out");
    }
}
