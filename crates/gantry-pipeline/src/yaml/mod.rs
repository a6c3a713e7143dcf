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

/// The type GitLab's YAML parser (Ruby's Psych, which implements YAML 1.1) gives a node.
/// GitLab validates keywords against these types: a variable's value must be a string or an
/// integer (`0755` becomes `"493"`, `1.10` is a float and is rejected), a boolean field takes
/// `yes`/`on`, a duration must be a string (`start_in: 30` is an integer and is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yaml11 {
    Null,
    Bool(bool),
    Int(i64),
    Float,
    Str,
    Seq,
    Map,
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

    /// What GitLab's YAML parser (Ruby's Psych, YAML 1.1) makes of this node: plain scalars
    /// are typed by their text (see [`Yaml11`]); quoted and block scalars are strings.
    pub fn yaml11(&self) -> Yaml11 {
        match &self.value {
            Value::Null => Yaml11::Null,
            Value::Scalar(s, Style::Plain) => yaml11_scalar(s),
            Value::Scalar(..) => Yaml11::Str,
            Value::Seq(_) => Yaml11::Seq,
            Value::Map(_) => Yaml11::Map,
        }
    }

    /// A boolean as GitLab reads it: a plain `true/false/yes/no/on/off` in any letter case
    /// (Psych's YAML 1.1 booleans; `y` and `n` are strings); never a quoted string.
    pub fn as_bool(&self) -> Option<bool> {
        match self.yaml11() {
            Yaml11::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An integer as GitLab reads it: YAML 1.1 forms (`0755` octal, `0x1F`, `0b101`,
    /// `1_000`, `1,000`, sexagesimal `1:30`) when plain.
    pub fn as_int(&self) -> Option<i64> {
        match self.yaml11() {
            Yaml11::Int(v) => Some(v),
            _ => None,
        }
    }

    /// A short description of the node's type, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.yaml11() {
            Yaml11::Null => "null",
            Yaml11::Bool(_) => "boolean",
            Yaml11::Int(_) => "integer",
            Yaml11::Float => "float",
            Yaml11::Str => "string",
            Yaml11::Seq => "list",
            Yaml11::Map => "map",
        }
    }

    /// [`Node::kind`] with its article, for messages: "an integer", "a map", "null".
    pub fn a_kind(&self) -> String {
        match self.kind() {
            "null" => "null".into(),
            k @ "integer" => format!("an {k}"),
            k => format!("a {k}"),
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

/// Psych's `ScalarScanner#tokenize` for a plain scalar, reduced to the types GitLab tells
/// apart. Dates and times (which GitLab refuses to load) are left as strings.
fn yaml11_scalar(s: &str) -> Yaml11 {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return Yaml11::Null;
    };
    if first.is_ascii_alphabetic() || first == b'~' {
        // Words: only short ones can be `null`, booleans; everything else is a string.
        if s.len() > 5 {
            return Yaml11::Str;
        }
        let lower = s.to_ascii_lowercase();
        return match lower.as_str() {
            "~" | "null" => Yaml11::Null,
            "yes" | "true" | "on" => Yaml11::Bool(true),
            "no" | "false" | "off" => Yaml11::Bool(false),
            _ => Yaml11::Str,
        };
    }
    if matches!(s.to_ascii_lowercase().as_str(), ".inf" | "-.inf" | ".nan") {
        return Yaml11::Float;
    }
    if let Some(v) = sexagesimal_int(s) {
        return Yaml11::Int(v);
    }
    if is_sexagesimal_float(s) {
        return Yaml11::Float;
    }
    if looks_like_float(s) {
        let t: String = s.chars().filter(|c| !matches!(c, ',' | '_')).collect();
        return if ruby_float_ok(&t) {
            Yaml11::Float
        } else {
            Yaml11::Str
        };
    }
    if s.matches('.').count() < 2 {
        let t: String = s.chars().filter(|c| !matches!(c, ',' | '_')).collect();
        if let Some(v) = ruby_integer(&t) {
            return Yaml11::Int(v);
        }
    }
    Yaml11::Str
}

/// `[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+`, valued as Psych does (each part times 60^|i-2|).
fn sexagesimal_int(s: &str) -> Option<i64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = body.split(':');
    let head = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty()
        || !head.starts_with(|c: char| c.is_ascii_digit())
        || !head.bytes().all(|c| c.is_ascii_digit() || c == b'_')
        || !rest.iter().all(|p| is_base60_digit(p))
    {
        return None;
    }
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let mut total: i64 = 0;
    for (i, p) in std::iter::once(head).chain(rest).enumerate() {
        let n: i64 = p.replace('_', "").parse().ok()?;
        let n = if i == 0 { n * sign } else { n };
        total = total.checked_add(
            n.checked_mul(60i64.checked_pow((i as i64 - 2).unsigned_abs() as u32)?)?,
        )?;
    }
    Some(total)
}

fn is_base60_digit(p: &str) -> bool {
    match p.as_bytes() {
        [d] => d.is_ascii_digit(),
        [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
        _ => false,
    }
}

/// `[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`.
fn is_sexagesimal_float(s: &str) -> bool {
    let Some((int, frac)) = s.rsplit_once('.') else {
        return false;
    };
    int.contains(':')
        && sexagesimal_int(int).is_some()
        && frac.bytes().all(|c| c.is_ascii_digit() || c == b'_')
}

/// Psych's base-10 `FLOAT` pattern: `[-+]?([0-9][0-9_,]*)?\.[0-9.]*([eE][-+][0-9]+)?`.
fn looks_like_float(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    if let Some(e) = exp {
        let digits = match e.strip_prefix(['-', '+']) {
            Some(d) => d,
            None => return false,
        };
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let Some(dot) = mantissa.find('.') else {
        return false;
    };
    let (int, frac) = (&mantissa[..dot], &mantissa[dot + 1..]);
    (int.is_empty()
        || (int.starts_with(|c: char| c.is_ascii_digit())
            && int
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'_' || c == b',')))
        && frac.bytes().all(|c| c.is_ascii_digit() || c == b'.')
}

/// Whether Ruby's `Float()` accepts the text (digits on both sides of one dot).
fn ruby_float_ok(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let exp_ok = exp.is_none_or(|e| {
        let d = e.strip_prefix(['-', '+']).unwrap_or(e);
        !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
    });
    match mantissa.split_once('.') {
        Some((i, f)) => {
            exp_ok
                && i.bytes().all(|c| c.is_ascii_digit())
                && !f.is_empty()
                && f.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Ruby's `Integer()` on text without `_` and `,`: an optional sign, then `0x`, `0b`,
/// `0o`/`0` (octal) or decimal digits.
fn ruby_integer(t: &str) -> Option<i64> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if t.is_empty() {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(d) = lower.strip_prefix("0d") {
        d.parse().ok()?
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
        || !matches!(yaml11_scalar(s), Yaml11::Str)
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

/// A YAML double-quoted scalar: JSON's string syntax is a subset of it.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
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
    fn yaml11_scalars_as_psych_reads_them() {
        use Yaml11::*;
        for (text, want) in [
            ("0755", Int(493)),
            ("1_000", Int(1000)),
            ("1,000", Int(1000)),
            ("0x1F", Int(31)),
            ("0b101", Int(5)),
            ("-3", Int(-3)),
            ("+5", Int(5)),
            ("1:30", Int(5400)),
            ("08", Str),
            ("abc", Str),
            ("1.10", Float),
            ("3.0", Float),
            (".5", Float),
            ("1.0e+3", Float),
            ("1.0e3", Str),
            ("1.2.3", Str),
            ("10.0.0.1", Str),
            ("1.", Str),
            (".inf", Float),
            ("yes", Bool(true)),
            ("ON", Bool(true)),
            ("tRuE", Bool(true)),
            ("off", Bool(false)),
            ("y", Str),
            ("n", Str),
            ("NULL", Null),
            ("~", Null),
            ("python:3.12", Str),
            ("v1.2", Str),
        ] {
            assert_eq!(yaml11_scalar(text), want, "{text}");
        }
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
