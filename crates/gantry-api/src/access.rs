//! Who may do what: project roles, in the spirit of GitLab's and Harbor's, and the scopes of a
//! personal access token.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A user's role in a project; each includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the project exists; nothing of its pipelines.
    Guest,
    /// Reads pipelines, jobs, logs and artifacts.
    Reporter,
    /// Runs pipelines, plays unprotected manual jobs, retries and cancels.
    Developer,
    /// Project settings: webhooks, triggers, schedules, variables, protected refs, members
    /// up to maintainer.
    Maintainer,
    /// Everything in the project, members of every role included.
    Owner,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Guest,
        Role::Reporter,
        Role::Developer,
        Role::Maintainer,
        Role::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Reporter => "reporter",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role '{s}': use guest, reporter, developer, maintainer or owner")
            })
    }
}

/// What a personal access token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole API, as the user.
    Api,
    /// The API's reads (GET) only.
    ReadApi,
    /// Pulls from the registry.
    ReadRegistry,
    /// Pushes to (and pulls from) the registry.
    WriteRegistry,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Api,
        Scope::ReadApi,
        Scope::ReadRegistry,
        Scope::WriteRegistry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Api => "api",
            Scope::ReadApi => "read_api",
            Scope::ReadRegistry => "read_registry",
            Scope::WriteRegistry => "write_registry",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scope '{s}': use api, read_api, read_registry or write_registry")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Guest < Role::Reporter && Role::Maintainer < Role::Owner);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("admin".parse::<Role>().unwrap_err().contains("maintainer"));
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
    }
}
