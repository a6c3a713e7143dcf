//! The fixture suite: each `tests/fixtures/*.case` holds a repository in one file (the
//! pipeline file, its includes, and the trigger), and its snapshot holds what a user sees:
//! the plan as rendered by `gantry plan` (when there are no errors), followed by each job's
//! variables as the job sees them (`vars`, expanded; CI_* left out) and the resolved settings
//! of each job (`settings`: image, services, cache, artifacts, retry, timeout, environment,
//! trigger, …), then the diagnostics as rendered by `gantry lint`.
//!
//! Case format:
//! ```text
//! # one or more comment lines: what GitLab does here, and where it says so
//! #### trigger
//! source: push            (push, web, api, schedule, trigger, merge_request_event, …)
//! ref: main               (or `tag: v1.0`)
//! var: NAME=VALUE         (repeatable)
//! changed: path/a.txt     (repeatable; absent means "unknown")
//! mr_target: main
//! protected: true
//! message: Title\n\nBody   (the commit message; `\n` for line breaks)
//! default_branch: main
//! #### file: .gitlab-ci.yml
//! …
//! #### file: ci/other.yml
//! …
//! #### file: group/project:path/file.yml      (a file of another project, for include:project)
//! #### file: https://example.com/ci.yml       (a remote file, for include:remote)
//! ```
//! Every other file name is a file of the repository (for `include:local`, wildcards and
//! `rules:exists`).
//! Review new or changed snapshots with `cargo insta review` (or `INSTA_UPDATE=always` then
//! `git diff`), checking each one against GitLab's documented behaviour.

use gantry_pipeline::diag::Diagnostics;
use gantry_pipeline::plan;
use gantry_pipeline::resolve::{FetchError, Fetched, Fetcher};
use gantry_pipeline::trigger::{MergeRequest, Source, Trigger};
use gantry_pipeline::vars::{Layer, Phase, Var, VarSet};
use std::collections::BTreeMap;
use std::path::Path;

struct Case {
    files: BTreeMap<String, String>,
    trigger: Trigger,
}

struct MapFetcher<'a>(&'a BTreeMap<String, String>);

impl Fetcher for MapFetcher<'_> {
    fn local(&self, path: &str) -> Result<Fetched, FetchError> {
        self.0
            .get(path)
            .map(|t| Fetched {
                name: path.to_string(),
                text: t.clone(),
            })
            .ok_or(FetchError::NotFound)
    }
    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        Ok(self
            .0
            .keys()
            .filter(|k| !k.contains(':'))
            .cloned()
            .collect())
    }
    fn project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<Fetched, FetchError> {
        // Other projects' files are written as `#### file: group/project:path/to/file.yml`.
        let key = format!("{project}:{path}");
        let name = format!(
            "{key}{}",
            git_ref.map(|r| format!("@{r}")).unwrap_or_default()
        );
        self.0
            .get(&key)
            .map(|t| Fetched {
                name,
                text: t.clone(),
            })
            .ok_or(FetchError::NotFound)
    }
    fn remote(&self, url: &str) -> Result<Fetched, FetchError> {
        self.0
            .get(url)
            .map(|t| Fetched {
                name: url.to_string(),
                text: t.clone(),
            })
            .ok_or(FetchError::NotFound)
    }
}

