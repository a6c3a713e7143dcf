//! `compile(pipeline, trigger) → Plan`: which jobs run for this event, with what settings, in
//! what order, and why.
//!
//! The order of evaluation is GitLab's: `workflow:rules` decide whether there is a pipeline at
//! all (and may set variables and its name); then each job's `rules` (or legacy
//! `only`/`except`) decide whether it is in, with which `when`, `allow_failure`, variables
//! and `needs`; `parallel` and `parallel:matrix` expand jobs into instances with GitLab's
//! names (`test 1/3`, `test: [linux, 1.80]`); finally the DAG is built from stage order and
//! `needs`, and `needs` on jobs that are not in the pipeline are reported.
//!
//! The result, a [`Plan`], is what every consumer runs: `gantry run`, `gantry plan`, the
//! server and the UI's lint page.

mod rules;

pub(crate) use rules::{fnmatch_glob, ref_regex};

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{AllowFailure, Job, Parallel, Pipeline, When, duration};
use crate::trigger::Trigger;
use crate::vars;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A variable as the plan carries it: not yet expanded (expansion happens in the job, where
/// the job-only variables exist too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVar {
    pub name: String,
    pub value: String,
    /// `false` for `expand: false` variables.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `workflow:name`, expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why the pipeline is created, or why not.
    pub workflow: String,
    /// False when `workflow:rules` prevent the pipeline or no job is left.
    pub created: bool,
    /// The stages that have jobs, in order.
    pub stages: Vec<String>,
    pub jobs: Vec<PlannedJob>,
    /// Jobs left out, with the reason.
    pub excluded: Vec<Excluded>,
    /// Pipeline-level variables: predefined, global YAML (after `workflow:rules:variables`)
    /// and the trigger's, lowest precedence first.
    #[serde(skip)]
    pub variables: Vec<PlanVar>,
    /// The trigger's variables alone (they override every job's YAML variables).
    #[serde(skip)]
    pub trigger_variables: Vec<PlanVar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_cancel: Option<crate::model::AutoCancel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedJob {
    /// The instance name (`test 1/3`, `test: [linux, 1.80]`, or the job's name).
    pub name: String,
    /// The job's name in the file.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
    pub stage: String,
    #[serde(skip)]
    pub stage_index: usize,
    pub when: When,
    pub allow_failure: AllowFailure,
    /// Seconds to wait for `when: delayed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_in: Option<u64>,
    pub interruptible: bool,
    /// `None`: the job waits for all jobs of earlier stages. `Some`: only for these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<PlannedNeed>>,
    /// What must finish before the job starts.
    pub after: After,
    /// Whose artifacts are restored into the job.
    pub artifacts_from: ArtifactsFrom,
    /// `CI_NODE_INDEX` / `CI_NODE_TOTAL` for `parallel` jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<(u32, u32)>,
    /// Variables set by this job: global YAML (if inherited), job YAML, matrix values and
    /// the matching rule's, lowest precedence first.
    pub variables: Vec<PlanVar>,
    /// Why the job is in (which rule matched).
    pub reason: String,
    /// The job's resolved settings.
    #[serde(skip)]
    pub job: Job,
}

/// What must finish before a job starts.
///
/// Stage order is kept as one rule rather than a list per job: a job of stage *k* waits for
/// every job of the stages before it, and listing them all would make a plan quadratic in the
/// number of jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// Every job of the earlier stages (no `needs`).
    EarlierStages,
    /// Exactly these jobs (indexes into `Plan::jobs`), from `needs`.
    Jobs(Vec<usize>),
}

