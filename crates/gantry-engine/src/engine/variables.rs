//! CI/CD variables of the instance and of projects, and protected refs.
//!
//! A variable's value is sealed at rest, bound to its row (`variable:<id>`), and write-only:
//! the API takes it and never shows it back (not in answers, not in errors, not in the audit
//! log or the server's log). Changing a variable without a `value` keeps the stored one.
//!
//! When a job is handed to an agent, [`Engine::job_variables`] picks what it gets:
//!
//! 1. protected variables only when the pipeline's trigger is protected (see below);
//! 2. per key, the definition whose `environment_scope` matches the job's environment (a
//!    job without an environment only matches `*`) and is the most specific: an exact name
//!    beats a glob, a glob with more literal characters beats a shorter one, `*` is last;
//! 3. a project's definition of a key beats the instance's, whatever their scopes.
//!
//! The runner puts them above the pipeline file's variables and dotenv reports and below
//! the pipeline's own variables (trigger, schedule, API), as GitLab's precedence does;
//! masked ones are hidden in the log, file-type ones become a file whose path is the value.
//!
//! A pipeline is protected when its ref is the project's default branch (protected by
//! default, as GitLab protects it when a project is made) or matches one of the project's
//! protected patterns of its kind (`branch`, `tag` or `any`); `*` in a pattern matches any
//! characters, `/` included. A merge request from a fork is never protected.

use super::{Caller, Engine};
use crate::error::{EngineError, Result};
use gantry_api::agent::JobVariable;
use gantry_api::job::JobDefinition;
use gantry_api::rest::{self, ProtectedRefCreate, VariableWrite};
use gantry_pipeline::trigger::Trigger;
use gantry_store::db::{ProtectedRefRow, VariableFields, VariableRow, variable_aad};
use gantry_store::secrets::ExposeSecret;

/// GitLab's shortest masked value.
const MIN_MASKED: usize = 8;
/// The longest value taken (GitLab's is 10 000 characters; files get more room).
const MAX_VALUE: usize = 64 * 1024;
const MAX_KEY: usize = 255;
const MAX_SCOPE: usize = 255;
const MAX_DESCRIPTION: usize = 255;
const MAX_PATTERN: usize = 255;

impl Engine {
    /// The variables of a project (`Some`) or of the instance (`None`), without values.
    pub async fn variables(&self, project: Option<&str>) -> Result<Vec<rest::Variable>> {
        let project_id = self.variables_owner(project).await?;
        let rows = self.inner.db.variables(project_id).await?;
        Ok(rows.iter().map(variable_dto).collect())
    }

    /// Makes a variable of a project or of the instance; the answer has no value.
    pub async fn create_variable(
        &self,
        project: Option<&str>,
        req: VariableWrite,
        caller: &Caller,
    ) -> Result<rest::Variable> {
        let project_id = self.variables_owner(project).await?;
        let Some(key) = req.key.clone() else {
            return Err(EngineError::BadRequest(
                "a variable needs a `key` (letters, digits and _) and a `value`".into(),
            ));
        };
        let fields = checked_fields(
            VariableFields {
                key,
                masked: false,
                protected: false,
                variable_type: "env_var".into(),
                environment_scope: "*".into(),
                description: String::new(),
            },
            &req,
        )?;
        let Some(value) = req.value.as_deref() else {
            return Err(EngineError::BadRequest(format!(
                "variable {} needs a `value`",
                fields.key
            )));
        };
        check_value(&fields, value)?;
        let keys = &self.inner.keys;
        let id = self
            .inner
            .db
            .insert_variable(project_id, &fields, |id| {
                keys.seal(value.as_bytes(), &variable_aad(id))
            })
            .await?;
        tracing::info!(project = ?project_id, key = %fields.key, scope = %fields.environment_scope, "variable made");
        self.audit(
            caller,
            "variable.create",
            project_id,
            &format!("variable {}", fields.key),
            Some(describe(&fields)),
        )
        .await;
        self.one_variable(project_id, id).await
    }

