//! # gantry-pipeline
//!
//! Pipeline files in the GitLab CI dialect, from text to a [`Plan`](plan::Plan). Pure: no
//! async runtime, no I/O except through the [`Fetcher`](resolve::Fetcher) trait for includes.
//!
//! ```text
//! text ──yaml::load──► Node tree (spans, tags, anchors applied)
//!      ──resolve──────► one tree (include, extends, !reference)
//!      ──model::build─► Pipeline (typed jobs, rules, needs, …) + Diagnostics
//!      ──plan::compile(trigger)─► Plan (jobs that run, DAG, variables, why)
//! ```
//!
//! Modules, in the order of that flow:
//! - [`source`]: files and spans; [`diag`]: diagnostics with codes, hints and rendering.
//! - [`yaml`]: the node tree and its loader.
//! - [`resolve`]: `include` (with `spec:inputs`), `extends`, `!reference`.
//! - [`model`]: the typed pipeline and the keyword-by-keyword reader.
//! - [`expr`]: the `rules:if` expression language.
//! - [`vars`]: predefined `CI_*` variables, precedence and expansion.
//! - [`trigger`]: what started a pipeline.
//! - [`plan`]: rules evaluation, parallel/matrix expansion and the DAG.
//!
//! [`load`] runs the first three steps and is what the CLI, the server and `gantry run` call.

pub mod diag;
pub mod expr;
pub mod model;
pub mod plan;
pub mod resolve;
pub mod source;
pub mod trigger;
pub mod vars;
pub mod yaml;

use diag::Diagnostics;
use model::Pipeline;
use resolve::Fetcher;
use source::SourceMap;

/// A pipeline file after loading, resolving and building, with everything found wrong.
#[derive(Debug)]
pub struct Loaded {
    pub sources: SourceMap,
    /// The merged tree (for `gantry config`); `None` when the root file could not be parsed.
    pub merged: Option<yaml::Node>,
    /// The typed pipeline; present even when diagnostics have errors, for display.
    pub pipeline: Option<Pipeline>,
    pub diagnostics: Diagnostics,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Loads a pipeline file named `name` with content `text`; includes come from `fetcher`;
/// include rules see `vars` (the variables known before the pipeline exists).
pub fn load(
    name: &str,
    text: &str,
    fetcher: &dyn Fetcher,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let mut sources = SourceMap::new();
    let root = sources.add(name, text);
    let mut diagnostics = Diagnostics::new();
    let resolved = resolve::resolve(&mut sources, root, fetcher, vars, &mut diagnostics);
    let (merged, pipeline) = match resolved {
        Some(r) => {
            let p = model::build(&r.root, &mut diagnostics);
            (Some(r.root), Some(p))
        }
        None => (None, None),
    };
    diagnostics.sort();
    Loaded {
        sources,
        merged,
        pipeline,
        diagnostics,
    }
}
