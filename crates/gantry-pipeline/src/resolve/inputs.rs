//! `spec: inputs` headers and `$[[ inputs.name ]]` interpolation.
//!
//! A file may start with a `spec:` document declaring inputs (`default`, `type`, `options`,
//! `regex`, `description`), followed by `---` and its body. Inputs are given by the
//! `include:` that reads it. Interpolation happens on the parsed tree (keys and values), so a
//! value can never break the YAML structure; a scalar that is exactly one interpolation of an
//! `array`, `number` or `boolean` input takes that input's type.

use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::source::Span;
use crate::yaml::{Map, Node, Style, Value};

#[derive(Debug, Clone)]
struct InputDecl {
    name: String,
    default: Option<Node>,
    kind: String,
    options: Option<Vec<String>>,
    regex: Option<String>,
}

pub(super) fn apply(
    header: &Node,
    mut body: Node,
    given: Option<&Node>,
    diags: &mut Diagnostics,
) -> Node {
    let decls = declarations(header, diags);
    let given_map = given.and_then(Node::as_map);
    if let Some(g) = given
        && g.as_map().is_none()
    {
        diags.error(
            "E0202",
            "`inputs` must be a map of input names to values",
            Some(g.span),
        );
    }
    if let Some(gm) = given_map {
        for e in &gm.entries {
            if !decls.iter().any(|d| d.name == e.key) {
                let mut d = Diagnostic::error(
                    "E0604",
                    format!("unknown input '{}'", e.key),
                    Some(e.key_span),
                );
                if let Some(s) = did_you_mean(&e.key, decls.iter().map(|d| d.name.as_str())) {
                    d = d.with_help(format!("did you mean '{s}'?"));
                }
                diags.push(d);
            }
        }
    }
    let mut values: Vec<(String, Node)> = Vec::new();
    for d in &decls {
        let v = given_map
            .and_then(|m| m.get(&d.name))
            .or(d.default.as_ref());
        let Some(v) = v else {
            // Interpolate as empty so the one error above is the only one about this input.
            values.push((d.name.clone(), Node::null(header.span)));
            diags.error_help(
                "E0602",
                format!("input '{}' is required and was not given", d.name),
                given.map(|g| g.span).or(Some(header.span)),
                format!("pass it with `include: {{ local: …, inputs: {{ {}: … }} }}` or give it a `default:`", d.name),
            );
            continue;
        };
        check_type(d, v, diags);
        values.push((d.name.clone(), v.clone()));
    }
    interpolate_inputs(
        &mut body,
        &|name| {
            values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        },
        diags,
    );
    body
}

fn declarations(header: &Node, diags: &mut Diagnostics) -> Vec<InputDecl> {
    let Some(spec) = header.as_map().and_then(|m| m.get("spec")) else {
        diags.error(
            "E0202",
            "the first document of a file with two documents must be a `spec:` header",
            Some(header.span),
        );
        return Vec::new();
    };
    let Some(inputs) = spec.as_map().and_then(|m| m.get("inputs")) else {
        return Vec::new();
    };
    let Some(inputs) = inputs.as_map() else {
        if !inputs.is_null() {
            diags.error("E0202", "`spec:inputs` must be a map", Some(inputs.span));
        }
        return Vec::new();
    };
    inputs
        .entries
        .iter()
        .map(|e| {
            let m = e.value.as_map();
            let get = |k: &str| m.and_then(|m| m.get(k));
            InputDecl {
                name: e.key.clone(),
                default: get("default").cloned(),
                kind: get("type")
                    .and_then(Node::as_str)
                    .unwrap_or("string")
                    .to_string(),
                options: get("options").map(super::include::string_list),
                regex: get("regex").and_then(Node::as_str).map(str::to_string),
            }
        })
        .collect()
}