    /// Changes a variable: fields absent from `req` stay, the value too.
    pub async fn update_variable(
        &self,
        project: Option<&str>,
        key: &str,
        scope: Option<&str>,
        req: VariableWrite,
        caller: &Caller,
    ) -> Result<rest::Variable> {
        let project_id = self.variables_owner(project).await?;
        let row = self.find_variable(project_id, key, scope).await?;
        let fields = checked_fields(
            VariableFields {
                key: req.key.clone().unwrap_or_else(|| row.key.clone()),
                masked: row.masked,
                protected: row.protected,
                variable_type: row.variable_type.clone(),
                environment_scope: row.environment_scope.clone(),
                description: row.description.clone(),
            },
            &req,
        )?;
        let sealed = match req.value.as_deref() {
            Some(value) => {
                check_value(&fields, value)?;
                Some(
                    self.inner
                        .keys
                        .seal(value.as_bytes(), &variable_aad(row.id)),
                )
            }
            None => {
                if fields.masked && !row.masked {
                    // The stored value must be long enough to mask.
                    let plain = self.open_variable(&row)?;
                    check_value(&fields, plain.expose_secret())?;
                }
                None
            }
        };
        let replaced = sealed.is_some();
        if !self
            .inner
            .db
            .update_variable(row.id, &fields, sealed)
            .await?
        {
            return Err(EngineError::not_found(format!("variable {key}")));
        }
        let mut details = describe(&fields);
        if replaced {
            details.push_str(", value replaced");
        }
        self.audit(
            caller,
            "variable.update",
            project_id,
            &format!("variable {}", fields.key),
            Some(details),
        )
        .await;
        self.one_variable(project_id, row.id).await
    }

    /// Deletes a variable.
    pub async fn delete_variable(
        &self,
        project: Option<&str>,
        key: &str,
        scope: Option<&str>,
        caller: &Caller,
    ) -> Result<()> {
        let project_id = self.variables_owner(project).await?;
        let row = self.find_variable(project_id, key, scope).await?;
        if !self.inner.db.delete_variable(row.id).await? {
            return Err(EngineError::not_found(format!("variable {key}")));
        }
        self.audit(
            caller,
            "variable.delete",
            project_id,
            &format!("variable {key}"),
            Some(format!("scope {}", row.environment_scope)),
        )
        .await;
        Ok(())
    }

