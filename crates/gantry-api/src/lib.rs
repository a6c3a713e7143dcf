//! Gantry's wire types, shared by the server, the agent and the CLI. No logic beyond
//! conversions and the binary log-frame codec.
//!
//! - [`rest`]: the documents of the REST API under `/api/v1` (projects, pipelines, jobs,
//!   agents), list pages and the JSON error shape.
//! - [`agent`]: the agent protocol: registration, the one WebSocket connection over which the
//!   server pushes jobs and the agent streams logs and results, and the [`agent::JobPayload`]
//!   an agent receives.
//! - [`job`]: [`job::JobDefinition`], a planned job as the server stores it and the agent runs it.
//! - [`access`]: project roles and token scopes.
//! - [`status`]: job and pipeline states and failure reasons, with GitLab's names.

pub mod access;
pub mod agent;
pub mod job;
pub mod rest;
pub mod status;

pub use access::{Role, Scope};
pub use status::{FailureReason, JobStatus, PipelineStatus};
