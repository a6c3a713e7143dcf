//! Docker's token authentication: a client refused with `WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…` asks the realm (this server's `/v2/token`) for a token with
//! its credentials and the scopes it wants; the answer is a short-lived JWT (HS256, signed
//! with the server's registry key) listing what it may do, which every `/v2/` request then
//! carries. Who the credentials belong to and what they may do is the [`Authority`]'s
//! decision (the server's users, tokens, robot accounts and job tokens); the token only
//! carries it, so a request needs no database lookup to be authorized.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

/// How long a registry token lives (Docker's clients ask again when it expires).
pub const TOKEN_TTL_SECS: u64 = 300;

/// What may be done in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Actions {
    pub const NONE: Actions = Actions {
        pull: false,
        push: false,
        delete: false,
    };
    pub const PULL: Actions = Actions {
        pull: true,
        push: false,
        delete: false,
    };

    fn parse(list: &str) -> Actions {
        let mut a = Actions::NONE;
        for x in list.split(',') {
            match x.trim() {
                "pull" => a.pull = true,
                "push" => a.push = true,
                "delete" => a.delete = true,
                "*" => {
                    a = Actions {
                        pull: true,
                        push: true,
                        delete: true,
                    }
                }
                _ => {}
            }
        }
        a
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions {
            pull: self.pull && other.pull,
            push: self.push && other.push,
            delete: self.delete && other.delete,
        }
    }

    pub fn is_empty(self) -> bool {
        !(self.pull || self.push || self.delete)
    }

    fn names(self) -> Vec<String> {
        let mut v = Vec::new();
        if self.pull {
            v.push("pull".to_string());
        }
        if self.push {
            v.push("push".to_string());
        }
        if self.delete {
            v.push("delete".to_string());
        }
        v
    }
}

/// One scope a client asks for: `repository:team/app:pull,push` or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository { name: String, actions: Actions },
    Catalog,
}

impl Scope {
    /// Parses a `scope` parameter (several scopes may be separated by spaces); unknown
    /// resource types are ignored, as the spec allows.
    pub fn parse_all(s: &str) -> Vec<Scope> {
        s.split(' ')
            .filter_map(|one| {
                let (kind, rest) = one.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                match kind {
                    "repository" => Some(Scope::Repository {
                        name: name.to_string(),
                        actions: Actions::parse(actions),
                    }),
                    "registry" if name == "catalog" => Some(Scope::Catalog),
                    _ => None,
                }
            })
            .collect()
    }
}

/// A refusal of credentials at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or expired credentials: 401 with the reason.
    Unauthorized(String),
    /// Too many failures from this address: 429.
    TooMany(String),
}

/// The server's side of registry authentication (implemented on its accounts).
pub trait Authority: Send + Sync + 'static {
    /// Who presented credentials, as the authority knows them.
    type Principal: Send + Sync;

    /// Who these Basic credentials are; `None` credentials are an anonymous visitor.
    fn authenticate(
        &self,
        credentials: Option<(String, String)>,
        peer: IpAddr,
    ) -> impl Future<Output = Result<Self::Principal, Refusal>> + Send;

    /// The name tokens carry and pushes record (`alice`, `robot$dev+ci`, `job:12`); empty
    /// for an anonymous visitor.
    fn name(&self, who: &Self::Principal) -> String;

    /// What the principal may do in the repositories of a project: roles, the project's
    /// registry settings (public pull, who pushes), the token's scopes.
    fn allowed(
        &self,
        who: &Self::Principal,
        project_id: i64,
    ) -> impl Future<Output = Actions> + Send;

    /// The projects whose repositories the principal may list (`None`: all of them).
    fn visible_projects(
        &self,
        who: &Self::Principal,
    ) -> impl Future<Output = Option<Vec<i64>>> + Send;

    /// Something happened (a push, a pull, a delete): the server's notifications. Runs in a
    /// task of its own, off the request's path.
    fn event(&self, event: crate::Event) -> impl Future<Output = ()> + Send;
}

/// One entry of a token's `access` claim, as Docker's token spec has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<ResourceActions>,
    /// For the catalog: the projects the subject may list (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<i64>>,
}

