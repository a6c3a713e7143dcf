//! A project's tag rules: immutability (a tag matching `immutable_tags` and none of
//! `mutable_tags` never points elsewhere nor goes away once pushed) and retention (per rule,
//! keep the last N tags pushed and those pulled lately; remove the other tags, and manifests
//! no tag names any more; garbage collection then frees their blobs).

use crate::error::{Code, RegistryError, Result};
use crate::{Authority, Registry};
use gantry_api::rest::{RegistryPolicy, RetentionReport};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;

/// A policy ready to match tags.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    immutable: GlobSet,
    mutable: GlobSet,
    policy: RegistryPolicy,
}

fn set(patterns: &[String], what: &str) -> std::result::Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| format!("{what} pattern '{p}': {e}"))?);
    }
    b.build().map_err(|e| format!("{what}: {e}"))
}

impl Rules {
    /// Checks a policy (bad globs are refused with the pattern).
    pub fn new(policy: RegistryPolicy) -> std::result::Result<Rules, String> {
        for r in &policy.retention {
            Glob::new(&r.tags).map_err(|e| format!("retention pattern '{}': {e}", r.tags))?;
            if r.keep_last.is_none() && r.pulled_within_days.is_none() {
                return Err(format!(
                    "the retention rule for '{}' keeps nothing: give keep_last or pulled_within_days",
                    r.tags
                ));
            }
        }
        Ok(Rules {
            immutable: set(&policy.immutable_tags, "immutable_tags")?,
            mutable: set(&policy.mutable_tags, "mutable_tags")?,
            policy,
        })
    }

    /// Reads the stored JSON (an unreadable one is no rules, and says so in the log).
    pub fn from_json(json: &str) -> Rules {
        serde_json::from_str::<RegistryPolicy>(json)
            .map_err(|e| e.to_string())
            .and_then(Rules::new)
            .unwrap_or_else(|e| {
                tracing::warn!("a registry policy cannot be read ({e}): no tag rules apply");
                Rules::default()
            })
    }

    pub fn immutable(&self, tag: &str) -> bool {
        self.immutable.is_match(tag) && !self.mutable.is_match(tag)
    }
}

fn immutable_error(name: &str, tag: &str) -> RegistryError {
    RegistryError::new(
        Code::Denied,
        format!("{name}:{tag} is immutable (the project's immutable_tags): push a new tag instead"),
    )
}

impl<A: Authority> Registry<A> {
    pub(crate) async fn rules_of(&self, project_id: i64) -> Result<Rules> {
        Ok(Rules::from_json(
            &self.inner.db.registry_settings(project_id).await?.policy,
        ))
    }

    /// Refuses to move or remove an immutable tag (setting it to the digest it has is fine).
    pub(crate) async fn check_tag_change(
        &self,
        repo: &gantry_store::db::RepositoryRow,
        tag: &str,
        new_digest: Option<&str>,
    ) -> Result<()> {
        let rules = self.rules_of(repo.project_id).await?;
        if !rules.immutable(tag) {
            return Ok(());
        }
        match self.inner.db.tag(repo.id, tag).await? {
            Some(t) if Some(t.digest.as_str()) != new_digest => {
                Err(immutable_error(&repo.name, tag))
            }
            _ => Ok(()),
        }
    }

    /// Refuses to remove a manifest an immutable tag names.
    pub(crate) async fn check_manifest_removal(
        &self,
        repo: &gantry_store::db::RepositoryRow,
        digest: &str,
    ) -> Result<()> {
        let rules = self.rules_of(repo.project_id).await?;
        for t in self.inner.db.tags_of_manifest(repo.id, digest).await? {
            if rules.immutable(&t) {
                return Err(immutable_error(&repo.name, &t));
            }
        }
        Ok(())
    }

    /// Applies a project's retention rules (or says what they would remove).
    pub async fn apply_retention(&self, project_id: i64, dry_run: bool) -> Result<RetentionReport> {
        let rules = self.rules_of(project_id).await?;
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        if rules.policy.retention.is_empty() {
            return Ok(report);
        }
        let now = gantry_store::db::now_ms();
        let db = &self.inner.db;
        for repo in db.repositories_of(project_id).await? {
            let tags = db.tags(repo.id, None, i64::MAX).await?;
            let mut remove: HashSet<String> = HashSet::new();
            let mut keep: HashSet<String> = HashSet::new();
            for rule in &rules.policy.retention {
                let glob = Glob::new(&rule.tags)
                    .expect("checked when the policy was read")
                    .compile_matcher();
                let mut matching: Vec<_> = tags
                    .iter()
                    .filter(|t| glob.is_match(&t.name) && !rules.immutable(&t.name))
                    .collect();
                matching.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.name.cmp(&a.name)));
                for (i, t) in matching.iter().enumerate() {
                    let recent = rule.keep_last.is_some_and(|n| i < n as usize);
                    let pulled = rule.pulled_within_days.is_some_and(|d| {
                        t.pulled_at
                            .is_some_and(|at| at >= now - i64::from(d) * 86_400_000)
                    });
                    if recent || pulled {
                        keep.insert(t.name.clone());
                    } else {
                        remove.insert(t.name.clone());
                    }
                }
            }
            // A tag any rule keeps stays.
            let mut gone: Vec<_> = tags
                .iter()
                .filter(|t| remove.contains(&t.name) && !keep.contains(&t.name))
                .collect();
            gone.sort_by(|a, b| a.name.cmp(&b.name));
            let mut digests = HashSet::new();
            for t in gone {
                report.removed.push(format!("{}:{}", repo.name, t.name));
                digests.insert(t.digest.clone());
                if !dry_run {
                    db.delete_tag(repo.id, &t.name).await?;
                }
            }
            if !dry_run {
                for d in digests {
                    if db.tags_of_manifest(repo.id, &d).await?.is_empty()
                        && db.delete_manifest(repo.id, &d).await?
                    {
                        report.manifests_removed += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_unless_allowed_to_move() {
        let r = Rules::new(RegistryPolicy {
            immutable_tags: vec!["v*".into(), "1.*".into()],
            mutable_tags: vec!["*-test".into(), "*-release".into()],
            retention: vec![],
        })
        .unwrap();
        assert!(r.immutable("v1.0"));
        assert!(r.immutable("1.4"));
        assert!(!r.immutable("1.4-test"));
        assert!(!r.immutable("latest"));
        assert!(
            Rules::new(RegistryPolicy {
                immutable_tags: vec!["[".into()],
                ..RegistryPolicy::default()
            })
            .is_err()
        );
    }
}
