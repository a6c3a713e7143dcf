//! A job's JUnit results: the files its `artifacts:reports:junit` names, read from its
//! artifacts archive (where the runner puts them) when the page is asked for (never on the
//! job page itself, so a large archive does not slow it), every test case with its state,
//! failures first.

use super::pipelines::internal;
use super::{Chrome, Error, PageResult, Viewer, html};
use crate::AppState;
use crate::error::HttpError;
use askama::Template;
use axum::extract::{Path, State};
use serde::Deserialize;
use std::io::Read;

/// The most test cases shown (the counts cover them all).
const SHOWN: usize = 2000;
/// The largest report read.
const REPORT_LIMIT: u64 = 32 << 20;

#[derive(Debug, Default, Deserialize)]
struct Def {
    #[serde(default)]
    artifacts: Option<Arts>,
}

#[derive(Debug, Default, Deserialize)]
struct Arts {
    #[serde(default)]
    reports: std::collections::HashMap<String, Vec<String>>,
}

/// The JUnit report patterns of a job definition.
pub fn junit_paths(definition: &str) -> Vec<String> {
    serde_json::from_str::<Def>(definition)
        .ok()
        .and_then(|d| d.artifacts)
        .and_then(|mut a| a.reports.remove("junit"))
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub suite: String,
    pub name: String,
    /// `passed`, `failed`, `error` or `skipped`.
    pub state: &'static str,
    pub time: String,
    pub message: String,
}

fn attr(e: &quick_xml::events::BytesStart<'_>, key: &[u8]) -> String {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| {
            String::from_utf8_lossy(&a.value)
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_default()
}

/// Every `<testcase>` of a JUnit XML document.
pub fn parse(xml: &str) -> Vec<Case> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out: Vec<Case> = Vec::new();
    let mut open = false;
    loop {
        match r.read_event() {
            Ok(ev @ (Event::Start(_) | Event::Empty(_))) => {
                let (e, empty) = match ev {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    _ => unreachable!(),
                };
                match e.name().as_ref() {
                    b"testcase" => {
                        let suite = attr(&e, b"classname");
                        out.push(Case {
                            suite,
                            name: attr(&e, b"name"),
                            state: "passed",
                            time: attr(&e, b"time"),
                            message: String::new(),
                        });
                        // `<testcase/>` has no children.
                        open = !empty;
                    }
                    tag @ (b"failure" | b"error" | b"skipped") if open => {
                        if let Some(c) = out.last_mut() {
                            c.state = match tag {
                                b"failure" => "failed",
                                b"error" => "error",
                                _ => "skipped",
                            };
                            c.message = attr(&e, b"message");
                        }
                    }
                    _ => {}
                }
            }
            Ok(Event::End(e)) if e.name().as_ref() == b"testcase" => open = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[derive(Debug, Template)]
#[template(path = "tests.html")]
struct TestsPage {
    chrome: Chrome,
    title: String,
    id: i64,
    name: String,
    pipeline_id: i64,
    files: Vec<String>,
    total: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
    cases: Vec<Case>,
    more: bool,
}

pub async fn page(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let j = s.engine.job_row(id).await?;
    let patterns = junit_paths(&j.definition);
    if patterns.is_empty() {
        return Err(Error(HttpError::not_found(format!(
            "job {id} has no JUnit report (artifacts:reports:junit)"
        ))));
    }
    let mut files = Vec::new();
    let mut cases = Vec::new();
    if j.has_artifacts {
        let blobs = s.engine.blobs().clone();
        let set = {
            let mut b = globset::GlobSetBuilder::new();
            for p in &patterns {
                let p = p.trim_start_matches("./");
                if let Ok(g) = globset::GlobBuilder::new(p).literal_separator(true).build() {
                    b.add(g);
                }
            }
            b.build()
                .map_err(|e| HttpError::bad_request(e.to_string()))?
        };
        let found = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let r = blobs
                .open(&format!("artifacts/{id}.tar"))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut a = tar::Archive::new(r);
            let mut found = Vec::new();
            for e in a.entries()? {
                let mut e = e?;
                let path = e.path()?.to_string_lossy().into_owned();
                if !e.header().entry_type().is_file() || !set.is_match(&path) {
                    continue;
                }
                let mut text = String::new();
                e.by_ref().take(REPORT_LIMIT).read_to_string(&mut text)?;
                found.push((path, parse(&text)));
            }
            Ok(found)
        })
        .await
        .map_err(|e| HttpError::bad_request(e.to_string()))?
        .map_err(|e| HttpError::bad_request(format!("the artifacts archive: {e}")))?;
        for (path, c) in found {
            files.push(path);
            cases.extend(c);
        }
    }
    let count = |st: &str| cases.iter().filter(|c| c.state == st).count();
    let (passed, skipped) = (count("passed"), count("skipped"));
    let failed = count("failed") + count("error");
    let total = cases.len();
    // Failures first, then the rest in file order.
    cases.sort_by_key(|c| match c.state {
        "failed" | "error" => 0,
        "skipped" => 2,
        _ => 1,
    });
    let more = cases.len() > SHOWN;
    cases.truncate(SHOWN);
    let page = TestsPage {
        chrome: v.chrome,
        title: format!("Tests of {}", j.name),
        id,
        name: j.name,
        pipeline_id: j.pipeline_id,
        files,
        total,
        passed,
        failed,
        skipped,
        cases,
        more,
    };
    page.render().map_err(internal)?;
    Ok(html(&page))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn junit_cases_with_their_states() {
        let xml = r#"<?xml version="1.0"?>
<testsuites><testsuite name="s">
  <testcase classname="app.Parser" name="reads &quot;a&quot;" time="0.01"/>
  <testcase classname="app.Parser" name="fails" time="0.2"><failure message="expected 1, got 2">trace</failure></testcase>
  <testcase classname="app.Io" name="skips"><skipped/></testcase>
  <testcase classname="app.Io" name="errs"><error message="boom"/></testcase>
  <testcase classname="app.Io" name="after"/>
</testsuite></testsuites>"#;
        let c = parse(xml);
        let states: Vec<&str> = c.iter().map(|c| c.state).collect();
        assert_eq!(states, ["passed", "failed", "skipped", "error", "passed"]);
        assert_eq!(c[0].name, "reads \"a\"");
        assert_eq!(c[1].message, "expected 1, got 2");
    }

    #[test]
    fn junit_paths_of_a_definition() {
        let d = r#"{"artifacts": {"paths": [], "reports": {"junit": ["reports/*.xml"]}}}"#;
        assert_eq!(junit_paths(d), vec!["reports/*.xml".to_string()]);
        assert!(junit_paths("{}").is_empty());
    }
}
