//! Linting a pipeline file that is not committed (the web UI's lint page): the text is
//! loaded, resolved (its includes read from the project's mirror at the ref's commit) and
//! planned for a ref and a source, exactly as a pipeline of that ref would be, and the
//! diagnostics come back with their lines. Nothing is fetched or stored.

use super::{Engine, blocking};
use crate::error::Result;
use crate::git::MirrorFetcher;
use gantry_pipeline::plan::Plan;
use gantry_pipeline::trigger::{Source, Trigger, UserInfo};

/// One diagnostic, placed.
#[derive(Debug, Clone)]
pub struct LintDiagnostic {
    pub error: bool,
    pub code: String,
    pub message: String,
    pub help: Option<String>,
    /// The file it is in (the pasted file's name, or an included file's).
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// What linting found.
#[derive(Debug)]
pub struct LintReport {
    /// The commit includes were read at, when the ref was found in the mirror.
    pub sha: Option<String>,
    pub diagnostics: Vec<LintDiagnostic>,
    /// The diagnostics as the command line shows them.
    pub rendered: String,
    /// The plan, when there were no errors.
    pub plan: Option<Plan>,
}

impl Engine {
    /// Lints `text` as the pipeline file of a project, planned for `git_ref` and `source`.
    /// `user` is who asks (GITLAB_USER_LOGIN in rules).
    pub async fn lint(
        &self,
        project_id: i64,
        git_ref: &str,
        source: Source,
        text: String,
        user: &str,
    ) -> Result<LintReport> {
        let project = self.project_row(project_id).await?;
        let protected = self.protected_patterns(project_id).await?;
        let this = self.clone();
        let git_ref = if git_ref.trim().is_empty() {
            project.default_branch.clone()
        } else {
            git_ref.trim().to_string()
        };
        let mut trigger = Trigger {
            source,
            ref_name: git_ref.clone(),
            protected: false,
            project: self.project_info(&project),
            user: UserInfo {
                login: user.to_string(),
                name: user.to_string(),
                ..UserInfo::default()
            },
            ..Trigger::default()
        };
        let name = project
            .pipeline_file
            .clone()
            .unwrap_or_else(|| ".gantry.yml".into());
        blocking(move || {
            let m = this.mirror_of(&project)?;
            let sha = m.resolve(&git_ref).ok().flatten();
            if let Some(sha) = &sha {
                let commit = m.commit_info(sha)?;
                trigger.commit = commit.to_trigger(None);
                trigger.is_tag = m.is_tag(&git_ref).unwrap_or(false);
            }
            trigger.protected = super::variables::ref_is_protected(
                &protected,
                &project.default_branch,
                &git_ref,
                trigger.is_tag,
            );
            trigger.context.config_path = Some(name.clone());
            let lookup = |path: &str| {
                let handle = tokio::runtime::Handle::current();
                let row = handle
                    .block_on(this.inner.db.project_by_path(path))
                    .ok()
                    .flatten()?;
                this.mirror_of(&row).ok()
            };
            let at = sha.clone().unwrap_or_else(|| "0".repeat(40));
            let fetcher = MirrorFetcher::new(&m, at, &lookup);
            let vars_list = gantry_pipeline::vars::pipeline_variables(&trigger);
            let vars = |n: &str| {
                vars_list
                    .iter()
                    .find(|v| v.name == n)
                    .map(|v| v.value.clone())
            };
            let loaded = gantry_pipeline::load(&name, &text, &fetcher, &vars);
            let mut diags = loaded.diagnostics;
            let mut plan = None;
            if let Some(p) = loaded.pipeline.as_ref().filter(|_| !diags.has_errors()) {
                if p.uses_exists()
                    && let Some(sha) = &sha
                {
                    trigger.files = Some(m.list_files(sha)?);
                }
                let mut more = gantry_pipeline::diag::Diagnostics::new();
                let compiled = gantry_pipeline::plan::compile(p, &trigger, &mut more);
                let failed = more.has_errors();
                diags.extend(more);
                diags.sort();
                if !failed {
                    plan = Some(compiled);
                }
            }
            let diagnostics = diags
                .located(&loaded.sources)
                .into_iter()
                .map(|l| LintDiagnostic {
                    error: l.diagnostic.is_error(),
                    code: l.diagnostic.code.to_string(),
                    message: l.diagnostic.message.clone(),
                    help: l.diagnostic.help.clone(),
                    file: l.file.map(str::to_string),
                    line: l.line,
                    column: l.column,
                })
                .collect();
            let rendered = diags.render(&loaded.sources);
            Ok(LintReport {
                sha,
                diagnostics,
                rendered,
                plan,
            })
        })
        .await
    }
}
