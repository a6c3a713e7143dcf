//! Evaluating `rules` and legacy `only`/`except` for one trigger.

use crate::expr::Pattern;
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

/// Ruby's `File.fnmatch` with `FNM_PATHNAME | FNM_DOTMATCH | FNM_EXTGLOB`, which GitLab uses
/// for `changes` and `exists`, as a `globset` pattern: `*` stops at `/`, `**/` matches any
/// number of directories, and a `**` that is not followed by `/` is a plain `*` (so `docs/**`
/// matches `docs/a.md` but not `docs/a/b.md`).
pub(crate) fn fnmatch_glob(pattern: &str) -> Option<globset::GlobMatcher> {
    let mut p = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(i) = rest.find("**") {
        p.push_str(&rest[..i]);
        let after = &rest[i..];
        let run = after.bytes().take_while(|&b| b == b'*').count();
        let tail = &after[run..];
        if tail.starts_with('/') && (i == 0 || rest[..i].ends_with('/')) {
            p.push_str("**");
        } else {
            p.push('*');
        }
        rest = tail;
    }
    p.push_str(rest);
    globset::GlobBuilder::new(&p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// The patterns with variables expanded: "if the `$VAR` variable exists, its value is used.
/// If it does not exist, the `$` is interpreted as being part of a path."
fn expand_patterns(patterns: &[String], lookup: Lookup<'_>) -> Vec<String> {
    let keep = vars::ExpandOptions {
        keep_undefined: true,
        ..vars::ExpandOptions::default()
    };
    patterns
        .iter()
        .map(|p| vars::expand_with(p, lookup, keep))
        .collect()
}

fn changes_match(ch: &Changes, lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    let files = match &ch.compare_to {
        // A diff against the named ref, computed by the caller.
        Some(r) => match trigger.changed_since.get(&vars::expand(r, lookup)) {
            Some(files) => files,
            None => return false,
        },
        None => match &trigger.changed_files {
            Some(files) => files,
            // Unknown diff (new branch, schedule, web, api …): GitLab evaluates `changes` as true.
            None => return true,
        },
    };
    // Paths are compared as written ("do not use `./`").
    expand_patterns(&ch.paths, lookup)
        .iter()
        .any(|p| fnmatch_glob(p).is_some_and(|g| files.iter().any(|f| g.is_match(f))))
}

fn exists_match(patterns: &[String], lookup: Lookup<'_>, trigger: &Trigger) -> bool {
    let Some(files) = &trigger.files else {
        return false;
    };
    expand_patterns(patterns, lookup).iter().any(|p| {
        let p = p.trim_start_matches('/');
        let Some(g) = fnmatch_glob(p) else {
            return false;
        };
        if p.ends_with('/') {
            // A directory: "the path must end with a forward slash".
            files
                .iter()
                .any(|f| f.match_indices('/').any(|(i, _)| g.is_match(&f[..=i])))
        } else {
            files.iter().any(|f| g.is_match(f))
        }
    })
}

/// Whether the job is in the pipeline, and how. `workflow_rules` tells whether the file has
/// `workflow:rules`, which turns off GitLab's default `only: [branches, tags]`.
pub(super) fn decide(
    job: &Job,
    lookup: Lookup<'_>,
    trigger: &Trigger,
    workflow_rules: bool,
) -> Decision {
    if let Some(rules) = &job.rules {
        return match first_match(rules, lookup, trigger) {
            None => Decision::Out("no rule matched".into()),
            Some((i, rule)) => {
                // A rule without `when` takes the job's `when` (default `on_success`).
                let when = rule.when.unwrap_or(job.when);
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
    // Legacy only/except; without `only`, GitLab uses `only: [branches, tags]`, unless the
    // file has `workflow:rules`.
    let default_only = OnlyExcept {
        refs: vec!["branches".into(), "tags".into()],
        ..OnlyExcept::default()
    };
    let only = match &job.only {
        Some(o) => Some(o),
        None if workflow_rules => None,
        None => Some(&default_only),
    };
    if let Some(only) = only
        && !only_matches(only, lookup, trigger)
    {
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
        } else if workflow_rules {
            "no rules: runs whenever workflow:rules create the pipeline".into()
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

/// A `/regex/flags` ref pattern compiled as GitLab does (RE2); `None` when the pattern is a
/// plain name, `Some(Err)` when it looks like a regex but does not compile.
pub(crate) fn ref_regex(pattern: &str) -> Option<Result<Pattern, String>> {
    Pattern::is_ruby_syntax(pattern).then(|| Pattern::compile(pattern))
}

/// GitLab's `Build::Policy::Refs`: `name@group/project` limits a pattern to one project;
/// `branches`, `tags` and the pipeline source (`pushes`, `schedules`, `merge_requests`, …,
/// singular or plural) are keywords; anything else is a branch or tag name or a `/regex/`,
/// matched against the ref of branch and tag pipelines only (never merge request pipelines).
fn ref_matches(pattern: &str, t: &Trigger) -> bool {
    let (pat, project) = match pattern.split_once('@') {
        Some((p, proj)) => (p, Some(proj)),
        None => (pattern, None),
    };
    if project.is_some_and(|proj| proj != t.project.path) {
        return false;
    }
    let is_mr = t.source == Source::MergeRequestEvent;
    let is_branch = !t.is_tag && !is_mr;
    if (pat == "tags" && t.is_tag) || (pat == "branches" && is_branch) {
        return true;
    }
    let source = t.source.as_str();
    let source = source.strip_suffix("_event").unwrap_or(source);
    if pat == source || pat == pluralize(source) {
        return true;
    }
    if !(is_branch || t.is_tag) {
        return false;
    }
    match ref_regex(pat) {
        Some(Ok(re)) => re.is_match(&t.ref_name),
        Some(Err(_)) | None => pat == t.ref_name,
    }
}

/// ActiveSupport's `pluralize` for the pipeline source names.
fn pluralize(word: &str) -> String {
    if word.ends_with("sh") || word.ends_with("ch") || word.ends_with('s') {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}
