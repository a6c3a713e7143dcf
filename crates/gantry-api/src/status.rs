//! States, with GitLab's names so that users and tools see what they know.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's state. `Created` waits for earlier jobs; `Pending` waits for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
    /// A `when: manual` job waiting for someone to play it.
    Manual,
    /// A `when: delayed` job waiting for its time.
    Scheduled,
}

impl JobStatus {
    pub const ALL: &'static [JobStatus] = &[
        JobStatus::Created,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Skipped,
        JobStatus::Manual,
        JobStatus::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
        }
    }

    /// Finished for good (a retry makes a new job).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }

    /// Still able to run or running.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Created | JobStatus::Pending | JobStatus::Running | JobStatus::Scheduled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown job status '{s}'"))
    }
}

/// A pipeline's state, derived from its jobs as GitLab derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Created,
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
    /// Stopped at a manual job that blocks it.
    Manual,
    Scheduled,
}

impl PipelineStatus {
    pub const ALL: &'static [PipelineStatus] = &[
        PipelineStatus::Created,
        PipelineStatus::Pending,
        PipelineStatus::Running,
        PipelineStatus::Success,
        PipelineStatus::Failed,
        PipelineStatus::Canceled,
        PipelineStatus::Skipped,
        PipelineStatus::Manual,
        PipelineStatus::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Skipped => "skipped",
            PipelineStatus::Manual => "manual",
            PipelineStatus::Scheduled => "scheduled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success
                | PipelineStatus::Failed
                | PipelineStatus::Canceled
                | PipelineStatus::Skipped
        )
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PipelineStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PipelineStatus::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown pipeline status '{s}'"))
    }
}

/// Why a job failed, with GitLab's `failure_reason` names (also what `retry:when` matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    ScriptFailure,
    RunnerSystemFailure,
    JobExecutionTimeout,
    StuckOrTimeoutFailure,
    ApiFailure,
    UnknownFailure,
    /// The pipeline file could not be read or planned.
    ConfigError,
}

impl FailureReason {
    pub const ALL: &'static [FailureReason] = &[
        FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout,
        FailureReason::StuckOrTimeoutFailure,
        FailureReason::ApiFailure,
        FailureReason::UnknownFailure,
        FailureReason::ConfigError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::StuckOrTimeoutFailure => "stuck_or_timeout_failure",
            FailureReason::ApiFailure => "api_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::ConfigError => "config_error",
        }
    }

    /// Whether `retry:when` entry `when` covers this reason.
    pub fn matches(self, when: &str) -> bool {
        when == "always"
            || when == self.as_str()
            || (when == "unknown_failure" && self == FailureReason::UnknownFailure)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FailureReason::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown failure reason '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in PipelineStatus::ALL {
            assert_eq!(s.as_str().parse::<PipelineStatus>().unwrap(), *s);
        }
        for s in FailureReason::ALL {
            assert_eq!(s.as_str().parse::<FailureReason>().unwrap(), *s);
        }
        assert!("bogus".parse::<JobStatus>().is_err());
    }
}
