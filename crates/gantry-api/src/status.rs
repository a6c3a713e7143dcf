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
    /// Whether `retry:when` entry `when` covers this reason.
    pub fn matches(self, when: &str) -> bool {
        when == "always" || when == self.as_str()
    }
}

/// The names of an enum's variants, both ways: `ALL`, `as_str`, `Display`, `FromStr`.
macro_rules! names {
    ($ty:ident, $what:literal, { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $s),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!(concat!("unknown ", $what, " '{}'"), s))
            }
        }
    };
}

names!(JobStatus, "job status", {
    Created => "created",
    Pending => "pending",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Canceled => "canceled",
    Skipped => "skipped",
    Manual => "manual",
    Scheduled => "scheduled",
});

names!(PipelineStatus, "pipeline status", {
    Created => "created",
    Pending => "pending",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Canceled => "canceled",
    Skipped => "skipped",
    Manual => "manual",
    Scheduled => "scheduled",
});

names!(FailureReason, "failure reason", {
    ScriptFailure => "script_failure",
    RunnerSystemFailure => "runner_system_failure",
    JobExecutionTimeout => "job_execution_timeout",
    StuckOrTimeoutFailure => "stuck_or_timeout_failure",
    ApiFailure => "api_failure",
    UnknownFailure => "unknown_failure",
    ConfigError => "config_error",
});

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
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in FailureReason::ALL {
            assert_eq!(s.as_str().parse::<FailureReason>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        assert!(FailureReason::ScriptFailure.matches("always"));
        assert!(FailureReason::ScriptFailure.matches("script_failure"));
        assert!(!FailureReason::ScriptFailure.matches("runner_system_failure"));
        assert!("bogus".parse::<JobStatus>().is_err());
    }
}