fn parse_case(text: &str) -> Case {
    let mut files = BTreeMap::new();
    let mut trigger = Trigger {
        ref_name: "main".into(),
        ..Trigger::default()
    };
    trigger.commit.sha = "1234567890abcdef1234567890abcdef12345678".into();
    trigger.commit.message = "Add feature\n\nLonger description".into();
    trigger.commit.author_name = "Ada".into();
    trigger.commit.author_email = "ada@example.com".into();
    let mut section: Option<String> = None;
    let mut buf = String::new();
    let mut mr_target: Option<String> = None;
    let flush = |section: &Option<String>,
                 buf: &mut String,
                 files: &mut BTreeMap<String, String>,
                 trigger: &mut Trigger,
                 mr_target: &mut Option<String>| {
        match section.as_deref() {
            Some("trigger") => {
                for line in buf.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let (k, v) = line
                        .split_once(':')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .expect("trigger lines are `key: value`");
                    match k {
                        "source" => trigger.source = Source::parse(v).expect("known source"),
                        "ref" => trigger.ref_name = v.to_string(),
                        "tag" => {
                            trigger.ref_name = v.to_string();
                            trigger.is_tag = true;
                        }
                        "var" => {
                            let (n, val) = v.split_once('=').expect("var: NAME=VALUE");
                            trigger.variables.push((n.to_string(), val.to_string()));
                        }
                        "changed_since" => {
                            let (r, path) = v.split_once('=').expect("changed_since: REF=PATH");
                            trigger
                                .changed_since
                                .entry(r.to_string())
                                .or_default()
                                .push(path.to_string());
                        }
                        "changed" => trigger
                            .changed_files
                            .get_or_insert_with(Vec::new)
                            .push(v.to_string()),
                        "mr_target" => *mr_target = Some(v.to_string()),
                        "protected" => trigger.protected = v == "true",
                        "message" => trigger.commit.message = v.replace("\\n", "\n"),
                        "default_branch" => trigger.project.default_branch = v.to_string(),
                        other => panic!("unknown trigger key {other}"),
                    }
                }
            }
            Some(name) => {
                files.insert(name.to_string(), std::mem::take(buf));
            }
            None => {}
        }
        buf.clear();
    };
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("#### ") {
            flush(&section, &mut buf, &mut files, &mut trigger, &mut mr_target);
            let rest = rest.trim();
            section = Some(if rest == "trigger" {
                "trigger".into()
            } else {
                rest.strip_prefix("file: ")
                    .expect("#### file: NAME")
                    .to_string()
            });
        } else if section.is_some() {
            buf.push_str(line);
        }
    }
    flush(&section, &mut buf, &mut files, &mut trigger, &mut mr_target);
    if trigger.source == Source::MergeRequestEvent {
        trigger.merge_request = Some(MergeRequest {
            iid: 7,
            id: 70,
            title: "Add feature".into(),
            source_branch: trigger.ref_name.clone(),
            source_branch_sha: trigger.commit.sha.clone(),
            target_branch: mr_target.unwrap_or_else(|| "main".into()),
            source_project_path: trigger.project.path.clone(),
            source_project_id: trigger.project.id,
            ..MergeRequest::default()
        });
    }
    trigger.files = Some(files.keys().filter(|k| !k.contains(':')).cloned().collect());
    Case { files, trigger }
}

/// What a user sees for a case: diagnostics, then the plan when there are no errors.
fn run_case(case: &Case) -> String {
    let root = if case.files.contains_key(".gantry.yml") {
        ".gantry.yml"
    } else {
        ".gitlab-ci.yml"
    };
    let text = case
        .files
        .get(root)
        .expect("a case has a .gitlab-ci.yml or .gantry.yml");
    // Include paths and include rules see the predefined variables and the trigger's
    // (pipeline) variables, which win.
    let pre = gantry_pipeline::vars::pipeline_variables(&case.trigger);
    let lookup = |n: &str| {
        case.trigger
            .variables
            .iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| pre.iter().find(|v| v.name == n).map(|v| v.value.clone()))
    };
    let loaded = gantry_pipeline::load(root, text, &MapFetcher(&case.files), &lookup);
    let mut out = String::new();
    let mut diags: Diagnostics = loaded.diagnostics;
    if let Some(p) = loaded.pipeline.as_ref().filter(|_| !diags.has_errors()) {
        let mut plan_diags = Diagnostics::new();
        let plan = plan::compile(p, &case.trigger, &mut plan_diags);
        diags.extend(plan_diags);
        if !diags.has_errors() {
            out.push_str(&plan::render(&plan));
            if let Some(ac) = &plan.auto_cancel {
                out.push_str(&format!(
                    "auto_cancel: {}\n",
                    flow(&serde_json::to_value(ac).unwrap())
                ));
            }
            for j in &plan.jobs {
                // The values the job sees: expanded as GitLab expands variables that reference
                // others; `expand: false` values stay as written and are marked `(raw)`.
                let all = plan.job_variables(j);
                let mut set = VarSet::new();
                set.push(
                    Layer::Job,
                    all.iter()
                        .map(|v| Var::new(&v.name, &v.value, Phase::Pipeline).with_raw(v.raw)),
                );
                let expanded = set.expand_all().expect("no cycles in fixtures");
                let vars: Vec<String> = expanded
                    .iter()
                    .filter(|v| !v.name.starts_with("CI") && !v.name.starts_with("GITLAB_"))
                    .map(|v| {
                        format!(
                            "{}={}{}",
                            v.name,
                            v.value,
                            if v.raw { " (raw)" } else { "" }
                        )
                    })
                    .collect();
                if !vars.is_empty() {
                    out.push_str(&format!("vars {}: {}\n", j.name, vars.join(" ")));
                }
            }
            out.push_str(&settings(&plan));
        }
    }
    if !diags.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&diags.render(&loaded.sources));
    }
    out
}