    /// A project's protected patterns.
    pub async fn protected_refs(&self, project: &str) -> Result<Vec<rest::ProtectedRef>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.protected_refs(p.id).await?;
        Ok(rows.into_iter().map(protected_ref_dto).collect())
    }

    /// Protects a branch or tag pattern of a project.
    pub async fn create_protected_ref(
        &self,
        project: &str,
        req: ProtectedRefCreate,
        caller: &Caller,
    ) -> Result<rest::ProtectedRef> {
        let p = self.find_project_row(project).await?;
        let pattern = req.pattern.trim();
        let kind = req.kind.as_deref().unwrap_or("any");
        if !matches!(kind, "branch" | "tag" | "any") {
            return Err(EngineError::BadRequest(format!(
                "kind '{kind}' is not known: use branch, tag or any"
            )));
        }
        let good = !pattern.is_empty()
            && pattern.len() <= MAX_PATTERN
            && !pattern.starts_with("refs/")
            && !pattern
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "~^:?[\\".contains(c));
        if !good {
            return Err(EngineError::BadRequest(format!(
                "a protected pattern is a branch or tag name (without refs/heads/), at most \
                 {MAX_PATTERN} bytes, where * matches any characters: main, release/*, v*"
            )));
        }
        let id = self
            .inner
            .db
            .insert_protected_ref(p.id, pattern, kind)
            .await?;
        self.audit(
            caller,
            "protected_ref.create",
            Some(p.id),
            &format!("protected ref {pattern}"),
            Some(format!("kind {kind}")),
        )
        .await;
        let row = self
            .inner
            .db
            .protected_refs(p.id)
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| EngineError::not_found(format!("protected ref {id}")))?;
        Ok(protected_ref_dto(row))
    }

    /// Unprotects a pattern.
    pub async fn delete_protected_ref(
        &self,
        project: &str,
        id: i64,
        caller: &Caller,
    ) -> Result<()> {
        let p = self.find_project_row(project).await?;
        if !self.inner.db.delete_protected_ref(p.id, id).await? {
            return Err(EngineError::not_found(format!(
                "protected ref {id} of {}",
                p.path
            )));
        }
        self.audit(
            caller,
            "protected_ref.delete",
            Some(p.id),
            &format!("protected ref {id}"),
            None,
        )
        .await;
        Ok(())
    }

    /// A project's protected patterns, for [`ref_is_protected`].
    pub(super) async fn protected_patterns(&self, project_id: i64) -> Result<Vec<ProtectedRefRow>> {
        Ok(self.inner.db.protected_refs(project_id).await?)
    }

    /// The CI/CD variables a job gets (see the module's doc), opened.
    pub(super) async fn job_variables(
        &self,
        project_id: i64,
        trigger: &Trigger,
        def: &JobDefinition,
    ) -> Result<Vec<JobVariable>> {
        let rows = self.inner.db.variables_for_project(project_id).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let env = def
            .environment
            .as_ref()
            .map(|e| environment_name(&e.name, trigger, def));
        let chosen = choose(&rows, env.as_deref(), trigger.protected);
        let mut out = Vec::with_capacity(chosen.len());
        for row in chosen {
            let plain = self.open_variable(row)?;
            out.push(JobVariable {
                key: row.key.clone(),
                value: plain.expose_secret().to_string(),
                masked: row.masked,
                file: row.variable_type == "file",
            });
        }
        Ok(out)
    }

    fn open_variable(&self, row: &VariableRow) -> Result<gantry_store::secrets::SecretString> {
        self.inner
            .keys
            .open(&row.value, &variable_aad(row.id))
            .map_err(|e| {
                EngineError::Internal(format!(
                    "variable {} (id {}) cannot be opened: {e}; was the secrets key file replaced?",
                    row.key, row.id
                ))
            })
    }

    /// The project id of a variables path (None: the instance).
    async fn variables_owner(&self, project: Option<&str>) -> Result<Option<i64>> {
        match project {
            Some(p) => Ok(Some(self.find_project_row(p).await?.id)),
            None => Ok(None),
        }
    }

    async fn find_variable(
        &self,
        project_id: Option<i64>,
        key: &str,
        scope: Option<&str>,
    ) -> Result<VariableRow> {
        let rows: Vec<VariableRow> = self
            .inner
            .db
            .variables(project_id)
            .await?
            .into_iter()
            .filter(|r| r.key == key && scope.is_none_or(|s| r.environment_scope == s))
            .collect();
        match rows.len() {
            0 => Err(EngineError::not_found(match scope {
                Some(s) => format!("variable {key} with environment scope '{s}'"),
                None => format!("variable {key}"),
            })),
            1 => Ok(rows.into_iter().next().expect("one")),
            _ => Err(EngineError::Conflict(format!(
                "variable {key} has several environment scopes: name one with \
                 ?environment_scope=…"
            ))),
        }
    }

    async fn one_variable(&self, project_id: Option<i64>, id: i64) -> Result<rest::Variable> {
        self.inner
            .db
            .variables(project_id)
            .await?
            .iter()
            .find(|r| r.id == id)
            .map(variable_dto)
            .ok_or_else(|| EngineError::not_found(format!("variable {id}")))
    }
}

