//! Evaluating `rules` and legacy `only`/`except` for one trigger.

use crate::model::{Changes, Job, Need, OnlyExcept, Rule, Variable, When};
use crate::trigger::{Source, Trigger};
use crate::vars;

pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) enum Decision {
    Out(String),
    In {
        when: When,
        allow_failure: Option<bool>,
        start_in: Option<String>,
        variables: Vec<Variable>,
        needs: Option<Vec<Need>>,
        interruptible: Option<bool>,
        reason: String,
    },
}

/// The first rule whose clauses all match.
pub(super) fn first_match<'r>(
    rules: &'r [Rule],
    lookup: Lookup<'_>,
    trigger: &Trigger,
) -> Option<(usize, &'r Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| matches(r, lookup, trigger))
}

fn matches(rule: &Rule, lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    if let Some(c) = &rule.condition
        && !c.expr.evaluate(lookup)
    {
        return false;
    }
    if let Some(ch) = &rule.changes
        && !changes_match(ch, lookup, trigger)
    {
        return false;
    }
    if let Some(ex) = &rule.exists
        && !exists_match(ex, lookup, trigger)
    {
        return false;
    }
    true
}

/// A human summary of a rule's clauses, for traces: ` (if: $X == "y"; when: manual)`.
pub(super) fn describe(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &rule.condition {
        parts.push(format!("if: {}", c.source));
    }
    if let Some(ch) = &rule.changes {
        parts.push(format!("changes: [{}]", ch.paths.join(", ")));
    }
    if let Some(ex) = &rule.exists {
        parts.push(format!("exists: [{}]", ex.join(", ")));
    }
    if let Some(w) = rule.when {
        parts.push(format!("when: {}", w.as_str()));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn glob_set(patterns: &[String], lookup: Lookup<'_>) -> Option<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let p = vars::expand(p, lookup);
        let p = p.trim_start_matches("./").trim_start_matches('/');
        let g = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .ok()?;
        b.add(g);
        // `dir/**/*` also matches files directly in `dir` in GitLab (fnmatch with FNM_PATHNAME).
    }
    b.build().ok()
}

fn changes_match(ch: &Changes, lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    let Some(files) = &trigger.changed_files else {
        // Unknown diff (new branch, schedule, web, api …): GitLab evaluates `changes` as true.
        return true;
    };
    let Some(set) = glob_set(&ch.paths, lookup) else {
        return false;
    };
    files.iter().any(|f| set.is_match(f))
}

fn exists_match(patterns: &[String], lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    let Some(files) = &trigger.files else {
        return false;
    };
    let Some(set) = glob_set(patterns, lookup) else {
        return false;
    };
    files.iter().any(|f| set.is_match(f))
}

pub(super) fn decide(job: &Job, lookup: Lookup<'_>, trigger: &Trigger) -> Decision {
    if let Some(rules) = &job.rules {
        return match first_match(rules, lookup, trigger) {
            None => Decision::Out("no rule matched".into()),
            Some((i, rule)) => {
                let when = rule.when.unwrap_or(When::OnSuccess);
                if when == When::Never {
                    return Decision::Out(format!(
                        "rule {} matched with `when: never`{}",
                        i + 1,
                        describe(rule)
                    ));
                }
                Decision::In {
                    when,
                    allow_failure: rule.allow_failure,
                    start_in: rule.start_in.clone(),
                    variables: rule.variables.clone(),
                    needs: rule.needs.clone().or_else(|| job.needs.clone()),
                    interruptible: rule.interruptible,
                    reason: format!("rule {} matched{}", i + 1, describe(rule)),
                }
            }
        };
    }
    // Legacy only/except; without either, GitLab uses `only: [branches, tags]`.
    let default_only = OnlyExcept {
        refs: vec!["branches".into(), "tags".into()],
        ..OnlyExcept::default()
    };
    let only = job.only.as_ref().unwrap_or(&default_only);
    if !only_matches(only, lookup, trigger) {
        let why = if job.only.is_none() {
            "jobs without rules or only/except run for branches and tags only (GitLab's default `only: [branches, tags]`)".to_string()
        } else {
            "`only` does not match".to_string()
        };
        return Decision::Out(why);
    }
    if let Some(except) = &job.except
        && only_matches(except, lookup, trigger)
    {
        return Decision::Out("`except` matches".into());
    }
    if job.when == When::Never {
        return Decision::Out("`when: never`".into());
    }
    Decision::In {
        when: job.when,
        allow_failure: None,
        start_in: job.start_in.clone(),
        variables: Vec::new(),
        needs: job.needs.clone(),
        interruptible: None,
        reason: if job.only.is_some() || job.except.is_some() {
            "only/except match".into()
        } else {
            "no rules: runs for branches and tags".into()
        },
    }
}

/// All present keys must match; within a key, any entry.
fn only_matches(oe: &OnlyExcept, lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    if !oe.refs.is_empty() && !oe.refs.iter().any(|r| ref_matches(r, trigger)) {
        return false;
    }
    if !oe.variables.is_empty() && !oe.variables.iter().any(|c| c.expr.evaluate(lookup)) {
        return false;
    }
    if let Some(ch) = &oe.changes
        && !changes_match(
            &Changes {
                paths: ch.clone(),
                compare_to: None,
            },
            lookup,
            trigger,
        )
    {
        return false;
    }
    true
}

fn ref_matches(pattern: &str, t: &Trigger) -> bool {
    let is_mr = t.source == Source::MergeRequestEvent;
    let by_source = |s: Source| t.source == s;
    match pattern {
        "branches" => !t.is_tag && !is_mr && t.source != Source::ExternalPullRequestEvent,
        "tags" => t.is_tag,
        "merge_requests" => is_mr,
        "external_pull_requests" => by_source(Source::ExternalPullRequestEvent),
        "api" => by_source(Source::Api),
        "chat" => by_source(Source::Chat),
        "external" => false,
        "pipelines" => by_source(Source::Pipeline) || by_source(Source::ParentPipeline),
        "pushes" => by_source(Source::Push),
        "schedules" => by_source(Source::Schedule),
        "triggers" => by_source(Source::Trigger),
        "web" => by_source(Source::Web),
        _ => {
            let (pat, project) = match pattern.rsplit_once('@') {
                Some((p, proj)) if !pattern.starts_with('/') => (p, Some(proj)),
                _ => (pattern, None),
            };
            if project.is_some_and(|proj| proj != t.project.path) {
                return false;
            }
            let name = match &t.merge_request {
                Some(mr) if is_mr => mr.source_branch.as_str(),
                _ => t.ref_name.as_str(),
            };
            if let Some(body) = pat.strip_prefix('/') {
                let (re, flags) = match body.rfind('/') {
                    Some(end) => (&body[..end], &body[end + 1..]),
                    None => (body, ""),
                };
                let re = if flags.contains('i') {
                    format!("(?i){re}")
                } else {
                    re.to_string()
                };
                regex::Regex::new(&re).is_ok_and(|r| r.is_match(name))
            } else {
                pat == name
            }
        }
    }
}
