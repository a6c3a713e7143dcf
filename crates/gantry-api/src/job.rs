//! A planned job as the server stores it (one JSON document per job row) and as the agent
//! runs it. Built from a [`gantry_pipeline::plan::PlannedJob`]; every field the scheduler or
//! the executor reads is here, nothing else.

use gantry_pipeline::model::{
    AllowFailure, Artifacts, Cache, Environment, Image, Retry, Service, When,
};
use gantry_pipeline::plan::{After, ArtifactsFrom, Plan, PlanVar, PlannedJob};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    /// The instance name (`test 1/3`, `test: [linux]`, or the job's name).
    pub name: String,
    pub stage: String,
    pub stage_index: usize,
    pub when: When,
    pub allow_failure: AllowFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<u64>,
    #[serde(default)]
    pub interruptible: bool,
    /// `None`: waits for every job of the earlier stages; `Some`: for these job names only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Needed>>,
    /// `None`: artifacts of every job waited for; `Some`: of these job names only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_from: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<(u32, u32)>,
    /// The job's variables before the job-only (predefined, runner) ones: global YAML,
    /// job YAML, matrix and rule variables, then the trigger's, lowest precedence first.
    #[serde(default)]
    pub variables: Vec<PlanVar>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub before_script: Vec<String>,
    #[serde(default)]
    pub script: Vec<String>,
    #[serde(default)]
    pub after_script: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub cache: Vec<Cache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// `trigger: include:` — a child pipeline from these files of the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildPipeline>,
    /// Why the job is in the pipeline (the rule that matched).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needed {
    pub job: String,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildPipeline {
    pub include: Vec<String>,
    /// `strategy: depend`: the trigger job mirrors the child's result.
    #[serde(default)]
    pub depend: bool,
}

impl JobDefinition {
    /// The definition of `plan.jobs[index]`, with its variables as the job sees them
    /// (without the predefined ones, which the agent computes for the attempt).
    pub fn from_plan(plan: &Plan, index: usize) -> JobDefinition {
        let p: &PlannedJob = &plan.jobs[index];
        let j = &p.job;
        let needs = match &p.after {
            After::EarlierStages => None,
            After::Jobs(ix) => Some(
                ix.iter()
                    .map(|&i| Needed {
                        job: plan.jobs[i].name.clone(),
                        optional: false,
                    })
                    .collect(),
            ),
        };
        let artifacts_from = match &p.artifacts_from {
            ArtifactsFrom::All => None,
            ArtifactsFrom::Jobs(names) => Some(names.clone()),
        };
        let child = match &j.trigger {
            Some(gantry_pipeline::model::TriggerJob::Child {
                include, strategy, ..
            }) => Some(ChildPipeline {
                include: include.clone(),
                depend: strategy.as_deref() == Some("depend"),
            }),
            _ => None,
        };
        let mut variables: Vec<PlanVar> = p.variables.clone();
        variables.extend(plan.trigger_variables.iter().cloned());
        JobDefinition {
            name: p.name.clone(),
            stage: p.stage.clone(),
            stage_index: p.stage_index,
            when: p.when,
            allow_failure: p.allow_failure.clone(),
            start_in: p.start_in,
            interruptible: p.interruptible,
            needs,
            artifacts_from,
            node: p.node,
            variables,
            tags: j.tags.clone(),
            before_script: j.before_script.clone(),
            script: j.script.clone(),
            after_script: j.after_script.clone(),
            image: j.image.clone(),
            services: j.services.clone(),
            cache: j.cache.clone(),
            artifacts: j.artifacts.clone(),
            timeout: j.timeout,
            retry: j.retry.clone(),
            resource_group: j.resource_group.clone(),
            environment: j.environment.clone(),
            child,
            reason: p.reason.clone(),
        }
    }

    /// Whether a job that failed for `reason` with `exit_code` on attempt `attempt` (1-based)
    /// is retried, as `retry:` says.
    pub fn retries(
        &self,
        attempt: u32,
        reason: crate::FailureReason,
        exit_code: Option<i32>,
    ) -> bool {
        let Some(r) = &self.retry else { return false };
        attempt <= r.max
            && (r.when.is_empty() || r.when.iter().any(|w| reason.matches(w)))
            && (r.exit_codes.is_empty() || exit_code.is_some_and(|c| r.exit_codes.contains(&c)))
    }

    /// Whether a failure with this exit code is allowed (`allow_failure`).
    pub fn failure_allowed(&self, exit_code: Option<i32>) -> bool {
        self.allow_failure.allows(exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_pipeline::trigger::Trigger;

    fn plan(yaml: &str) -> Plan {
        let loaded = gantry_pipeline::load(
            ".gantry.yml",
            yaml,
            &gantry_pipeline::resolve::NoFetcher,
            &|_| None,
        );
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let mut diags = gantry_pipeline::diag::Diagnostics::new();
        let plan = gantry_pipeline::plan::compile(
            loaded.pipeline.as_ref().unwrap(),
            &Trigger::default(),
            &mut diags,
        );
        assert!(!diags.has_errors());
        plan
    }

    #[test]
    fn definitions_round_trip_through_json() {
        let plan = plan(
            "stages: [build, test]\n\
             build:\n  stage: build\n  image: {name: alpine, entrypoint: ['']}\n  script: [make]\n  \
             artifacts: {paths: [out/], reports: {dotenv: [build.env]}}\n  cache: {key: {files: [Cargo.lock]}, paths: [target]}\n  \
             retry: {max: 2, when: [runner_system_failure]}\n  tags: [linux]\n\
             test:\n  stage: test\n  needs: [build]\n  script: [make test]\n  allow_failure: {exit_codes: [3]}\n",
        );
        for i in 0..plan.jobs.len() {
            let def = JobDefinition::from_plan(&plan, i);
            let json = serde_json::to_string(&def).unwrap();
            let back: JobDefinition = serde_json::from_str(&json).unwrap();
            assert_eq!(back, def, "{json}");
        }
        let build = JobDefinition::from_plan(&plan, 0);
        assert!(build.retries(1, crate::FailureReason::RunnerSystemFailure, None));
        assert!(build.retries(2, crate::FailureReason::RunnerSystemFailure, None));
        assert!(!build.retries(3, crate::FailureReason::RunnerSystemFailure, None));
        assert!(!build.retries(1, crate::FailureReason::ScriptFailure, Some(1)));
        let test = JobDefinition::from_plan(&plan, 1);
        assert_eq!(
            test.needs,
            Some(vec![Needed {
                job: "build".into(),
                optional: false
            }])
        );
        assert!(test.failure_allowed(Some(3)));
        assert!(!test.failure_allowed(Some(1)));
    }
}
