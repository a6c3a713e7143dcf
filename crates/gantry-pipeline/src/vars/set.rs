//! Layered variable definitions with GitLab's precedence, and the expansion of values that
//! reference other variables.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::expand::{Token, expand, tokenize};
use super::predefined::{JobContext, PipelineContext, job_variables, pipeline_variables_with};
use super::{Phase, Var};
use crate::trigger::Trigger;

/// Where a variable definition comes from. Layers are ordered lowest precedence first: a
/// definition in a later layer overrides one of the same name in an earlier layer, and within a
/// layer the definition pushed last wins.
///
/// GitLab's documented "CI/CD variable precedence" (`doc/ci/variables/_index.md`, section
/// "CI/CD variable precedence"), highest first:
///
/// 1. Pipeline execution policy variables.
/// 2. Scan execution policy variables.
/// 3. Pipeline variables, which all have the same precedence: variables passed to downstream
///    pipelines, trigger variables, scheduled pipeline variables, manual pipeline variables,
///    variables added when creating a pipeline with the API, manual job variables.
/// 4. Project variables.
/// 5. Group variables; with nested groups the closest subgroup wins.
/// 6. Instance variables.
/// 7. Variables from `dotenv` reports.
/// 8. Job variables, defined in jobs in the `.gitlab-ci.yml` file.
/// 9. Default variables for all jobs, defined at the top level of the `.gitlab-ci.yml` file.
/// 10. Deployment variables.
/// 11. Predefined variables.
///
/// The list does not place `workflow:rules:variables` and `rules:variables`; the `.gitlab-ci.yml`
/// reference does: workflow rule variables override top-level variables (and are overridden by
/// job variables), and job rule variables override the job's own variables. They therefore sit
/// between their neighbours here: `TopLevel < WorkflowRules < Job < JobRules`.
///
/// GitLab also lets `GITLAB_USER_*` and release variables win over YAML definitions in its code
/// (they are appended late); this list follows the documentation and keeps every predefined
/// variable in [`Layer::Predefined`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Predefined `CI_*` variables ([`super::pipeline_variables`], [`super::job_variables`]).
    Predefined,
    /// Deployment variables of an integration (for example a Kubernetes cluster).
    Deployment,
    /// Top-level `variables:` of the pipeline file ("default variables for all jobs").
    TopLevel,
    /// `workflow:rules:variables` of the matching workflow rule.
    WorkflowRules,
    /// The job's `variables:`.
    Job,
    /// `rules:variables` of the job's matching rule.
    JobRules,
    /// `artifacts:reports:dotenv` of the jobs this job depends on.
    Dotenv,
    /// Instance CI/CD variables (settings).
    Instance,
    /// Group CI/CD variables; push outer groups first so the closest subgroup wins.
    Group,
    /// Project CI/CD variables (settings).
    Project,
    /// Pipeline variables: trigger, schedule, manual run, API, downstream, manual job variables.
    Pipeline,
    /// Variables of a scan execution policy.
    ScanExecutionPolicy,
    /// Variables of a pipeline execution policy.
    PipelineExecutionPolicy,
}

impl Layer {
    /// Every layer, lowest precedence first.
    pub const ALL: &'static [Layer] = &[
        Layer::Predefined,
        Layer::Deployment,
        Layer::TopLevel,
        Layer::WorkflowRules,
        Layer::Job,
        Layer::JobRules,
        Layer::Dotenv,
        Layer::Instance,
        Layer::Group,
        Layer::Project,
        Layer::Pipeline,
        Layer::ScanExecutionPolicy,
        Layer::PipelineExecutionPolicy,
    ];

    /// When definitions of this layer are known, used by [`VarSet::push_pairs`]: settings and
    /// pipeline variables before the pipeline, YAML ones at pipeline creation, dotenv and
    /// deployment ones only in the job.
    pub fn phase(self) -> Phase {
        match self {
            Layer::Predefined
            | Layer::Instance
            | Layer::Group
            | Layer::Project
            | Layer::Pipeline
            | Layer::ScanExecutionPolicy
            | Layer::PipelineExecutionPolicy => Phase::PrePipeline,
            Layer::TopLevel | Layer::WorkflowRules | Layer::Job | Layer::JobRules => {
                Phase::Pipeline
            }
            Layer::Deployment | Layer::Dotenv => Phase::JobOnly,
        }
    }
}

