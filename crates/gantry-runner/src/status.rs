//! Job and pipeline states, and GitLab's rules for the pipeline's final status.

use crate::artifacts::JunitSummary;
use std::time::Duration;

/// Why an attempt failed, with GitLab's failure classes (`retry:when` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    ScriptFailure,
    RunnerSystemFailure,
    JobExecutionTimeout,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ScriptFailure => "script_failure",
            FailureClass::RunnerSystemFailure => "runner_system_failure",
            FailureClass::JobExecutionTimeout => "job_execution_timeout",
        }
    }

    /// Whether a `retry:when` entry covers this class.
    pub fn matches(self, when: &str) -> bool {
        match when {
            "always" => true,
            "stuck_or_timeout_failure" => self == FailureClass::JobExecutionTimeout,
            "unknown_failure" => false,
            w => w == self.as_str(),
        }
    }
}

impl From<gantry_api::FailureReason> for FailureClass {
    fn from(r: gantry_api::FailureReason) -> FailureClass {
        use gantry_api::FailureReason as R;
        match r {
            R::ScriptFailure => FailureClass::ScriptFailure,
            R::JobExecutionTimeout | R::StuckOrTimeoutFailure => FailureClass::JobExecutionTimeout,
            _ => FailureClass::RunnerSystemFailure,
        }
    }
}

/// Why a job was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A job it depends on failed (or was skipped for that reason).
    UpstreamFailed,
    /// `when: on_failure` and nothing failed.
    NothingFailed,
    /// A blocking manual job it depends on was not played.
    WaitingForManual(String),
    /// Not selected on the command line.
    NotSelected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Created,
    /// Waiting for `start_in`.
    Scheduled,
    Running,
    Success,
    Failed {
        class: FailureClass,
        exit_code: Option<i32>,
        allowed: bool,
    },
    Canceled,
    Skipped(SkipReason),
    /// A manual job not played; `blocking` when `allow_failure: false`.
    Manual {
        blocking: bool,
    },
}

impl JobState {
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            JobState::Created | JobState::Scheduled | JobState::Running
        )
    }

    pub fn label(&self) -> &'static str {
        match self {
            JobState::Created => "created",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Success => "passed",
            JobState::Failed { allowed: true, .. } => "failed (allowed)",
            JobState::Failed { .. } => "failed",
            JobState::Canceled => "canceled",
            JobState::Skipped(_) => "skipped",
            JobState::Manual { .. } => "manual",
        }
    }
}

/// The outcome of one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub stage: String,
    pub state: JobState,
    pub attempts: u32,
    pub duration: Duration,
    /// The last lines of the log, for the summary of failed jobs.
    pub tail: Vec<String>,
    pub junit: Option<JunitSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStatus {
    Success,
    /// Passed, but some jobs that were allowed to fail failed.
    SuccessWithWarnings,
    Failed,
    Canceled,
    /// A blocking manual job waits to be played.
    Blocked,
}

impl PipelineStatus {
    pub fn label(self) -> &'static str {
        match self {
            PipelineStatus::Success => "passed",
            PipelineStatus::SuccessWithWarnings => "passed with warnings",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Blocked => "blocked",
        }
    }

    pub fn is_success(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success | PipelineStatus::SuccessWithWarnings
        )
    }
}

/// GitLab's rules: canceled wins; then a failure that was not allowed; then a blocking manual
/// job; then success, with warnings when allowed failures happened.
pub fn pipeline_status(results: &[JobResult], canceled: bool) -> PipelineStatus {
    if canceled || results.iter().any(|r| r.state == JobState::Canceled) {
        return PipelineStatus::Canceled;
    }
    if results
        .iter()
        .any(|r| matches!(r.state, JobState::Failed { allowed: false, .. }))
    {
        return PipelineStatus::Failed;
    }
    if results
        .iter()
        .any(|r| matches!(r.state, JobState::Manual { blocking: true }))
    {
        return PipelineStatus::Blocked;
    }
    if results
        .iter()
        .any(|r| matches!(r.state, JobState::Failed { allowed: true, .. }))
    {
        return PipelineStatus::SuccessWithWarnings;
    }
    PipelineStatus::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> JobResult {
        JobResult {
            name: "j".into(),
            stage: "test".into(),
            state,
            attempts: 1,
            duration: Duration::ZERO,
            tail: Vec::new(),
            junit: None,
        }
    }

    fn failed(allowed: bool) -> JobState {
        JobState::Failed {
            class: FailureClass::ScriptFailure,
            exit_code: Some(1),
            allowed,
        }
    }

    #[test]
    fn final_status_follows_gitlab() {
        assert_eq!(
            pipeline_status(&[job(JobState::Success)], false),
            PipelineStatus::Success
        );
        assert_eq!(
            pipeline_status(&[job(JobState::Success), job(failed(true))], false),
            PipelineStatus::SuccessWithWarnings
        );
        assert_eq!(
            pipeline_status(&[job(failed(true)), job(failed(false))], false),
            PipelineStatus::Failed
        );
        assert_eq!(
            pipeline_status(
                &[
                    job(JobState::Success),
                    job(JobState::Manual { blocking: true })
                ],
                false
            ),
            PipelineStatus::Blocked
        );
        assert_eq!(
            pipeline_status(&[job(JobState::Manual { blocking: false })], false),
            PipelineStatus::Success
        );
        assert_eq!(
            pipeline_status(&[job(failed(false))], true),
            PipelineStatus::Canceled
        );
        assert_eq!(
            pipeline_status(&[job(JobState::Skipped(SkipReason::NothingFailed))], false),
            PipelineStatus::Success
        );
    }

    #[test]
    fn retry_when_classes() {
        assert!(FailureClass::ScriptFailure.matches("always"));
        assert!(FailureClass::ScriptFailure.matches("script_failure"));
        assert!(!FailureClass::ScriptFailure.matches("runner_system_failure"));
        assert!(FailureClass::JobExecutionTimeout.matches("stuck_or_timeout_failure"));
        assert!(FailureClass::JobExecutionTimeout.matches("job_execution_timeout"));
        assert!(FailureClass::RunnerSystemFailure.matches("runner_system_failure"));
    }
}