fn check_type(d: &InputDecl, v: &Node, diags: &mut Diagnostics) {
    let ok = match d.kind.as_str() {
        "string" => v.as_str().is_some(),
        "number" => v.as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
        "boolean" => v.as_bool().is_some(),
        "array" => v.as_seq().is_some(),
        other => {
            diags.error(
                "E0605",
                format!("input '{}' has an unknown type '{other}'", d.name),
                Some(v.span),
            );
            return;
        }
    };
    if !ok {
        diags.error(
            "E0605",
            format!(
                "input '{}' must be a {}, found {}",
                d.name,
                d.kind,
                v.a_kind()
            ),
            Some(v.span),
        );
        return;
    }
    if let (Some(opts), Some(s)) = (&d.options, v.as_str())
        && !opts.iter().any(|o| o == s)
    {
        diags.error_help(
            "E0606",
            format!(
                "input '{}' is '{s}', which is not one of its options",
                d.name
            ),
            Some(v.span),
            format!("use one of: {}", opts.join(", ")),
        );
    }
    if let (Some(re), Some(s)) = (&d.regex, v.as_str()) {
        let pat = re.trim_start_matches('/').trim_end_matches('/');
        match regex::Regex::new(pat) {
            Ok(r) if !r.is_match(s) => diags.error(
                "E0607",
                format!("input '{}' ('{s}') does not match {re}", d.name),
                Some(v.span),
            ),
            Ok(_) => {}
            Err(e) => diags.error(
                "E0607",
                format!("input '{}' has an invalid regex: {e}", d.name),
                Some(v.span),
            ),
        }
    }
}

/// Replaces `$[[ inputs.NAME ]]` in every key and scalar of `node`.
pub fn interpolate_inputs(
    node: &mut Node,
    value: &dyn Fn(&str) -> Option<Node>,
    diags: &mut Diagnostics,
) {
    match &mut node.value {
        Value::Scalar(s, _) if s.contains("$[[") => {
            if let Some(name) = whole_interpolation(s)
                && let Some(v) = value(&name)
            {
                let span = node.span;
                *node = Node { span, ..v };
                return;
            }
            let span = node.span;
            if let Some(out) = interpolate_str(s, value, span, diags) {
                *s = out;
            }
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|i| interpolate_inputs(i, value, diags)),
        Value::Map(m) => interpolate_map(m, value, diags),
        _ => {}
    }
}

fn interpolate_map(m: &mut Map, value: &dyn Fn(&str) -> Option<Node>, diags: &mut Diagnostics) {
    for e in &mut m.entries {
        if e.key.contains("$[[")
            && let Some(k) = interpolate_str(&e.key, value, e.key_span, diags)
        {
            e.key = k;
        }
        interpolate_inputs(&mut e.value, value, diags);
    }
}

fn whole_interpolation(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix("$[[")?.strip_suffix("]]")?;
    if inner.contains("$[[") || inner.contains('|') {
        return None;
    }
    inner
        .trim()
        .strip_prefix("inputs.")
        .map(|n| n.trim().to_string())
}

fn interpolate_str(
    s: &str,
    value: &dyn Fn(&str) -> Option<Node>,
    span: Span,
    diags: &mut Diagnostics,
) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("$[[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("]]") else {
            diags.error("E0603", "unterminated `$[[` interpolation", Some(span));
            return None;
        };
        let expr = after[..end].trim();
        let mut parts = expr.split('|').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let Some(name) = head.strip_prefix("inputs.") else {
            diags.error_help(
                "E0603",
                format!("unknown interpolation `$[[ {expr} ]]`"),
                Some(span),
                "only `inputs.NAME` can be interpolated",
            );
            return None;
        };
        let Some(v) = value(name) else {
            diags.error(
                "E0602",
                format!("`$[[ {expr} ]]` names input '{name}', which is not declared"),
                Some(span),
            );
            return None;
        };
        let mut text = match &v.value {
            Value::Scalar(t, _) => t.clone(),
            Value::Null => String::new(),
            _ => v.to_yaml().trim().replace('\n', " "),
        };
        for f in parts {
            if let Some(args) = f
                .strip_prefix("truncate(")
                .and_then(|a| a.strip_suffix(')'))
            {
                let nums: Vec<usize> = args
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect();
                if let [off, len] = nums[..] {
                    text = text.chars().skip(off).take(len).collect();
                    continue;
                }
            }
            if f == "expand_vars" {
                // Expanded later, with the job's variables, like every other value.
                continue;
            }
            diags.error(
                "E0603",
                format!("unknown interpolation function `{f}`"),
                Some(span),
            );
            return None;
        }
        out.push_str(&text);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    let _ = Style::Quoted;
    Some(out)
}