/// Whose artifacts a job receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsFrom {
    /// Every job it waits for (no `dependencies`, and every need has `artifacts: true`).
    All,
    /// Only these jobs (by instance name).
    Jobs(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNeed {
    pub job: String,
    pub artifacts: bool,
    pub optional: bool,
}

impl Plan {
    /// The variables a job sees before the job-only ones are added, lowest precedence first:
    /// predefined, then the job's YAML-level set, then the trigger's.
    pub fn job_variables(&self, job: &PlannedJob) -> Vec<PlanVar> {
        let mut out: Vec<PlanVar> = self
            .variables
            .iter()
            .filter(|v| {
                v.name.starts_with("CI_") || v.name.starts_with("GITLAB_") || v.name == "CI"
            })
            .cloned()
            .collect();
        for v in job.variables.iter().chain(self.trigger_variables.iter()) {
            set(&mut out, &v.name, &v.value, v.raw);
        }
        out
    }

    /// Indexes of the jobs job `i` waits for.
    pub fn dependencies(&self, i: usize) -> Vec<usize> {
        match &self.jobs[i].after {
            After::Jobs(list) => list.clone(),
            After::EarlierStages => {
                let k = self.jobs[i].stage_index;
                (0..self.jobs.len())
                    .filter(|&j| self.jobs[j].stage_index < k)
                    .collect()
            }
        }
    }

    /// Names of the jobs whose artifacts job `i` receives.
    pub fn artifact_sources(&self, i: usize) -> Vec<String> {
        match &self.jobs[i].artifacts_from {
            ArtifactsFrom::Jobs(list) => list.clone(),
            ArtifactsFrom::All => self
                .dependencies(i)
                .into_iter()
                .map(|j| self.jobs[j].name.clone())
                .collect(),
        }
    }

    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Every job the named jobs need, transitively, plus themselves (for `gantry run JOB`).
    pub fn closure(&self, names: &[String]) -> Vec<usize> {
        let mut keep = vec![false; self.jobs.len()];
        let mut stack: Vec<usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| names.contains(&j.name) || names.contains(&j.base))
            .map(|(i, _)| i)
            .collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut keep[i], true) {
                continue;
            }
            stack.extend(self.dependencies(i));
        }
        keep.iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Compiles the pipeline for one trigger. Errors (e.g. `needs` on a job that rules left
/// out) are returned as diagnostics; the plan is still returned for display.
pub fn compile(p: &Pipeline, trigger: &Trigger, diags: &mut Diagnostics) -> Plan {
    let predefined: Vec<PlanVar> = vars::pipeline_variables(trigger)
        .into_iter()
        .map(|v| PlanVar {
            name: v.name,
            value: v.value,
            raw: false,
        })
        .collect();
    let trigger_vars: Vec<PlanVar> = trigger
        .variables
        .iter()
        .map(|(k, v)| PlanVar {
            name: k.clone(),
            value: v.clone(),
            raw: false,
        })
        .collect();
    let mut globals: Vec<PlanVar> = p
        .variables
        .iter()
        .map(|v| PlanVar {
            name: v.name.clone(),
            value: v.value.clone(),
            raw: !v.expand,
        })
        .collect();

    let mut plan = Plan {
        name: None,
        workflow: String::new(),
        created: true,
        stages: Vec::new(),
        jobs: Vec::new(),
        excluded: Vec::new(),
        variables: Vec::new(),
        trigger_variables: trigger_vars.clone(),
        auto_cancel: p.workflow.auto_cancel.clone(),
    };

    // workflow:rules
    {
        let layered = Layers(vec![&predefined, &globals, &trigger_vars]);
        let lookup = |n: &str| layered.get(n);
        match &p.workflow.rules {
            None => plan.workflow = "no workflow:rules: the pipeline runs".into(),
            Some(rules_list) => match rules::first_match(rules_list, &lookup, trigger) {
                Some((i, rule)) if rule.when != Some(When::Never) => {
                    plan.workflow =
                        format!("workflow rule {} matched{}", i + 1, rules::describe(rule));
                    for v in &rule.variables {
                        set(&mut globals, &v.name, &v.value, !v.expand);
                    }
                    // The rule's settings override the workflow's, setting by setting.
                    if let Some(ac) = &rule.auto_cancel {
                        let base = plan.auto_cancel.take().unwrap_or_default();
                        plan.auto_cancel = Some(crate::model::AutoCancel {
                            on_new_commit: ac.on_new_commit.clone().or(base.on_new_commit),
                            on_job_failure: ac.on_job_failure.clone().or(base.on_job_failure),
                        });
                    }
                }
                Some((i, rule)) => {
                    plan.workflow = format!(
                        "workflow rule {} matched with `when: never`{}: no pipeline",
                        i + 1,
                        rules::describe(rule)
                    );
                    plan.created = false;
                }
                None => {
                    plan.workflow = "no workflow rule matched: no pipeline".into();
                    plan.created = false;
                }
            },
        }
    }
    let layered = Layers(vec![&predefined, &globals, &trigger_vars]);
    if let Some(name) = &p.workflow.name {
        // Leading and trailing spaces are removed; an empty name is no name.
        let name = vars::expand(name, &|n| layered.get(n)).trim().to_string();
        plan.name = (!name.is_empty()).then_some(name);
    }
    plan.variables = predefined
        .iter()
        .chain(globals.iter())
        .chain(trigger_vars.iter())
        .cloned()
        .collect();
    if !plan.created {
        plan.excluded = p
            .jobs
            .keys()
            .map(|n| Excluded {
                name: n.clone(),
                reason: "the pipeline is not created".into(),
            })
            .collect();
        return plan;
    }

    // Jobs: expand instances, evaluate rules.
    for job in p.jobs.values() {
        for inst in instances(job) {
            let mut jv: Vec<PlanVar> = Vec::new();
            for g in &globals {
                if job.inherit_variables.allows(&g.name) {
                    jv.push(g.clone());
                }
            }
            for v in &job.variables {
                set(&mut jv, &v.name, &v.value, !v.expand);
            }
            for (k, v) in &inst.matrix {
                set(&mut jv, k, v, false);
            }
            let decision = {
                let layers = Layers(vec![&predefined, &jv, &trigger_vars]);
                let lookup = |n: &str| layers.get(n);
                rules::decide(job, &lookup, trigger, p.workflow.rules.is_some())
            };
            match decision {
                rules::Decision::Out(reason) => plan.excluded.push(Excluded {
                    name: inst.name.clone(),
                    reason,
                }),
                rules::Decision::In {
                    when,
                    allow_failure,
                    start_in,
                    variables,
                    needs,
                    interruptible,
                    reason,
                } => {
                    for v in &variables {
                        set(&mut jv, &v.name, &v.value, !v.expand);
                    }
                    let allow_failure = match allow_failure {
                        Some(b) => AllowFailure::Bool(b),
                        None => match &job.allow_failure {
                            Some(a) => a.clone(),
                            // GitLab's default: a job whose own `when` is `manual` may fail;
                            // `rules: - when: manual` does not change that default (false).
                            None => AllowFailure::Bool(job.when == When::Manual),
                        },
                    };
                    let stage_index = p.stages.iter().position(|s| *s == job.stage).unwrap_or(0);
                    plan.jobs.push(PlannedJob {
                        name: inst.name,
                        base: if inst.node.is_some() {
                            job.name.clone()
                        } else {
                            String::new()
                        },
                        stage: job.stage.clone(),
                        stage_index,
                        when,
                        allow_failure,
                        start_in: start_in.as_deref().and_then(duration::parse),
                        interruptible: interruptible.or(job.interruptible).unwrap_or(false),
                        needs: needs.map(|ns| {
                            ns.iter()
                                .map(|n| PlannedNeed {
                                    job: n.job.clone(),
                                    artifacts: n.artifacts,
                                    optional: n.optional,
                                })
                                .collect()
                        }),
                        after: After::EarlierStages,
                        artifacts_from: ArtifactsFrom::All,
                        node: inst.node,
                        variables: jv,
                        reason,
                        job: job.clone(),
                    });
                }
            }
        }
    }
    link(p, &mut plan, diags);
    let mut stages: Vec<(usize, String)> = plan
        .jobs
        .iter()
        .map(|j| (j.stage_index, j.stage.clone()))
        .collect();
    stages.sort();
    stages.dedup();
    plan.stages = stages.into_iter().map(|(_, s)| s).collect();
    if plan.jobs.is_empty() {
        plan.created = false;
        plan.workflow
            .push_str("; but no job is left after rules: no pipeline");
    } else if plan.stages.iter().all(|s| s == ".pre" || s == ".post") {
        // GitLab: "If a pipeline contains only jobs in the .pre or .post stages, it does not
        // run."
        plan.created = false;
        plan.workflow
            .push_str("; but only .pre and .post jobs are left: no pipeline");
        let left: Vec<Excluded> = plan
            .jobs
            .drain(..)
            .map(|j| Excluded {
                name: j.name,
                reason: "a pipeline with only .pre and .post jobs is not created".into(),
            })
            .collect();
        plan.excluded.splice(0..0, left);
        plan.stages.clear();
    }
    plan
}

/// Resolves `needs` to instances, sets `after` and `artifacts_from`.
fn link(p: &Pipeline, plan: &mut Plan, diags: &mut Diagnostics) {
    // Instance indexes by base job name.
    let mut by_base: IndexMap<String, Vec<usize>> = IndexMap::new();
    for (i, j) in plan.jobs.iter().enumerate() {
        by_base.entry(j.job.name.clone()).or_default().push(i);
    }
    let excluded_base = |name: &str| p.jobs.contains_key(name) && !by_base.contains_key(name);
    for i in 0..plan.jobs.len() {
        let job = &plan.jobs[i];
        let mut deps: Vec<usize> = Vec::new();
        let mut artifacts_from: Vec<String> = Vec::new();
        match &job.needs {
            Some(needs) => {
                let model_needs = effective_model_needs(&job.job, needs);
                for (need, model) in needs.iter().zip(model_needs) {
                    let Some(targets) = by_base.get(&need.job) else {
                        if excluded_base(&need.job) && !need.optional {
                            diags.push(
                                Diagnostic::error("E0701", format!("job '{}' needs '{}', which is not in this pipeline (its rules left it out)", job.name, need.job), model.map(|m| m.span))
                                    .with_help("mark the need `optional: true`, or make the rules of both jobs agree"),
                            );
                        }
                        continue;
                    };
                    let mut hit = false;
                    for &t in targets {
                        let target = &plan.jobs[t];
                        // `needs:parallel:matrix` names instances: the selector's values,
                        // in order, must spell an instance's name.
                        let selected = match model {
                            Some(m) if !m.matrix.is_empty() => {
                                crate::model::matrix_combinations(&m.matrix)
                                    .iter()
                                    .any(|c| {
                                        crate::model::matrix_job_name(&m.job, c) == target.name
                                    })
                            }
                            _ => true,
                        };
                        if selected {
                            hit = true;
                            deps.push(t);
                            if need.artifacts {
                                artifacts_from.push(target.name.clone());
                            }
                        }
                    }
                    if !hit && !need.optional {
                        diags.error("E0701", format!("job '{}' needs '{}' with a matrix selection that matches no instance", job.name, need.job), model.map(|m| m.span));
                    }
                }
            }
            None => {
                let (after, from) = match &job.job.dependencies {
                    Some(list) => (
                        After::EarlierStages,
                        ArtifactsFrom::Jobs(
                            plan.jobs
                                .iter()
                                .filter(|o| {
                                    list.contains(&o.job.name) && o.stage_index < job.stage_index
                                })
                                .map(|o| o.name.clone())
                                .collect(),
                        ),
                    ),
                    None => (After::EarlierStages, ArtifactsFrom::All),
                };
                let job = &mut plan.jobs[i];
                job.after = after;
                job.artifacts_from = from;
                continue;
            }
        }
        if job.needs.is_some()
            && let Some(list) = &job.job.dependencies
        {
            artifacts_from.retain(|n| {
                list.iter()
                    .any(|d| plan.jobs.iter().any(|o| &o.name == n && &o.job.name == d))
            });
        }
        deps.sort_unstable();
        deps.dedup();
        let all = deps.len() == artifacts_from.len();
        let job = &mut plan.jobs[i];
        job.after = After::Jobs(deps);
        job.artifacts_from = if all {
            ArtifactsFrom::All
        } else {
            ArtifactsFrom::Jobs(artifacts_from)
        };
    }
}

/// The model `Need`s matching a planned job's needs (rules may replace the job's needs).
fn effective_model_needs<'a>(
    job: &'a Job,
    needs: &[PlannedNeed],
) -> Vec<Option<&'a crate::model::Need>> {
    let mut pool: Vec<&crate::model::Need> = job.needs.iter().flatten().collect();
    for r in job.rules.iter().flatten() {
        pool.extend(r.needs.iter().flatten());
    }
    needs
        .iter()
        .map(|n| pool.iter().rev().find(|m| m.job == n.job).copied())
        .collect()
}