/// `fields` with what `req` changes, checked. Errors never quote the value.
fn checked_fields(mut f: VariableFields, req: &VariableWrite) -> Result<VariableFields> {
    if let Some(m) = req.masked {
        f.masked = m;
    }
    if let Some(p) = req.protected {
        f.protected = p;
    }
    if let Some(t) = &req.variable_type {
        f.variable_type = t.clone();
    }
    if let Some(s) = &req.environment_scope {
        f.environment_scope = s.trim().to_string();
    }
    if let Some(d) = &req.description {
        f.description = d.trim().to_string();
    }
    let key_ok = f.key.len() <= MAX_KEY && {
        let mut chars = f.key.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !key_ok {
        let shown: String = f.key.chars().take(64).filter(|c| !c.is_control()).collect();
        return Err(EngineError::BadRequest(format!(
            "variable name '{shown}' is not valid: use letters, digits and _ (at most \
             {MAX_KEY}), not starting with a digit"
        )));
    }
    if !matches!(f.variable_type.as_str(), "env_var" | "file") {
        return Err(EngineError::BadRequest(format!(
            "variable {}: variable_type is env_var or file",
            f.key
        )));
    }
    let scope_ok = !f.environment_scope.is_empty()
        && f.environment_scope.len() <= MAX_SCOPE
        && f.environment_scope
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_/.${}*".contains(c));
    if !scope_ok {
        return Err(EngineError::BadRequest(format!(
            "variable {}: environment_scope is `*`, an environment's name or a glob such as \
             review/* (letters, digits, spaces and - _ / . $ {{ }} *, at most {MAX_SCOPE} bytes)",
            f.key
        )));
    }
    if f.description.len() > MAX_DESCRIPTION || f.description.chars().any(char::is_control) {
        return Err(EngineError::BadRequest(format!(
            "variable {}: the description is one line of at most {MAX_DESCRIPTION} bytes",
            f.key
        )));
    }
    Ok(f)
}

/// The value's own rules; the message names the key and the rule, never the value.
fn check_value(f: &VariableFields, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(EngineError::BadRequest(format!(
            "variable {}: the value is longer than {MAX_VALUE} bytes",
            f.key
        )));
    }
    if value.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "variable {}: the value has a NUL byte, which no environment can hold",
            f.key
        )));
    }
    if f.masked && value.chars().count() < MIN_MASKED {
        return Err(EngineError::BadRequest(format!(
            "variable {}: a masked value has at least {MIN_MASKED} characters (a shorter one \
             would hide ordinary words of the log); use a longer value or masked: false",
            f.key
        )));
    }
    Ok(())
}

/// What the audit log keeps of a variable: never its value.
fn describe(f: &VariableFields) -> String {
    format!(
        "scope {}, type {}, masked {}, protected {}",
        f.environment_scope, f.variable_type, f.masked, f.protected
    )
}

fn variable_dto(r: &VariableRow) -> rest::Variable {
    rest::Variable {
        id: r.id,
        project_id: r.project_id,
        key: r.key.clone(),
        masked: r.masked,
        protected: r.protected,
        variable_type: r.variable_type.clone(),
        environment_scope: r.environment_scope.clone(),
        description: r.description.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn protected_ref_dto(r: ProtectedRefRow) -> rest::ProtectedRef {
    rest::ProtectedRef {
        id: r.id,
        pattern: r.pattern,
        kind: r.kind,
        created_at: r.created_at,
    }
}

/// The job's environment name with the variables it names expanded (`review/$CI_COMMIT_REF_SLUG`).
fn environment_name(name: &str, trigger: &Trigger, def: &JobDefinition) -> String {
    if !name.contains('$') {
        return name.to_string();
    }
    let predefined = gantry_pipeline::vars::pipeline_variables(trigger);
    gantry_pipeline::vars::expand(name, &|n| {
        trigger
            .variables
            .iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                def.variables
                    .iter()
                    .rev()
                    .find(|v| v.name == n)
                    .map(|v| v.value.clone())
            })
            .or_else(|| {
                predefined
                    .iter()
                    .find(|v| v.name == n)
                    .map(|v| v.value.clone())
            })
    })
}

/// `*` matches any characters (`/` included); everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// How specific a matching scope is: higher wins.
fn specificity(scope: &str) -> (bool, usize) {
    (
        !scope.contains('*'),
        scope.chars().filter(|&c| c != '*').count(),
    )
}