/// Variables that reference each other in a loop, so that none of them can be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleError {
    /// Each loop, as the names on it in the order they were followed.
    pub cycles: Vec<Vec<String>>,
}

impl std::fmt::Display for CycleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("circular variable reference detected: ")?;
        for (i, cycle) in self.cycles.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let quoted: Vec<String> = cycle.iter().map(|n| format!("{n:?}")).collect();
            write!(f, "[{}]", quoted.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CycleError {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Def {
    layer: Layer,
    var: Var,
}

/// An ordered set of variable definitions with GitLab's precedence ([`Layer`]): each name's value
/// is the one from its highest layer (and, within a layer, the last pushed). Lower definitions are
/// kept: a value can extend the definition it overrides by naming itself (`PATH_EXTRA:
/// "$PATH_EXTRA:/opt"`).
///
/// [`VarSet::expand_all`] gives the values a job sees, the way GitLab computes them (its server
/// sorts and expands variables that reference others, then the runner expands once more):
///
/// - a value marked [`Var::raw`] is used exactly as written;
/// - in any other value, `$NAME` and `${NAME}` are replaced by the *expanded* value of `NAME`,
///   so references chain (`A: $B`, `B: $C`, `C: x` gives `A = x`), in any order of definition;
///   a reference to a raw variable inserts its value as written, without expanding it;
/// - a value that names its own variable refers to the definition it overrides (the next lower
///   one of that name), expanded the same way, or to nothing if there is none;
/// - `$$` becomes `$` and is never the start of a reference, also when it comes from a
///   referenced value; `%NAME%` is replaced like `$NAME` when `NAME` is defined (GitLab's
///   server accepts that Windows syntax); `%%` and undefined `%NAME%` stay as written;
/// - references to undefined variables, and invalid ones such as `$1` or `${}`, become `""`;
/// - variables that reference each other in a loop make the whole expansion fail with a
///   [`CycleError`], as GitLab fails the job with "circular variable reference detected".
///
/// Values are expanded once: what a reference inserts is final and is not scanned again.
///
/// Where this differs from GitLab: GitLab's server resolves references over every definition,
/// overridden ones included, in a topological order. In a few odd cases that makes its result
/// depend on that order or fail: a value naming its own variable while a higher layer also
/// defines it (GitLab may then let the lower, self-referencing definition win), two layers that
/// both name their own variable (GitLab reports a circular reference), a loop that only goes
/// through overridden definitions (GitLab reports it), and a value naming itself with nothing
/// below (GitLab hands `$NAME` to the runner, which inserts the unexpanded value once). Here the
/// highest definition always wins, a self-reference always means the next lower definition, and
/// overridden definitions are reached only that way. Text glued across a reference boundary
/// (a value ending in `$` followed by a name) is not re-read as a reference, where GitLab's second
/// pass would read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VarSet {
    /// Sorted by layer; within a layer, in push order.
    defs: Vec<Def>,
}

impl VarSet {
    pub fn new() -> VarSet {
        VarSet::default()
    }

    /// The predefined variables of a pipeline, or of one of its jobs when `job` is given, in
    /// [`Layer::Predefined`], and the trigger's variables in [`Layer::Pipeline`].
    pub fn with_predefined(
        trigger: &Trigger,
        ctx: &PipelineContext,
        job: Option<&JobContext>,
    ) -> VarSet {
        let mut set = VarSet::new();
        set.push(Layer::Predefined, pipeline_variables_with(trigger, ctx));
        if let Some(job) = job {
            set.push(Layer::Predefined, job_variables(trigger, job));
        }
        set.push_pairs(
            Layer::Pipeline,
            trigger.variables.iter().map(|(k, v)| (k, v)),
        );
        set
    }

    /// Adds definitions to `layer`. They win over every definition of a lower layer and over
    /// earlier definitions of the same layer, whatever the order of the calls.
    pub fn push(&mut self, layer: Layer, vars: impl IntoIterator<Item = Var>) -> &mut VarSet {
        let at = self.defs.partition_point(|d| d.layer <= layer);
        let new: Vec<Def> = vars.into_iter().map(|var| Def { layer, var }).collect();
        self.defs.splice(at..at, new);
        self
    }

    /// Adds `(name, value)` definitions to `layer`, expandable and unmasked, with the layer's
    /// [`Layer::phase`].
    pub fn push_pairs<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        layer: Layer,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> &mut VarSet {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| Var::new(k.as_ref(), v.as_ref(), layer.phase()));
        self.push(layer, vars.collect::<Vec<_>>())
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.winners().len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.defs.iter().any(|d| d.var.name == name)
    }

    /// The winning definition of `name`, unexpanded.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.defs
            .iter()
            .rev()
            .find(|d| d.var.name == name)
            .map(|d| &d.var)
    }

    /// The winning value of `name`, unexpanded.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v.value.as_str())
    }

    /// The layer the winning definition of `name` comes from.
    pub fn layer_of(&self, name: &str) -> Option<Layer> {
        self.defs
            .iter()
            .rev()
            .find(|d| d.var.name == name)
            .map(|d| d.layer)
    }

    /// Every definition, overridden ones included, lowest precedence first.
    pub fn definitions(&self) -> impl Iterator<Item = (Layer, &Var)> + '_ {
        self.defs.iter().map(|d| (d.layer, &d.var))
    }

    /// The winning definitions, unexpanded, in the order their names first appear (lowest layer
    /// first).
    pub fn vars(&self) -> Vec<&Var> {
        self.winners()
            .into_iter()
            .map(|i| &self.defs[i].var)
            .collect()
    }

    /// The final `(name, value)` pairs, unexpanded, in the order of [`VarSet::vars`].
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.winners().into_iter().map(|i| {
            let var = &self.defs[i].var;
            (var.name.as_str(), var.value.as_str())
        })
    }

    /// The winning definitions with their values expanded as described on [`VarSet`], in the
    /// order of [`VarSet::vars`].
    pub fn expand_all(&self) -> Result<Vec<Var>, CycleError> {
        let values = self.evaluate()?;
        Ok(self
            .winners()
            .into_iter()
            .map(|i| Var {
                value: values[i].clone(),
                ..self.defs[i].var.clone()
            })
            .collect())
    }

    /// Expands `s` with [`expand`] against the expanded values of the set, as the runner expands
    /// keywords such as `image`, `cache:key` or `artifacts:paths`.
    pub fn expand_str(&self, s: &str) -> Result<String, CycleError> {
        let values = self.evaluate()?;
        let winners: HashMap<&str, usize> = self
            .winners()
            .into_iter()
            .map(|i| (self.defs[i].var.name.as_str(), i))
            .collect();
        Ok(expand(s, &|name| {
            winners.get(name).map(|&i| values[i].clone())
        }))
    }

    /// Indices of the winning definitions, in the order their names first appear.
    fn winners(&self) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for (i, def) in self.defs.iter().enumerate() {
            match slot.get(def.var.name.as_str()) {
                Some(&s) => order[s] = i,
                None => {
                    slot.insert(def.var.name.as_str(), order.len());
                    order.push(i);
                }
            }
        }
        order
    }

    /// The expanded value of every definition that a winning definition needs (others stay
    /// empty), indexed like `defs`.
    fn evaluate(&self) -> Result<Vec<String>, CycleError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum State {
            New,
            Busy,
            Done,
        }
        struct Frame<'a> {
            def: usize,
            tokens: Vec<Token<'a>>,
            next: usize,
            out: String,
        }

        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, def) in self.defs.iter().enumerate() {
            by_name.entry(def.var.name.as_str()).or_default().push(i);
        }
        // The definition a reference to `name` from definition `from` means.
        let target = |from: usize, name: &str| -> Option<usize> {
            let defs = by_name.get(name)?;
            if self.defs[from].var.name == name {
                defs.iter().rev().copied().find(|&d| d < from)
            } else {
                defs.last().copied()
            }
        };
        let frame = |def: usize| Frame {
            def,
            tokens: if self.defs[def].var.raw {
                vec![Token::Text(&self.defs[def].var.value)]
            } else {
                tokenize(&self.defs[def].var.value, true)
            },
            next: 0,
            out: String::new(),
        };

        let mut values = vec![String::new(); self.defs.len()];
        let mut state = vec![State::New; self.defs.len()];
        let mut cycles: Vec<Vec<String>> = Vec::new();
        for root in self.winners() {
            if state[root] != State::New {
                continue;
            }
            state[root] = State::Busy;
            let mut stack = vec![frame(root)];
            while let Some(top) = stack.last_mut() {
                let Some(&token) = top.tokens.get(top.next) else {
                    let done = stack.pop().expect("a frame is on the stack");
                    state[done.def] = State::Done;
                    values[done.def] = done.out;
                    continue;
                };
                let (name, text) = match token {
                    Token::Text(t) => {
                        top.out.push_str(t);
                        top.next += 1;
                        continue;
                    }
                    Token::Escape => {
                        top.out.push('$');
                        top.next += 1;
                        continue;
                    }
                    Token::PercentEscape => {
                        top.out.push_str("%%");
                        top.next += 1;
                        continue;
                    }
                    Token::Invalid { .. } => {
                        top.next += 1;
                        continue;
                    }
                    Token::Var { name, .. } => (name, None),
                    Token::PercentVar { name, text } => (name, Some(text)),
                };
                let Some(t) = target(top.def, name) else {
                    // Undefined: `$NAME` vanishes, `%NAME%` stays.
                    top.out.push_str(text.unwrap_or_default());
                    top.next += 1;
                    continue;
                };
                if self.defs[t].var.raw {
                    // GitLab leaves raw references to the runner, which inserts the raw value;
                    // the runner knows nothing of `%NAME%`, so that form stays as written.
                    top.out.push_str(text.unwrap_or(&self.defs[t].var.value));
                    top.next += 1;
                    continue;
                }
                match state[t] {
                    State::Done => {
                        top.out.push_str(&values[t]);
                        top.next += 1;
                    }
                    State::Busy => {
                        let from = stack.iter().position(|f| f.def == t).unwrap_or(0);
                        let cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|f| self.defs[f.def].var.name.clone())
                            .collect();
                        // Loops that share a variable are one tangle: report it once.
                        match cycles
                            .iter_mut()
                            .find(|c| c.iter().any(|n| cycle.contains(n)))
                        {
                            Some(known) => {
                                for name in cycle {
                                    if !known.contains(&name) {
                                        known.push(name);
                                    }
                                }
                            }
                            None => cycles.push(cycle),
                        }
                        if let Some(top) = stack.last_mut() {
                            top.next += 1;
                        }
                    }
                    State::New => {
                        state[t] = State::Busy;
                        stack.push(frame(t));
                    }
                }
            }
        }
        if cycles.is_empty() {
            Ok(values)
        } else {
            Err(CycleError { cycles })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::{Source, Trigger};
    use crate::vars::JobContext;

    fn set(layers: &[(Layer, &[(&str, &str)])]) -> VarSet {
        let mut s = VarSet::new();
        for (layer, pairs) in layers {
            s.push_pairs(*layer, pairs.iter().copied());
        }
        s
    }

    fn expanded(s: &VarSet) -> Vec<(String, String)> {
        s.expand_all()
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    fn final_value(s: &VarSet, name: &str) -> Option<String> {
        s.expand_all()
            .unwrap()
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.value)
    }

    #[test]
    fn layers_are_in_documented_order() {
        let mut sorted = Layer::ALL.to_vec();
        sorted.sort();
        assert_eq!(sorted, Layer::ALL);
        assert_eq!(Layer::ALL.first(), Some(&Layer::Predefined));
        assert_eq!(Layer::ALL.last(), Some(&Layer::PipelineExecutionPolicy));
        assert!(Layer::Dotenv > Layer::Job && Layer::Dotenv < Layer::Instance);
        assert!(Layer::Instance < Layer::Group && Layer::Group < Layer::Project);
        assert!(Layer::Project < Layer::Pipeline && Layer::Pipeline < Layer::ScanExecutionPolicy);
        assert!(Layer::TopLevel < Layer::WorkflowRules && Layer::WorkflowRules < Layer::Job);
        assert!(Layer::Job < Layer::JobRules && Layer::Deployment < Layer::TopLevel);
    }

    #[test]
    fn every_higher_layer_wins_whatever_the_push_order() {
        for (i, &high) in Layer::ALL.iter().enumerate() {
            // Push the winner first, then every lower layer.
            let mut s = VarSet::new();
            s.push_pairs(high, [("X", "high")]);
            for &low in &Layer::ALL[..i] {
                s.push_pairs(low, [("X", "low")]);
            }
            assert_eq!(s.value("X"), Some("high"), "{high:?}");
            assert_eq!(s.layer_of("X"), Some(high));
            assert_eq!(s.definitions().count(), i + 1);
        }
    }

    #[test]
    fn within_a_layer_the_last_push_wins() {
        let mut s = VarSet::new();
        s.push_pairs(Layer::Group, [("TOKEN", "outer-group")]);
        s.push_pairs(Layer::Project, [("OTHER", "p")]);
        s.push_pairs(Layer::Group, [("TOKEN", "inner-subgroup")]);
        assert_eq!(s.value("TOKEN"), Some("inner-subgroup"));
        let order: Vec<(Layer, &str)> = s
            .definitions()
            .map(|(l, v)| (l, v.value.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (Layer::Group, "outer-group"),
                (Layer::Group, "inner-subgroup"),
                (Layer::Project, "p")
            ]
        );
    }

    #[test]
    fn gitlab_documented_examples() {
        // doc/ci/variables: job variables beat default (top-level) variables.
        let s = set(&[
            (Layer::TopLevel, &[("API_TOKEN", "default")]),
            (Layer::Job, &[("API_TOKEN", "secure")]),
        ]);
        assert_eq!(s.value("API_TOKEN"), Some("secure"));
        // workflow:rules:variables / rules:variables example of the YAML reference.
        let base: &[(Layer, &[(&str, &str)])] = &[
            (Layer::TopLevel, &[("DEPLOY_VARIABLE", "default-deploy")]),
            (
                Layer::WorkflowRules,
                &[("DEPLOY_VARIABLE", "deploy-production")],
            ),
        ];
        let job2 = set(base);
        assert_eq!(job2.value("DEPLOY_VARIABLE"), Some("deploy-production"));
        let mut job1 = set(base);
        job1.push_pairs(Layer::Job, [("DEPLOY_VARIABLE", "job1-default-deploy")]);
        assert_eq!(job1.value("DEPLOY_VARIABLE"), Some("job1-default-deploy"));
        job1.push_pairs(
            Layer::JobRules,
            [("DEPLOY_VARIABLE", "job1-deploy-production")],
        );
        assert_eq!(
            job1.value("DEPLOY_VARIABLE"),
            Some("job1-deploy-production")
        );
    }

    #[test]
    fn settings_dotenv_and_pipeline_variables() {
        let s = set(&[
            (
                Layer::Job,
                &[("A", "job"), ("B", "job"), ("C", "job"), ("D", "job")],
            ),
            (
                Layer::Dotenv,
                &[("A", "dotenv"), ("B", "dotenv"), ("C", "dotenv")],
            ),
            (Layer::Project, &[("B", "project"), ("C", "project")]),
            (Layer::Pipeline, &[("C", "pipeline")]),
        ]);
        assert_eq!(s.value("A"), Some("dotenv"));
        assert_eq!(s.value("B"), Some("project"));
        assert_eq!(s.value("C"), Some("pipeline"));
        assert_eq!(s.value("D"), Some("job"));
        assert_eq!(s.value("E"), None);
        assert!(s.contains("D") && !s.contains("E"));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn iteration_follows_first_appearance() {
        let s = set(&[
            (Layer::TopLevel, &[("B", "1"), ("A", "2")]),
            (Layer::Job, &[("C", "3"), ("B", "4")]),
        ]);
        let pairs: Vec<(&str, &str)> = s.iter().collect();
        assert_eq!(pairs, [("B", "4"), ("A", "2"), ("C", "3")]);
        let names: Vec<&str> = s.vars().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["B", "A", "C"]);
    }

    #[test]
    fn references_chain_in_any_order() {
        let s = set(&[(
            Layer::Job,
            &[
                ("variable3", "key$variable2$variable"),
                ("variable", "value"),
                ("variable2", "result"),
            ],
        )]);
        assert_eq!(
            final_value(&s, "variable3").as_deref(),
            Some("keyresultvalue")
        );
        let s = set(&[(Layer::Job, &[("A", "$B"), ("B", "${C}!"), ("C", "x")])]);
        assert_eq!(
            expanded(&s),
            [
                ("A".into(), "x!".into()),
                ("B".into(), "x!".into()),
                ("C".into(), "x".into())
            ]
        );
    }

    #[test]
    fn references_see_the_winning_definition() {
        let s = set(&[
            (
                Layer::TopLevel,
                &[
                    ("URL", "https://$HOST/app"),
                    ("HOST", "default.example.com"),
                ],
            ),
            (Layer::Project, &[("HOST", "project.example.com")]),
        ]);
        assert_eq!(
            final_value(&s, "URL").as_deref(),
            Some("https://project.example.com/app")
        );
    }

    #[test]
    fn undefined_references_become_empty() {
        let s = set(&[(Layer::Job, &[("A", "key${NOPE}_$NOPE2"), ("B", "$1${}x")])]);
        assert_eq!(final_value(&s, "A").as_deref(), Some("key_"));
        assert_eq!(final_value(&s, "B").as_deref(), Some("x"));
    }

    #[test]
    fn escapes_collapse_once() {
        let s = set(&[(
            Layer::Job,
            &[("A", "a$$b"), ("B", "<$A>"), ("C", "$$A"), ("D", "$$$$")],
        )]);
        assert_eq!(final_value(&s, "A").as_deref(), Some("a$b"));
        assert_eq!(final_value(&s, "B").as_deref(), Some("<a$b>"));
        assert_eq!(final_value(&s, "C").as_deref(), Some("$A"));
        assert_eq!(final_value(&s, "D").as_deref(), Some("$$"));
    }

    #[test]
    fn gitlab_password_with_special_characters() {
        // GitLab's collection spec: VAR=$PASSWORD, PASSWORD=my_password$$_%%_$A, A=value; the
        // server keeps `$$` and `%%`, the runner then turns `$$` into `$`.
        let s = set(&[(
            Layer::Project,
            &[
                ("VAR", "$PASSWORD"),
                ("PASSWORD", "my_password$$_%%_$A"),
                ("A", "value"),
            ],
        )]);
        assert_eq!(
            final_value(&s, "VAR").as_deref(),
            Some("my_password$_%%_value")
        );
        assert_eq!(
            final_value(&s, "PASSWORD").as_deref(),
            Some("my_password$_%%_value")
        );
    }

    #[test]
    fn raw_variables_are_kept_as_written() {
        let mut s = VarSet::new();
        s.push_pairs(Layer::Job, [("variable1", "value1")]);
        s.push(
            Layer::Job,
            [Var::new("raw_var", "raw-$variable1 $$", Phase::Pipeline).with_raw(true)],
        );
        s.push_pairs(
            Layer::Job,
            [
                ("nonraw_var", "nonraw-$variable1"),
                ("variable2", "$raw_var and $nonraw_var"),
            ],
        );
        assert_eq!(
            final_value(&s, "raw_var").as_deref(),
            Some("raw-$variable1 $$")
        );
        assert_eq!(
            final_value(&s, "nonraw_var").as_deref(),
            Some("nonraw-value1")
        );
        assert_eq!(
            final_value(&s, "variable2").as_deref(),
            Some("raw-$variable1 $$ and nonraw-value1")
        );
        assert!(
            s.expand_all()
                .unwrap()
                .iter()
                .any(|v| v.name == "raw_var" && v.raw)
        );
    }

    #[test]
    fn percent_references() {
        let mut s = set(&[(
            Layer::Job,
            &[("A", "x"), ("B", "%A%-%NOPE%-%%A%%"), ("C", "%R%")],
        )]);
        s.push(
            Layer::Job,
            [Var::new("R", "r", Phase::Pipeline).with_raw(true)],
        );
        assert_eq!(final_value(&s, "B").as_deref(), Some("x-%NOPE%-%%A%%"));
        assert_eq!(final_value(&s, "C").as_deref(), Some("%R%"));
        assert_eq!(
            s.expand_str("%A%").unwrap(),
            "%A%",
            "runner-side expansion has no %VAR%"
        );
    }

    #[test]
    fn cycles_are_errors() {
        let s = set(&[(
            Layer::Job,
            &[
                ("variable", "$variable2"),
                ("variable2", "$variable3"),
                ("variable3", "key$variable$variable2"),
            ],
        )]);
        let err = s.expand_all().unwrap_err();
        assert_eq!(
            err.cycles,
            [vec![
                "variable".to_string(),
                "variable2".into(),
                "variable3".into()
            ]]
        );
        assert_eq!(
            err.to_string(),
            r#"circular variable reference detected: ["variable", "variable2", "variable3"]"#
        );
        assert!(s.expand_str("$variable").is_err());
        // The values are still readable unexpanded.
        assert_eq!(s.value("variable"), Some("$variable2"));
        let two = set(&[(
            Layer::Job,
            &[("A", "$B"), ("B", "$A"), ("C", "$D"), ("D", "${C}")],
        )]);
        assert_eq!(two.expand_all().unwrap_err().cycles.len(), 2);
    }

    #[test]
    fn a_value_can_extend_the_definition_it_overrides() {
        let s = set(&[
            (Layer::TopLevel, &[("EXTRA", "/a")]),
            (Layer::Job, &[("EXTRA", "$EXTRA:/b")]),
            (Layer::Pipeline, &[("EXTRA", "${EXTRA}:/c")]),
        ]);
        assert_eq!(final_value(&s, "EXTRA").as_deref(), Some("/a:/b:/c"));
        // Without a lower definition the self-reference is undefined.
        let alone = set(&[(Layer::Job, &[("SELF", "$SELF:/b")])]);
        assert_eq!(final_value(&alone, "SELF").as_deref(), Some(":/b"));
        // Other variables see the final value.
        let mut other = s.clone();
        other.push_pairs(Layer::TopLevel, [("USE", "[$EXTRA]")]);
        assert_eq!(final_value(&other, "USE").as_deref(), Some("[/a:/b:/c]"));
    }

    #[test]
    fn flags_and_phases_survive_expansion() {
        let mut s = VarSet::new();
        s.push(
            Layer::Project,
            [Var::new("SECRET", "s3cr3t", Phase::PrePipeline).with_masked(true)],
        );
        s.push_pairs(Layer::Dotenv, [("FROM_DOTENV", "$SECRET")]);
        let all = s.expand_all().unwrap();
        let secret = all.iter().find(|v| v.name == "SECRET").unwrap();
        assert!(secret.masked && !secret.raw);
        let dotenv = all.iter().find(|v| v.name == "FROM_DOTENV").unwrap();
        assert_eq!(
            (dotenv.value.as_str(), dotenv.phase),
            ("s3cr3t", Phase::JobOnly)
        );
        assert_eq!(Layer::Job.phase(), Phase::Pipeline);
        assert_eq!(Layer::Project.phase(), Phase::PrePipeline);
    }

    #[test]
    fn with_predefined_and_user_variables() {
        let trigger = Trigger {
            source: Source::Web,
            ref_name: "Feature/X".into(),
            variables: vec![
                ("DEPLOY".into(), "yes".into()),
                ("CI_COMMIT_REF_SLUG".into(), "forced".into()),
            ],
            ..Trigger::default()
        };
        let ctx = PipelineContext {
            registry: Some("registry.local".into()),
            ..PipelineContext::default()
        };
        let job = JobContext::new("build image", "build", 8);
        let mut s = VarSet::with_predefined(&trigger, &ctx, Some(&job));
        s.push_pairs(
            Layer::TopLevel,
            [
                ("DEPLOY", "no"),
                ("IMAGE", "$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG"),
            ],
        );
        s.push_pairs(
            Layer::Job,
            [("WHO", "$GITLAB_USER_LOGIN in $CI_JOB_NAME_SLUG")],
        );
        assert_eq!(s.layer_of("CI_COMMIT_SHA"), Some(Layer::Predefined));
        assert_eq!(
            s.value("DEPLOY"),
            Some("yes"),
            "pipeline variables beat YAML"
        );
        assert_eq!(
            s.value("CI_COMMIT_REF_SLUG"),
            Some("forced"),
            "and predefined ones"
        );
        assert_eq!(
            final_value(&s, "IMAGE").as_deref(),
            Some("registry.local/local/project:forced")
        );
        assert_eq!(
            final_value(&s, "WHO").as_deref(),
            Some("gantry in build-image")
        );
        assert_eq!(
            s.expand_str("${CI_PROJECT_DIR}/out").unwrap(),
            "/builds/local/project/out"
        );
        let no_job = VarSet::with_predefined(&trigger, &ctx, None);
        assert!(no_job.contains("CI_COMMIT_SHA") && !no_job.contains("CI_JOB_NAME"));
    }

    #[test]
    fn empty_set() {
        let s = VarSet::new();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert!(s.expand_all().unwrap().is_empty());
        assert_eq!(s.expand_str("a$B$$").unwrap(), "a$");
        assert_eq!(s.get("X"), None);
    }
}
