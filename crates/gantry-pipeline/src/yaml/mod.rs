//! A YAML node tree that keeps what GitLab's pipeline semantics need and generic YAML
//! libraries throw away: the position of every node, custom tags (`!reference`), scalars as
//! written (so `0755` or `on` can be read per field the way GitLab's YAML 1.1 parser does), and
//! duplicate keys (reported, the last one wins).
//!
//! [`load`] turns text into a [`Node`] using `saphyr-parser` for the event stream; anchors,
//! aliases and `<<` merge keys are applied here, under budgets that stop alias bombs and
//! deep nesting with a diagnostic instead of exhausting memory or the stack.

mod load;

pub use load::{Limits, load, load_with_limits};

use crate::source::Span;

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// One YAML node with its place in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// A non-core tag such as `!reference`. Core tags (`!!str`) are applied, not kept.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Map),
}

/// A mapping whose keys are strings, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Map {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries
            .iter_mut()
            .find(|e| e.key == key)
            .map(|e| &mut e.value)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Inserts or replaces, keeping the first position of an existing key.
    pub fn insert(&mut self, key: String, key_span: Span, value: Node) {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.value = value;
                e.key_span = key_span;
            }
            None => self.entries.push(Entry {
                key,
                key_span,
                value,
            }),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let idx = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(idx))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|e| (e.key.as_str(), &e.value))
    }
}

impl Node {
    pub fn new(value: Value, span: Span) -> Node {
        Node {
            value,
            span,
            tag: None,
        }
    }

    pub fn null(span: Span) -> Node {
        Node::new(Value::Null, span)
    }

    pub fn string(s: impl Into<String>, span: Span) -> Node {
        Node::new(Value::Scalar(s.into(), Style::Quoted), span)
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar text, whatever its style.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A boolean as GitLab reads boolean fields: YAML 1.1 `true/false/yes/no/on/off`
    /// (in lower, title or upper case) when plain; never a quoted string.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(s, Style::Plain) => match s.as_str() {
                "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y"
                | "Y" => Some(true),
                "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
                | "N" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// An integer as GitLab reads integer fields: YAML 1.1 forms (`0755` octal, `0x1F`,
    /// `0b101`, `1_000`) when plain.
    pub fn as_int(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar(s, Style::Plain) => parse_yaml11_int(s),
            _ => None,
        }
    }

    /// A short description of the node's type, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar(..) if self.as_bool().is_some() => "boolean",
            Value::Scalar(..) if self.as_int().is_some() => "integer",
            Value::Scalar(..) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Counts nodes in the subtree (used for alias budgets).
    pub fn size(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(m) => 1 + m.entries.iter().map(|e| 1 + e.value.size()).sum::<usize>(),
            _ => 1,
        }
    }

    /// Renders the subtree as YAML (for `gantry config`). Scalars are quoted when needed so
    /// the output reads back to the same values.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        emit(self, 0, &mut out, false);
        out
    }
}

