//! Predefined `CI_*` variables, CI/CD variable precedence and `$VAR` expansion, computed the way
//! GitLab CI computes them so that pipeline files written for GitLab behave the same under Gantry.
//! [`pipeline_variables`] gives the variables GitLab knows before and while it creates a pipeline
//! (the "Pre-pipeline" and "Pipeline" availability of GitLab's predefined-variables reference),
//! with GitLab's conditions: `CI_COMMIT_BRANCH` only in branch pipelines, `CI_COMMIT_TAG` only in
//! tag pipelines, `CI_MERGE_REQUEST_*` only in `merge_request_event` pipelines, and so on.
//! [`job_variables`] adds what only a job knows (`CI_JOB_*`, `CI_NODE_*`, `CI_ENVIRONMENT_*`,
//! `CI_PROJECT_DIR`, ...). [`ref_slug`] and [`environment_slug`] are GitLab's two slug rules.
//! [`expand()`] is GitLab Runner's `$VAR` / `${VAR}` / `$$` expansion, and [`VarSet`] layers variable
//! definitions in GitLab's documented precedence order and expands values that reference other
//! variables. Gantry names itself where GitLab names its product (`CI_SERVER_NAME=Gantry`) but keeps
//! `GITLAB_CI=true`, which pipelines test to detect CI.
//!
//! Sources followed: GitLab's "Predefined CI/CD variables reference" and "CI/CD variable
//! precedence" documentation, and for exact values (slugs, commit title and description, merge
//! request variables, expansion) the GitLab and GitLab Runner code they describe.

mod expand;
mod predefined;
mod set;

use serde::{Deserialize, Serialize};

pub use expand::{ExpandOptions, expand, expand_with, references};
pub use predefined::{
    DEFAULT_BUILDS_DIR, DEFAULT_CONFIG_PATH, JobContext, JobEnvironment, NULL_SHA, Parallel,
    PipelineContext, RunnerInfo, SERVER_NAME, commit_description, commit_title, environment_slug,
    environment_tier, job_group_name, job_variables, pipeline_variables, pipeline_variables_with,
    ref_slug,
};
pub use set::{CycleError, Layer, VarSet};

/// SHA-256 of `data` (used for environment slugs and `include:integrity`).
pub(crate) fn sha256_digest(data: &[u8]) -> [u8; 32] {
    predefined::sha256(data)
}

/// When a variable becomes available (GitLab's "availability" column of the predefined-variables
/// reference). The order is meaningful: `phase <= Phase::Pipeline` means usable in `rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Known before the pipeline is created: usable in `include:rules`, `workflow:rules`, `rules`.
    PrePipeline,
    /// Known while the pipeline is created: usable in job `rules`, not in `include:rules`.
    Pipeline,
    /// Known only when a runner picks the job up: job scripts and runner-side keywords only.
    JobOnly,
}

impl Phase {
    /// GitLab's wording: `pre-pipeline`, `pipeline`, `job-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PrePipeline => "pre-pipeline",
            Phase::Pipeline => "pipeline",
            Phase::JobOnly => "job-only",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One variable definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Var {
    pub name: String,
    pub value: String,
    pub phase: Phase,
    /// Hide the value in job logs (GitLab's "masked"; set for tokens and passwords).
    #[serde(default)]
    pub masked: bool,
    /// Keep the value as written: `$` references in it are never expanded (GitLab's
    /// `variables:expand: false`, or a settings variable without "Expand variable reference").
    #[serde(default)]
    pub raw: bool,
}

impl Var {
    pub fn new(name: impl Into<String>, value: impl Into<String>, phase: Phase) -> Var {
        Var {
            name: name.into(),
            value: value.into(),
            phase,
            masked: false,
            raw: false,
        }
    }

    /// The same variable with `masked` set to `masked`.
    pub fn with_masked(mut self, masked: bool) -> Var {
        self.masked = masked;
        self
    }

    /// The same variable with `raw` set to `raw`.
    pub fn with_raw(mut self, raw: bool) -> Var {
        self.raw = raw;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_order_and_names() {
        assert!(Phase::PrePipeline < Phase::Pipeline && Phase::Pipeline < Phase::JobOnly);
        let names: Vec<String> = [Phase::PrePipeline, Phase::Pipeline, Phase::JobOnly]
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(names, ["pre-pipeline", "pipeline", "job-only"]);
    }

    #[test]
    fn var_builders() {
        let v = Var::new("A", "1", Phase::Pipeline);
        assert!(!v.masked && !v.raw);
        let v = v.with_masked(true).with_raw(true);
        assert!(v.masked && v.raw);
        assert_eq!(
            (v.name.as_str(), v.value.as_str(), v.phase),
            ("A", "1", Phase::Pipeline)
        );
    }
}
