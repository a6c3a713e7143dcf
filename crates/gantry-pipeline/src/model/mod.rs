//! The typed pipeline: what each keyword of the GitLab-CI dialect means, after resolution.
//!
//! [`build`] reads the resolved node tree into a [`Pipeline`], checking every key and type
//! and collecting diagnostics. Unknown keys are errors ("did you mean …?"); keywords GitLab
//! has that Gantry does not implement yet are errors that say so — never silently ignored.

mod build;
pub mod duration;
pub mod schema;

pub use build::build;

use crate::expr::Expr;
use crate::source::Span;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// GitLab's default stages.
pub const DEFAULT_STAGES: &[&str] = &[".pre", "build", "test", "deploy", ".post"];

#[derive(Debug, Clone, Serialize, Default)]
pub struct Pipeline {
    /// Declared stages with `.pre` first and `.post` last.
    pub stages: Vec<String>,
    /// Top-level `variables`.
    pub variables: Vec<Variable>,
    pub workflow: Workflow,
    /// Every visible job, in source order (hidden `.jobs` are dropped after resolution).
    pub jobs: IndexMap<String, Job>,
}

impl Pipeline {
    /// Whether any `rules:exists` needs the commit's file list
    /// ([`crate::trigger::Trigger::files`]); a server lists files only then.
    pub fn uses_exists(&self) -> bool {
        self.jobs
            .values()
            .flat_map(|j| j.rules.iter().flatten())
            .chain(self.workflow.rules.iter().flatten())
            .any(|r| r.exists.is_some())
    }

    /// Every ref that `rules:changes:compare_to` names (as written; variables unexpanded), so
    /// that callers can compute [`crate::trigger::Trigger::changed_since`] for them.
    pub fn compare_to_refs(&self) -> Vec<String> {
        let mut refs: Vec<String> = self
            .jobs
            .values()
            .flat_map(|j| j.rules.iter().flatten())
            .chain(self.workflow.rules.iter().flatten())
            .filter_map(|r| r.changes.as_ref()?.compare_to.clone())
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Variable {
    pub name: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// `expand: false` keeps `$` references literal.
    pub expand: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Workflow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_cancel: Option<AutoCancel>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct AutoCancel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_new_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
    Never,
    Manual,
    Delayed,
}

impl When {
    pub fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "never" => When::Never,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Never => "never",
            When::Manual => "manual",
            When::Delayed => "delayed",
        }
    }
}

/// A compiled `if:` expression with its source text.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub source: String,
    #[serde(skip)]
    pub expr: Expr,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Changes {
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Rule {
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Need>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,
    /// `workflow:rules:auto_cancel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_cancel: Option<AutoCancel>,
    #[serde(skip)]
    pub span: Span,
}

/// Legacy `only:` / `except:`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct OnlyExcept {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Need {
    pub job: String,
    pub artifacts: bool,
    pub optional: bool,
    /// `needs:parallel:matrix` selectors: each a map of variable to allowed values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matrix: Vec<IndexMap<String, Vec<String>>>,
    /// `needs:project` / `needs:pipeline` (cross-pipeline artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Image {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Service {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_policy: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum AllowFailure {
    Bool(bool),
    ExitCodes { exit_codes: Vec<i32> },
}

impl AllowFailure {
    pub fn allows(&self, exit_code: Option<i32>) -> bool {
        match self {
            AllowFailure::Bool(b) => *b,
            AllowFailure::ExitCodes { exit_codes } => {
                exit_code.is_some_and(|c| exit_codes.contains(&c))
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Artifacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub untracked: bool,
    pub when: ArtifactsWhen,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_as: Option<String>,
    pub public: bool,
    /// `reports:` — `junit` and `dotenv` are understood; others are kept by name.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub reports: IndexMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Cache {
    pub key: CacheKey,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    pub untracked: bool,
    pub policy: String,
    pub when: ArtifactsWhen,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_keys: Vec<String>,
    pub unprotect: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CacheKey {
    Literal(String),
    Files {
        files: Vec<String>,
        prefix: Option<String>,
    },
}

impl Default for CacheKey {
    fn default() -> Self {
        CacheKey::Literal("default".into())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Parallel {
    Count(u32),
    Matrix {
        matrix: Vec<IndexMap<String, Vec<String>>>,
    },
}

/// Every combination of a `parallel:matrix` (or of a `needs:parallel:matrix` selector), row
/// by row, each as `(variable, value)` pairs in the order the variables are written.
pub fn matrix_combinations(matrix: &[IndexMap<String, Vec<String>>]) -> Vec<Vec<(String, String)>> {
    let mut combos = Vec::new();
    for row in matrix {
        let mut acc: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (k, vals) in row {
            let vals: Vec<String> = if vals.is_empty() {
                vec![String::new()]
            } else {
                vals.clone()
            };
            acc = acc
                .into_iter()
                .flat_map(|prefix| {
                    vals.iter().map(move |v| {
                        let mut p = prefix.clone();
                        p.push((k.clone(), v.clone()));
                        p
                    })
                })
                .collect();
        }
        combos.extend(acc);
    }
    combos
}

/// GitLab's name for one matrix instance: `job: [v1, v2]`, values in the variables' order.
pub fn matrix_job_name(job: &str, combo: &[(String, String)]) -> String {
    let values: Vec<&str> = combo.iter().map(|(_, v)| v.as_str()).collect();
    format!("{job}: [{}]", values.join(", "))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retry {
    pub max: u32,
    /// Failure classes that are retried (`always` when empty and `max > 0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Environment {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_tier: Option<String>,
    /// Where `on_stop` is written.
    #[serde(skip)]
    pub on_stop_span: Span,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum TriggerJob {
    /// A child pipeline from files of this project.
    Child {
        include: Vec<String>,
        strategy: Option<String>,
        forward: Forward,
    },
    /// A pipeline in another project.
    MultiProject {
        project: String,
        branch: Option<String>,
        strategy: Option<String>,
        forward: Forward,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Forward {
    pub yaml_variables: bool,
    pub pipeline_variables: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Inheritance {
    All(bool),
    Only(Vec<String>),
}

impl Inheritance {
    pub fn allows(&self, key: &str) -> bool {
        match self {
            Inheritance::All(b) => *b,
            Inheritance::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub name: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before_script: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_script: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<OnlyExcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except: Option<OnlyExcept>,
    pub when: When,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<AllowFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Need>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<Cache>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerJob>,
    /// `inherit:variables` — whether global variables reach this job.
    pub inherit_variables: Inheritance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual_confirmation: Option<String>,
    /// Keywords kept as written for later stages (`release`, `secrets`, `id_tokens`, `pages`).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub extra: IndexMap<String, serde_json::Value>,
    #[serde(skip)]
    pub span: Span,
    #[serde(skip)]
    pub stage_span: Span,
    /// Where `dependencies:` is written (the job's span when it is not).
    #[serde(skip)]
    pub dependencies_span: Span,
}