/// The rows a job gets, per key: see the module's doc.
pub(crate) fn choose<'a>(
    rows: &'a [VariableRow],
    environment: Option<&str>,
    protected: bool,
) -> Vec<&'a VariableRow> {
    let fits = |r: &VariableRow| {
        (protected || !r.protected)
            && match environment {
                Some(env) => glob_match(&r.environment_scope, env),
                None => r.environment_scope == "*",
            }
    };
    let mut best: Vec<&VariableRow> = Vec::new();
    for r in rows.iter().filter(|r| fits(r)) {
        let rank = |x: &VariableRow| (x.project_id.is_some(), specificity(&x.environment_scope));
        match best.iter_mut().find(|b| b.key == r.key) {
            Some(b) => {
                if rank(r) > rank(b) {
                    *b = r;
                }
            }
            None => best.push(r),
        }
    }
    best
}

/// Whether `ref_name` (a branch, or a tag when `is_tag`) is protected: the default branch,
/// or one of the patterns of its kind.
pub(crate) fn ref_is_protected(
    patterns: &[ProtectedRefRow],
    default_branch: &str,
    ref_name: &str,
    is_tag: bool,
) -> bool {
    let name = ref_name
        .strip_prefix("refs/heads/")
        .or_else(|| ref_name.strip_prefix("refs/tags/"))
        .unwrap_or(ref_name);
    if !is_tag && name == default_branch {
        return true;
    }
    patterns.iter().any(|p| {
        let kind_fits = match p.kind.as_str() {
            "branch" => !is_tag,
            "tag" => is_tag,
            _ => true,
        };
        kind_fits && glob_match(&p.pattern, name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, project: Option<i64>, key: &str, scope: &str, protected: bool) -> VariableRow {
        VariableRow {
            id,
            project_id: project,
            key: key.into(),
            value: String::new(),
            masked: false,
            protected,
            variable_type: "env_var".into(),
            environment_scope: scope.into(),
            description: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn globs_match_any_characters() {
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("release/*", "release/1.0"));
        assert!(!glob_match("release/*", "releases/1.0"));
        assert!(glob_match("v*", "v1.2.3"));
        assert!(glob_match("*-stable", "prod/app-stable"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXcYYb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "main2"));
    }

    #[test]
    fn the_most_specific_scope_wins_and_projects_beat_the_instance() {
        let rows = vec![
            row(1, None, "A", "*", false),
            row(2, Some(1), "A", "production", false),
            row(3, Some(1), "B", "*", false),
            row(4, Some(1), "B", "review/*", false),
            row(5, Some(1), "B", "review/app-*", false),
            row(6, None, "C", "review/app-1", false),
            row(7, Some(1), "C", "*", false),
            row(8, Some(1), "D", "*", true),
        ];
        let ids = |env: Option<&str>, protected| {
            let mut v: Vec<i64> = choose(&rows, env, protected).iter().map(|r| r.id).collect();
            v.sort();
            v
        };
        assert_eq!(ids(None, false), vec![1, 3, 7]);
        assert_eq!(ids(None, true), vec![1, 3, 7, 8]);
        assert_eq!(ids(Some("production"), false), vec![2, 3, 7]);
        assert_eq!(ids(Some("review/app-1"), false), vec![1, 5, 7]);
        assert_eq!(ids(Some("review/x"), false), vec![1, 4, 7]);
    }

    #[test]
    fn the_default_branch_and_patterns_are_protected() {
        let p = |pattern: &str, kind: &str| ProtectedRefRow {
            id: 1,
            project_id: 1,
            pattern: pattern.into(),
            kind: kind.into(),
            created_at: 0,
        };
        let pats = vec![p("release/*", "branch"), p("v*", "tag"), p("stable", "any")];
        assert!(ref_is_protected(&pats, "main", "main", false));
        assert!(!ref_is_protected(&pats, "main", "main", true));
        assert!(ref_is_protected(&pats, "main", "release/1.0", false));
        assert!(!ref_is_protected(&pats, "main", "release/1.0", true));
        assert!(ref_is_protected(&pats, "main", "v1.0", true));
        assert!(!ref_is_protected(&pats, "main", "v1.0", false));
        assert!(ref_is_protected(&pats, "main", "refs/heads/stable", false));
        assert!(!ref_is_protected(&pats, "main", "feature", false));
    }
}
