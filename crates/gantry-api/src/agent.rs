//! The agent protocol.
//!
//! 1. `POST /api/v1/agents/register` with a registration token ([`RegisterRequest`]) gives
//!    the agent its id and its own token ([`RegisterResponse`]); the agent keeps both in its
//!    state directory and registers only once.
//! 2. `GET /api/v1/agents/connect` (WebSocket, `Authorization: Bearer <agent token>`) is the
//!    one connection. The agent speaks first with [`AgentMsg::Hello`], listing the jobs it
//!    still runs and the results the server has not acknowledged yet; the server answers
//!    [`ServerMsg::Welcome`], telling for each job the log offset it has stored, or that the
//!    job is no longer wanted. From then on the server *pushes* jobs ([`ServerMsg::Job`]) as
//!    soon as the agent has a free slot, and cancellations ([`ServerMsg::Cancel`]).
//! 3. Logs go as binary frames ([`LogFrame`]): job id, byte offset, bytes. The server stores
//!    bytes once, whatever is resent, and acknowledges ([`ServerMsg::LogAck`]) what it stored,
//!    so that the agent can drop it. After a reconnect the agent resends from the stored offset.
//! 4. [`AgentMsg::Heartbeat`] every `heartbeat_ms` extends the leases of the agent's jobs; a
//!    job whose lease runs out fails as `runner_system_failure`.
//! 5. Artifacts and caches go by HTTP with the job's token: `PUT /api/v1/jobs/{id}/artifacts`
//!    (a tar file), `GET` the same for a dependency's, `GET /api/v1/jobs/{id}/source` (the
//!    commit's files as a tar), `GET|PUT /api/v1/jobs/{id}/cache/{key}`. Then
//!    [`AgentMsg::Finished`], which the server acknowledges with [`ServerMsg::FinishedAck`];
//!    until then the agent keeps the result and repeats it in its next `Hello`.

use crate::job::JobDefinition;
use crate::{FailureReason, JobStatus};
use gantry_pipeline::trigger::Trigger;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The server's registration token.
    pub token: String,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether jobs without `tags` may run here.
    pub run_untagged: bool,
    /// `shell` or `docker`.
    pub executor: String,
    pub concurrency: u32,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub id: i64,
    /// The agent's own token for `connect`; shown once.
    pub token: String,
}

/// What an agent says (JSON text frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    Hello {
        /// Jobs still running here (after a reconnect).
        #[serde(default)]
        running: Vec<i64>,
        /// Results not acknowledged yet.
        #[serde(default)]
        finished: Vec<Finished>,
        /// Tags, executor and concurrency may change between connections.
        tags: Vec<String>,
        run_untagged: bool,
        executor: String,
        concurrency: u32,
        version: String,
    },
    Heartbeat,
    /// The job's workspace is ready and its script starts.
    Started {
        job_id: i64,
    },
    Finished(Finished),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub job_id: i64,
    /// `success`, `failed` or `canceled`.
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The whole log's length: the server waits for every byte before it finishes the job.
    pub log_len: u64,
    /// Whether an artifacts archive was uploaded.
    #[serde(default)]
    pub artifacts: bool,
    /// `artifacts:reports:dotenv` of the job, for the jobs that depend on it.
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
}

/// What the server says (JSON text frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        agent_id: i64,
        heartbeat_ms: u64,
        lease_ms: u64,
        /// One entry per job the agent said it runs.
        resume: Vec<Resume>,
    },
    Job(Box<JobPayload>),
    Cancel {
        job_id: i64,
    },
    LogAck {
        job_id: i64,
        offset: u64,
    },
    FinishedAck {
        job_id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub job_id: i64,
    /// Bytes of the log the server has; send from here.
    pub log_offset: u64,
    /// `false`: the server gave up on the job (lease expired, canceled): stop it.
    pub keep: bool,
}

/// A job as an agent receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPayload {
    pub id: i64,
    /// Authenticates the job's own HTTP calls (artifacts, caches, source); valid while it runs.
    pub token: String,
    pub attempt: u32,
    pub pipeline_id: i64,
    pub project_id: i64,
    /// What started the pipeline: the predefined `CI_*` variables come from it.
    pub trigger: Trigger,
    pub definition: JobDefinition,
    /// Jobs whose artifacts to restore, in order.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// Variables to mask in the log (and to pass to the job).
    #[serde(default)]
    pub secrets: Vec<(String, String)>,
    /// The project's and the instance's CI/CD variables for this job, resolved by the server
    /// (scope, protection, project over instance); they override the pipeline file's
    /// variables and dotenv, and the pipeline's own variables override them.
    #[serde(default)]
    pub variables: Vec<JobVariable>,
}

/// A CI/CD variable as a job gets it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobVariable {
    pub key: String,
    pub value: String,
    /// Hidden in the job's log.
    #[serde(default)]
    pub masked: bool,
    /// Written to a file; the variable holds the file's path.
    #[serde(default)]
    pub file: bool,
}

impl std::fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("masked", &self.masked)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub job_id: i64,
    pub name: String,
    /// Its dotenv report, applied before the job's own variables.
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
    /// Whether it has an artifacts archive to download.
    #[serde(default)]
    pub artifacts: bool,
}

/// A binary WebSocket frame carrying log bytes: `job_id` (8 bytes, big-endian), `offset`
/// (8 bytes, big-endian), then the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFrame {
    pub job_id: i64,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl LogFrame {
    pub const HEADER: usize = 16;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + self.data.len());
        out.extend_from_slice(&self.job_id.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    pub fn decode(frame: &[u8]) -> Option<LogFrame> {
        if frame.len() < Self::HEADER {
            return None;
        }
        let job_id = i64::from_be_bytes(frame[0..8].try_into().ok()?);
        let offset = u64::from_be_bytes(frame[8..16].try_into().ok()?);
        Some(LogFrame {
            job_id,
            offset,
            data: frame[16..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_round_trip() {
        let f = LogFrame {
            job_id: 42,
            offset: 1 << 40,
            data: b"hello\n\xff".to_vec(),
        };
        assert_eq!(LogFrame::decode(&f.encode()), Some(f));
        assert_eq!(LogFrame::decode(&[0; 15]), None);
    }

    #[test]
    fn messages_are_tagged_json() {
        let m = ServerMsg::Cancel { job_id: 7 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"cancel","job_id":7}"#
        );
        let a: AgentMsg = serde_json::from_str(r#"{"type":"heartbeat"}"#).unwrap();
        assert_eq!(a, AgentMsg::Heartbeat);
    }
}
