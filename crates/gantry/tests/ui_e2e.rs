//! The web UI in a real browser: Debian's headless chromium, driven through chromedriver
//! with fantoccini, against a real `gantry server` (SQLite, its in-process shell agent) and a
//! git repository with a pipeline. What a user does: sign in, run a pipeline, watch the graph
//! and a live log change without reloading, retry a failed job, play a manual job through
//! its confirmation, lint a broken file and see the error at its line. The main pages are
//! saved as PNG screenshots (desktop and phone width) into `GANTRY_UI_SCREENSHOTS`
//! (default: `$CARGO_TARGET_DIR/ui-screenshots`).
//!
//! Without chromium and chromedriver the test says so and passes, unless
//! `GANTRY_REQUIRE_CHROMIUM=1` (the test command sets it), which makes their absence a
//! failure.

mod common;

use common::Project;
use common::server::{Backend, Options, Server, id, job};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "correct horse battery";
const T: Duration = Duration::from_secs(60);

/// The pipeline: a build whose log grows slowly (with a collapsible section and colours), a
/// test that fails the first time and passes when retried, a manual deploy to production.
fn pipeline(marker: &str) -> String {
    format!(
        r#"stages: [build, test, deploy]
build:
  stage: build
  script:
    - while [ -n "$HOLD" ] && [ ! -f "$HOLD" ]; do sleep 0.1; done
    - printf '\033[0Ksection_start:%s:compile[collapsed=false]\r\033[0KCompiling the app\n' "$(date +%s)"
    - for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "building step $i"; sleep 0.7; done
    - printf '\033[0Ksection_end:%s:compile\r\033[0K\n' "$(date +%s)"
    - printf '\033[32mbuild ok\033[0m\n'
    - echo built > out.txt
    - mkdir -p reports
    - echo '<testsuite name="unit"><testcase classname="app.parser" name="reads yaml" time="0.02"/><testcase classname="app.parser" name="rejects tabs" time="0.01"><failure message="expected an error"/></testcase><testcase classname="app.io" name="needs network"><skipped/></testcase></testsuite>' > reports/unit.xml
  artifacts:
    paths: [out.txt]
    reports:
      junit: [reports/*.xml]
flaky:
  stage: test
  needs: [build]
  script:
    - 'if [ -f {marker} ]; then echo "second time lucky"; else touch {marker}; echo "ERROR: the first run fails"; exit 1; fi'
child:
  stage: test
  needs: [build]
  trigger:
    include: child.yml
    strategy: depend
big:
  stage: test
  needs: [build]
  script: ["seq -f 'line %g of the big log' 1 200000"]
lint:
  stage: test
  needs: [build]
  allow_failure: true
  script: [echo linting]
deploy:
  stage: deploy
  when: manual
  environment:
    name: production
  script: [echo deploying to production]
"#
    )
}

struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Chromedriver on a free port, and a session of a fresh headless chromium.
async fn browser() -> Option<(Driver, Client)> {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present {
        let msg =
            format!("{CHROMIUM} or {CHROMEDRIVER} missing (Debian's chromium and chromium-driver)");
        if std::env::var("GANTRY_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("GANTRY_REQUIRE_CHROMIUM=1 but {msg}");
        }
        eprintln!("skipped: {msg}");
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        _profile: profile,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    Some((driver, client))
}

fn shots_dir() -> PathBuf {
    let dir = match std::env::var_os("GANTRY_UI_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => PathBuf::from(t).join("ui-screenshots"),
            None => PathBuf::from(env!("CARGO_BIN_EXE_gantry"))
                .parent()
                .and_then(|p| p.parent())
                .unwrap()
                .join("ui-screenshots"),
        },
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Ui {
    /// Opens a page. Chromium aborts loads when the machine's network interfaces change
    /// (ERR_NETWORK_CHANGED, "Your connection was interrupted"), which the Docker tests
    /// running beside this one do as they make and remove networks: such a load is tried
    /// again.
    async fn go(&self, path: &str) {
        for _ in 0..5 {
            self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
            if !self.error_page().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{path}: the browser shows its own error page five times in a row");
    }

    /// Whether the browser shows its own error page instead of ours.
    async fn error_page(&self) -> bool {
        self.c
            .execute(
                "return !!document.getElementById('main-frame-error') || \
                 location.href.startsWith('chrome-error:');",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    async fn path(&self) -> String {
        let u = self.c.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Waits until the browser is on a page whose path (and query) `ok` accepts: a form's
    /// answer may still be on its way when the click returns.
    async fn on(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.path().await;
            if ok(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "waiting to be on {what}: on {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shot(&self, name: &str) {
        // Let the live parts and the needs lines settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn text(&self, css: &str) -> String {
        for attempt in 0.. {
            let el = self
                .c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match el.text().await {
                Ok(t) => return t,
                Err(e) if attempt < 20 && e.to_string().contains("stale") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
        unreachable!()
    }

    /// Waits until the element `css` exists and `ok` accepts its class and text; the page is
    /// never reloaded meanwhile (live updates only).
    async fn wait(&self, css: &str, what: &str, ok: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + T;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.c.find(Locator::Css(css)).await {
                let class = el.attr("class").await.ok().flatten().unwrap_or_default();
                let text = el.text().await.unwrap_or_default();
                if ok(&class, &text) {
                    return;
                }
                last = format!("class '{class}', text '{text}'");
            }
            if self.error_page().await {
                // A load the network change broke (see `go`): load it again.
                let _ = self.c.refresh().await;
            }
            if Instant::now() >= deadline {
                // Say where the browser is and what it shows: an error page, another page.
                let body = match self.c.find(Locator::Css("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                let short: String = body.chars().take(600).collect();
                panic!(
                    "waiting for {what} ({css}): {last}; on {}: {short}",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Clicks `css`; live parts replace elements, so a reference that went stale between
    /// finding and clicking is found again.
    async fn click(&self, css: &str) {
        for attempt in 0.. {
            let el = self
                .c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match el.click().await {
                Ok(()) => return,
                Err(e) if attempt < 20 && e.to_string().contains("stale") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.c.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn sign_in(&self, user: &str) {
        self.fill("input[name=username]", user).await;
        self.fill("input[name=password]", PASSWORD).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
    }

    /// Whether the page still is the same document (a marker set by script survives).
    async fn mark(&self) {
        self.c
            .execute("window.__gantry_same_page = 1;", vec![])
            .await
            .unwrap();
    }

    async fn same_page(&self) -> bool {
        self.c
            .execute("return window.__gantry_same_page === 1;", vec![])
            .await
            .unwrap()
            == Value::Bool(true)
    }
}

fn make_user(s: &Server, name: &str, admin: bool) {
    s.api()
        .post(
            "/api/v1/users",
            json!({"username": name, "password": PASSWORD, "admin": admin}),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_watches_retries_plays_and_lints_in_a_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("flaky-ran").display().to_string();
    let repo = Project::with_files(&[
        (".gantry.yml", &pipeline(&marker)),
        ("child.yml", "child-job:\n  script: [echo from the child]\n"),
    ]);
    let s = Server::start(Options::new(&Backend::Sqlite));
    let project = s.project("team/app", repo.path());
    make_user(&s, "dev", false);
    make_user(&s, "root", true);
    s.api()
        .post(
            &format!("/api/v1/projects/{project}/members"),
            json!({"username": "dev", "role": "maintainer"}),
        )
        .unwrap();
    let ui = Ui {
        c: client,
        base: s.url.clone(),
        shots: shots_dir(),
    };

    // Signed out, a page sends to the sign-in page, and back after it.
    ui.go(&format!("/projects/{project}")).await;
    assert!(
        ui.path().await.starts_with("/login?next="),
        "{}",
        ui.path().await
    );
    ui.shot("01-login").await;
    ui.sign_in("dev").await;
    ui.on("the project", |p| p == format!("/projects/{project}"))
        .await;
    assert_eq!(
        ui.text("header .user").await,
        "dev",
        "the header names who is in"
    );

    // Run a pipeline with a variable.
    ui.click(&format!("a[href='/projects/{project}/pipelines/new']"))
        .await;
    ui.fill("textarea[name=variables]", "GREETING=hello").await;
    ui.click("form[action$='/pipelines'] button[type=submit]")
        .await;
    let here = ui
        .on("the new pipeline", |p| {
            p.strip_prefix("/pipelines/")
                .is_some_and(|n| n.parse::<i64>().is_ok())
        })
        .await;
    let pipeline: i64 = here
        .strip_prefix("/pipelines/")
        .unwrap_or_else(|| panic!("on {here}"))
        .parse()
        .unwrap();
    let p = s.get_pipeline(pipeline);
    assert_eq!(p["source"], "web", "{p}");
    let build = id(&job(&p, "build"));
    let flaky = id(&job(&p, "flaky"));

    // The graph changes live: build runs, then succeeds, without a reload.
    ui.mark().await;
    let build_box = "li.job[data-name='build']";
    ui.wait(build_box, "build running", |c, _| c.contains("s-running"))
        .await;
    ui.shot("02-pipeline-running").await;
    assert_eq!(
        ui.c.find_all(Locator::Css(".stage")).await.unwrap().len(),
        3,
        "a column per stage"
    );

    // The log, live: lines arrive while the job runs.
    ui.click(&format!("a#job-{build}")).await;
    ui.on("the job", |p| p == format!("/jobs/{build}")).await;
    ui.mark().await;
    ui.wait("#log", "the first lines", |_, t| {
        t.contains("building step 2")
    })
    .await;
    let running = ui.text("#job-head h1").await;
    assert!(running.contains("running"), "{running}");
    ui.wait("#log", "more lines", |_, t| t.contains("building step 6"))
        .await;
    assert!(ui.same_page().await, "the log grew without a reload");
    ui.wait("#job-head h1", "build succeeded", |_, t| {
        t.contains("success")
    })
    .await;
    ui.wait("#log", "the last line", |_, t| t.contains("build ok"))
        .await;
    assert!(
        ui.same_page().await,
        "the job's state changed without a reload"
    );
    // Colours, line numbers and links to lines, the section.
    let green = ui
        .c
        .execute(
            "return [...document.querySelectorAll('#log .fg2')].some(e => e.textContent === 'build ok');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(green, Value::Bool(true), "the ANSI green is a colour");
    let first = ui.text("#log #L1 .n").await;
    assert_eq!(first, "1");
    assert!(
        ui.c.find(Locator::Css("#log details.sec summary"))
            .await
            .is_ok(),
        "the section is collapsible"
    );
    // Search.
    ui.fill("#log-search", "step 7").await;
    ui.wait("#log-count", "a match", |_, t| t == "1 match")
        .await;
    ui.shot("03-job-log").await;

    // Back on the graph: flaky failed (live), retry it from its box.
    ui.go(&format!("/pipelines/{pipeline}")).await;
    ui.mark().await;
    let flaky_box = "li.job[data-name='flaky']";
    ui.wait(flaky_box, "flaky failed", |c, _| c.contains("s-failed"))
        .await;
    ui.wait("li.job[data-name='deploy']", "deploy skipped", |c, _| {
        c.contains("s-skipped")
    })
    .await;
    // The child pipeline, downstream of its trigger job, with its state.
    ui.wait(".downstream li.job", "the child pipeline", |_, t| {
        t.contains("success") && t.contains("from child")
    })
    .await;
    ui.shot("04-pipeline-failed").await;
    // The failed job's page: jump to the first error.
    ui.go(&format!("/jobs/{flaky}")).await;
    ui.wait("#log", "flaky's log", |_, t| t.contains("first run fails"))
        .await;
    ui.click("#log-error").await;
    ui.wait("#log .l.cur", "the first error", |_, t| {
        t.contains("ERROR: the first run fails")
    })
    .await;
    ui.go(&format!("/pipelines/{pipeline}")).await;
    ui.mark().await;
    ui.click("button[aria-label='Retry flaky']").await;
    ui.on("the pipeline again", |p| {
        p == format!("/pipelines/{pipeline}")
    })
    .await;
    // The form posted and came back: a new page.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ui.same_page().await {
        assert!(Instant::now() < deadline, "the retry form did not post");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ui.mark().await;
    ui.wait(flaky_box, "flaky passed", |c, _| c.contains("s-success"))
        .await;
    ui.wait(flaky_box, "flaky's retry shown", |_, t| t.contains("↻1"))
        .await;
    ui.wait("li.job[data-name='deploy']", "deploy manual", |c, _| {
        c.contains("s-manual")
    })
    .await;
    assert!(ui.same_page().await, "the graph changed without a reload");

    // Play the manual deploy: the confirmation names the job and the environment.
    ui.click("a[aria-label='Play deploy']").await;
    ui.on("the confirmation", |p| p.ends_with("/play")).await;
    let confirm = ui.text(".confirm").await;
    assert!(
        confirm.contains("deploy") && confirm.contains("production"),
        "{confirm}"
    );
    ui.shot("05-play-confirmation").await;
    ui.click("#confirm-play").await;
    ui.on("the pipeline", |p| p == format!("/pipelines/{pipeline}"))
        .await;
    ui.wait("li.job[data-name='deploy']", "deploy done", |c, _| {
        c.contains("s-success")
    })
    .await;
    ui.wait("#pipeline-head h1", "the pipeline passed", |_, t| {
        t.contains("success")
    })
    .await;
    ui.shot("06-pipeline-success").await;
    let p = s.get_pipeline(pipeline);
    assert_eq!(job(&p, "deploy")["played_by"], "dev", "who approved: {p}");
    let audit = s.api().get("/api/v1/audit-log?per_page=100").unwrap();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "job.play"
                && e["actor"] == "dev"
                && e["target"].as_str().unwrap().contains("production")),
        "{audit:#}"
    );

    // Lint a broken file: the error at its line, in the list and in the gutter.
    ui.go(&format!("/projects/{project}/lint")).await;
    // Under load the page may come late: its editor is what the next steps need.
    ui.wait("#editor", "the lint editor", |_, _| true).await;
    let broken = "build:\n  script: [make]\ntest:\n  needs: [biuld]\n  script: [make test]\n";
    ui.c.execute(
        "document.getElementById('editor').value = arguments[0];",
        vec![json!(broken)],
    )
    .await
    .unwrap();
    ui.click("#lint-run").await;
    ui.wait("#lint-summary", "an error", |_, t| t.contains("1 error"))
        .await;
    let diag = ui.text(".diag.error").await;
    assert!(diag.contains("line 4") && diag.contains("biuld"), "{diag}");
    let gutter = ui.text(".gutter .err").await;
    assert_eq!(gutter, "4", "the gutter marks line 4");
    ui.shot("07-lint-error").await;
    // A valid file shows its planned graph.
    ui.c.execute(
        "document.getElementById('editor').value = arguments[0];",
        vec![json!(
            "build:\n  script: [make]\ntest:\n  needs: [build]\n  script: [make test]\n"
        )],
    )
    .await
    .unwrap();
    ui.click("#lint-run").await;
    ui.wait("#lint-summary", "valid", |_, t| t.contains("valid"))
        .await;
    assert_eq!(
        ui.c.find_all(Locator::Css(".planned li.job"))
            .await
            .unwrap()
            .len(),
        2
    );
    ui.shot("08-lint-plan").await;

    // The pipelines list, live: a new pipeline is announced, a listed one changes state.
    ui.go(&format!("/projects/{project}/pipelines")).await;
    assert!(ui.text(&format!("#p-{pipeline}")).await.contains("dev"));
    ui.mark().await;
    // The second pipeline's build waits for this file: it is running when the list shows
    // it, however slow the machine, and passes once the test lets it go.
    let hold = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let hold_path = hold.to_path_buf();
    drop(hold);
    let second = id(&s.pipeline_vars(project, "main", &[("HOLD", hold_path.to_str().unwrap())]));
    let deadline = Instant::now() + T;
    while !ui
        .c
        .find(Locator::Id("new-pipelines"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the new pipeline was not announced"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(ui.same_page().await, "announced without a reload");
    ui.click("#new-pipelines a").await;
    ui.wait(
        &format!("#p-{second}"),
        "the new pipeline listed",
        |_, _| true,
    )
    .await;
    let before = ui.text(&format!("#p-{second}")).await;
    assert!(
        !before.contains("success"),
        "still running when listed: {before}"
    );
    ui.mark().await;
    std::fs::write(&hold_path, "go").unwrap();
    ui.wait(
        &format!("#p-{second}"),
        "the new pipeline passes",
        |_, t| t.contains("success"),
    )
    .await;
    assert!(ui.same_page().await, "the row changed without a reload");
    ui.shot("09-pipelines").await;
    ui.go("/").await;
    ui.shot("10-projects").await;
    ui.go(&format!("/projects/{project}")).await;
    ui.shot("11-project").await;
    ui.go(&format!("/projects/{project}/settings")).await;
    ui.shot("12-settings").await;
    ui.go(&format!("/jobs/{build}/artifacts/browse")).await;
    assert!(ui.text("table.list").await.contains("out.txt"));
    ui.go(&format!("/jobs/{build}")).await;
    ui.click(&format!("a[href='/jobs/{build}/tests']")).await;
    ui.on("the tests", |p| p.ends_with("/tests")).await;
    let summary = ui.text("#tests-summary").await;
    assert!(
        summary.contains("3 tests")
            && summary.contains("1 failed")
            && summary.contains("1 skipped"),
        "{summary}"
    );
    let first = ui.text("table.list tbody tr").await;
    assert!(
        first.contains("rejects tabs") && first.contains("expected an error"),
        "failures first: {first}"
    );
    ui.shot("18-junit").await;

    // A big log (5 MiB): the page holds its end, and earlier parts on demand.
    let big = id(&job(&s.get_pipeline(pipeline), "big"));
    ui.go(&format!("/jobs/{big}")).await;
    ui.wait("#log-state", "the end of the log", |_, t| {
        t.contains("success")
    })
    .await;
    let rows = |ui: &Ui| {
        let c = ui.c.clone();
        async move {
            c.execute(
                "return document.querySelectorAll('#log .l').length;",
                vec![],
            )
            .await
            .unwrap()
            .as_u64()
            .unwrap()
        }
    };
    let shown = rows(&ui).await;
    assert!(
        (10_000..40_000).contains(&shown),
        "{shown} lines in the page"
    );
    let log = ui.text("#log").await;
    assert!(
        log.contains("line 200000 of the big log"),
        "the end is shown"
    );
    assert!(!log.contains("line 1 of the big log\n"), "the start is not");
    assert!(
        ui.c.find(Locator::Css("#log-earlier"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    // Its lines carry their true numbers (the server counts the lines before the part shown).
    let raw = s.log(big);
    let last_line = raw
        .lines()
        .position(|l| l == "line 200000 of the big log")
        .unwrap() as u64
        + 1;
    let header = last_line - 200_000;
    let number_of = |text: &'static str| {
        let c = ui.c.clone();
        async move {
            c.execute(
                "const r = [...document.querySelectorAll('#log .l')].find(r => r.lastElementChild.textContent === arguments[0]); \
                 return r && r.id.startsWith('L') ? +r.firstElementChild.textContent : 0;",
                vec![json!(text)],
            )
            .await
            .unwrap()
            .as_u64()
            .unwrap()
        }
    };
    let deadline = Instant::now() + T;
    while number_of("line 200000 of the big log").await != last_line {
        assert!(
            Instant::now() < deadline,
            "the last line is not numbered {last_line}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ui.shot("17-big-log").await;
    ui.click("#log-earlier button").await;
    let deadline = Instant::now() + T;
    while rows(&ui).await < shown + 10_000 {
        assert!(Instant::now() < deadline, "earlier output did not load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The earlier part is numbered back from there, with no line lost between.
    let (first_n, first_text) = {
        let v = ui
            .c
            .execute(
                "const r = document.querySelector('#log .l'); return [+r.firstElementChild.textContent, r.lastElementChild.textContent];",
                vec![],
            )
            .await
            .unwrap();
        (v[0].as_u64().unwrap(), v[1].as_str().unwrap().to_string())
    };
    let k: u64 = first_text
        .strip_prefix("line ")
        .and_then(|r| r.strip_suffix(" of the big log"))
        .unwrap_or_else(|| panic!("{first_text}"))
        .parse()
        .unwrap();
    assert_eq!(first_n, k + header, "{first_text}");
    assert_eq!(
        rows(&ui).await,
        raw.lines().count() as u64 - first_n + 1,
        "no line lost"
    );

    // At phone width.
    ui.c.set_window_size(390, 844).await.unwrap();
    ui.go(&format!("/pipelines/{pipeline}")).await;
    ui.shot("13-phone-pipeline").await;
    ui.go(&format!("/jobs/{build}")).await;
    ui.wait("#log", "the log", |_, t| t.contains("build ok"))
        .await;
    ui.shot("14-phone-job").await;
    ui.c.set_window_size(1400, 1000).await.unwrap();

    // Sign out; an administrator sees agents and the audit log.
    ui.go("/").await;
    ui.click("form[action='/logout'] button").await;
    ui.on("the sign-in page", |p| p.starts_with("/login")).await;
    ui.go("/agents").await;
    ui.sign_in("root").await;
    ui.on("the agents", |p| p == "/agents").await;
    assert!(ui.text("table.list").await.contains("online"));
    ui.shot("15-agents").await;
    ui.go("/admin/audit").await;
    assert!(ui.text("table.list").await.contains("job.play"));
    ui.shot("16-audit").await;

    ui.c.close().await.unwrap();
    eprintln!("screenshots in {}", ui.shots.display());
}

/// The registry's pages in a browser: a maintainer opens the project's registry from its
/// page, sees the pushed tag with its digest (and a working copy button), the image's
/// layers, promotes it through the form into another project (same digest, new tag),
/// deletes a tag, makes a robot account (its secret shown once) and reads the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_browses_promotes_and_deletes_images_in_a_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let mut opts = Options::new(&Backend::Sqlite);
    opts.local_agent = false;
    let s = Server::start(opts);
    let repo = Project::new("job: {script: [true]}\n");
    let app = s.project("team/app", repo.path());
    let release = id(&s
        .api()
        .post("/api/v1/projects", json!({"path": "team/release"}))
        .unwrap());
    make_user(&s, "maya", false);
    for p in [app, release] {
        s.api()
            .post(
                &format!("/api/v1/projects/{p}/members"),
                json!({"username": "maya", "role": "maintainer"}),
            )
            .unwrap();
    }
    // A small image pushed with the raw Distribution client, and an older tag.
    let oci = common::oci::Oci::new(&s.url);
    let token = oci.token(
        Some(("admin", &s.token)),
        &["repository:team/app/web:pull,push"],
    );
    let digest = oci.push_image(&token, "team/app/web", "1.4", &[b"layer one", b"layer two"]);
    oci.push_image(&token, "team/app/web", "old", &[b"an old layer"]);
    let short = &digest[..19];
    let ui = Ui {
        c: client,
        base: s.url.clone(),
        shots: shots_dir(),
    };

    ui.go(&format!("/projects/{app}")).await;
    ui.sign_in("maya").await;
    ui.on("the project", |p| p == format!("/projects/{app}"))
        .await;
    ui.click(&format!("a[href='/projects/{app}/registry']"))
        .await;
    ui.on("the registry", |p| p == format!("/projects/{app}/registry"))
        .await;
    let list = ui.text("#repository-list").await;
    assert!(
        list.contains("team/app/web") && list.contains('2'),
        "{list}"
    );
    let host = s.url.trim_start_matches("http://").to_string();
    assert!(
        ui.text("#commands")
            .await
            .contains(&format!("docker pull {host}/team/app/")),
        "the pull command on the server's address"
    );
    ui.shot("20-registry").await;

    // The repository: the tag, its short digest, a copy button (shown by the script).
    ui.click(&format!(
        "a[href='/projects/{app}/registry/repositories/team/app/web']"
    ))
    .await;
    ui.wait("#tag-1\\.4", "the tag 1.4", |_, t| t.contains(short))
        .await;
    assert!(
        ui.c.find(Locator::Css("#tag-1\\.4 button.copy"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "the copy button is shown"
    );
    let copies =
        ui.c.find(Locator::Css("#tag-1\\.4 button.copy"))
            .await
            .unwrap()
            .attr("data-copy")
            .await
            .unwrap();
    assert_eq!(
        copies.as_deref(),
        Some(digest.as_str()),
        "it copies the whole digest"
    );
    ui.shot("21-repository").await;

    // The image: its whole digest, its config and two layers.
    ui.click(&format!(
        "a[href='/projects/{app}/registry/images/team/app/web:1.4']"
    ))
    .await;
    ui.wait("#image-digest", "the digest", |_, t| t == digest)
        .await;
    assert_eq!(
        ui.c.find_all(Locator::Css("#layers tbody tr"))
            .await
            .unwrap()
            .len(),
        3,
        "the config and two layers"
    );
    ui.shot("22-image").await;

    // Promote through the form: the same digest under the new tag in team/release.
    ui.fill(
        "#promote-form input[name=destination]",
        "team/release/web:1.4-rc",
    )
    .await;
    ui.click("#promote-form button[type=submit]").await;
    ui.on("the promoted image", |p| {
        p == format!("/projects/{release}/registry/images/team/release/web:1.4-rc")
    })
    .await;
    ui.wait("#image-digest", "the same digest", |_, t| t == digest)
        .await;
    assert!(ui.text("#digest-tags").await.contains("1.4-rc"));
    ui.shot("23-promoted").await;

    // Delete a tag: back on the repository, without it.
    ui.go(&format!("/projects/{app}/registry/images/team/app/web:old"))
        .await;
    ui.click("#delete-tag button[type=submit]").await;
    ui.on("the repository", |p| {
        p == format!("/projects/{app}/registry/repositories/team/app/web")
    })
    .await;
    let tags = ui.text("#tag-list").await;
    assert!(tags.contains("1.4") && !tags.contains("old"), "{tags}");

    // A robot account: its secret shown once.
    ui.go(&format!("/projects/{app}/registry/robots")).await;
    ui.fill("#robot-form input[name=name]", "deployer").await;
    ui.click("#robot-form input[name=push]").await;
    ui.click("#robot-form button[type=submit]").await;
    ui.wait("#new-robot-secret", "the secret", |_, t| {
        t.starts_with("grb_")
    })
    .await;
    let secret = ui.text("#new-robot-secret").await;
    assert_eq!(ui.text("#new-robot-name").await, "robot$team/app+deployer");
    ui.shot("24-robot").await;
    ui.go(&format!("/projects/{app}/registry/robots")).await;
    let body = ui.text("main").await;
    assert!(body.contains("robot$team/app+deployer"), "{body}");
    assert!(!body.contains(&secret), "the secret is shown once only");

    // The history: the promotion in team/release, the deletion in team/app.
    ui.go(&format!("/projects/{release}/registry/history"))
        .await;
    let h = ui.text("#history").await;
    assert!(
        h.contains("promoted") && h.contains("team/app/web:1.4") && h.contains("maya"),
        "{h}"
    );
    let deadline = Instant::now() + T;
    loop {
        ui.go(&format!("/projects/{app}/registry/history")).await;
        let main = ui.text("main").await;
        if main.contains("deleted") && main.contains("team/app/web:old") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deletion is not in the history: {main}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ui.shot("25-registry-history").await;
    ui.c.close().await.unwrap();
}
