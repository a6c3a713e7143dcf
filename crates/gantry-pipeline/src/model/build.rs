//! Resolved node tree → [`Pipeline`], keyword by keyword, collecting every problem.

use super::*;
use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::yaml::{Map, Node, Value, Yaml11};

/// GitLab's `Project::MAX_BUILD_TIMEOUT`: one month as ActiveSupport counts it.
const MAX_TIMEOUT: u64 = 2_629_746;
/// `start_in` may delay a job by at most one week.
const MAX_START_IN: u64 = 7 * 86_400;

/// Top-level keys that are not jobs.
const GLOBAL_KEYS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "include",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "types",
    "spec",
];
/// Keys allowed under `default:`.
const DEFAULT_KEYS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];
pub(crate) const JOB_KEYS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dependencies",
    "environment",
    "extends",
    "image",
    "inherit",
    "interruptible",
    "needs",
    "only",
    "except",
    "parallel",
    "release",
    "resource_group",
    "retry",
    "rules",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
    "id_tokens",
    "pages",
    "manual_confirmation",
    "dast_configuration",
    "hooks",
    "identity",
    "run",
    "type",
];
/// The keywords of a trigger job (GitLab's "bridge"): docs.gitlab.com/ci/yaml/#trigger.
const TRIGGER_JOB_KEYS: &[&str] = &[
    "allow_failure",
    "environment",
    "extends",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "except",
    "parallel",
    "resource_group",
    "rules",
    "stage",
    "trigger",
    "variables",
    "when",
];
/// Job keywords GitLab has and Gantry does not implement yet.
const UNSUPPORTED_JOB_KEYS: &[(&str, &str)] = &[
    (
        "dast_configuration",
        "DAST site and scanner profiles are a GitLab Ultimate feature",
    ),
    (
        "hooks",
        "`hooks:pre_get_sources_script` runs before the checkout, which Gantry's executors do not expose yet",
    ),
    (
        "identity",
        "identity federation with cloud providers is not available",
    ),
    (
        "run",
        "CI steps (`run:`) are experimental in GitLab and not supported; use `script:`",
    ),
];

/// Builds the typed pipeline from the resolved tree.
pub fn build(root: &Node, diags: &mut Diagnostics) -> Pipeline {
    let mut p = Pipeline::default();
    let Some(top) = root.as_map() else {
        if root.is_null() {
            diags.error_help(
                "E0209",
                "the pipeline file is empty",
                Some(root.span),
                "define at least one job with a `script:`",
            );
        } else {
            diags.error(
                "E0202",
                format!(
                    "the pipeline file must be a map of jobs and keywords, found {}",
                    root.a_kind()
                ),
                Some(root.span),
            );
        }
        return p;
    };
    let r = &mut R { diags };

    // stages (and the deprecated `types`)
    let stages_node = top.get("stages").or_else(|| top.get("types"));
    if top.contains("types") {
        r.diags.warning(
            "W0207",
            "`types` is deprecated; use `stages`",
            top.entry("types").map(|e| e.key_span),
        );
    }
    let mut stages: Vec<String> = match stages_node {
        None => DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
        // Nested lists (from anchors or `!reference`) are flattened, as GitLab does since 16.9.
        Some(n) => r.script(n, "stages"),
    };
    if !stages.iter().any(|s| s == ".pre") {
        stages.insert(0, ".pre".into());
    }
    if !stages.iter().any(|s| s == ".post") {
        stages.push(".post".into());
    }
    p.stages = stages;

    if let Some(v) = top.get("variables") {
        p.variables = r.variables(v, VarsAt::TopLevel);
    }
    if let Some(w) = top.get("workflow") {
        p.workflow = r.workflow(w);
    }

    // `default:` plus the deprecated global keywords act as defaults for every job.
    let mut defaults = Map::default();
    for key in [
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    ] {
        if let Some(e) = top.entry(key) {
            defaults.insert(key.to_string(), e.key_span, e.value.clone());
        }
    }
    if let Some(d) = top.get("default") {
        match d.as_map() {
            Some(dm) => {
                for e in &dm.entries {
                    if let Some((_, why)) = UNSUPPORTED_JOB_KEYS
                        .iter()
                        .find(|(u, _)| *u == e.key && ["hooks", "identity"].contains(u))
                    {
                        r.diags.error(
                            "E0208",
                            format!("`default:{}` is not supported yet: {why}", e.key),
                            Some(e.key_span),
                        );
                    } else if DEFAULT_KEYS.contains(&e.key.as_str()) {
                        defaults.insert(e.key.clone(), e.key_span, e.value.clone());
                    } else {
                        r.unknown_key(&e.key, e.key_span, DEFAULT_KEYS, "default");
                    }
                }
            }
            None if d.is_null() => {}
            None => r.diags.error(
                "E0202",
                format!("`default` must be a map, found {}", d.a_kind()),
                Some(d.span),
            ),
        }
    }

    for e in &top.entries {
        if GLOBAL_KEYS.contains(&e.key.as_str()) || e.key.starts_with('.') {
            continue;
        }
        let Some(jm) = e.value.as_map() else {
            let mut d = Diagnostic::error(
                "E0202",
                format!(
                    "job '{}' must be a map of keywords, found {}",
                    e.key,
                    e.value.a_kind()
                ),
                Some(e.key_span),
            );
            if let Some(s) = did_you_mean(&e.key, GLOBAL_KEYS.iter().copied()) {
                d = d.with_help(format!("did you mean the keyword '{s}'?"));
            }
            r.diags.push(d);
            continue;
        };
        let job = r.job(&e.key, e.key_span, &e.value, jm, &defaults, &p);
        p.jobs.insert(e.key.clone(), job);
    }
    if p.jobs.is_empty() && !r.diags.has_errors() {
        r.diags.error_help(
            "E0209",
            "the pipeline has no jobs",
            Some(root.span),
            "define a job: a top-level key whose value has a `script:`",
        );
    }
    validate(&p, r.diags);
    p
}