fn parse_yaml11_int(s: &str) -> Option<i64> {
    let t = s.replace('_', "");
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, t.strip_prefix('+').unwrap_or(&t).to_string()),
    };
    if t.is_empty() {
        return None;
    }
    let v = if let Some(h) = t.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = t.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = t.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn needs_quotes(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let plain_special = matches!(
        s,
        "~" | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "y"
            | "Y"
            | "n"
            | "N"
    );
    plain_special
        || parse_yaml11_int(s).is_some()
        || s.parse::<f64>().is_ok()
        || s.starts_with([
            ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"',
            '%', '@', '`',
        ])
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.contains(['\n', '\t', '\r'])
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn scalar_text(s: &str, style: Style) -> String {
    if style == Style::Plain
        && !s.is_empty()
        && !s.contains(['\n', '\t', '\r', '#'])
        && !s.contains(": ")
    {
        s.to_string()
    } else if needs_quotes(s) {
        quote(s)
    } else {
        s.to_string()
    }
}

fn emit(node: &Node, indent: usize, out: &mut String, inline_first: bool) {
    let pad = " ".repeat(indent);
    let tag = node
        .tag
        .as_deref()
        .map(|t| format!("{t} "))
        .unwrap_or_default();
    match &node.value {
        Value::Null => out.push_str(&format!("{tag}null\n")),
        Value::Scalar(s, style) => {
            out.push_str(&tag);
            out.push_str(&scalar_text(s, *style));
            out.push('\n');
        }
        Value::Seq(items) if items.is_empty() => out.push_str(&format!("{tag}[]\n")),
        Value::Map(m) if m.entries.is_empty() => out.push_str(&format!("{tag}{{}}\n")),
        Value::Seq(items) => {
            if node.tag.is_some() {
                // Tagged sequences (e.g. `!reference [a, b]`) stay in flow style.
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| i.to_yaml().trim_end().to_string())
                    .collect();
                out.push_str(&format!("{tag}[{}]\n", parts.join(", ")));
                return;
            }
            if inline_first {
                out.push('\n');
            }
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                emit_child(item, indent + 2, out);
            }
        }
        Value::Map(m) => {
            if inline_first {
                out.push('\n');
            }
            for e in &m.entries {
                out.push_str(&pad);
                out.push_str(&scalar_text(&e.key, Style::Plain));
                out.push(':');
                match &e.value.value {
                    Value::Map(mm) if !mm.entries.is_empty() && e.value.tag.is_none() => {
                        emit(&e.value, indent + 2, out, true)
                    }
                    Value::Seq(s) if !s.is_empty() && e.value.tag.is_none() => {
                        emit(&e.value, indent, out, true)
                    }
                    _ => {
                        out.push(' ');
                        emit(&e.value, indent + 2, out, false)
                    }
                }
            }
        }
    }
}

/// A sequence item: maps start on the dash line.
fn emit_child(item: &Node, indent: usize, out: &mut String) {
    match &item.value {
        Value::Map(m) if !m.entries.is_empty() && item.tag.is_none() => {
            let mut buf = String::new();
            emit(item, indent, &mut buf, false);
            // The first line carries the indent that the "- " already provides.
            out.push_str(buf.trim_start());
        }
        Value::Seq(s) if !s.is_empty() && item.tag.is_none() => {
            let mut buf = String::new();
            emit(item, indent, &mut buf, false);
            out.push_str(buf.trim_start());
        }
        _ => emit(item, indent, out, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostics;
    use crate::source::SourceMap;

    #[test]
    fn yaml11_ints() {
        assert_eq!(parse_yaml11_int("0755"), Some(493));
        assert_eq!(parse_yaml11_int("1_000"), Some(1000));
        assert_eq!(parse_yaml11_int("0x1F"), Some(31));
        assert_eq!(parse_yaml11_int("-3"), Some(-3));
        assert_eq!(parse_yaml11_int("08"), None);
        assert_eq!(parse_yaml11_int("abc"), None);
    }

    #[test]
    fn emitted_yaml_reads_back_the_same() {
        let src = "a:\n  b: [1, '2', yes]\n  c: \"x: y\"\n  d:\n    - e: 1\n      f: ''\n    - [g, h]\nr: !reference [a, b]\nm: \"line1\\nline2\"\n";
        let mut sources = SourceMap::new();
        let f = sources.add("t.yml", src);
        let mut d = Diagnostics::new();
        let n = load(&sources, f, &mut d).unwrap();
        let out = n.to_yaml();
        let f2 = sources.add("t2.yml", out.clone());
        let n2 = load(&sources, f2, &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(strip(&n), strip(&n2), "{out}");
    }

    fn strip(n: &Node) -> String {
        // Compare structure and values, not spans or scalar styles.
        match &n.value {
            Value::Null => "null".into(),
            Value::Scalar(s, _) => format!("{s:?}"),
            Value::Seq(items) => format!(
                "{}[{}]",
                n.tag.clone().unwrap_or_default(),
                items.iter().map(strip).collect::<Vec<_>>().join(",")
            ),
            Value::Map(m) => format!(
                "{{{}}}",
                m.entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, strip(&e.value)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}
