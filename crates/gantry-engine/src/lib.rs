//! # gantry-engine
//!
//! The server's orchestration, below HTTP and above the store:
//! - [`engine`]: [`Engine`]: projects (their credentials and webhook secrets sealed at
//!   rest), pipelines (create from a ref or from a webhook's push or merge request, cancel,
//!   retry, child pipelines, auto-cancel), jobs (retry, play, cancel), agents (register,
//!   connect, results, leases), cron schedules and polling, and the ticker. Its module doc
//!   draws the flow.
//! - [`clock`]: [`Clock`], the time schedules and polling go by (manual in tests).
//! - [`dag`]: pure decisions: which job runs next, the pipeline's status.
//! - [`dispatch`]: who is online and which pending job goes to which agent, in memory.
//! - [`forge`]: webhooks from GitLab, GitHub and Gitea/Forgejo: authentication, delivery ids,
//!   payloads read into push and merge request events. Pure: [`Engine::receive_webhook`]
//!   wires it to pipelines.
//! - [`git`]: a bare mirror per project (fetch, read a file at a commit, archives), and the
//!   pipeline resolver's `Fetcher` on it.
//! - [`token`]: random tokens, stored hashed.

pub mod clock;
pub mod dag;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod forge;
pub mod git;
pub mod token;

pub use clock::Clock;
pub use engine::{Caller, Engine, EngineConfig, UserCaller};
pub use error::{EngineError, Result};