struct Instance {
    name: String,
    node: Option<(u32, u32)>,
    matrix: Vec<(String, String)>,
}

/// `parallel: N` → `job 1/N` …; `parallel:matrix` → `job: [v1, v2]` for every combination.
fn instances(job: &Job) -> Vec<Instance> {
    match &job.parallel {
        None => vec![Instance {
            name: job.name.clone(),
            node: None,
            matrix: Vec::new(),
        }],
        Some(Parallel::Count(n)) => (1..=*n)
            .map(|i| Instance {
                name: format!("{} {i}/{n}", job.name),
                node: Some((i, *n)),
                matrix: Vec::new(),
            })
            .collect(),
        Some(Parallel::Matrix { matrix }) => {
            // Identical values make identical names: a later combination replaces an earlier
            // one, as in GitLab.
            let mut by_name: IndexMap<String, Vec<(String, String)>> = IndexMap::new();
            for combo in crate::model::matrix_combinations(matrix) {
                by_name.insert(crate::model::matrix_job_name(&job.name, &combo), combo);
            }
            let total = by_name.len() as u32;
            by_name
                .into_iter()
                .enumerate()
                .map(|(i, (name, combo))| Instance {
                    name,
                    node: Some((i as u32 + 1, total)),
                    matrix: combo,
                })
                .collect()
        }
    }
}

