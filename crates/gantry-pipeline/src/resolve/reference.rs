//! `!reference [job, key, …]` — reuse a section of another job, after `extends` is resolved,
//! as GitLab does. References may nest up to 10 levels.

use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::yaml::{Node, Value};

const MAX_NESTING: usize = 10;

/// The tag of the null node a failed `!reference` is replaced with (already reported).
pub const FAILED_REFERENCE: &str = "!failed-reference";

pub(super) fn resolve_all(node: &mut Node, source: &Node, diags: &mut Diagnostics) {
    walk(node, source, diags, 0);
}

fn walk(node: &mut Node, source: &Node, diags: &mut Diagnostics, depth: usize) {
    if node.tag.as_deref() == Some("!reference") {
        let replacement = lookup(node, source, diags, depth);
        *node = replacement;
        return;
    }
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| walk(i, source, diags, depth)),
        Value::Map(m) => m
            .entries
            .iter_mut()
            .for_each(|e| walk(&mut e.value, source, diags, depth)),
        _ => {}
    }
}

fn lookup(node: &Node, source: &Node, diags: &mut Diagnostics, depth: usize) -> Node {
    // What a failed reference leaves: null, tagged so that readers do not report it again.
    let fallback = Node {
        tag: Some(FAILED_REFERENCE.into()),
        ..Node::null(node.span)
    };
    let Some(path) = node.as_seq().and_then(|items| {
        items
            .iter()
            .map(Node::as_str)
            .collect::<Option<Vec<&str>>>()
    }) else {
        diags.push(Diagnostic::error(
            "E0404",
            "`!reference` takes a list of names, e.g. `!reference [.setup, script]`",
            Some(node.span),
        ));
        return fallback;
    };
    if path.is_empty() {
        diags.error("E0404", "`!reference []` names nothing", Some(node.span));
        return fallback;
    }
    if depth >= MAX_NESTING {
        diags.error(
            "E0404",
            format!("`!reference` is nested more than {MAX_NESTING} levels deep"),
            Some(node.span),
        );
        return fallback;
    }
    let mut cur = source;
    for (i, key) in path.iter().enumerate() {
        let Some(m) = cur.as_map() else {
            diags.error(
                "E0404",
                format!(
                    "`!reference [{}]`: '{}' is not a map",
                    path.join(", "),
                    path[..i].join(".")
                ),
                Some(node.span),
            );
            return fallback;
        };
        match m.get(key) {
            Some(next) => cur = next,
            None => {
                let mut d = Diagnostic::error(
                    "E0404",
                    format!(
                        "`!reference [{}]`: '{key}' is not defined{}",
                        path.join(", "),
                        if i == 0 {
                            String::new()
                        } else {
                            format!(" in '{}'", path[..i].join("."))
                        }
                    ),
                    Some(node.span),
                );
                if let Some(s) = did_you_mean(key, m.keys()) {
                    d = d.with_help(format!("did you mean '{s}'?"));
                }
                diags.push(d);
                return fallback;
            }
        }
    }
    let mut out = cur.clone();
    walk(&mut out, source, diags, depth + 1);
    out
}
