//! `extends:` — a job inherits from one or more jobs or hidden jobs, deep-merged in order
//! (later parents over earlier ones, the job over all), at most 11 levels deep. A key set to
//! `null` in the child removes what the parent had.

use super::include::deep_merge;
use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::source::Span;
use crate::yaml::{Map, Node, Value};
use std::collections::HashMap;

/// GitLab's limit on `extends` depth.
pub const MAX_DEPTH: usize = 11;

pub(super) fn resolve_all(map: &mut Map, diags: &mut Diagnostics) {
    let names: Vec<String> = map
        .entries
        .iter()
        .filter(|e| e.value.as_map().is_some_and(|m| m.contains("extends")))
        .map(|e| e.key.clone())
        .collect();
    if names.is_empty() {
        return;
    }
    let mut done: HashMap<String, Resolved> = HashMap::new();
    {
        let jobs = Jobs {
            by_name: map
                .entries
                .iter()
                .map(|e| (e.key.as_str(), &e.value))
                .collect(),
            map,
        };
        for name in &names {
            let mut chain = Vec::new();
            resolve_one(&jobs, name, &mut chain, &mut done, diags);
        }
    }
    for e in &mut map.entries {
        if let Some((Some(node), _)) = done.remove(&e.key) {
            e.value = node;
        }
    }
}

/// The top-level map with an index by name: pipelines have thousands of jobs, and each
/// `extends` looks up its parents.
struct Jobs<'a> {
    by_name: HashMap<&'a str, &'a Node>,
    map: &'a Map,
}

impl<'a> Jobs<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.by_name.get(name).copied()
    }

    fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.map.keys()
    }
}

/// A resolved node and its `extends` depth (0 for a job that extends nothing).
type Resolved = (Option<Node>, usize);

/// Returns the fully merged node for `name` and its depth, or `None` when it cannot be resolved.
fn resolve_one(
    map: &Jobs<'_>,
    name: &str,
    chain: &mut Vec<String>,
    done: &mut HashMap<String, Resolved>,
    diags: &mut Diagnostics,
) -> Resolved {
    if let Some(r) = done.get(name) {
        return r.clone();
    }
    let Some(node) = map.get(name) else {
        return (None, 0);
    };
    let Some(job) = node.as_map() else {
        return (Some(node.clone()), 0);
    };
    let Some(ext) = job.get("extends") else {
        return (Some(node.clone()), 0);
    };
    chain.push(name.to_string());
    let parents: Vec<(String, Span)> = match &ext.value {
        Value::Scalar(s, _) => vec![(s.clone(), ext.span)],
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| match i.as_str() {
                Some(s) => Some((s.to_string(), i.span)),
                None => {
                    diags.error("E0202", "`extends` takes job names", Some(i.span));
                    None
                }
            })
            .collect(),
        _ => {
            diags.error(
                "E0202",
                format!(
                    "`extends` must be a job name or a list of them, found {}",
                    ext.a_kind()
                ),
                Some(ext.span),
            );
            Vec::new()
        }
    };
    let mut merged: Option<Node> = None;
    let mut depth = 0;
    for (parent, span) in parents {
        if chain.contains(&parent) {
            diags.push(
                Diagnostic::error(
                    "E0402",
                    format!("circular `extends`: {} → {parent}", chain.join(" → ")),
                    Some(span),
                )
                .with_help("remove one of the `extends` in the cycle"),
            );
            continue;
        }
        if map.get(&parent).is_none() {
            let mut d = Diagnostic::error(
                "E0401",
                format!("job '{name}' extends '{parent}', which is not defined"),
                Some(span),
            );
            if let Some(s) = did_you_mean(&parent, map.keys()) {
                d = d.with_help(format!("did you mean '{s}'?"));
            }
            diags.push(d);
            continue;
        }
        if map.get(&parent).is_some_and(|n| n.as_map().is_none()) {
            diags.error_help(
                "E0401",
                format!("job '{name}' extends '{parent}', which is not a job (not a map)"),
                Some(span),
                "`extends` takes the names of jobs or hidden jobs",
            );
            continue;
        }
        if let (Some(p), parent_depth) = resolve_one(map, &parent, chain, done, diags) {
            depth = depth.max(parent_depth + 1);
            let mut p = p;
            if let Some(pm) = p.as_map_mut() {
                pm.remove("extends");
            }
            match &mut merged {
                None => merged = Some(p),
                Some(m) => deep_merge(m, p),
            }
        }
    }
    chain.pop();
    if depth > MAX_DEPTH {
        diags.push(
            Diagnostic::error(
                "E0403",
                format!(
                    "job '{name}' extends {depth} levels deep; GitLab allows at most {MAX_DEPTH}"
                ),
                Some(ext.span),
            )
            .with_help("flatten the hierarchy: most pipelines need no more than three levels"),
        );
    }
    let mut own = node.clone();
    if let Some(m) = own.as_map_mut() {
        m.remove("extends");
    }
    let result = match merged {
        Some(mut base) => {
            deep_merge(&mut base, own);
            base.span = node.span;
            base
        }
        None => own,
    };
    // A job whose parents failed keeps what could be merged, so later checks still see it;
    // the errors above already fail the pipeline.
    done.insert(name.to_string(), (Some(result.clone()), depth));
    (Some(result), depth)
}