/// The resolved settings of each planned job (once per job of the file, not per instance),
/// one keyword a line in a compact flow style, so that a case about a keyword shows how it
/// was read. Keywords the plan already shows (stage, rules, when, needs, variables, …) and
/// empty or `false` values are left out; a job with nothing but a one-line script shows
/// nothing.
fn settings(plan: &plan::Plan) -> String {
    const SHOWN_BY_PLAN: &[&str] = &[
        "name",
        "stage",
        "rules",
        "only",
        "except",
        "when",
        "start_in",
        "allow_failure",
        "needs",
        "variables",
        "interruptible",
        "parallel",
    ];
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for j in &plan.jobs {
        if !seen.insert(j.job.name.clone()) {
            continue;
        }
        let serde_json::Value::Object(map) = serde_json::to_value(&j.job).unwrap() else {
            continue;
        };
        // A job whose only setting is a one-line script shows nothing: that is most jobs.
        let trivial = map.iter().all(|(k, v)| {
            SHOWN_BY_PLAN.contains(&k.as_str())
                || (k == "inherit_variables" && *v == serde_json::Value::Bool(true))
                || (k == "script" && v.as_array().is_some_and(|a| a.len() <= 1))
                || prune(v.clone()).is_none()
        });
        if trivial {
            continue;
        }
        let mut lines = Vec::new();
        for (k, v) in map {
            if SHOWN_BY_PLAN.contains(&k.as_str()) {
                continue;
            }
            if k == "inherit_variables" && v == serde_json::Value::Bool(true) {
                continue;
            }
            if let Some(v) = prune(v) {
                lines.push(format!("  {k}: {}", flow(&v)));
            }
        }
        if !lines.is_empty() {
            out.push_str(&format!("settings {}\n{}\n", j.job.name, lines.join("\n")));
        }
    }
    if !out.is_empty() {
        out.insert(0, '\n');
    }
    out
}

/// Drops `false`, `null`, empty lists and maps, and `artifacts:public: true` (the default;
/// `public: false` is kept).
fn prune(v: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.into_iter().filter_map(prune).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(m) => {
            // `public` defaults to true: show it only when false.
            let m: serde_json::Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| match (k.as_str(), &v) {
                    ("public", Value::Bool(true)) => None,
                    ("public", Value::Bool(false)) => Some((k, v)),
                    _ => prune(v).map(|v| (k, v)),
                })
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        other => Some(other),
    }
}

/// `{k: v, k2: [a, b]}`; strings bare unless they would read ambiguously.
fn flow(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.starts_with([' ', '"', '\'', '[', '{', '-'])
                && !s.ends_with(' ')
                && !s.contains([',', '[', ']', '{', '}', '\n', '"'])
                && !s.contains(": ");
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap()
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "the fixture suite is missing");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir.join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for path in cases {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let case = parse_case(&text);
            let description: String = text
                .lines()
                .take_while(|l| l.starts_with("# "))
                .map(|l| &l[2..])
                .collect::<Vec<_>>()
                .join(" ");
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_snapshot!(name, run_case(&case));
            });
        }
    });
}