fn set(vars: &mut Vec<PlanVar>, name: &str, value: &str, raw: bool) {
    match vars.iter_mut().find(|v| v.name == name) {
        Some(v) => {
            v.value = value.to_string();
            v.raw = raw;
        }
        None => vars.push(PlanVar {
            name: name.to_string(),
            value: value.to_string(),
            raw,
        }),
    }
}

/// Variable layers, the last one winning.
struct Layers<'a>(Vec<&'a [PlanVar]>);

impl Layers<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find_map(|layer| layer.iter().rev().find(|v| v.name == name))
            .map(|v| v.value.clone())
    }
}

/// The plan as `gantry plan` prints it: stage by stage, each job with its flags, `needs` and
/// the reason it is in; then the jobs left out and why.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(n) = &plan.name {
        let _ = writeln!(out, "name: {n}");
    }
    let _ = writeln!(out, "workflow: {}", plan.workflow);
    for stage in &plan.stages {
        let _ = writeln!(out, "\nstage {stage}");
        for j in plan.jobs.iter().filter(|j| &j.stage == stage) {
            let mut flags = Vec::new();
            if j.when != When::OnSuccess {
                flags.push(j.when.as_str().to_string());
            }
            match &j.allow_failure {
                AllowFailure::Bool(false) => {}
                AllowFailure::Bool(true) => flags.push("allow_failure".into()),
                AllowFailure::ExitCodes { exit_codes } => {
                    flags.push(format!("allow_failure on exit {exit_codes:?}"))
                }
            }
            if let Some(s) = j.start_in {
                flags.push(format!("start_in {s}s"));
            }
            if j.interruptible {
                flags.push("interruptible".into());
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            let _ = writeln!(out, "  {}{flags}", j.name);
            match &j.needs {
                Some(n) if n.is_empty() => {
                    let _ = writeln!(out, "      needs: nothing (starts at once)");
                }
                Some(n) => {
                    let list: Vec<String> = n
                        .iter()
                        .map(|x| {
                            format!(
                                "{}{}{}",
                                x.job,
                                if x.artifacts { "" } else { " (no artifacts)" },
                                if x.optional { " (optional)" } else { "" }
                            )
                        })
                        .collect();
                    let _ = writeln!(out, "      needs: {}", list.join(", "));
                }
                None => {}
            }
            let waits = match &j.after {
                After::Jobs(list) => list
                    .iter()
                    .map(|&i| plan.jobs[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                After::EarlierStages => {
                    let earlier: Vec<&str> = plan
                        .stages
                        .iter()
                        .filter(|s| {
                            plan.jobs
                                .iter()
                                .any(|o| &o.stage == *s && o.stage_index < j.stage_index)
                        })
                        .map(String::as_str)
                        .collect();
                    if earlier.is_empty() {
                        String::new()
                    } else {
                        format!("stages {}", earlier.join(", "))
                    }
                }
            };
            if !waits.is_empty() {
                let _ = writeln!(out, "      after: {waits}");
            }
            match &j.artifacts_from {
                ArtifactsFrom::Jobs(list) if list.is_empty() && !waits.is_empty() => {
                    let _ = writeln!(out, "      artifacts from: none");
                }
                ArtifactsFrom::Jobs(list) if !list.is_empty() => {
                    let _ = writeln!(out, "      artifacts from: {}", list.join(", "));
                }
                _ => {}
            }
            let _ = writeln!(out, "      why: {}", j.reason);
        }
    }
    if !plan.excluded.is_empty() {
        let _ = writeln!(out, "\nnot in this pipeline");
        for e in &plan.excluded {
            let _ = writeln!(out, "  {}: {}", e.name, e.reason);
        }
    }
    out
}