/// Checks across jobs: stages declared, `needs` and `dependencies` defined and acyclic.
fn validate(p: &Pipeline, diags: &mut Diagnostics) {
    let names: Vec<&str> = p.jobs.keys().map(String::as_str).collect();
    for job in p.jobs.values() {
        if !p.stages.contains(&job.stage) {
            let mut d = Diagnostic::error(
                "E0205",
                format!(
                    "job '{}' is in stage '{}', which is not declared in `stages`",
                    job.name, job.stage
                ),
                Some(job.stage_span),
            );
            d = match did_you_mean(&job.stage, p.stages.iter().map(String::as_str)) {
                Some(s) => d.with_help(format!("did you mean '{s}'?")),
                None => d.with_help(format!(
                    "add '{}' to `stages:` (declared: {})",
                    job.stage,
                    p.stages.join(", ")
                )),
            };
            diags.push(d);
        }
        let mut needs: Vec<&Need> = job.needs.iter().flatten().collect();
        for rule in job.rules.iter().flatten() {
            needs.extend(rule.needs.iter().flatten());
        }
        let mut seen: Vec<&Need> = Vec::new();
        for need in job.needs.iter().flatten() {
            if need.project.is_some() {
                continue;
            }
            if seen
                .iter()
                .any(|s| s.job == need.job && s.matrix == need.matrix)
            {
                diags.error_help(
                    "E0202",
                    format!("job '{}' lists the need '{}' twice", job.name, need.job),
                    Some(need.span),
                    "remove one of them",
                );
            }
            seen.push(need);
        }
        for need in needs {
            if need.project.is_some() {
                continue;
            }
            if need.optional && !p.jobs.contains_key(&need.job) && need.job != job.name {
                // GitLab accepts an optional need of a job that does not exist at all (it may
                // come from an include that is not always included).
                diags.push(
                    Diagnostic::warning(
                        "W0203",
                        format!(
                            "job '{}' has an optional need '{}', which is not defined",
                            job.name, need.job
                        ),
                        Some(need.span),
                    )
                    .with_help("the need is ignored; check the name if this is not intended"),
                );
                continue;
            }
            if need.job == job.name {
                diags.error(
                    "E0204",
                    format!("job '{}' needs itself", job.name),
                    Some(need.span),
                );
            } else if !p.jobs.contains_key(&need.job) {
                let mut d = Diagnostic::error(
                    "E0203",
                    format!(
                        "job '{}' needs '{}', which is not defined",
                        job.name, need.job
                    ),
                    Some(need.span),
                );
                if let Some(s) = did_you_mean(&need.job, names.iter().copied()) {
                    d = d.with_help(format!("did you mean '{s}'?"));
                }
                diags.push(d);
            } else if let Some(other) = p.jobs.get(&need.job)
                && !need.matrix.is_empty()
                && let Some(missing) = missing_matrix_instance(other, need)
            {
                let instances: Vec<String> = match &other.parallel {
                    Some(Parallel::Matrix { matrix }) => matrix_combinations(matrix)
                        .iter()
                        .map(|c| matrix_job_name(&other.name, c))
                        .collect(),
                    _ => Vec::new(),
                };
                let help = if instances.is_empty() {
                    format!("'{}' has no `parallel:matrix`", other.name)
                } else {
                    format!(
                        "list the values in the order of the variables of '{}' (its jobs: {})",
                        other.name,
                        instances.join("; ")
                    )
                };
                diags.error_help(
                    "E0203",
                    format!(
                        "job '{}' needs '{missing}', which is not a job of this pipeline",
                        job.name
                    ),
                    Some(need.span),
                    help,
                );
            } else if let Some(other) = p.jobs.get(&need.job)
                && stage_index(p, &other.stage) > stage_index(p, &job.stage)
            {
                diags.error_help(
                    "E0206",
                    format!(
                        "job '{}' needs '{}', which is in a later stage ('{}')",
                        job.name, need.job, other.stage
                    ),
                    Some(need.span),
                    "a job can only need jobs in its own or earlier stages",
                );
            }
        }
        if let Some(env) = &job.environment
            && let Some(stop) = &env.on_stop
        {
            match p.jobs.get(stop) {
                None => {
                    let mut d = Diagnostic::error(
                        "E0203",
                        format!(
                            "job '{}': `environment:on_stop` names '{stop}', which is not defined",
                            job.name
                        ),
                        Some(env.on_stop_span),
                    );
                    if let Some(s) = did_you_mean(stop, names.iter().copied()) {
                        d = d.with_help(format!("did you mean '{s}'?"));
                    }
                    diags.push(d);
                }
                Some(other) if other.environment.is_none() => diags.error_help(
                    "E0202",
                    format!(
                        "job '{}': the `on_stop` job '{stop}' has no `environment`",
                        job.name
                    ),
                    Some(env.on_stop_span),
                    format!(
                        "give '{stop}' `environment: {{name: {}, action: stop}}`",
                        env.name
                    ),
                ),
                Some(_) => {}
            }
        }
        for dep in job.dependencies.iter().flatten() {
            match p.jobs.get(dep) {
                None => {
                    let mut d = Diagnostic::error(
                        "E0203",
                        format!(
                            "job '{}' depends on '{dep}', which is not defined",
                            job.name
                        ),
                        Some(job.dependencies_span),
                    );
                    if let Some(s) = did_you_mean(dep, names.iter().copied()) {
                        d = d.with_help(format!("did you mean '{s}'?"));
                    }
                    diags.push(d);
                }
                Some(other) => {
                    let needs: Vec<&Need> = job.needs.iter().flatten().collect();
                    if !needs.is_empty() && !needs.iter().any(|n| &n.job == dep) {
                        diags.error_help(
                            "E0206",
                            format!(
                                "job '{}' has '{dep}' in `dependencies`, which is not in its `needs`",
                                job.name
                            ),
                            Some(job.dependencies_span),
                            "a job with `needs` can only take artifacts from jobs it needs: add it to `needs`",
                        );
                    } else if stage_index(p, &other.stage) > stage_index(p, &job.stage) {
                        diags.error_help(
                            "E0206",
                            format!(
                                "job '{}' has '{dep}' in `dependencies`, which is in a later stage ('{}')",
                                job.name, other.stage
                            ),
                            Some(job.dependencies_span),
                            "dependencies can only name jobs of the current or earlier stages",
                        );
                    }
                }
            }
        }
    }
    // Cycles through `needs` (possible within one stage).
    let idx = |n: &str| p.jobs.get_index_of(n);
    let edges: Vec<Vec<usize>> = p
        .jobs
        .values()
        .map(|j| {
            j.needs
                .iter()
                .flatten()
                .filter(|n| n.project.is_none())
                .filter_map(|n| idx(&n.job))
                .collect()
        })
        .collect();
    let mut state = vec![0u8; edges.len()];
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        let mut path = vec![start];
        state[start] = 1;
        while let Some((node, i)) = stack.pop() {
            if i < edges[node].len() {
                stack.push((node, i + 1));
                let next = edges[node][i];
                match state[next] {
                    0 => {
                        state[next] = 1;
                        stack.push((next, 0));
                        path.push(next);
                    }
                    1 if next != node => {
                        let from = path.iter().position(|&x| x == next).unwrap_or(0);
                        let cycle: Vec<&str> = path[from..]
                            .iter()
                            .chain(std::iter::once(&next))
                            .map(|&k| p.jobs.get_index(k).map(|(n, _)| n.as_str()).unwrap_or("?"))
                            .collect();
                        let job = p.jobs.get_index(node).map(|(_, j)| j);
                        let span = job.and_then(|j| {
                            j.needs
                                .iter()
                                .flatten()
                                .find(|n| idx(&n.job) == Some(next))
                                .map(|n| n.span)
                        });
                        diags.error_help(
                            "E0204",
                            format!("`needs` form a cycle: {}", cycle.join(" → ")),
                            span,
                            "remove one of the `needs` in the cycle",
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
}

/// The first instance name a `needs:parallel:matrix` selector spells that `other` does not
/// have (GitLab turns the selector into job names: `build: [linux, amd64]`).
fn missing_matrix_instance(other: &Job, need: &Need) -> Option<String> {
    let have: Vec<String> = match &other.parallel {
        Some(Parallel::Matrix { matrix }) => matrix_combinations(matrix)
            .iter()
            .map(|c| matrix_job_name(&other.name, c))
            .collect(),
        _ => Vec::new(),
    };
    matrix_combinations(&need.matrix)
        .iter()
        .map(|c| matrix_job_name(&other.name, c))
        .find(|n| !have.contains(n))
}

/// The position of a stage in `stages` (undeclared stages sort last; they are reported apart).
fn stage_index(p: &Pipeline, stage: &str) -> usize {
    p.stages
        .iter()
        .position(|s| s == stage)
        .unwrap_or(usize::MAX)
}

/// Where a `variables:` map is, which decides what its values may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarsAt {
    /// Top-level `variables`: the long form has `value`, `description`, `options`, `expand`.
    TopLevel,
    /// A job's `variables`: the long form has `value` and `expand`.
    Job,
    /// `rules:variables`, `workflow:rules:variables`, service variables: plain pairs only.
    Plain,
}

struct R<'d> {
    diags: &'d mut Diagnostics,
}

impl R<'_> {
    fn unknown_key(&mut self, key: &str, span: Span, allowed: &[&str], context: &str) {
        let mut d = Diagnostic::error(
            "E0201",
            format!("unknown key '{key}' in {context}"),
            Some(span),
        );
        d = match did_you_mean(key, allowed.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean '{s}'?")),
            None => d.with_help(format!("allowed here: {}", allowed.join(", "))),
        };
        self.diags.push(d);
    }

    fn check_keys(&mut self, m: &Map, allowed: &[&str], context: &str) {
        for e in &m.entries {
            if !allowed.contains(&e.key.as_str()) {
                self.unknown_key(&e.key, e.key_span, allowed, context);
            }
        }
    }

    fn type_error(&mut self, n: &Node, what: &str, expected: &str) {
        self.diags.error(
            "E0202",
            format!("{what} must be {expected}, found {}", n.a_kind()),
            Some(n.span),
        );
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.value {
            Value::Scalar(s, _) => Some(s.clone()),
            _ => {
                self.type_error(n, what, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, m: &Map, key: &str, ctx: &str) -> Option<String> {
        let n = m.get(key)?;
        if n.is_null() {
            return None;
        }
        self.string(n, &format!("`{ctx}:{key}`"))
    }

    /// A string or a list of strings.
    fn strings(&mut self, n: &Node, what: &str) -> Vec<String> {
        match &n.value {
            Value::Null => Vec::new(),
            Value::Scalar(s, _) => vec![s.clone()],
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| self.string(i, &format!("each item of `{what}`")))
                .collect(),
            Value::Map(_) => {
                self.type_error(n, &format!("`{what}`"), "a string or a list of strings");
                Vec::new()
            }
        }
    }

    /// Script lines: strings, with nested lists (from `!reference`) flattened up to 10 levels.
    fn script(&mut self, n: &Node, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.script_into(n, what, 0, &mut out);
        out
    }

    fn script_into(&mut self, n: &Node, what: &str, depth: usize, out: &mut Vec<String>) {
        match &n.value {
            Value::Null if depth == 0 => {}
            Value::Null if n.tag.as_deref() == Some(crate::resolve::FAILED_REFERENCE) => {}
            Value::Null => self.diags.error_help(
                "E0202",
                format!("`{what}` has an empty line"),
                Some(n.span),
                "remove the `-` with nothing after it",
            ),
            Value::Scalar(s, _) if n.yaml11() != Yaml11::Str => self.diags.error_help(
                "E0202",
                format!(
                    "each line of `{what}` must be a string; YAML reads `{s}` as {}",
                    n.a_kind()
                ),
                Some(n.span),
                format!("quote it: \"{s}\""),
            ),
            Value::Scalar(s, _) => out.push(s.clone()),
            Value::Seq(items) if depth < 10 => {
                for i in items {
                    self.script_into(i, what, depth + 1, out);
                }
            }
            Value::Seq(_) => self.diags.error(
                "E0202",
                format!("`{what}` nests lists more than 10 levels deep"),
                Some(n.span),
            ),
            Value::Map(_) => self.diags.error_help(
                "E0202",
                format!("`{what}` must be a string or a list of strings, found a map"),
                Some(n.span),
                "a line with `: ` is read as a map: quote the whole line",
            ),
        }
    }

    fn bool(&mut self, n: &Node, what: &str) -> Option<bool> {
        let b = n.as_bool();
        if b.is_none() {
            self.type_error(n, what, "true or false");
        }
        b
    }

    fn int(&mut self, n: &Node, what: &str) -> Option<i64> {
        let v = n.as_int();
        if v.is_none() {
            self.type_error(n, what, "an integer");
        }
        v
    }

    /// A variable's value as GitLab takes it: a string as written, an integer as Ruby prints
    /// it (`0755` is `493`); floats, booleans and lists are errors.
    fn var_value(&mut self, n: &Node, name: &str) -> Option<String> {
        let Value::Scalar(s, _) = &n.value else {
            self.type_error(
                n,
                &format!("variable '{name}'"),
                "a string or a number (or a map with `value`)",
            );
            return None;
        };
        match n.yaml11() {
            Yaml11::Int(v) => {
                let text = v.to_string();
                if &text != s {
                    self.diags.push(
                        Diagnostic::warning(
                            "W0202",
                            format!("variable '{name}': YAML reads {s} as the integer {text}, so its value is \"{text}\""),
                            Some(n.span),
                        )
                        .with_help(format!("quote it to keep it as written: {name}: \"{s}\"")),
                    );
                }
                Some(text)
            }
            Yaml11::Str => Some(s.clone()),
            other => {
                let kind = match other {
                    Yaml11::Bool(_) => "a boolean",
                    Yaml11::Float => "a float",
                    _ => "not a string",
                };
                self.diags.error_help(
                    "E0202",
                    format!(
                        "variable '{name}' is {kind}; variable values must be strings or integers"
                    ),
                    Some(n.span),
                    format!("quote it: {name}: \"{s}\""),
                );
                None
            }
        }
    }

    fn variables(&mut self, n: &Node, at: VarsAt) -> Vec<Variable> {
        let Some(m) = n.as_map() else {
            if !n.is_null() {
                self.type_error(n, "`variables`", "a map of names to values");
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &m.entries {
            if !e
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || e.key.is_empty()
            {
                self.diags.error_help(
                    "E0202",
                    format!("invalid variable name '{}'", e.key),
                    Some(e.key_span),
                    "variable names may contain only letters, digits and '_'",
                );
                continue;
            }
            let mut var = Variable {
                name: e.key.clone(),
                value: String::new(),
                description: None,
                options: Vec::new(),
                expand: true,
                span: e.key_span,
            };
            let long_keys: &[&str] = match at {
                VarsAt::TopLevel => &["value", "description", "options", "expand"],
                VarsAt::Job => &["value", "expand"],
                VarsAt::Plain => &[],
            };
            match &e.value.value {
                Value::Scalar(..) => match self.var_value(&e.value, &e.key) {
                    Some(v) => var.value = v,
                    None => continue,
                },
                // GitLab reads `NAME:` (null) as the long form `{}`: an empty value.
                Value::Null | Value::Map(_) if long_keys.is_empty() => {
                    self.diags.error_help(
                        "E0202",
                        format!("variable '{}' must be a string here", e.key),
                        Some(e.value.span),
                        "`rules:variables`, `workflow:rules:variables` and service variables take plain `NAME: value` pairs",
                    );
                    continue;
                }
                Value::Null => {}
                Value::Map(vm) => {
                    self.check_keys(vm, long_keys, &format!("variable '{}'", e.key));
                    if let Some(v) = vm.get("value")
                        && !v.is_null()
                    {
                        var.value = self.var_value(v, &e.key).unwrap_or_default();
                    }
                    if long_keys.contains(&"description") {
                        var.description = self.opt_string(vm, "description", "variables");
                    }
                    if let Some(o) = vm.get("options").filter(|_| long_keys.contains(&"options")) {
                        var.options = self.strings(o, "options");
                        if !var.options.is_empty() && !var.options.contains(&var.value) {
                            self.diags.error(
                                "E0202",
                                format!(
                                    "variable '{}': the value '{}' is not one of its `options`",
                                    e.key, var.value
                                ),
                                Some(e.value.span),
                            );
                        }
                    }
                    if let Some(x) = vm.get("expand") {
                        var.expand = self.bool(x, "`expand`").unwrap_or(true);
                    }
                }
                Value::Seq(_) => {
                    self.type_error(
                        &e.value,
                        &format!("variable '{}'", e.key),
                        "a string, a number or a map with `value`",
                    );
                    continue;
                }
            }
            out.push(var);
        }
        out
    }

    fn condition(&mut self, n: &Node, what: &str) -> Option<Condition> {
        let src = self.string(n, what)?;
        match crate::expr::parse(&src) {
            Ok(expr) => Some(Condition {
                source: src,
                expr,
                span: n.span,
            }),
            Err(e) => {
                // Point inside the expression when it is on one line.
                let mut span = n.span;
                if span.start.line == span.end.line {
                    let quoted = u32::from(matches!(
                        n.value,
                        Value::Scalar(_, crate::yaml::Style::Quoted)
                    ));
                    let col = span.start.col
                        + quoted
                        + src[..e.offset.min(src.len())].chars().count() as u32;
                    span.start.col = col;
                    span.end.col = col + (e.len.max(1) as u32);
                }
                let mut d = Diagnostic::error(
                    "E0501",
                    format!("invalid expression in {what}: {}", e.message),
                    Some(span),
                );
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.diags.push(d);
                None
            }
        }
    }

    fn when(&mut self, n: &Node, allowed: &[When], ctx: &str) -> Option<When> {
        let s = self.string(n, &format!("`{ctx}`"))?;
        match When::parse(&s) {
            Some(w) if allowed.contains(&w) => Some(w),
            _ => {
                let names: Vec<&str> = allowed.iter().map(|w| w.as_str()).collect();
                let mut d =
                    Diagnostic::error("E0202", format!("`{ctx}` cannot be '{s}'"), Some(n.span));
                d = match did_you_mean(&s, names.iter().copied()) {
                    Some(x) => d.with_help(format!("did you mean '{x}'?")),
                    None => d.with_help(format!("use one of: {}", names.join(", "))),
                };
                self.diags.push(d);
                None
            }
        }
    }

    /// Rules, with nested lists (from `!reference [.x, rules]`) flattened up to 10 levels,
    /// as GitLab does.
    fn rule_items<'n>(&mut self, n: &'n Node, depth: usize, out: &mut Vec<&'n Node>) {
        match &n.value {
            Value::Seq(items) if depth < 10 => {
                for i in items {
                    self.rule_items(i, depth + 1, out);
                }
            }
            Value::Seq(_) => self.diags.error(
                "E0202",
                "`rules` nests lists more than 10 levels deep",
                Some(n.span),
            ),
            _ => out.push(n),
        }
    }

    fn rules(&mut self, n: &Node, ctx: &str, job_level: bool) -> Vec<Rule> {
        if n.as_seq().is_none() {
            self.type_error(n, &format!("`{ctx}:rules`"), "a list of rules");
            return Vec::new();
        }
        let mut items = Vec::new();
        self.rule_items(n, 0, &mut items);
        let allowed: &[&str] = if job_level {
            &[
                "if",
                "changes",
                "exists",
                "when",
                "allow_failure",
                "variables",
                "needs",
                "start_in",
                "interruptible",
            ]
        } else {
            // `allow_failure`, `needs` and `start_in` are accepted by GitLab in workflow rules
            // but have no effect there.
            &[
                "if",
                "changes",
                "exists",
                "when",
                "variables",
                "auto_cancel",
                "allow_failure",
                "needs",
                "start_in",
            ]
        };
        let whens: &[When] = if job_level {
            &[
                When::OnSuccess,
                When::OnFailure,
                When::Always,
                When::Never,
                When::Manual,
                When::Delayed,
            ]
        } else {
            &[When::Always, When::Never]
        };
        let mut out = Vec::new();
        for item in items {
            let Some(m) = item.as_map() else {
                self.type_error(item, "a rule", "a map (e.g. `- if: $CI_COMMIT_BRANCH`)");
                continue;
            };
            self.check_keys(m, allowed, &format!("{ctx}:rules"));
            if !job_level {
                for k in ["allow_failure", "needs"] {
                    if let Some(e) = m.entry(k) {
                        self.diags.push(
                            Diagnostic::warning(
                                "W0201",
                                format!("`{k}` has no effect in `workflow:rules`"),
                                Some(e.key_span),
                            )
                            .with_help("GitLab accepts it there but ignores it; remove it"),
                        );
                    }
                }
            }
            let mut rule = Rule {
                span: item.span,
                ..Rule::default()
            };
            if let Some(c) = m.get("if") {
                rule.condition = self.condition(c, "rules:if");
            }
            if let Some(c) = m.get("changes") {
                let changes = match c.as_map() {
                    Some(cm) => {
                        self.check_keys(cm, &["paths", "compare_to"], "rules:changes");
                        if cm.contains("compare_to") && !cm.contains("paths") {
                            self.diags.error(
                                "E0202",
                                "`rules:changes:compare_to` needs `rules:changes:paths`",
                                Some(c.span),
                            );
                        }
                        Changes {
                            paths: cm
                                .get("paths")
                                .map(|p| self.strings(p, "rules:changes:paths"))
                                .unwrap_or_default(),
                            compare_to: self.opt_string(cm, "compare_to", "rules:changes"),
                        }
                    }
                    None => Changes {
                        paths: self.strings(c, "rules:changes"),
                        compare_to: None,
                    },
                };
                self.at_most_50(changes.paths.len(), "rules:changes", c);
                rule.changes = Some(changes);
            }
            if let Some(x) = m.get("exists") {
                let paths = match x.as_map() {
                    Some(xm) => {
                        self.check_keys(xm, &["paths", "project", "ref"], "rules:exists");
                        for k in ["project", "ref"] {
                            if let Some(e) = xm.entry(k) {
                                self.diags.error_help(
                                    "E0208",
                                    format!("`rules:exists:{k}` is not supported yet"),
                                    Some(e.key_span),
                                    "Gantry looks for files in this project at the pipeline's commit only",
                                );
                            }
                        }
                        xm.get("paths")
                            .map(|p| self.strings(p, "rules:exists:paths"))
                            .unwrap_or_default()
                    }
                    None => self.strings(x, "rules:exists"),
                };
                self.at_most_50(paths.len(), "rules:exists", x);
                rule.exists = Some(paths);
            }
            if let Some(w) = m.get("when") {
                rule.when = self.when(w, whens, "rules:when");
            }
            if let Some(a) = m.get("allow_failure") {
                rule.allow_failure = self.bool(a, "`rules:allow_failure`");
            }
            if let Some(v) = m.get("variables") {
                rule.variables = self.variables(v, VarsAt::Plain);
            }
            if let Some(nd) = m.get("needs") {
                rule.needs = Some(self.needs(nd));
            }
            if let Some(s) = m.get("start_in") {
                rule.start_in = self.start_in(s, "rules:start_in");
            }
            if let Some(i) = m.get("interruptible") {
                rule.interruptible = self.bool(i, "`rules:interruptible`");
            }
            if let Some(a) = m.get("auto_cancel") {
                rule.auto_cancel = Some(self.auto_cancel(a));
            }
            if rule.start_in.is_some() && rule.when != Some(When::Delayed) {
                self.diags.error(
                    "E0202",
                    "`rules:start_in` needs `when: delayed` in the same rule",
                    Some(item.span),
                );
            }
            if rule.when == Some(When::Delayed) && rule.start_in.is_none() {
                self.diags.error(
                    "E0202",
                    "`when: delayed` needs `start_in` in the same rule",
                    Some(item.span),
                );
            }
            out.push(rule);
        }
        out
    }

    /// The text of a duration keyword, which GitLab wants as a string: `30` unquoted is an
    /// integer and is rejected, `"30"` is 30 seconds.
    fn at_most_50(&mut self, n: usize, what: &str, node: &Node) {
        if n > 50 {
            self.diags.error(
                "E0202",
                format!("`{what}` has {n} patterns; GitLab allows at most 50"),
                Some(node.span),
            );
        }
    }

    fn duration_text(&mut self, n: &Node, what: &str) -> Option<String> {
        match (&n.value, n.yaml11()) {
            (Value::Scalar(s, _), Yaml11::Str) => Some(s.clone()),
            (Value::Scalar(s, _), _) => {
                self.diags.error_help(
                    "E0202",
                    format!(
                        "`{what}` must be a duration string; YAML reads `{s}` as {}",
                        n.a_kind()
                    ),
                    Some(n.span),
                    format!(
                        "quote it (\"{s}\" means {s} seconds) or write the unit: `{s} seconds`"
                    ),
                );
                None
            }
            _ => {
                self.type_error(n, &format!("`{what}`"), "a duration such as `30 minutes`");
                None
            }
        }
    }

    /// `start_in`: a duration of at least one second and at most one week.
    fn start_in(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.duration(n, what)?;
        if duration::parse(&s).is_some_and(|v| v > MAX_START_IN) {
            self.diags.error_help(
                "E0202",
                format!("`{what}` is longer than one week: '{s}'"),
                Some(n.span),
                "GitLab delays a job by at most one week",
            );
            return None;
        }
        Some(s)
    }

    fn duration(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.duration_text(n, what)?;
        if duration::parse(&s).is_none() {
            self.diags.error_help(
                "E0202",
                format!("`{what}` is not a duration: '{s}'"),
                Some(n.span),
                "write it like `30 minutes`, `1h 30m` or `2 days`",
            );
            return None;
        }
        Some(s)
    }

    fn workflow(&mut self, n: &Node) -> Workflow {
        let mut w = Workflow::default();
        let Some(m) = n.as_map() else {
            self.type_error(n, "`workflow`", "a map");
            return w;
        };
        self.check_keys(m, &["rules", "name", "auto_cancel"], "workflow");
        w.name = self.opt_string(m, "name", "workflow");
        if let Some(n) = w.name.as_ref().filter(|n| n.chars().count() > 255) {
            self.diags.error(
                "E0202",
                format!(
                    "`workflow:name` is {} characters long; at most 255 are allowed",
                    n.chars().count()
                ),
                m.get("name").map(|x| x.span),
            );
        }
        if let Some(r) = m.get("rules") {
            w.rules = Some(self.rules(r, "workflow", false));
        }
        if let Some(a) = m.get("auto_cancel") {
            w.auto_cancel = Some(self.auto_cancel(a));
        }
        w
    }

    fn auto_cancel(&mut self, n: &Node) -> AutoCancel {
        let Some(m) = n.as_map() else {
            self.type_error(n, "`auto_cancel`", "a map");
            return AutoCancel::default();
        };
        self.check_keys(m, &["on_new_commit", "on_job_failure"], "auto_cancel");
        let a = AutoCancel {
            on_new_commit: self.opt_string(m, "on_new_commit", "auto_cancel"),
            on_job_failure: self.opt_string(m, "on_job_failure", "auto_cancel"),
        };
        if let Some(v) = &a.on_new_commit
            && !["conservative", "interruptible", "none"].contains(&v.as_str())
        {
            self.diags.error_help(
                "E0202",
                format!("`auto_cancel:on_new_commit` cannot be '{v}'"),
                m.get("on_new_commit").map(|x| x.span),
                "use conservative, interruptible or none",
            );
        }
        if let Some(v) = &a.on_job_failure
            && !["all", "none"].contains(&v.as_str())
        {
            self.diags.error_help(
                "E0202",
                format!("`auto_cancel:on_job_failure` cannot be '{v}'"),
                m.get("on_job_failure").map(|x| x.span),
                "use all or none",
            );
        }
        a
    }

    fn needs(&mut self, n: &Node) -> Vec<Need> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => return Vec::new(),
            // `needs: {pipeline: other/project}` (mirror an upstream status) is a map.
            Value::Map(m) if m.contains("pipeline") => vec![n],
            Value::Map(_) => {
                self.diags.error_help(
                    "E0202",
                    "`needs` must be a list, found a map",
                    Some(n.span),
                    "write `needs: [job]` or `needs: [{job: name, artifacts: false}]`",
                );
                return Vec::new();
            }
            _ => vec![n],
        };
        let mut out = Vec::new();
        for i in items {
            match &i.value {
                Value::Scalar(s, _) => out.push(Need {
                    job: s.clone(),
                    artifacts: true,
                    optional: false,
                    matrix: Vec::new(),
                    project: None,
                    span: i.span,
                }),
                Value::Map(m) => {
                    self.check_keys(
                        m,
                        &[
                            "job",
                            "artifacts",
                            "optional",
                            "parallel",
                            "project",
                            "ref",
                            "pipeline",
                        ],
                        "needs",
                    );
                    let Some(job) = m.get("job").and_then(|j| self.string(j, "`needs:job`")) else {
                        if m.contains("pipeline") {
                            self.diags.error("E0208", "`needs:pipeline` (another pipeline's artifacts or status) is not supported yet", Some(i.span));
                        } else {
                            self.diags.error_help(
                                "E0202",
                                "each entry of `needs` needs a `job:`",
                                Some(i.span),
                                "write `- job: build`",
                            );
                        }
                        continue;
                    };
                    let artifacts = m
                        .get("artifacts")
                        .and_then(|a| self.bool(a, "`needs:artifacts`"))
                        .unwrap_or(true);
                    let optional = m
                        .get("optional")
                        .and_then(|a| self.bool(a, "`needs:optional`"))
                        .unwrap_or(false);
                    let matrix = match m.get("parallel") {
                        Some(pn) => match pn.as_map().and_then(|pm| pm.get("matrix")) {
                            Some(mx) => self.matrix(mx),
                            None => {
                                self.type_error(pn, "`needs:parallel`", "a map with `matrix:`");
                                Vec::new()
                            }
                        },
                        None => Vec::new(),
                    };
                    let project = self.opt_string(m, "project", "needs");
                    if let Some(e) = m.entry("project") {
                        self.diags.error_help(
                            "E0208",
                            "`needs:project` (artifacts from another project's pipeline) is not supported yet",
                            Some(e.key_span),
                            "fetch the artifacts in the script, e.g. with the API and a token",
                        );
                    }
                    out.push(Need {
                        job,
                        artifacts,
                        optional,
                        matrix,
                        project,
                        span: i.span,
                    });
                }
                _ => self.type_error(i, "an entry of `needs`", "a job name or a map with `job:`"),
            }
        }
        if out.len() > 50 {
            self.diags.error(
                "E0202",
                format!(
                    "a job can need at most 50 jobs, this one needs {}",
                    out.len()
                ),
                Some(n.span),
            );
        }
        out
    }

    fn matrix(&mut self, n: &Node) -> Vec<IndexMap<String, Vec<String>>> {
        let Some(items) = n.as_seq() else {
            self.type_error(n, "`parallel:matrix`", "a list of maps");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(m) = item.as_map() else {
                self.type_error(
                    item,
                    "an entry of `parallel:matrix`",
                    "a map of variables to values",
                );
                continue;
            };
            let mut row = IndexMap::new();
            for e in &m.entries {
                if e.key.is_empty()
                    || !e
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    self.diags.error_help(
                        "E0202",
                        format!("invalid matrix variable name '{}'", e.key),
                        Some(e.key_span),
                        "matrix identifiers become variable names: letters, digits and '_' only",
                    );
                    continue;
                }
                let items: Vec<&Node> = match &e.value.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![&e.value],
                };
                let mut vals = Vec::new();
                for i in items {
                    if let Some(v) = self.matrix_value(i, &e.key) {
                        vals.push(v);
                    }
                }
                row.insert(e.key.clone(), vals);
            }
            out.push(row);
        }
        out
    }

    /// A matrix value: a string, or an integer as Ruby prints it; GitLab rejects the rest
    /// (`RUBY: [2.7, 3.0]` are floats: quote them).
    fn matrix_value(&mut self, n: &Node, name: &str) -> Option<String> {
        match (n.yaml11(), &n.value) {
            (Yaml11::Str, Value::Scalar(s, _)) => Some(s.clone()),
            (Yaml11::Int(v), _) => Some(v.to_string()),
            (kind, _) => {
                let mut d = Diagnostic::error(
                    "E0202",
                    format!(
                        "matrix variable '{name}': values must be strings or integers, found {}",
                        n.a_kind()
                    ),
                    Some(n.span),
                );
                if let (Yaml11::Float | Yaml11::Bool(_), Some(t)) = (kind, n.as_str()) {
                    d = d.with_help(format!("quote it: \"{t}\""));
                }
                self.diags.push(d);
                None
            }
        }
    }

    fn image(&mut self, n: &Node) -> Option<Image> {
        match &n.value {
            Value::Null => None,
            Value::Scalar(s, _) => Some(Image {
                name: s.clone(),
                ..Image::default()
            }),
            Value::Map(m) => {
                self.check_keys(
                    m,
                    &["name", "entrypoint", "pull_policy", "docker", "kubernetes"],
                    "image",
                );
                self.unsupported_executor_keys(m, "image", &["kubernetes"]);
                let name = self.opt_string(m, "name", "image").unwrap_or_else(|| {
                    self.diags
                        .error("E0202", "`image` needs a `name`", Some(n.span));
                    String::new()
                });
                let entrypoint = m
                    .get("entrypoint")
                    .map(|e| self.strings(e, "image:entrypoint"));
                let pull_policy = m
                    .get("pull_policy")
                    .map(|p| self.strings(p, "image:pull_policy"))
                    .unwrap_or_default();
                self.check_pull_policy(&pull_policy, m.get("pull_policy"));
                let docker = m.get("docker").and_then(Node::as_map);
                let user = docker
                    .and_then(|d| d.get("user"))
                    .and_then(Node::as_str)
                    .map(str::to_string);
                let platform = docker
                    .and_then(|d| d.get("platform"))
                    .and_then(Node::as_str)
                    .map(str::to_string);
                Some(Image {
                    name,
                    entrypoint,
                    pull_policy,
                    user,
                    platform,
                })
            }
            Value::Seq(_) => {
                self.type_error(n, "`image`", "a string or a map with `name`");
                None
            }
        }
    }

    /// Keywords GitLab has for executors or integrations Gantry does not have.
    fn unsupported_executor_keys(&mut self, m: &Map, ctx: &str, keys: &[&str]) {
        for k in keys {
            if let Some(e) = m.entry(k) {
                let help = match *k {
                    "kubernetes" => "Gantry has no Kubernetes executor or integration",
                    _ => "Gantry does not pass these options to service containers",
                };
                self.diags.error_help(
                    "E0208",
                    format!("`{ctx}:{k}` is not supported yet"),
                    Some(e.key_span),
                    help,
                );
            }
        }
    }

    fn check_pull_policy(&mut self, p: &[String], n: Option<&Node>) {
        for v in p {
            if !["always", "if-not-present", "never"].contains(&v.as_str()) {
                self.diags.error_help(
                    "E0202",
                    format!("unknown pull_policy '{v}'"),
                    n.map(|n| n.span),
                    "use always, if-not-present or never",
                );
            }
        }
    }

    fn services(&mut self, n: &Node) -> Vec<Service> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => return Vec::new(),
            _ => {
                self.type_error(n, "`services`", "a list");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for i in items {
            match &i.value {
                Value::Scalar(s, _) => out.push(Service {
                    name: s.clone(),
                    ..Service::default()
                }),
                Value::Map(m) => {
                    self.check_keys(
                        m,
                        &[
                            "name",
                            "alias",
                            "entrypoint",
                            "command",
                            "variables",
                            "pull_policy",
                            "docker",
                            "kubernetes",
                        ],
                        "services",
                    );
                    self.unsupported_executor_keys(m, "services", &["docker", "kubernetes"]);
                    let Some(name) = self.opt_string(m, "name", "services") else {
                        self.diags
                            .error("E0202", "a service needs a `name`", Some(i.span));
                        continue;
                    };
                    let aliases = self
                        .opt_string(m, "alias", "services")
                        .map(|a| {
                            a.split([',', ' '])
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    let entrypoint = m
                        .get("entrypoint")
                        .map(|e| self.strings(e, "services:entrypoint"));
                    let command = m
                        .get("command")
                        .map(|e| self.strings(e, "services:command"));
                    let variables = m
                        .get("variables")
                        .map(|v| self.variables(v, VarsAt::Plain))
                        .unwrap_or_default();
                    let pull_policy = m
                        .get("pull_policy")
                        .map(|p| self.strings(p, "services:pull_policy"))
                        .unwrap_or_default();
                    self.check_pull_policy(&pull_policy, m.get("pull_policy"));
                    out.push(Service {
                        name,
                        aliases,
                        entrypoint,
                        command,
                        variables,
                        pull_policy,
                    });
                }
                _ => self.type_error(i, "a service", "a string or a map with `name`"),
            }
        }
        out
    }

    fn artifacts_when(&mut self, n: &Node, what: &str) -> ArtifactsWhen {
        match n.as_str() {
            Some("on_success") => ArtifactsWhen::OnSuccess,
            Some("on_failure") => ArtifactsWhen::OnFailure,
            Some("always") => ArtifactsWhen::Always,
            _ => {
                self.diags.error_help(
                    "E0202",
                    format!("`{what}` cannot be '{}'", n.as_str().unwrap_or(n.kind())),
                    Some(n.span),
                    "use on_success, on_failure or always",
                );
                ArtifactsWhen::OnSuccess
            }
        }
    }

    fn artifacts(&mut self, n: &Node) -> Option<Artifacts> {
        let m = match n.as_map() {
            Some(m) => m,
            None if n.is_null() => return None,
            None => {
                self.type_error(n, "`artifacts`", "a map");
                return None;
            }
        };
        self.check_keys(
            m,
            &[
                "name",
                "paths",
                "exclude",
                "untracked",
                "when",
                "expire_in",
                "expose_as",
                "public",
                "access",
                "reports",
            ],
            "artifacts",
        );
        let mut a = Artifacts {
            name: self.opt_string(m, "name", "artifacts"),
            paths: m
                .get("paths")
                .map(|p| self.strings(p, "artifacts:paths"))
                .unwrap_or_default(),
            exclude: m
                .get("exclude")
                .map(|p| self.strings(p, "artifacts:exclude"))
                .unwrap_or_default(),
            untracked: m
                .get("untracked")
                .and_then(|u| self.bool(u, "`artifacts:untracked`"))
                .unwrap_or(false),
            when: m
                .get("when")
                .map(|w| self.artifacts_when(w, "artifacts:when"))
                .unwrap_or_default(),
            expire_in: None,
            expose_as: self.opt_string(m, "expose_as", "artifacts"),
            public: m
                .get("public")
                .and_then(|u| self.bool(u, "`artifacts:public`"))
                .unwrap_or(true),
            reports: IndexMap::new(),
        };
        if let Some(e) = m.get("expire_in") {
            let s = self.duration_text(e, "artifacts:expire_in");
            a.expire_in = match s {
                Some(s) if s == "never" || duration::parse(&s).is_some() => Some(s),
                Some(s) => {
                    self.diags.error_help(
                        "E0202",
                        format!("`artifacts:expire_in` is not a duration: '{s}'"),
                        Some(e.span),
                        "write it like `1 week`, `30 days` or `never`",
                    );
                    None
                }
                None => None,
            };
        }
        if let Some(r) = m.get("reports") {
            match r.as_map() {
                Some(rm) => {
                    for e in &rm.entries {
                        let paths = match &e.value.value {
                            Value::Map(_) => vec![e.value.to_yaml().trim().to_string()],
                            _ => self.strings(&e.value, &format!("artifacts:reports:{}", e.key)),
                        };
                        a.reports.insert(e.key.clone(), paths);
                    }
                }
                None => self.type_error(r, "`artifacts:reports`", "a map"),
            }
        }
        if let (Some(_), Some(acc)) = (m.entry("public"), m.entry("access")) {
            self.diags.error(
                "E0202",
                "`artifacts:public` and `artifacts:access` cannot be used together",
                Some(acc.key_span),
            );
        }
        if let Some(acc) = m.get("access")
            && let Some(v) = self.string(acc, "`artifacts:access`")
        {
            // `all` is `public: true`; the others restrict downloads (`public: false`).
            if ["all", "developer", "maintainer", "none"].contains(&v.as_str()) {
                a.public = v == "all";
            } else {
                self.diags.error_help(
                    "E0202",
                    format!("`artifacts:access` cannot be '{v}'"),
                    Some(acc.span),
                    "use all, developer, maintainer or none",
                );
            }
        }
        if a.expose_as.is_some() && a.paths.is_empty() {
            self.diags.error(
                "E0202",
                "`artifacts:expose_as` needs `artifacts:paths`",
                m.get("expose_as").map(|x| x.span),
            );
        }
        Some(a)
    }

    fn caches(&mut self, n: &Node) -> Vec<Cache> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Map(_) => vec![n],
            Value::Null => return Vec::new(),
            _ => {
                self.type_error(n, "`cache`", "a map or a list of maps");
                return Vec::new();
            }
        };
        if items.len() > 4 {
            self.diags.error(
                "E0202",
                format!(
                    "a job can have at most 4 caches, this one has {}",
                    items.len()
                ),
                Some(n.span),
            );
        }
        let mut out = Vec::new();
        for i in items {
            let Some(m) = i.as_map() else {
                self.type_error(i, "a cache", "a map");
                continue;
            };
            self.check_keys(
                m,
                &[
                    "key",
                    "paths",
                    "untracked",
                    "policy",
                    "when",
                    "fallback_keys",
                    "unprotect",
                ],
                "cache",
            );
            let key = match m.get("key") {
                None => CacheKey::default(),
                Some(k) => match &k.value {
                    Value::Scalar(s, _) => {
                        // GitLab unescapes the key first: `%2F` is a `/`, `%2E` a `.`.
                        let unescaped = percent_decode(s);
                        if unescaped.contains('/') || unescaped == "." || unescaped == ".." {
                            self.diags.error_help(
                                "E0202",
                                format!("cache key '{s}' cannot contain '/' or be '.' or '..'"),
                                Some(k.span),
                                "use '-' instead of '/'",
                            );
                        }
                        CacheKey::Literal(s.clone())
                    }
                    Value::Map(km) => {
                        self.check_keys(km, &["files", "prefix", "files_commits"], "cache:key");
                        if let Some(e) = km.entry("files_commits") {
                            self.diags.error_help(
                                "E0208",
                                "`cache:key:files_commits` is not supported yet",
                                Some(e.key_span),
                                "use `cache:key:files`, which keys the cache on the files' content",
                            );
                        }
                        let files = km
                            .get("files")
                            .map(|f| self.strings(f, "cache:key:files"))
                            .unwrap_or_default();
                        if (files.is_empty() && !km.contains("files_commits")) || files.len() > 2 {
                            self.diags.error(
                                "E0202",
                                "`cache:key:files` takes one or two files",
                                Some(k.span),
                            );
                        }
                        CacheKey::Files {
                            files,
                            prefix: self.opt_string(km, "prefix", "cache:key"),
                        }
                    }
                    _ => {
                        self.type_error(k, "`cache:key`", "a string or a map with `files`");
                        CacheKey::default()
                    }
                },
            };
            let policy = self
                .opt_string(m, "policy", "cache")
                .unwrap_or_else(|| "pull-push".into());
            if !["pull", "push", "pull-push"].contains(&policy.as_str()) && !policy.contains('$') {
                self.diags.error_help(
                    "E0202",
                    format!("unknown cache policy '{policy}'"),
                    m.get("policy").map(|p| p.span),
                    "use pull, push or pull-push",
                );
            }
            out.push(Cache {
                key,
                paths: m
                    .get("paths")
                    .map(|p| self.strings(p, "cache:paths"))
                    .unwrap_or_default(),
                untracked: m
                    .get("untracked")
                    .and_then(|u| self.bool(u, "`cache:untracked`"))
                    .unwrap_or(false),
                policy,
                when: m
                    .get("when")
                    .map(|w| self.artifacts_when(w, "cache:when"))
                    .unwrap_or_default(),
                fallback_keys: m
                    .get("fallback_keys")
                    .map(|f| self.strings(f, "cache:fallback_keys"))
                    .unwrap_or_default(),
                unprotect: m
                    .get("unprotect")
                    .and_then(|u| self.bool(u, "`cache:unprotect`"))
                    .unwrap_or(false),
            });
        }
        out
    }

    fn retry(&mut self, n: &Node) -> Option<Retry> {
        const CLASSES: &[&str] = &[
            "always",
            "unknown_failure",
            "script_failure",
            "api_failure",
            "stuck_or_timeout_failure",
            "runner_system_failure",
            "runner_unsupported",
            "stale_schedule",
            "job_execution_timeout",
            "archived_failure",
            "unmet_prerequisites",
            "scheduler_failure",
            "data_integrity_failure",
        ];
        let check_max = |r: &mut Self, v: i64, n: &Node| -> u32 {
            if !(0..=2).contains(&v) {
                r.diags.error_help(
                    "E0202",
                    format!("`retry` is {v}; GitLab allows 0, 1 or 2"),
                    Some(n.span),
                    "use a value from 0 to 2",
                );
            }
            v.clamp(0, 2) as u32
        };
        match &n.value {
            Value::Null => None,
            Value::Scalar(..) => {
                let v = self.int(n, "`retry`")?;
                Some(Retry {
                    max: check_max(self, v, n),
                    when: Vec::new(),
                    exit_codes: Vec::new(),
                })
            }
            Value::Map(m) => {
                self.check_keys(m, &["max", "when", "exit_codes"], "retry");
                let max = match m.get("max") {
                    Some(x) => self
                        .int(x, "`retry:max`")
                        .map(|v| check_max(self, v, x))
                        .unwrap_or(0),
                    None => 0,
                };
                let when = m
                    .get("when")
                    .map(|w| self.strings(w, "retry:when"))
                    .unwrap_or_default();
                for w in &when {
                    if !CLASSES.contains(&w.as_str()) {
                        let mut d = Diagnostic::error(
                            "E0202",
                            format!("unknown failure class '{w}' in `retry:when`"),
                            m.get("when").map(|x| x.span),
                        );
                        if let Some(s) = did_you_mean(w, CLASSES.iter().copied()) {
                            d = d.with_help(format!("did you mean '{s}'?"));
                        }
                        self.diags.push(d);
                    }
                }
                let exit_codes = m
                    .get("exit_codes")
                    .map(|e| self.exit_codes(e, "retry:exit_codes"))
                    .unwrap_or_default();
                Some(Retry {
                    max,
                    when,
                    exit_codes,
                })
            }
            Value::Seq(_) => {
                self.type_error(n, "`retry`", "an integer or a map");
                None
            }
        }
    }

    fn exit_codes(&mut self, n: &Node, what: &str) -> Vec<i32> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        items
            .into_iter()
            .filter_map(|i| self.int(i, &format!("`{what}`")))
            .map(|v| v as i32)
            .collect()
    }

    fn environment(&mut self, n: &Node) -> Option<Environment> {
        match &n.value {
            Value::Null => None,
            Value::Scalar(s, _) => Some(Environment {
                name: s.clone(),
                action: "start".into(),
                ..Environment::default()
            }),
            Value::Map(m) => {
                self.check_keys(
                    m,
                    &[
                        "name",
                        "url",
                        "action",
                        "on_stop",
                        "auto_stop_in",
                        "deployment_tier",
                        "kubernetes",
                    ],
                    "environment",
                );
                self.unsupported_executor_keys(m, "environment", &["kubernetes"]);
                let name = self
                    .opt_string(m, "name", "environment")
                    .unwrap_or_else(|| {
                        self.diags
                            .error("E0202", "`environment` needs a `name`", Some(n.span));
                        String::new()
                    });
                let action = self
                    .opt_string(m, "action", "environment")
                    .unwrap_or_else(|| "start".into());
                if !["start", "prepare", "stop", "verify", "access"].contains(&action.as_str()) {
                    self.diags.error_help(
                        "E0202",
                        format!("unknown environment action '{action}'"),
                        m.get("action").map(|a| a.span),
                        "use start, prepare, stop, verify or access",
                    );
                }
                let tier = self.opt_string(m, "deployment_tier", "environment");
                if let Some(t) = &tier
                    && !["production", "staging", "testing", "development", "other"]
                        .contains(&t.as_str())
                {
                    self.diags.error_help(
                        "E0202",
                        format!("unknown deployment_tier '{t}'"),
                        m.get("deployment_tier").map(|a| a.span),
                        "use production, staging, testing, development or other",
                    );
                }
                let auto_stop_in = match m.get("auto_stop_in") {
                    Some(a) => match self.duration_text(a, "environment:auto_stop_in") {
                        Some(s)
                            if s == "never" || s.contains('$') || duration::parse(&s).is_some() =>
                        {
                            Some(s)
                        }
                        Some(s) => {
                            self.diags.error(
                                "E0202",
                                format!("`environment:auto_stop_in` is not a duration: '{s}'"),
                                Some(a.span),
                            );
                            None
                        }
                        None => None,
                    },
                    None => None,
                };
                Some(Environment {
                    name,
                    url: self.opt_string(m, "url", "environment"),
                    action,
                    on_stop: self.opt_string(m, "on_stop", "environment"),
                    auto_stop_in,
                    deployment_tier: tier,
                    on_stop_span: m.get("on_stop").map(|x| x.span).unwrap_or(n.span),
                })
            }
            Value::Seq(_) => {
                self.type_error(n, "`environment`", "a name or a map");
                None
            }
        }
    }

    /// One map entry of `trigger:include`: `local`, or `artifact` with `job`.
    fn child_include(&mut self, im: &Map, i: &Node) -> Option<String> {
        self.check_keys(
            im,
            &[
                "local", "artifact", "job", "project", "file", "ref", "template", "inputs",
            ],
            "trigger:include",
        );
        for (k, help) in [
            (
                "project",
                "Gantry starts child pipelines from this project's files: vendor the file and use `local:`",
            ),
            (
                "template",
                "Gantry does not ship GitLab's templates: vendor the template and use `local:`",
            ),
            (
                "inputs",
                "pass values to the child pipeline with `variables:` on the trigger job",
            ),
        ] {
            if let Some(e) = im.entry(k) {
                self.diags.error_help(
                    "E0208",
                    format!("`trigger:include:{k}` is not supported yet"),
                    Some(e.key_span),
                    help,
                );
            }
        }
        if let Some(a) = im.get("artifact") {
            if !im.contains("job") {
                self.diags.error(
                    "E0202",
                    "`trigger:include:artifact` needs `job:`, the job that makes the artifact",
                    Some(i.span),
                );
            }
            return a.as_str().map(str::to_string);
        }
        im.get("local").and_then(Node::as_str).map(str::to_string)
    }

    /// `coverage`: an RE2 regular expression between slashes.
    fn coverage(&mut self, n: &Node) -> Option<String> {
        let s = self.string(n, "`coverage`")?;
        match crate::plan::ref_regex(&s) {
            Some(Ok(_)) => Some(s),
            Some(Err(why)) => {
                self.diags.error(
                    "E0202",
                    format!("`coverage` is not a valid regular expression: {why}"),
                    Some(n.span),
                );
                None
            }
            None => {
                self.diags.error_help(
                    "E0202",
                    "`coverage` must be a regular expression that starts and ends with `/`",
                    Some(n.span),
                    format!("write it as '/{s}/'"),
                );
                None
            }
        }
    }

    fn trigger(&mut self, n: &Node) -> Option<TriggerJob> {
        match &n.value {
            Value::Scalar(s, _) => Some(TriggerJob::MultiProject {
                project: s.clone(),
                branch: None,
                strategy: None,
                forward: Forward {
                    yaml_variables: true,
                    pipeline_variables: false,
                },
            }),
            Value::Map(m) => {
                self.check_keys(
                    m,
                    &[
                        "include", "project", "branch", "strategy", "forward", "inputs",
                    ],
                    "trigger",
                );
                if let Some(e) = m.entry("inputs") {
                    self.diags.error_help(
                        "E0208",
                        "`trigger:inputs` is not supported yet",
                        Some(e.key_span),
                        "pass values to the downstream pipeline with `variables:`",
                    );
                }
                let strategy = self.opt_string(m, "strategy", "trigger");
                if let Some(s) = &strategy
                    && s != "depend"
                    && s != "mirror"
                {
                    self.diags.error_help(
                        "E0202",
                        format!("unknown trigger strategy '{s}'"),
                        m.get("strategy").map(|x| x.span),
                        "use `mirror` (the job mirrors the downstream pipeline's status) or `depend`",
                    );
                }
                let mut forward = Forward {
                    yaml_variables: true,
                    pipeline_variables: false,
                };
                if let Some(f) = m.get("forward").and_then(Node::as_map) {
                    self.check_keys(
                        f,
                        &["yaml_variables", "pipeline_variables"],
                        "trigger:forward",
                    );
                    if let Some(y) = f.get("yaml_variables") {
                        forward.yaml_variables =
                            self.bool(y, "`forward:yaml_variables`").unwrap_or(true);
                    }
                    if let Some(y) = f.get("pipeline_variables") {
                        forward.pipeline_variables = self
                            .bool(y, "`forward:pipeline_variables`")
                            .unwrap_or(false);
                    }
                }
                if let Some(inc) = m.get("include") {
                    let items: Vec<&Node> = match &inc.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![inc],
                    };
                    let mut include = Vec::new();
                    for i in items {
                        match &i.value {
                            Value::Scalar(s, _) => include.push(s.clone()),
                            Value::Map(im) => {
                                if let Some(path) = self.child_include(im, i) {
                                    include.push(path);
                                }
                            }
                            _ => self.type_error(
                                i,
                                "an entry of `trigger:include`",
                                "a path or a map",
                            ),
                        }
                    }
                    if m.contains("project") {
                        self.diags.error("E0202", "`trigger` takes either `include` (child pipeline) or `project` (multi-project), not both", Some(n.span));
                    }
                    return Some(TriggerJob::Child {
                        include,
                        strategy,
                        forward,
                    });
                }
                let Some(project) = self.opt_string(m, "project", "trigger") else {
                    self.diags.error_help(
                        "E0202",
                        "`trigger` needs `include` or `project`",
                        Some(n.span),
                        "`trigger: {include: child.yml}` starts a child pipeline",
                    );
                    return None;
                };
                Some(TriggerJob::MultiProject {
                    project,
                    branch: self.opt_string(m, "branch", "trigger"),
                    strategy,
                    forward,
                })
            }
            _ => {
                self.type_error(n, "`trigger`", "a project path or a map");
                None
            }
        }
    }

    fn only_except(&mut self, n: &Node, what: &str) -> Option<OnlyExcept> {
        match &n.value {
            Value::Null => None,
            Value::Scalar(s, _) => {
                self.diags.error_help(
                    "E0202",
                    format!("`{what}` has to be either a list of conditions or a map"),
                    Some(n.span),
                    format!("write it as a list: `{what}: [{s}]`"),
                );
                None
            }
            Value::Seq(_) => Some(OnlyExcept {
                refs: self.refs(n, what),
                ..OnlyExcept::default()
            }),
            Value::Map(m) if m.entries.is_empty() => {
                self.diags
                    .error("E0202", format!("`{what}` cannot be empty"), Some(n.span));
                None
            }
            Value::Map(m) => {
                self.check_keys(m, &["refs", "variables", "changes", "kubernetes"], what);
                if let Some(k) = m.entry("kubernetes") {
                    self.diags.error_help(
                        "E0208",
                        format!("`{what}:kubernetes` is not supported yet"),
                        Some(k.key_span),
                        "Gantry has no Kubernetes integration to test for",
                    );
                }
                // A map without `refs` under `only` keeps GitLab's default refs
                // (`only: {variables: […]}` still means branches and tags only).
                let refs = match m.get("refs") {
                    Some(r) => self.refs(r, &format!("{what}:refs")),
                    None if what == "only" => vec!["branches".into(), "tags".into()],
                    None => Vec::new(),
                };
                let mut variables = Vec::new();
                if let Some(v) = m.get("variables") {
                    let items: Vec<&Node> = match &v.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for i in items {
                        if let Some(c) = self.condition(i, &format!("{what}:variables")) {
                            variables.push(c);
                        }
                    }
                }
                let changes = m.get("changes").map(|c| match c.as_map() {
                    Some(cm) => cm
                        .get("paths")
                        .map(|p| self.strings(p, "changes:paths"))
                        .unwrap_or_default(),
                    None => self.strings(c, &format!("{what}:changes")),
                });
                Some(OnlyExcept {
                    refs,
                    variables,
                    changes,
                })
            }
        }
    }

    /// `only`/`except` refs: names, keywords and `/regex/` patterns, which must compile.
    fn refs(&mut self, n: &Node, what: &str) -> Vec<String> {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        let mut out = Vec::new();
        for i in items {
            let Some(r) = self.string(i, &format!("each item of `{what}`")) else {
                continue;
            };
            if let Some(Err(why)) = crate::plan::ref_regex(&r) {
                self.diags.error_help(
                    "E0202",
                    format!("`{what}`: '{r}' is not a valid regular expression: {why}"),
                    Some(i.span),
                    "patterns are RE2 regular expressions between slashes, like `/^release-.*$/`",
                );
                continue;
            }
            out.push(r);
        }
        out
    }

    fn inherit(&mut self, n: &Node, key: &str) -> Inheritance {
        match &n.value {
            Value::Seq(items) if key == "default" => {
                let keys = self.strings(n, "inherit:default");
                for (k, item) in keys.iter().zip(items) {
                    if !DEFAULT_KEYS.contains(&k.as_str()) {
                        let mut d = Diagnostic::error(
                            "E0202",
                            format!(
                                "`inherit:default` lists '{k}', which is not a `default` keyword"
                            ),
                            Some(item.span),
                        );
                        d = match did_you_mean(k, DEFAULT_KEYS.iter().copied()) {
                            Some(s) => d.with_help(format!("did you mean '{s}'?")),
                            None => d.with_help(format!(
                                "`default` keywords: {}",
                                DEFAULT_KEYS.join(", ")
                            )),
                        };
                        self.diags.push(d);
                    }
                }
                Inheritance::Only(keys)
            }
            Value::Seq(_) => Inheritance::Only(self.strings(n, &format!("inherit:{key}"))),
            _ => Inheritance::All(self.bool(n, &format!("`inherit:{key}`")).unwrap_or(true)),
        }
    }

    fn job(
        &mut self,
        name: &str,
        key_span: Span,
        node: &Node,
        jm: &Map,
        defaults: &Map,
        p: &Pipeline,
    ) -> Job {
        // A misspelt global keyword (`variable:`, `stage:`) reads as a job: say so once,
        // instead of listing its keys as unknown job keywords.
        let keyword_typo = (!jm.contains("script") && !jm.contains("trigger"))
            .then(|| did_you_mean(name, GLOBAL_KEYS.iter().copied()))
            .flatten();
        for e in jm.entries.iter().filter(|_| keyword_typo.is_none()) {
            let k = e.key.as_str();
            if !JOB_KEYS.contains(&k) {
                self.unknown_key(k, e.key_span, JOB_KEYS, &format!("job '{name}'"));
            } else if let Some((_, why)) = UNSUPPORTED_JOB_KEYS.iter().find(|(u, _)| *u == k) {
                self.diags.error(
                    "E0208",
                    format!("`{k}` is not supported yet: {why}"),
                    Some(e.key_span),
                );
            }
        }
        // A trigger job ("bridge") takes only a few keywords.
        let is_trigger = jm.contains("trigger");
        if is_trigger {
            for e in &jm.entries {
                let k = e.key.as_str();
                if JOB_KEYS.contains(&k) && !TRIGGER_JOB_KEYS.contains(&k) && k != "script" {
                    self.diags.error_help(
                        "E0202",
                        format!("job '{name}': `{k}` cannot be used in a trigger job"),
                        Some(e.key_span),
                        format!("a trigger job takes only: {}", TRIGGER_JOB_KEYS.join(", ")),
                    );
                }
            }
        }
        if name.len() > 255 {
            self.diags.error(
                "E0202",
                "job names can be at most 255 characters",
                Some(key_span),
            );
        }

        // inherit: default / variables
        let mut inherit_default = Inheritance::All(true);
        let mut inherit_variables = Inheritance::All(true);
        if let Some(inh) = jm.get("inherit") {
            match inh.as_map() {
                Some(im) => {
                    self.check_keys(im, &["default", "variables"], "inherit");
                    if let Some(d) = im.get("default") {
                        inherit_default = self.inherit(d, "default");
                    }
                    if let Some(v) = im.get("variables") {
                        inherit_variables = self.inherit(v, "variables");
                    }
                }
                None => {
                    self.type_error(inh, "`inherit`", "a map with `default` and/or `variables`")
                }
            }
        }
        // The effective value of a defaultable key: the job's own, else the default's.
        // Trigger jobs take no defaults but `interruptible`. A key set to null counts as not
        // set (GitLab's `Entry::Unspecified`), so the default applies to it.
        let get = |key: &str| -> Option<&Node> {
            jm.get(key).filter(|n| !n.is_null()).or_else(|| {
                if inherit_default.allows(key) && (!is_trigger || key == "interruptible") {
                    defaults.get(key)
                } else {
                    None
                }
            })
        };

        let stage_entry = jm.entry("stage").or_else(|| jm.entry("type"));
        let stage = stage_entry
            .and_then(|e| self.string(&e.value, "`stage`"))
            .unwrap_or_else(|| "test".into());
        let stage_span = stage_entry.map(|e| e.value.span).unwrap_or(key_span);

        let trigger = jm.get("trigger").and_then(|t| self.trigger(t));
        let script = jm
            .get("script")
            .map(|s| self.script(s, "script"))
            .unwrap_or_default();
        let failed_reference = jm.get("script").is_some_and(has_failed_reference)
            // A job with `needs: {pipeline: …}` mirrors another pipeline and has no script
            // (reported as not supported in `needs`).
            || jm
                .get("needs")
                .and_then(Node::as_map)
                .is_some_and(|m| m.contains("pipeline"));
        if trigger.is_none() && script.is_empty() && !jm.contains("run") && !failed_reference {
            let help = match &keyword_typo {
                Some(k) => format!("did you mean the keyword '{k}'? As written, '{name}' is a job"),
                None => "add `script:` with the commands to run, or `trigger:` for a child pipeline; hide a template job by starting its name with '.'".into(),
            };
            self.diags.error_help(
                "E0210",
                format!("job '{name}' has no `script`"),
                Some(key_span),
                help,
            );
        }
        if trigger.is_some() && jm.contains("script") {
            self.diags.error(
                "E0202",
                format!("job '{name}': `trigger` jobs cannot have a `script`"),
                jm.entry("script").map(|e| e.key_span),
            );
        }

        let rules = jm
            .get("rules")
            .map(|r| self.rules(r, &format!("job '{name}'"), true));
        // GitLab warns when the last rule is a bare `when:` and there are no workflow:rules:
        // such a job runs in branch and merge request pipelines alike.
        if p.workflow.rules.is_none()
            && let Some(rn) = jm.get("rules")
        {
            let mut items = Vec::new();
            self.rule_items(rn, 0, &mut items);
            if let Some(last) = items.last().and_then(|l| l.as_map())
                && last.keys().eq(["when"])
                && last.get("when").and_then(Node::as_str) != Some("never")
            {
                self.diags.push(
                    Diagnostic::warning(
                        "W0211",
                        format!("job '{name}' may run in two pipelines for one push (a branch pipeline and a merge request pipeline): its last rule is a bare `when:` and there are no `workflow:rules`"),
                        items.last().map(|l| l.span),
                    )
                    .with_help("add `workflow:rules` that choose between branch and merge request pipelines"),
                );
            }
        }
        let only = jm.get("only").and_then(|o| self.only_except(o, "only"));
        let except = jm.get("except").and_then(|o| self.only_except(o, "except"));
        // GitLab: `only`, `except` and `start_in` "may not be used with `rules`"; a job-level
        // `when` may (it is the `when` of rules that set none).
        if rules.is_some() {
            for k in ["only", "except", "start_in"] {
                if let Some(e) = jm.entry(k) {
                    self.diags.error_help(
                        "E0207",
                        format!("job '{name}': `{k}` cannot be used with `rules`"),
                        Some(e.key_span),
                        if k == "start_in" {
                            "move `start_in` into the rule, next to `when: delayed`"
                        } else {
                            "express the condition as a rule: `rules: - if: …`"
                        },
                    );
                }
            }
        }

        let job_whens: &[When] = if trigger.is_some() {
            &[When::OnSuccess, When::OnFailure, When::Always, When::Manual]
        } else {
            &[
                When::OnSuccess,
                When::OnFailure,
                When::Always,
                When::Manual,
                When::Delayed,
            ]
        };
        let when = jm
            .get("when")
            .and_then(|w| {
                if w.as_str() == Some("never") {
                    self.diags.error_help(
                        "E0202",
                        format!("job '{name}': `when: never` can only be used in `rules` or `workflow:rules`"),
                        Some(w.span),
                        "to leave the job out, use `rules: - when: never`",
                    );
                    return None;
                }
                self.when(w, job_whens, "when")
            })
            .unwrap_or_default();
        let start_in = jm
            .get("start_in")
            .and_then(|s| self.start_in(s, "start_in"));
        if when == When::Delayed && !jm.contains("start_in") && rules.is_none() {
            self.diags.error_help(
                "E0202",
                format!("job '{name}': `when: delayed` needs `start_in`"),
                jm.entry("when").map(|e| e.value.span),
                "add `start_in: 30 minutes`",
            );
        }
        if start_in.is_some() && when != When::Delayed && rules.is_none() {
            self.diags.error(
                "E0202",
                format!("job '{name}': `start_in` needs `when: delayed`"),
                jm.entry("start_in").map(|e| e.key_span),
            );
        }

        let allow_failure = jm.get("allow_failure").and_then(|a| match &a.value {
            Value::Map(am) => {
                self.check_keys(am, &["exit_codes"], "allow_failure");
                am.get("exit_codes").map(|e| AllowFailure::ExitCodes {
                    exit_codes: self.exit_codes(e, "allow_failure:exit_codes"),
                })
            }
            _ => self.bool(a, "`allow_failure`").map(AllowFailure::Bool),
        });

        let needs = jm.get("needs").map(|n| self.needs(n));
        let dependencies = jm
            .get("dependencies")
            .map(|d| self.strings(d, "dependencies"));

        let parallel = jm.get("parallel").and_then(|pn| match &pn.value {
            Value::Map(pm) => {
                self.check_keys(pm, &["matrix"], "parallel");
                pm.get("matrix").map(|m| {
                    let matrix = self.matrix(m);
                    let total: usize = matrix
                        .iter()
                        .map(|row| row.values().map(|v| v.len().max(1)).product::<usize>())
                        .sum();
                    if total > 200 {
                        self.diags.error(
                            "E0202",
                            format!(
                                "`parallel:matrix` makes {total} jobs; at most 200 are allowed"
                            ),
                            Some(m.span),
                        );
                    }
                    Parallel::Matrix { matrix }
                })
            }
            _ => self.int(pn, "`parallel`").and_then(|v| {
                if !(1..=200).contains(&v) {
                    self.diags.error(
                        "E0202",
                        format!("`parallel` must be between 1 and 200, found {v}"),
                        Some(pn.span),
                    );
                    None
                } else {
                    Some(Parallel::Count(v as u32))
                }
            }),
        });

        let timeout = match get("timeout") {
            Some(t) if !t.is_null() => match self.duration_text(t, "timeout") {
                Some(s) => match duration::parse(&s) {
                    Some(v) if v > MAX_TIMEOUT => {
                        self.diags.error_help(
                            "E0202",
                            format!("`timeout` is longer than GitLab's limit of one month: '{s}'"),
                            Some(t.span),
                            "a job can run for at most one month",
                        );
                        None
                    }
                    Some(v) if v > 0 => Some(v),
                    _ => {
                        self.diags.error_help(
                            "E0202",
                            format!("`timeout` is not a duration: '{s}'"),
                            Some(t.span),
                            "write it like `1h 30m` or `45 minutes`",
                        );
                        None
                    }
                },
                None => None,
            },
            _ => None,
        };

        let mut extra = IndexMap::new();
        for k in ["release", "secrets", "id_tokens", "pages"] {
            let n = if k == "id_tokens" { get(k) } else { jm.get(k) };
            if let Some(n) = n {
                extra.insert(k.to_string(), to_json(n));
            }
        }
        if let Some(rel) = jm.get("release").and_then(Node::as_map)
            && !rel.contains("tag_name")
        {
            self.diags.error(
                "E0202",
                "`release` needs a `tag_name`",
                jm.get("release").map(|r| r.span),
            );
        }

        Job {
            name: name.to_string(),
            stage,
            before_script: get("before_script")
                .map(|s| self.script(s, "before_script"))
                .unwrap_or_default(),
            script,
            after_script: get("after_script")
                .map(|s| self.script(s, "after_script"))
                .unwrap_or_default(),
            image: get("image").and_then(|i| self.image(i)),
            services: get("services")
                .map(|s| self.services(s))
                .unwrap_or_default(),
            variables: jm
                .get("variables")
                .map(|v| self.variables(v, VarsAt::Job))
                .unwrap_or_default(),
            tags: get("tags")
                .map(|t| self.strings(t, "tags"))
                .unwrap_or_default(),
            rules,
            only,
            except,
            when,
            start_in,
            allow_failure,
            needs,
            dependencies,
            artifacts: get("artifacts").and_then(|a| self.artifacts(a)),
            cache: get("cache").map(|c| self.caches(c)).unwrap_or_default(),
            parallel,
            retry: get("retry").and_then(|r| self.retry(r)),
            timeout,
            interruptible: get("interruptible").and_then(|i| self.bool(i, "`interruptible`")),
            resource_group: jm
                .get("resource_group")
                .and_then(|r| self.string(r, "`resource_group`")),
            environment: jm.get("environment").and_then(|e| self.environment(e)),
            coverage: jm.get("coverage").and_then(|c| self.coverage(c)),
            trigger,
            inherit_variables,
            manual_confirmation: jm
                .get("manual_confirmation")
                .and_then(|c| self.string(c, "`manual_confirmation`")),
            extra,
            span: node.span,
            stage_span,
            dependencies_span: jm
                .entry("dependencies")
                .map(|e| e.value.span)
                .unwrap_or(node.span),
        }
    }
}

/// Whether a `!reference` in the subtree failed (and was reported already).
fn has_failed_reference(n: &Node) -> bool {
    n.tag.as_deref() == Some(crate::resolve::FAILED_REFERENCE)
        || match &n.value {
            Value::Seq(items) => items.iter().any(has_failed_reference),
            Value::Map(m) => m.entries.iter().any(|e| has_failed_reference(&e.value)),
            _ => false,
        }
}

/// `%XX` escapes decoded, as Ruby's `CGI.unescape` (without `+`) does for cache keys.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn to_json(n: &Node) -> serde_json::Value {
    match &n.value {
        Value::Null => serde_json::Value::Null,
        Value::Scalar(s, _) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.entries
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect(),
        ),
    }
}
