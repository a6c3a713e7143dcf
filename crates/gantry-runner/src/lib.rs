//! # gantry-runner
//!
//! Runs a [`Plan`](gantry_pipeline::plan::Plan): the same code path for `gantry run` on a
//! laptop and (later) for jobs an agent receives from the server.
//!
//! - [`runtime`]: the scheduler — DAG order, `when`, `allow_failure`, `retry`, `timeout`,
//!   `resource_group`, concurrency, cancellation, and the pipeline's final status ([`status`]).
//! - [`executor`]: the [`Executor`](executor::Executor) lifecycle trait and its two
//!   implementations, [`executor::shell`] and [`executor::docker`].
//! - [`workspace`]: a clean checkout per job from the working tree.
//! - [`artifacts`], [`cache`]: what moves between jobs and between runs.
//! - [`mask`], [`log`]: secrets masked in every byte of output.

pub mod agent;
pub mod artifacts;
pub mod cache;
pub mod executor;
pub mod fsutil;
pub mod job;
pub mod log;
pub mod mask;
pub mod runtime;
pub mod status;
pub mod tarball;
pub mod workspace;
