//! Artifacts: collected from a job's workspace after it runs, restored into the jobs that
//! need them, with `dotenv` and `junit` reports understood.
//!
//! The local store is a directory per job instance under the run's directory; files keep
//! their relative paths, so restoring is a copy. (The server's blob store comes with the
//! server issue.)

use crate::fsutil::{copy_paths, list_files, select};
use anyhow::{Context, Result};
use gantry_pipeline::model::{Artifacts, ArtifactsWhen};
use std::path::{Path, PathBuf};

/// Where one job's artifacts live.
#[derive(Debug, Clone)]
pub struct Stored {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Variables from `artifacts:reports:dotenv`.
    pub dotenv: Vec<(String, String)>,
    pub junit: Option<JunitSummary>,
}

/// Whether artifacts are collected for a job that ended with `success`.
pub fn wanted(a: &Artifacts, success: bool) -> bool {
    match a.when {
        ArtifactsWhen::OnSuccess => success,
        ArtifactsWhen::OnFailure => !success,
        ArtifactsWhen::Always => true,
    }
}

/// Copies the job's artifacts (paths, untracked, reports) from `workspace` into `store`.
/// `checkout` lists the files the job started with (for `untracked`).
pub fn collect(
    workspace: &Path,
    a: &Artifacts,
    checkout: &[PathBuf],
    store: &Path,
    expand: &dyn Fn(&str) -> String,
) -> Result<Stored> {
    let mut patterns: Vec<String> = a.paths.iter().map(|p| expand(p)).collect();
    for paths in a.reports.values() {
        patterns.extend(paths.iter().map(|p| expand(p)));
    }
    let exclude: Vec<String> = a.exclude.iter().map(|p| expand(p)).collect();
    let mut files = select(workspace, &patterns, &exclude)?;
    if a.untracked {
        for f in list_files(workspace) {
            if !checkout.contains(&f) && !files.contains(&f) {
                files.push(f);
            }
        }
    }
    files.sort();
    files.dedup();
    let dir = store.join("files");
    std::fs::create_dir_all(&dir)?;
    copy_paths(workspace, &dir, &files).context("copying artifacts")?;
    let mut dotenv = Vec::new();
    if let Some(paths) = a.reports.get("dotenv") {
        for p in paths {
            let p = workspace.join(expand(p));
            if let Ok(text) = std::fs::read_to_string(&p) {
                dotenv.extend(parse_dotenv(&text));
            }
        }
    }
    let mut junit = None;
    if let Some(paths) = a.reports.get("junit") {
        let set = crate::fsutil::globs(&paths.iter().map(|p| expand(p)).collect::<Vec<_>>())?;
        let mut sum = JunitSummary::default();
        for f in files.iter().filter(|f| set.is_match(f)) {
            if let Ok(text) = std::fs::read_to_string(workspace.join(f)) {
                sum.add(&parse_junit(&text));
            }
        }
        junit = Some(sum);
    }
    Ok(Stored {
        dir,
        files,
        dotenv,
        junit,
    })
}

/// Copies stored artifacts into a workspace.
pub fn restore(stored: &Stored, workspace: &Path) -> Result<()> {
    copy_paths(&stored.dir, workspace, &stored.files)
}

/// GitLab's dotenv format: `KEY=VALUE` lines; blank lines and `#` comments ignored; quotes
/// around a value are removed; no interpolation.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// Test totals from JUnit XML reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JunitSummary {
    pub tests: u32,
    pub failures: u32,
    pub errors: u32,
    pub skipped: u32,
}

impl JunitSummary {
    pub fn add(&mut self, o: &JunitSummary) {
        self.tests += o.tests;
        self.failures += o.failures;
        self.errors += o.errors;
        self.skipped += o.skipped;
    }

    pub fn passed(&self) -> u32 {
        self.tests
            .saturating_sub(self.failures + self.errors + self.skipped)
    }
}

/// Counts `<testcase>`s and their `<failure>`, `<error>` and `<skipped>` children.
pub fn parse_junit(xml: &str) -> JunitSummary {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut s = JunitSummary::default();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.name().as_ref() {
                b"testcase" => s.tests += 1,
                b"failure" => s.failures += 1,
                b"error" => s.errors += 1,
                b"skipped" => s.skipped += 1,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv() {
        let v = parse_dotenv("# c\nA=1\nB=\"two words\"\nexport C='x'\nbad line\n=no\n");
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
    }

    #[test]
    fn junit() {
        let s = parse_junit(
            r#"<testsuites><testsuite><testcase name="a"/><testcase name="b"><failure/></testcase><testcase name="c"><skipped/></testcase></testsuite></testsuites>"#,
        );
        assert_eq!(
            s,
            JunitSummary {
                tests: 3,
                failures: 1,
                errors: 0,
                skipped: 1
            }
        );
        assert_eq!(s.passed(), 1);
    }
}
