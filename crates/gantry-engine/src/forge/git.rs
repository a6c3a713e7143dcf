//! Pushes to a plain bare repository, told by the `post-receive` hook that `gantry hook
//! install` puts there: no forge at all. One request per updated ref, with the project's
//! webhook secret as a token (the hook's own file keeps it, readable by the repository's
//! owner only):
//!
//! ```text
//! POST /api/v1/hooks/git/{project}
//! X-Gantry-Event: push
//! X-Gantry-Token: <the project's webhook secret>
//! X-Gantry-Delivery: <a random id per ref update>
//!
//! {"ref": "refs/heads/main", "before": "<sha>", "after": "<sha>", "pusher": "alice"}
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Forge, Headers, HookError, HookEvent, PushParts, User, decode, nullable};
use crate::token::constant_time_eq;

const FORGE: Forge = Forge::Git;
pub(super) const EVENT_HEADER: &str = "X-Gantry-Event";
pub(super) const TOKEN_HEADER: &str = "X-Gantry-Token";
pub(super) const DELIVERY_HEADER: &str = "X-Gantry-Delivery";

/// What the hook sends for one updated ref: `git`'s own `post-receive` line, and who pushed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RefUpdate {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    /// The pushing user, as the hook knows it (`GL_USERNAME`, `REMOTE_USER`, `USER`).
    #[serde(default, deserialize_with = "nullable")]
    pub pusher: String,
}

/// `X-Gantry-Token` must be the project's webhook secret (compared as hashes, in constant
/// time).
pub(super) fn verify(secret: &[u8], headers: &Headers<'_>) -> Result<(), HookError> {
    let token = headers.get(TOKEN_HEADER).ok_or(HookError::Unsigned {
        forge: FORGE,
        header: TOKEN_HEADER,
    })?;
    let given = hex::encode(Sha256::digest(token.as_bytes()));
    let expected = hex::encode(Sha256::digest(secret));
    if constant_time_eq(&given, &expected) {
        Ok(())
    } else {
        Err(HookError::BadSignature {
            header: TOKEN_HEADER,
            problem: "is not the project's webhook secret: install the hook again with \
                      `gantry hook install` (the secret was replaced)"
                .to_string(),
        })
    }
}

pub(super) fn parse(headers: &Headers<'_>, body: &[u8]) -> Result<HookEvent, HookError> {
    let event = headers.get(EVENT_HEADER).ok_or(HookError::MissingEvent {
        forge: FORGE,
        header: EVENT_HEADER,
    })?;
    if event != "push" {
        return Ok(HookEvent::Ignored {
            reason: format!("a '{event}' event from a repository hook starts no pipeline"),
        });
    }
    let update: RefUpdate = decode(FORGE, "push", body)?;
    PushParts {
        forge: FORGE,
        event: "push",
        git_ref: update.git_ref,
        before: update.before,
        after: update.after,
        deleted: false,
        forced: false,
        commits: Vec::new(),
        head_commit: None,
        total_commits: None,
        list_limit: None,
        pusher: User {
            username: update.pusher.clone(),
            name: update.pusher,
            email: String::new(),
        },
        repository: Default::default(),
    }
    .into_event()
}
