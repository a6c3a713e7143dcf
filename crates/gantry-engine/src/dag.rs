//! What happens next in a pipeline: pure functions over the current attempt of each job.
//!
//! The same rules as `gantry run` (crates/gantry-runner/src/runtime.rs), GitLab's:
//! a job waits for every job of the earlier stages, or only for its `needs`; once they are
//! all done, `when` decides: `on_success` runs if nothing failed, `on_failure` only if
//! something did, `always` in any case, `manual` waits to be played, `delayed` waits for its
//! time. A failure is a job that failed without `allow_failure`, a canceled job, or a job
//! skipped because of a failure. A manual job that may not fail (`allow_failure: false`)
//! blocks what comes after it until someone plays it; the pipeline is then `manual`
//! ("blocked" in GitLab's words).

use gantry_api::job::JobDefinition;
use gantry_api::{JobStatus, PipelineStatus};
use gantry_pipeline::model::{AllowFailure, When};
use std::collections::HashMap;

/// The current attempt of one job, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub status: JobStatus,
    pub def: &'a JobDefinition,
    pub exit_code: Option<i32>,
}

impl Node<'_> {
    /// Counts as a failure for the jobs that wait for it.
    fn failed(&self) -> bool {
        match self.status {
            JobStatus::Failed => !self.def.failure_allowed(self.exit_code),
            JobStatus::Canceled => true,
            // Only `on_failure` jobs are skipped for want of a failure.
            JobStatus::Skipped => self.def.when != When::OnFailure,
            _ => false,
        }
    }

    /// A manual job nobody played yet that stops what comes after it.
    fn blocking_manual(&self) -> bool {
        self.status == JobStatus::Manual && self.def.allow_failure != AllowFailure::Bool(true)
    }

    fn done(&self) -> bool {
        self.status.is_finished() || self.status == JobStatus::Manual
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not yet: something it waits for is not done (or a blocking manual job is not played).
    Wait,
    Skip,
    Manual,
    /// `when: delayed`: run after this many seconds.
    Delay(u64),
    /// Ready: to the queue.
    Enqueue,
}

#[derive(Debug, Clone, Copy, Default)]
struct Upstream {
    done: bool,
    failed: bool,
    blocked: bool,
}

impl Upstream {
    fn add(&mut self, n: &Node<'_>) {
        self.done &= n.done();
        self.failed |= n.failed();
        self.blocked |= n.blocking_manual();
    }
}

/// The decision for every job in `Created` (others get `Wait`), in one linear pass plus the
/// `needs` lists.
pub fn decide(nodes: &[Node<'_>]) -> Vec<Decision> {
    let stages = nodes
        .iter()
        .map(|n| n.def.stage_index + 1)
        .max()
        .unwrap_or(0);
    let mut per_stage = vec![
        Upstream {
            done: true,
            ..Upstream::default()
        };
        stages
    ];
    for n in nodes {
        per_stage[n.def.stage_index].add(n);
    }
    // before[k]: everything in the stages before k.
    let mut before = Vec::with_capacity(stages + 1);
    let mut acc = Upstream {
        done: true,
        ..Upstream::default()
    };
    for s in &per_stage {
        before.push(acc);
        acc.done &= s.done;
        acc.failed |= s.failed;
        acc.blocked |= s.blocked;
    }
    before.push(acc);
    let by_name: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.def.name.as_str(), i))
        .collect();

    nodes
        .iter()
        .map(|n| {
            if n.status != JobStatus::Created {
                return Decision::Wait;
            }
            let up = match &n.def.needs {
                None => before[n.def.stage_index],
                Some(needs) => {
                    let mut u = Upstream {
                        done: true,
                        ..Upstream::default()
                    };
                    for need in needs {
                        if let Some(&i) = by_name.get(need.job.as_str()) {
                            u.add(&nodes[i]);
                        }
                    }
                    u
                }
            };
            if !up.done {
                return Decision::Wait;
            }
            match n.def.when {
                When::Always => Decision::Enqueue,
                When::OnFailure if up.failed => Decision::Enqueue,
                When::OnFailure => Decision::Skip,
                _ if up.failed => Decision::Skip,
                _ if up.blocked => Decision::Wait,
                When::Manual => Decision::Manual,
                When::Delayed => Decision::Delay(n.def.start_in.unwrap_or(0)),
                _ => Decision::Enqueue,
            }
        })
        .collect()
}

