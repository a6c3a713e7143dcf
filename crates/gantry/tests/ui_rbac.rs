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

/// The text between `start` and the next `end` of a page.
fn between<'a>(page: &'a str, start: &str, end: &str) -> Option<&'a str> {
    page.split(start).nth(1).and_then(|r| r.split(end).next())
}

/// Waits until the page at `path` (for `cookie`) contains `text`: what the registry's
/// events write (the audit of a deletion) lands a moment after the answer.
fn wait_page(s: &Server, path: &str, cookie: &str, text: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (st, _, page) = get(s, path, Some(cookie));
        if st == 200 && page.contains(text) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} does not show {text}: {st} {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The registry's pages and forms: a guest of a private registry sees its settings, not its
/// images; reporters see repositories, tags, layers, platforms, referrers and the history;
/// developers are refused promotion into a project where they lack the promote role, with
/// the reason; maintainers change the settings, delete tags (never immutable ones) and make
/// and revoke robot accounts (the secret shown once); a public registry opens its images to
/// guests; non-members learn nothing; forms need the CSRF token; bad names and references
/// are 404 pages, never 500.
#[test]
fn registry_pages_and_forms_respect_roles_and_the_registry_rules() {
    use common::oci::{Oci, sha256};
    for db in backends("ui_registry") {
        let name = db.name();
        let mut opts = Options::new(&db);
        opts.local_agent = false;
        let s = Server::start(opts);
        let repo = Project::new("job: {script: [true]}\n");
        let app = s.project("team/app", repo.path());
        let release = id(&s
            .api()
            .post("/api/v1/projects", json!({"path": "team/release"}))
            .unwrap());
        user(&s, "gina", app, Some("guest"));
        user(&s, "rita", app, Some("reporter"));
        user(&s, "dev", app, Some("developer"));
        user(&s, "maya", app, Some("maintainer"));
        user(&s, "outsider", app, None);
        for (who, role) in [("dev", "developer"), ("maya", "maintainer")] {
            s.api()
                .post(
                    &format!("/api/v1/projects/{release}/members"),
                    json!({"username": who, "role": role}),
                )
                .unwrap();
        }
        s.api()
            .put(
                &format!("/api/v1/projects/{app}/registry"),
                json!({"public": false, "push_role": "developer", "promote_role": "maintainer",
                       "policy": {"immutable_tags": ["v*"]}}),
            )
            .unwrap();

        // Images: two platforms, an index over them, a signature of one, an immutable tag.
        let oci = Oci::new(&s.url);
        let token = oci.token(
            Some(("admin", &s.token)),
            &["repository:team/app/web:pull,push,delete"],
        );
        let web = "team/app/web";
        let layer = vec![7u8; 3000];
        let amd = oci.push_image(&token, web, "1.0", &[&layer, b"amd64 bits"]);
        let arm = oci.push_image(&token, web, "1.0-arm", &[&layer, b"arm64 bits!"]);
        oci.push_image(&token, web, "v1", &[b"release"]);
        let multi = oci.push_index(
            &token,
            web,
            "multi",
            &[(&amd, ("linux", "amd64")), (&arm, ("linux", "arm64"))],
        );
        let sig = oci.push_referrer(
            &token,
            web,
            &amd,
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            b"signed",
        );
        let registry = format!("/projects/{app}/registry");
        let repo_page = format!("{registry}/repositories/{web}");
        let image = format!("{registry}/images/{web}:1.0");

        // Signed out: to the sign-in page.
        for path in [&registry, &repo_page, &image] {
            let (st, to, _) = get(&s, path, None);
            assert_eq!(st, 303, "{name}: {path}");
            assert!(to.starts_with("/login?next="), "{name}: {to}");
        }

        // A non-member learns nothing.
        let (outsider, outsider_csrf) = sign_in(&s, "outsider");
        for path in [
            registry.clone(),
            repo_page.clone(),
            image.clone(),
            format!("{registry}/history"),
            format!("{registry}/robots"),
        ] {
            let (st, _, page) = get(&s, &path, Some(&outsider));
            assert_eq!(st, 404, "{name}: GET {path} as a non-member");
            assert!(page.contains("not a member"), "{name}: {page}");
            assert!(!page.contains(&amd), "{name}: {path}");
        }
        let (st, _, _) = post(
            &s,
            &format!("{registry}/promote"),
            Some(&outsider),
            &[
                ("_csrf", &outsider_csrf),
                ("source", "team/app/web:1.0"),
                ("destination", "team/release/web:1.0"),
            ],
        );
        assert_eq!(st, 404, "{name}: a non-member promotes nothing");

        // A guest of a private registry: its settings, not its images.
        let (gina, gina_csrf) = sign_in(&s, "gina");
        let (st, _, page) = get(&s, &format!("/projects/{app}"), Some(&gina));
        assert_eq!(st, 200, "{name}");
        assert!(
            page.contains(&format!("href=\"{registry}\"")),
            "{name}: the project links its registry"
        );
        let (st, _, page) = get(&s, &registry, Some(&gina));
        assert_eq!(st, 200, "{name}: {page}");
        assert!(page.contains("not the images"), "{name}: {page}");
        assert!(
            !page.contains("team/app/web"),
            "{name}: a repository listed"
        );
        assert!(
            page.contains("<dt>Immutable tags</dt><dd><code>v*</code>"),
            "{name}: {page}"
        );
        assert!(
            !page.contains("/registry/settings"),
            "{name}: no settings form"
        );
        for path in [&repo_page, &image] {
            let (st, _, page) = get(&s, path, Some(&gina));
            assert_eq!(st, 200, "{name}: {path}");
            assert!(page.contains("id=\"registry-closed\""), "{name}: {page}");
            assert!(!page.contains(&amd), "{name}: {path} shows a digest");
        }
        for path in [format!("{registry}/history"), format!("{registry}/robots")] {
            let (st, _, _) = get(&s, &path, Some(&gina));
            assert_eq!(st, 403, "{name}: GET {path} as a guest");
        }
        for (path, form) in [
            (
                format!("{registry}/settings"),
                vec![("push_role", "guest"), ("promote_role", "guest")],
            ),
            (
                format!("{registry}/tags/delete"),
                vec![("repository", web), ("tag", "1.0")],
            ),
            (format!("{registry}/robots"), vec![("name", "sneaky")]),
            (format!("{registry}/robots/revoke"), vec![("id", "1")]),
        ] {
            let mut form = form.clone();
            form.push(("_csrf", &gina_csrf));
            let (st, _, page) = post(&s, &path, Some(&gina), &form);
            assert_eq!(st, 403, "{name}: POST {path} as a guest: {page}");
        }
        let (st, _, _) = post(
            &s,
            &format!("{registry}/promote"),
            Some(&gina),
            &[
                ("_csrf", &gina_csrf),
                ("source", "team/app/web:1.0"),
                ("destination", "team/release/web:1.0"),
            ],
        );
        assert_eq!(st, 404, "{name}: the guest may not pull the source");

        // A reporter: repositories, tags, an image's layers and referrers, an index's
        // platforms, the history; no delete, no promotion offered, no robots.
        let (rita, _) = sign_in(&s, "rita");
        let (st, _, page) = get(&s, &registry, Some(&rita));
        assert_eq!(st, 200, "{name}");
        let row = between(&page, "<td><a href=\"/projects", "</tr>").unwrap_or_default();
        assert!(
            row.contains("team/app/web") && row.contains("<td>4</td>"),
            "{name}: {row}"
        );
        let host = s.url.trim_start_matches("http://");
        assert!(
            page.contains(&format!("docker pull {host}/team/app/REPOSITORY:TAG")),
            "{name}: the pull command on the server's address: {page}"
        );
        assert!(
            !page.contains("/registry/robots"),
            "{name}: robots are for maintainers"
        );
        let (st, _, page) = get(&s, &repo_page, Some(&rita));
        assert_eq!(st, 200, "{name}: {page}");
        let row = between(&page, "<tr id=\"tag-1.0\">", "</tr>").expect("the 1.0 row");
        assert!(
            row.contains(&amd[..19]) && row.contains("image"),
            "{name}: {row}"
        );
        // The image's bytes: its config and layers (the config as Oci::push_image writes it).
        let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string()
            .len();
        let bytes = 3000 + "amd64 bits".len() + config;
        assert!(
            row.contains(&format!("title=\"{bytes} bytes\"")),
            "{name}: config + layers: {row}"
        );
        let row = between(&page, "<tr id=\"tag-multi\">", "</tr>").expect("the index row");
        assert!(row.contains("index"), "{name}: {row}");
        let bytes = bytes + "arm64 bits!".len();
        assert!(
            row.contains(&format!("title=\"{bytes} bytes\"")),
            "{name}: both platforms, the shared layer and config once: {row}"
        );
        let (st, _, page) = get(&s, &image, Some(&rita));
        assert_eq!(st, 200, "{name}: {page}");
        assert!(
            page.contains(&format!("<code id=\"image-digest\">{amd}</code>")),
            "{name}"
        );
        assert!(
            page.contains(&sha256(&layer)[..19]),
            "{name}: the layer listed"
        );
        assert!(
            page.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{name}"
        );
        let refs = between(&page, "id=\"referrers\"", "</table>").expect("referrers");
        assert!(
            refs.contains(&sig[..19]) && refs.contains("cosign.artifact.sig"),
            "{name}: the signature: {refs}"
        );
        assert!(
            page.contains(&format!("docker pull {host}/team/app/web:1.0")),
            "{name}"
        );
        assert!(
            !page.contains("id=\"delete-tag\""),
            "{name}: no delete for a reporter"
        );
        assert!(
            page.contains("id=\"promote-none\""),
            "{name}: no project to promote into"
        );
        let (st, _, page) = get(&s, &format!("{registry}/images/{web}:multi"), Some(&rita));
        assert_eq!(st, 200, "{name}");
        let platforms = between(&page, "id=\"platforms\"", "</table>").expect("platforms");
        assert!(
            platforms.contains("linux/amd64") && platforms.contains("linux/arm64"),
            "{name}: {platforms}"
        );
        assert!(page.contains(&multi), "{name}");
        // A referrer by digest links back to its subject.
        let (st, _, page) = get(&s, &format!("{registry}/images/{web}@{sig}"), Some(&rita));
        assert_eq!(st, 200, "{name}");
        assert!(
            page.contains(&format!("{web}@{amd}")),
            "{name}: its subject: {page}"
        );
        assert!(page.contains(">artifact<"), "{name}");
        let (st, _, _) = get(&s, &format!("{registry}/history"), Some(&rita));
        assert_eq!(st, 200, "{name}");
        let (st, _, _) = get(&s, &format!("{registry}/robots"), Some(&rita));
        assert_eq!(st, 403, "{name}");

        // Bad names and references: the 404 page, never a 500.
        for path in [
            format!("{registry}/repositories/team/app/nothing"),
            format!("{registry}/repositories/team/release/web"),
            format!("{registry}/repositories/NOT%20A%20NAME"),
            format!("{registry}/images/{web}:nope"),
            format!("{registry}/images/{web}:-bad-"),
            format!("{registry}/images/{web}@sha256:{}", "0".repeat(64)),
            format!("{registry}/images/{web}@sha256:zz"),
            format!("{registry}/images/{web}:1.0@{arm}"),
            format!("{registry}/images/team/app/nothing:1.0"),
            "/projects/999999/registry".to_string(),
        ] {
            let (st, _, page) = get(&s, &path, Some(&rita));
            assert_eq!(st, 404, "{name}: GET {path}: {page}");
            assert!(
                page.contains("role=\"alert\""),
                "{name}: the error page: {page}"
            );
        }

        // A developer may not promote into a project where the promote role is higher:
        // refused with the reason, beside the form; nothing promoted.
        let (dev, dev_csrf) = sign_in(&s, "dev");
        let (st, _, page) = post(
            &s,
            &format!("{registry}/promote"),
            Some(&dev),
            &[
                ("_csrf", &dev_csrf),
                ("source", "team/app/web:1.0"),
                ("destination", "team/release/web:1.0"),
            ],
        );
        assert_eq!(st, 403, "{name}: {page}");
        let why = between(&page, "id=\"promote-error\">", "</p>").expect("the reason");
        assert!(
            why.contains("needs the maintainer role") && why.contains("you have developer"),
            "{name}: {why}"
        );
        assert!(
            page.contains("value=\"team/release/web:1.0\""),
            "{name}: the form kept"
        );
        assert!(
            oci.call(
                "HEAD",
                "/v2/team/release/web/manifests/1.0",
                Some(&oci.token(
                    Some(("admin", &s.token)),
                    &["repository:team/release/web:pull"]
                )),
                &[],
                b""
            )
            .status
                == 404,
            "{name}: nothing promoted"
        );
        // Developers push but do not delete or change settings.
        let (st, _, _) = post(
            &s,
            &format!("{registry}/tags/delete"),
            Some(&dev),
            &[("_csrf", &dev_csrf), ("repository", web), ("tag", "1.0")],
        );
        assert_eq!(st, 403, "{name}");

        // A maintainer: the settings form, with the form's CSRF token.
        let (maya, maya_csrf) = sign_in(&s, "maya");
        let (st, _, page) = get(&s, &registry, Some(&maya));
        assert_eq!(st, 200, "{name}");
        assert!(page.contains("action=\"/projects/"), "{name}");
        assert!(
            page.contains(&format!("action=\"{registry}/settings\"")),
            "{name}"
        );
        let settings = [
            ("push_role", "developer"),
            ("promote_role", "maintainer"),
            ("immutable_tags", "v*, 2.*"),
            ("mutable_tags", "*-test"),
            (
                "retention",
                "build-* keep_last=3\nnightly-* pulled_within_days=7",
            ),
        ];
        let (st, _, page) = post(&s, &format!("{registry}/settings"), Some(&maya), &settings);
        assert_eq!(st, 403, "{name}: without the CSRF token: {page}");
        let mut with = settings.to_vec();
        with.push(("_csrf", &maya_csrf));
        let (st, to, page) = post(&s, &format!("{registry}/settings"), Some(&maya), &with);
        assert_eq!(
            (st, to.as_str()),
            (303, format!("{registry}#settings").as_str()),
            "{name}: {page}"
        );
        let got = s
            .api()
            .get(&format!("/api/v1/projects/{app}/registry"))
            .unwrap();
        assert_eq!(
            got["policy"],
            json!({"immutable_tags": ["v*", "2.*"], "mutable_tags": ["*-test"],
                   "retention": [{"tags": "build-*", "keep_last": 3},
                                 {"tags": "nightly-*", "pulled_within_days": 7}]}),
            "{name}: {got}"
        );
        assert_eq!(got["public"], false, "{name}");
        let (_, _, page) = get(&s, &registry, Some(&maya));
        assert!(
            page.contains("nightly-* pulled_within_days=7"),
            "{name}: shown back"
        );
        for (field, value, says) in [
            ("retention", "build-* keep=3", "line 1"),
            ("immutable_tags", "[oops", "immutable_tags pattern"),
            ("push_role", "boss", "push role"),
        ] {
            let mut bad = with.clone();
            bad.retain(|(k, _)| *k != field);
            bad.push((field, value));
            let (st, _, page) = post(&s, &format!("{registry}/settings"), Some(&maya), &bad);
            assert_eq!(st, 400, "{name}: {field}={value}: {page}");
            assert!(page.contains(says), "{name}: {page}");
        }

        // Deleting tags: an immutable one stays; the other goes, the image stays by digest.
        let (st, _, page) = get(&s, &format!("{registry}/images/{web}:v1"), Some(&maya));
        assert_eq!(st, 200, "{name}");
        assert!(
            !page.contains("id=\"delete-tag\""),
            "{name}: no button for an immutable tag"
        );
        assert!(page.contains(">immutable<"), "{name}");
        let (st, _, page) = post(
            &s,
            &format!("{registry}/tags/delete"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("repository", web), ("tag", "v1")],
        );
        assert_eq!(st, 403, "{name}: {page}");
        assert!(page.contains("immutable"), "{name}: {page}");
        let (st, _, page) = post(
            &s,
            &format!("{registry}/tags/delete"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("repository", web), ("tag", "nope")],
        );
        assert_eq!(st, 404, "{name}: {page}");
        let (st, _, page) = post(
            &s,
            &format!("{registry}/tags/delete"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("repository", "team/release/web"),
                ("tag", "1.0"),
            ],
        );
        assert_eq!(st, 404, "{name}: another project's repository: {page}");
        let (st, _, page) = get(&s, &image, Some(&maya));
        assert_eq!(st, 200);
        assert!(page.contains("id=\"delete-tag\""), "{name}: the button");
        let (st, to, _) = post(
            &s,
            &format!("{registry}/tags/delete"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("repository", web),
                ("tag", "1.0-arm"),
            ],
        );
        assert_eq!((st, to.as_str()), (303, repo_page.as_str()), "{name}");
        let (_, _, page) = get(&s, &repo_page, Some(&maya));
        assert!(!page.contains("tag-1.0-arm"), "{name}: the tag is gone");
        let (st, _, _) = get(&s, &format!("{registry}/images/{web}@{arm}"), Some(&maya));
        assert_eq!(st, 200, "{name}: the image stays by digest");

        // Promotion by a maintainer of both: the same digest under the new tag.
        let (st, to, page) = post(
            &s,
            &format!("{registry}/promote"),
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("source", "team/app/web:1.0"),
                ("destination", " team/release/web:1.0-rc "),
            ],
        );
        let promoted = format!("/projects/{release}/registry/images/team/release/web:1.0-rc");
        assert_eq!(
            (st, to.as_str()),
            (303, promoted.as_str()),
            "{name}: {page}"
        );
        let (st, _, page) = get(&s, &promoted, Some(&maya));
        assert_eq!(st, 200, "{name}");
        assert!(
            page.contains(&format!("<code id=\"image-digest\">{amd}</code>")),
            "{name}"
        );

        // The history: the deletion in team/app (by the UI, and one by the Distribution
        // API), the promotion in team/release, from → to.
        let r = oci.call(
            "DELETE",
            &format!("/v2/{web}/manifests/multi"),
            Some(&token),
            &[],
            b"",
        );
        assert_eq!(r.status, 202, "{name}: {}", r.text());
        let history = format!("{registry}/history");
        let page = wait_page(&s, &history, &rita, "team/app/web:multi");
        let row = between(&page, "<tr class=\"h-deleted\">", "</tr>").expect("a deletion");
        assert!(
            row.contains("admin-token") && row.contains(&multi[..19]),
            "{name}: {row}"
        );
        let page = wait_page(&s, &history, &rita, "team/app/web:1.0-arm");
        assert!(page.contains("maya"), "{name}: who deleted: {page}");
        let page = wait_page(
            &s,
            &format!("/projects/{release}/registry/history"),
            &maya,
            "team/release/web:1.0-rc",
        );
        let row = between(&page, "<tr class=\"h-promoted\">", "</tr>").expect("a promotion");
        assert!(
            row.contains("maya") && row.contains("team/app/web:1.0") && row.contains(&amd[..19]),
            "{name}: {row}"
        );

        // Robot accounts: made (the secret once, and it logs in), revoked (it no longer does).
        let robots = format!("{registry}/robots");
        let (st, _, page) = post(
            &s,
            &robots,
            Some(&maya),
            &[("_csrf", &maya_csrf), ("name", "Bad Name")],
        );
        assert_eq!(st, 400, "{name}: {page}");
        let (st, _, page) = post(
            &s,
            &robots,
            Some(&maya),
            &[
                ("_csrf", &maya_csrf),
                ("name", "deployer"),
                ("push", "on"),
                ("expires_days", "30"),
            ],
        );
        assert_eq!(st, 200, "{name}: {page}");
        let user_name = between(&page, "<code id=\"new-robot-name\">", "</code>")
            .unwrap()
            .to_string();
        let secret = between(&page, "<code id=\"new-robot-secret\">", "</code>")
            .unwrap()
            .to_string();
        assert_eq!(user_name, "robot$team/app+deployer", "{name}");
        assert!(secret.starts_with("grb_"), "{name}: {secret}");
        let scope = "repository:team/app/web:pull,push";
        let t = oci.token(Some((&user_name, &secret)), &[scope]);
        assert_eq!(
            Oci::access(&t)[0]["actions"],
            json!(["pull", "push"]),
            "{name}"
        );
        let (st, _, page) = get(&s, &robots, Some(&maya));
        assert_eq!(st, 200);
        assert!(page.contains("robot$team/app+deployer"), "{name}");
        assert!(
            !page.contains(&secret),
            "{name}: the secret is shown once only"
        );
        let robot_id = between(&page, "<tr id=\"robot-", "\"").unwrap().to_string();
        let (st, _, _) = post(
            &s,
            &format!("{robots}/revoke"),
            Some(&maya),
            &[("id", &robot_id)],
        );
        assert_eq!(st, 403, "{name}: without the CSRF token");
        let (st, to, _) = post(
            &s,
            &format!("{robots}/revoke"),
            Some(&maya),
            &[("_csrf", &maya_csrf), ("id", &robot_id)],
        );
        assert_eq!((st, to.as_str()), (303, robots.as_str()), "{name}");
        let (_, _, page) = get(&s, &robots, Some(&maya));
        assert!(page.contains(">revoked<"), "{name}");
        assert_eq!(
            oci.token_resp(Some((&user_name, &secret)), &[scope]).status,
            401,
            "{name}"
        );

        // A public registry opens its images to the project's guests.
        let mut public = with.clone();
        public.push(("public", "on"));
        let (st, _, _) = post(&s, &format!("{registry}/settings"), Some(&maya), &public);
        assert_eq!(st, 303, "{name}");
        let (st, _, page) = get(&s, &image, Some(&gina));
        assert_eq!(st, 200, "{name}");
        assert!(
            page.contains(&amd),
            "{name}: a guest pulls from a public registry: {page}"
        );
        let (_, _, page) = get(&s, &registry, Some(&gina));
        assert!(
            page.contains("team/app/web"),
            "{name}: listed for the guest"
        );
        assert!(
            !page.contains("/registry/settings"),
            "{name}: still no settings form"
        );
    }
}
