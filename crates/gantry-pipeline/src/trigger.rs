//! What started a pipeline: the event, the ref, the commit and everything else the rules
//! engine and the predefined `CI_*` variables are computed from.
//!
//! A `Trigger` is plain data. The server builds one from a webhook, a schedule or an API call;
//! `gantry run` builds one from the working tree; tests build them by hand.

use crate::vars::PipelineContext;
use serde::{Deserialize, Serialize};

/// GitLab's `CI_PIPELINE_SOURCE` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Push,
    Web,
    Api,
    Trigger,
    Schedule,
    Pipeline,
    ParentPipeline,
    MergeRequestEvent,
    ExternalPullRequestEvent,
    Chat,
    Webide,
    OndemandDastScan,
    SecurityOrchestrationPolicy,
}

impl Source {
    pub const ALL: &'static [Source] = &[
        Source::Push,
        Source::Web,
        Source::Api,
        Source::Trigger,
        Source::Schedule,
        Source::Pipeline,
        Source::ParentPipeline,
        Source::MergeRequestEvent,
        Source::ExternalPullRequestEvent,
        Source::Chat,
        Source::Webide,
        Source::OndemandDastScan,
        Source::SecurityOrchestrationPolicy,
    ];

    /// The value of `CI_PIPELINE_SOURCE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Web => "web",
            Source::Api => "api",
            Source::Trigger => "trigger",
            Source::Schedule => "schedule",
            Source::Pipeline => "pipeline",
            Source::ParentPipeline => "parent_pipeline",
            Source::MergeRequestEvent => "merge_request_event",
            Source::ExternalPullRequestEvent => "external_pull_request_event",
            Source::Chat => "chat",
            Source::Webide => "webide",
            Source::OndemandDastScan => "ondemand_dast_scan",
            Source::SecurityOrchestrationPolicy => "security_orchestration_policy",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The project a pipeline belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Numeric id (`CI_PROJECT_ID`).
    pub id: u64,
    /// `group/subgroup/name` (`CI_PROJECT_PATH`).
    pub path: String,
    /// Human title (`CI_PROJECT_TITLE`).
    pub title: String,
    /// Web URL of the project on its forge or in Gantry (`CI_PROJECT_URL`).
    pub url: String,
    /// The default branch (`CI_DEFAULT_BRANCH`).
    pub default_branch: String,
    /// `private`, `internal` or `public` (`CI_PROJECT_VISIBILITY`).
    pub visibility: String,
    /// Where the checkout lives inside a job (`CI_PROJECT_DIR`); `/builds/<path>` when empty.
    pub dir: String,
    /// The Gantry server URL (`CI_SERVER_URL`).
    pub server_url: String,
}

impl Default for ProjectInfo {
    fn default() -> Self {
        ProjectInfo {
            id: 1,
            path: "local/project".into(),
            title: "project".into(),
            url: "http://localhost:8080/local/project".into(),
            default_branch: "main".into(),
            visibility: "private".into(),
            dir: String::new(),
            server_url: "http://localhost:8080".into(),
        }
    }
}

/// The head commit of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: String,
    /// The previous tip of the branch for pushes (`CI_COMMIT_BEFORE_SHA`); all zeros otherwise.
    pub before_sha: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// ISO 8601 (`CI_COMMIT_TIMESTAMP`).
    pub timestamp: String,
}

impl Default for CommitInfo {
    fn default() -> Self {
        CommitInfo {
            sha: "0".repeat(40),
            before_sha: "0".repeat(40),
            message: String::new(),
            author_name: String::new(),
            author_email: String::new(),
            timestamp: "1970-01-01T00:00:00+00:00".into(),
        }
    }
}

/// Merge-request data for `merge_request_event` pipelines.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MergeRequest {
    pub iid: u64,
    pub id: u64,
    pub title: String,
    pub description: String,
    pub source_branch: String,
    pub source_branch_sha: String,
    pub target_branch: String,
    pub target_branch_sha: String,
    /// The merge base (`CI_MERGE_REQUEST_DIFF_BASE_SHA`).
    pub diff_base_sha: String,
    pub labels: Vec<String>,
    pub source_project_path: String,
    pub source_project_id: u64,
    pub draft: bool,
    pub assignees: Vec<String>,
    pub approved: bool,
}

/// The user who started the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: u64,
    pub login: String,
    pub name: String,
    pub email: String,
}

impl Default for UserInfo {
    fn default() -> Self {
        UserInfo {
            id: 1,
            login: "gantry".into(),
            name: "Gantry".into(),
            email: String::new(),
        }
    }
}

/// Everything known about the event that asks for a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Trigger {
    pub source: Source,
    /// The branch or tag name, without `refs/heads/` or `refs/tags/`.
    pub ref_name: String,
    /// True when `ref_name` is a tag.
    pub is_tag: bool,
    /// Whether the ref is protected (decides `CI_COMMIT_REF_PROTECTED`).
    pub protected: bool,
    pub commit: CommitInfo,
    pub project: ProjectInfo,
    pub merge_request: Option<MergeRequest>,
    pub user: UserInfo,
    /// Pipeline id and iid (`CI_PIPELINE_ID`, `CI_PIPELINE_IID`).
    pub pipeline_id: u64,
    pub pipeline_iid: u64,
    /// Variables given with the trigger (API, schedule, `--var`): highest precedence after job-level
    /// overrides, as GitLab's "pipeline variables".
    pub variables: Vec<(String, String)>,
    /// Files changed by the push or merge request, for `rules:changes`. `None` means unknown,
    /// in which case `changes` rules evaluate to true, as GitLab does for new branches and
    /// for sources without a diff.
    pub changed_files: Option<Vec<String>>,
    /// Files changed between a ref and this pipeline's commit, for each ref a
    /// `rules:changes:compare_to` names (see [`crate::model::Pipeline::compare_to_refs`]).
    /// A `compare_to` ref missing here matches nothing.
    #[serde(default)]
    pub changed_since: std::collections::BTreeMap<String, Vec<String>>,
    /// Files present at the commit, for `rules:exists`. `None` means unknown (`exists` is false).
    pub files: Option<Vec<String>>,
    /// What the server knows of the pipeline beyond the event (its configuration file, the
    /// open merge requests of its branch, the schedule that started it, ...): part of the
    /// trigger so that the rules, the plan and the job see the same predefined variables.
    #[serde(default)]
    pub context: PipelineContext,
}