/// The pipeline's status from its jobs' current attempts, as GitLab derives it.
pub fn pipeline_status(nodes: &[Node<'_>]) -> PipelineStatus {
    if nodes.is_empty() {
        return PipelineStatus::Skipped;
    }
    let any = |s: JobStatus| nodes.iter().any(|n| n.status == s);
    if any(JobStatus::Running) {
        return PipelineStatus::Running;
    }
    let started = nodes
        .iter()
        .any(|n| n.status.is_finished() && n.status != JobStatus::Skipped);
    if any(JobStatus::Pending) {
        return if started {
            PipelineStatus::Running
        } else {
            PipelineStatus::Pending
        };
    }
    if any(JobStatus::Scheduled) {
        return PipelineStatus::Scheduled;
    }
    // Jobs still created here wait for a blocking manual job (or nothing else can move).
    if any(JobStatus::Created) || nodes.iter().any(|n| n.blocking_manual()) {
        return PipelineStatus::Manual;
    }
    if nodes
        .iter()
        .any(|n| n.status == JobStatus::Failed && !n.def.failure_allowed(n.exit_code))
    {
        return PipelineStatus::Failed;
    }
    if any(JobStatus::Canceled) {
        return PipelineStatus::Canceled;
    }
    if nodes
        .iter()
        .all(|n| matches!(n.status, JobStatus::Skipped | JobStatus::Manual))
    {
        return if any(JobStatus::Manual) {
            PipelineStatus::Manual
        } else {
            PipelineStatus::Skipped
        };
    }
    PipelineStatus::Success
}

/// Names of the jobs that (transitively) wait for `name`: a retried job's skipped followers
/// get a new chance.
pub fn downstream_of<'a>(defs: &[&'a JobDefinition], name: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut frontier = vec![name.to_string()];
    let stage_of: HashMap<&str, usize> = defs
        .iter()
        .map(|d| (d.name.as_str(), d.stage_index))
        .collect();
    while let Some(cur) = frontier.pop() {
        let cur_stage = stage_of.get(cur.as_str()).copied().unwrap_or(usize::MAX);
        for d in defs {
            if out.contains(&d.name.as_str()) || d.name == name {
                continue;
            }
            let waits = match &d.needs {
                Some(needs) => needs.iter().any(|n| n.job == cur),
                None => d.stage_index > cur_stage,
            };
            if waits {
                out.push(d.name.as_str());
                frontier.push(d.name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_api::job::Needed;

    fn def(name: &str, stage: usize, when: When) -> JobDefinition {
        JobDefinition {
            name: name.into(),
            stage: format!("s{stage}"),
            stage_index: stage,
            when,
            allow_failure: AllowFailure::Bool(when == When::Manual),
            start_in: None,
            interruptible: false,
            needs: None,
            artifacts_from: None,
            node: None,
            variables: Vec::new(),
            tags: Vec::new(),
            before_script: Vec::new(),
            script: vec!["true".into()],
            after_script: Vec::new(),
            image: None,
            services: Vec::new(),
            cache: Vec::new(),
            artifacts: None,
            timeout: None,
            retry: None,
            resource_group: None,
            environment: None,
            child: None,
            reason: String::new(),
        }
    }

    fn nodes<'a>(defs: &'a [JobDefinition], st: &[JobStatus]) -> Vec<Node<'a>> {
        defs.iter()
            .zip(st)
            .map(|(d, s)| Node {
                status: *s,
                def: d,
                exit_code: None,
            })
            .collect()
    }

    use JobStatus::*;

    #[test]
    fn stages_run_in_order() {
        let defs = [
            def("a", 0, When::OnSuccess),
            def("b", 0, When::OnSuccess),
            def("c", 1, When::OnSuccess),
        ];
        let d = decide(&nodes(&defs, &[Created, Created, Created]));
        assert_eq!(d, [Decision::Enqueue, Decision::Enqueue, Decision::Wait]);
        let d = decide(&nodes(&defs, &[Success, Running, Created]));
        assert_eq!(d[2], Decision::Wait);
        let d = decide(&nodes(&defs, &[Success, Success, Created]));
        assert_eq!(d[2], Decision::Enqueue);
    }

    #[test]
    fn needs_skip_the_stage_barrier() {
        let mut defs = [
            def("a", 0, When::OnSuccess),
            def("slow", 0, When::OnSuccess),
            def("c", 1, When::OnSuccess),
        ];
        defs[2].needs = Some(vec![Needed {
            job: "a".into(),
            optional: false,
        }]);
        let d = decide(&nodes(&defs, &[Success, Running, Created]));
        assert_eq!(d[2], Decision::Enqueue);
        defs[2].needs = Some(Vec::new());
        let d = decide(&nodes(&defs, &[Created, Created, Created]));
        assert_eq!(d[2], Decision::Enqueue, "needs: [] starts at once");
    }

    #[test]
    fn failures_skip_on_success_and_run_on_failure() {
        let defs = [
            def("a", 0, When::OnSuccess),
            def("b", 1, When::OnSuccess),
            def("cleanup", 1, When::OnFailure),
            def("report", 1, When::Always),
        ];
        let d = decide(&nodes(&defs, &[Failed, Created, Created, Created]));
        assert_eq!(
            d,
            [
                Decision::Wait,
                Decision::Skip,
                Decision::Enqueue,
                Decision::Enqueue
            ]
        );
        let d = decide(&nodes(&defs, &[Success, Created, Created, Created]));
        assert_eq!(
            d,
            [
                Decision::Wait,
                Decision::Enqueue,
                Decision::Skip,
                Decision::Enqueue
            ]
        );
        let st = [Failed, Skipped, Success, Success];
        assert_eq!(pipeline_status(&nodes(&defs, &st)), PipelineStatus::Failed);
    }

    #[test]
    fn allowed_failures_do_not_fail() {
        let mut defs = [def("a", 0, When::OnSuccess), def("b", 1, When::OnSuccess)];
        defs[0].allow_failure = AllowFailure::ExitCodes {
            exit_codes: vec![3],
        };
        let mut n = nodes(&defs, &[Failed, Created]);
        n[0].exit_code = Some(3);
        assert_eq!(decide(&n)[1], Decision::Enqueue);
        n[0].exit_code = Some(1);
        assert_eq!(decide(&n)[1], Decision::Skip);
    }

    #[test]
    fn blocking_manual_jobs_hold_the_pipeline() {
        let mut defs = [
            def("deploy", 0, When::Manual),
            def("after", 1, When::OnSuccess),
        ];
        let d = decide(&nodes(&defs, &[Created, Created]));
        assert_eq!(d[0], Decision::Manual);
        // allow_failure: true (the default for manual jobs): the pipeline goes on.
        assert_eq!(
            decide(&nodes(&defs, &[Manual, Created]))[1],
            Decision::Enqueue
        );
        defs[0].allow_failure = AllowFailure::Bool(false);
        assert_eq!(decide(&nodes(&defs, &[Manual, Created]))[1], Decision::Wait);
        assert_eq!(
            pipeline_status(&nodes(&defs, &[Manual, Created])),
            PipelineStatus::Manual
        );
        assert_eq!(
            decide(&nodes(&defs, &[Success, Created]))[1],
            Decision::Enqueue
        );
    }

    #[test]
    fn statuses() {
        let defs = [def("a", 0, When::OnSuccess), def("b", 1, When::OnSuccess)];
        let s = |st: &[JobStatus]| pipeline_status(&nodes(&defs, st));
        assert_eq!(s(&[Pending, Created]), PipelineStatus::Pending);
        assert_eq!(s(&[Running, Created]), PipelineStatus::Running);
        assert_eq!(s(&[Success, Pending]), PipelineStatus::Running);
        assert_eq!(s(&[Success, Success]), PipelineStatus::Success);
        assert_eq!(s(&[Success, Canceled]), PipelineStatus::Canceled);
        assert_eq!(s(&[Skipped, Skipped]), PipelineStatus::Skipped);
        assert_eq!(s(&[Success, Scheduled]), PipelineStatus::Scheduled);
    }

    #[test]
    fn downstream_follows_stages_and_needs() {
        let mut defs = [
            def("a", 0, When::OnSuccess),
            def("b", 1, When::OnSuccess),
            def("c", 1, When::OnSuccess),
            def("d", 2, When::OnSuccess),
        ];
        defs[2].needs = Some(vec![]);
        let refs: Vec<&JobDefinition> = defs.iter().collect();
        let mut down = downstream_of(&refs, "a");
        down.sort();
        assert_eq!(down, ["b", "d"]);
    }
}