impl Claims {
    /// What the token allows in repository `name`.
    pub fn actions(&self, name: &str) -> Actions {
        let mut a = Actions::NONE;
        for r in &self.access {
            if r.kind == "repository" && r.name == name {
                let b = Actions::parse(&r.actions.join(","));
                a.pull |= b.pull;
                a.push |= b.push;
                a.delete |= b.delete;
            }
        }
        a
    }

    pub fn catalog(&self) -> bool {
        self.access
            .iter()
            .any(|r| r.kind == "registry" && r.name == "catalog")
    }
}

/// Signs and checks registry tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    service: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The issuer written into tokens.
const ISSUER: &str = "gantry";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    /// Keys from the server's secret (at least 32 bytes) for `service` (the `aud`).
    pub fn new(secret: &[u8], service: &str) -> TokenKeys {
        TokenKeys {
            encoding: jsonwebtoken::EncodingKey::from_secret(secret)
                .expect("an HMAC key of any length"),
            decoding: jsonwebtoken::DecodingKey::from_secret(secret)
                .expect("an HMAC key of any length"),
            service: service.to_string(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// A token for subject `who` granting `access`.
    pub fn issue(
        &self,
        who: &str,
        access: Vec<ResourceActions>,
        projects: Option<Vec<i64>>,
    ) -> (String, Claims) {
        let now = now_secs();
        let mut jti = [0u8; 12];
        getrandom::fill(&mut jti).expect("the system's random numbers");
        let claims = Claims {
            iss: ISSUER.into(),
            sub: who.to_string(),
            aud: self.service.clone(),
            exp: now + TOKEN_TTL_SECS,
            nbf: now.saturating_sub(10),
            iat: now,
            jti: hex::encode(jti),
            access,
            projects,
        };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .expect("HS256 signing cannot fail");
        (token, claims)
    }

    /// The claims of a valid, unexpired token of this service; `None` otherwise.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&[&self.service]);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        v.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// The `access` entry granting `actions` on repository `name`.
pub fn repository_access(name: &str, actions: Actions) -> ResourceActions {
    ResourceActions {
        kind: "repository".into(),
        name: name.into(),
        actions: actions.names(),
    }
}

/// The catalog's `access` entry.
pub fn catalog_access() -> ResourceActions {
    ResourceActions {
        kind: "registry".into(),
        name: "catalog".into(),
        actions: vec!["*".into()],
    }
}

/// Distinct repository names of some scopes, in order.
pub fn names(scopes: &[Scope]) -> BTreeSet<String> {
    scopes
        .iter()
        .filter_map(|s| match s {
            Scope::Repository { name, .. } => Some(name.clone()),
            Scope::Catalog => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_as_docker_sends_them() {
        let s = Scope::parse_all(
            "repository:team/app:pull,push registry:catalog:* repository:x:delete bogus",
        );
        assert_eq!(
            s,
            vec![
                Scope::Repository {
                    name: "team/app".into(),
                    actions: Actions {
                        pull: true,
                        push: true,
                        delete: false
                    }
                },
                Scope::Catalog,
                Scope::Repository {
                    name: "x".into(),
                    actions: Actions {
                        pull: false,
                        push: false,
                        delete: true
                    }
                },
            ]
        );
    }

    #[test]
    fn tokens_carry_what_was_granted_and_nothing_else() {
        let keys = TokenKeys::new(&[7u8; 32], "gantry");
        let (t, _) = keys.issue(
            "alice",
            vec![repository_access("dev/app", Actions::PULL)],
            None,
        );
        let c = keys.verify(&t).expect("valid");
        assert_eq!(c.sub, "alice");
        assert!(c.actions("dev/app").pull);
        assert!(!c.actions("dev/app").push);
        assert!(c.actions("dev/other").is_empty());
        // Another key, another service, a tampered token: refused.
        assert!(TokenKeys::new(&[8u8; 32], "gantry").verify(&t).is_none());
        assert!(TokenKeys::new(&[7u8; 32], "other").verify(&t).is_none());
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].replace('e', "f");
        assert!(keys.verify(&parts.join(".")).is_none());
    }
}
