//! From the root file to one merged tree, in GitLab's order: load, `include` (recursively,
//! through a [`Fetcher`]), `extends` (deep merge, at most 11 levels), then `!reference` tags.
//!
//! Nodes keep the spans of the file they were written in, so diagnostics and
//! `gantry config --explain` can say which include, parent or anchor a key came from.

mod extends;
mod include;
mod inputs;
pub(crate) mod reference;

pub use include::{FetchError, Fetched, Fetcher, IncludeKind, NoFetcher};
pub use inputs::interpolate_inputs;
pub use reference::FAILED_REFERENCE;

use crate::diag::Diagnostics;
use crate::source::{FileId, SourceMap};
use crate::yaml::{self, Node, Value};

/// What comes out of resolution: one tree with no includes, `extends` or `!reference` left.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub root: Node,
    /// Every file read, in the order read (the root first).
    pub files: Vec<FileId>,
}

/// Context for include rules (evaluated with the variables known before the pipeline).
pub type VarLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Resolves a root file already added to `sources`.
pub fn resolve(
    sources: &mut SourceMap,
    root_file: FileId,
    fetcher: &dyn Fetcher,
    vars: VarLookup<'_>,
    diags: &mut Diagnostics,
) -> Option<Resolved> {
    let docs = yaml::load_with_limits(sources, root_file, diags, yaml::Limits::default())?;
    let root = header_and_body(docs, diags, None)?;
    let mut ctx = include::Ctx::new(fetcher, vars);
    let mut root = ctx.expand(sources, root_file, root, diags);
    if let Value::Map(map) = &mut root.value {
        extends::resolve_all(map, diags);
    }
    let refs_source = root.clone();
    reference::resolve_all(&mut root, &refs_source, diags);
    Some(Resolved {
        root,
        files: ctx.files,
    })
}

/// Splits a file's documents into its optional `spec:` header and its body, interpolating
/// `$[[ inputs.x ]]` in the body with the inputs given to the include (if any).
pub(crate) fn header_and_body(
    mut docs: Vec<Node>,
    diags: &mut Diagnostics,
    given_inputs: Option<&Node>,
) -> Option<Node> {
    match docs.len() {
        0 => None,
        1 => {
            let body = docs.pop()?;
            if let Some(given) = given_inputs {
                diags.error_help(
                    "E0601",
                    "inputs are given to a file that has no `spec: inputs` header",
                    Some(given.span),
                    "add a `spec:` header with `inputs:` to the included file, followed by `---`",
                );
            }
            Some(body)
        }
        _ => {
            let body = docs.pop()?;
            let header = docs.pop()?;
            Some(inputs::apply(&header, body, given_inputs, diags))
        }
    }
}
