//! `gantry config`: the fully merged pipeline as YAML; `--explain` adds where each key came
//! from (which file and line: the root, an include, an `extends` parent, an anchor or a
//! `!reference`).

use super::Source;
use anyhow::Result;
use gantry_pipeline::source::SourceMap;
use gantry_pipeline::yaml::{Node, Value};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: Source,
    /// Annotate every key with the file and line it came from.
    #[arg(long)]
    pub explain: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let loaded = a.source.load(&|_| None)?;
    if loaded.has_errors() || loaded.merged.is_none() {
        eprint!("{}", loaded.diagnostics.render(&loaded.sources));
        return Ok(ExitCode::from(1));
    }
    let merged = loaded.merged.as_ref().expect("checked above");
    if a.explain {
        let mut out = String::new();
        explain(merged, 0, &loaded.sources, &mut out);
        print!("{out}");
    } else {
        print!("{}", merged.to_yaml());
    }
    Ok(ExitCode::SUCCESS)
}

fn origin(n: &Node, sources: &SourceMap) -> String {
    format!("{}:{}", sources.name(n.span.file), n.span.start.line)
}

fn explain(n: &Node, indent: usize, sources: &SourceMap, out: &mut String) {
    let Value::Map(m) = &n.value else {
        out.push_str(&n.to_yaml());
        return;
    };
    let pad = " ".repeat(indent);
    for e in &m.entries {
        let from = format!(
            "{}:{}",
            sources.name(e.key_span.file),
            e.key_span.start.line
        );
        match &e.value.value {
            Value::Map(inner) if !inner.entries.is_empty() => {
                out.push_str(&format!("{pad}{}:  # {from}\n", e.key));
                explain(&e.value, indent + 2, sources, out);
            }
            _ => {
                let rendered = e.value.to_yaml();
                let value_from = origin(&e.value, sources);
                let note = if value_from != from {
                    format!("{from}, value from {value_from}")
                } else {
                    from
                };
                if rendered.lines().count() <= 1 && !matches!(e.value.value, Value::Seq(_)) {
                    out.push_str(&format!(
                        "{pad}{}: {}  # {note}\n",
                        e.key,
                        rendered.trim_end()
                    ));
                } else {
                    out.push_str(&format!("{pad}{}:  # {note}\n", e.key));
                    let wrapper = Node::new(
                        Value::Map(gantry_pipeline::yaml::Map {
                            entries: vec![e.clone()],
                        }),
                        e.value.span,
                    );
                    let body = wrapper.to_yaml();
                    for line in body.lines().skip(1) {
                        out.push_str(&format!("{pad}{line}\n"));
                    }
                }
            }
        }
    }
}
