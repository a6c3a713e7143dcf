//! `gantry plan`: the jobs that would run for an event, stage by stage, with their `needs`
//! and the rule that let each one in (or kept it out).

use super::{Format, Source, parse_var};
use anyhow::{Result, bail};
use gantry_pipeline::diag::Diagnostics;
use gantry_pipeline::plan::{self, Plan};
use gantry_pipeline::trigger::{MergeRequest, Source as EventSource, Trigger};
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct TriggerArgs {
    /// The event: push, web, api, schedule, trigger, merge_request_event, pipeline, …
    #[arg(long, default_value = "push")]
    pub source: String,
    /// The branch (default: the current one).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Plan a tag pipeline for this tag.
    #[arg(long, conflicts_with = "git_ref")]
    pub tag: Option<String>,
    /// A pipeline variable, NAME=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// A changed file, for `rules:changes` (repeatable; without any, changes count as unknown).
    #[arg(long = "changed")]
    pub changed: Vec<String>,
    /// For merge_request_event: the target branch.
    #[arg(long)]
    pub mr_target: Option<String>,
    /// Mark the ref as protected.
    #[arg(long)]
    pub protected: bool,
}

impl TriggerArgs {
    pub fn trigger(&self, base: Trigger) -> Result<Trigger> {
        let mut t = base;
        let Some(src) = EventSource::parse(&self.source) else {
            let all: Vec<&str> = EventSource::ALL.iter().map(|s| s.as_str()).collect();
            bail!(
                "unknown --source '{}': use one of {}",
                self.source,
                all.join(", ")
            );
        };
        t.source = src;
        if let Some(tag) = &self.tag {
            t.ref_name = tag.clone();
            t.is_tag = true;
        } else if let Some(r) = &self.git_ref {
            t.ref_name = r.clone();
        }
        t.protected = self.protected;
        t.variables = self.vars.clone();
        if !self.changed.is_empty() {
            t.changed_files = Some(self.changed.clone());
        }
        if src == EventSource::MergeRequestEvent {
            t.merge_request = Some(MergeRequest {
                iid: 1,
                id: 1,
                title: t
                    .commit
                    .message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                source_branch: t.ref_name.clone(),
                source_branch_sha: t.commit.sha.clone(),
                target_branch: self
                    .mr_target
                    .clone()
                    .unwrap_or_else(|| t.project.default_branch.clone()),
                source_project_path: t.project.path.clone(),
                source_project_id: t.project.id,
                ..MergeRequest::default()
            });
        }
        Ok(t)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub trigger: TriggerArgs,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Loads and plans; prints diagnostics and returns `None` when the file has errors.
pub fn load_and_plan(
    source: &Source,
    trigger: &Trigger,
) -> Result<Result<(Plan, Diagnostics), ExitCode>> {
    let pre = gantry_pipeline::vars::pipeline_variables(trigger);
    let lookup = |n: &str| {
        trigger
            .variables
            .iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| pre.iter().find(|v| v.name == n).map(|v| v.value.clone()))
    };
    let loaded = source.load(&lookup)?;
    let mut diags = loaded.diagnostics;
    let Some(pipeline) = loaded.pipeline.filter(|_| !diags.has_errors()) else {
        eprint!("{}", diags.render(&loaded.sources));
        eprintln!("{} error(s): nothing was planned", diags.error_count());
        return Ok(Err(ExitCode::from(1)));
    };
    // `rules:changes:compare_to`: the diff between each named ref and HEAD, from git.
    let mut trigger = trigger.clone();
    let repo = source.repo();
    for r in pipeline.compare_to_refs() {
        let r = gantry_pipeline::vars::expand(&r, &lookup);
        match repo.changed_since(&r) {
            Some(files) => {
                trigger.changed_since.insert(r, files);
            }
            None => eprintln!(
                "warning: rules:changes:compare_to names '{r}', which this repository does not have: those rules match nothing"
            ),
        }
    }
    let plan = plan::compile(&pipeline, &trigger, &mut diags);
    if diags.has_errors() {
        eprint!("{}", diags.render(&loaded.sources));
        return Ok(Err(ExitCode::from(1)));
    }
    Ok(Ok((plan, diags)))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let repo = a.source.repo();
    let trigger = a.trigger.trigger(repo.trigger_base())?;
    let (plan, _) = match load_and_plan(&a.source, &trigger)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Format::Text => print!("{}", render(&plan, &trigger)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn render(plan: &Plan, trigger: &Trigger) -> String {
    let what = if trigger.is_tag {
        format!("tag {}", trigger.ref_name)
    } else {
        format!("ref {}", trigger.ref_name)
    };
    format!(
        "pipeline for {what} ({})\n{}",
        trigger.source,
        plan::render(plan)
    )
}
