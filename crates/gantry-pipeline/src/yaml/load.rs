//! Event stream → [`Node`] tree, with anchors, aliases, merge keys, duplicate keys and budgets.

use super::{Map, Node, Style, Value};
use crate::diag::Diagnostics;
use crate::source::{FileId, Pos, SourceMap, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::collections::HashMap;

/// Budgets that keep a hostile file from exhausting memory or the stack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes in one file (GitLab's default is 2 MiB per file; we allow a little more).
    pub max_bytes: usize,
    /// Nesting depth of collections.
    pub max_depth: usize,
    /// Nodes that alias expansion may create in one file (stops "billion laughs").
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 100,
            max_alias_nodes: 500_000,
        }
    }
}

/// Loads every YAML document of a file (a file with a `spec:` header has two).
/// On a syntax error or an exceeded budget, pushes a diagnostic and returns `None`.
pub fn load(sources: &SourceMap, file: FileId, diags: &mut Diagnostics) -> Option<Node> {
    load_with_limits(sources, file, diags, Limits::default()).map(|mut docs| {
        if docs.len() > 1 {
            docs.swap_remove(docs.len() - 1)
        } else {
            docs.pop()
                .unwrap_or_else(|| Node::null(Span::point(file, 1, 1)))
        }
    })
}

/// Like [`load`] with explicit limits, returning every document.
pub fn load_with_limits(
    sources: &SourceMap,
    file: FileId,
    diags: &mut Diagnostics,
    limits: Limits,
) -> Option<Vec<Node>> {
    let text = &sources.get(file).text;
    if text.len() > limits.max_bytes {
        diags.error_help(
            "E0102",
            format!(
                "the file is {} bytes, more than the limit of {} bytes",
                text.len(),
                limits.max_bytes
            ),
            Some(Span::point(file, 1, 1)),
            "split the pipeline into several files with `include:`",
        );
        return None;
    }
    let normalized;
    let text: &str = if text.contains('\r') {
        normalized = text.replace("\r\n", "\n");
        &normalized
    } else {
        text
    };
    let mut b = Builder {
        file,
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        docs: Vec::new(),
        diags,
    };
    for ev in Parser::new_from_str(text) {
        match ev {
            Ok((ev, span)) => {
                if let Err(stop) = b.event(ev, span) {
                    b.diags.push(stop);
                    return None;
                }
            }
            Err(e) => {
                let m = e.marker();
                let span = Span::point(file, m.line() as u32, m.col() as u32 + 1);
                if e.info().contains("recursion") || e.info().contains("depth") {
                    b.diags.error(
                        "E0103",
                        format!("the YAML is nested too deeply: {}", e.info()),
                        Some(span),
                    );
                    return None;
                }
                if e.info().contains("unknown anchor") {
                    b.diags.error_help(
                        "E0101",
                        "this alias names an anchor that is not defined before it in this file",
                        Some(span),
                        "anchors work only inside the file that defines them, after the definition; across files use `extends:` or `!reference`",
                    );
                    return None;
                }
                let hint = if e.info().contains("tab") {
                    "YAML indentation must use spaces, not tabs"
                } else {
                    "check the indentation and quoting on this line and the one before it"
                };
                b.diags.error_help(
                    "E0101",
                    format!("YAML syntax error: {}", e.info()),
                    Some(span),
                    hint,
                );
                return None;
            }
        }
    }
    Some(b.docs)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Span,
        anchor: usize,
        tag: Option<String>,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        start: Span,
        anchor: usize,
        tag: Option<String>,
    },
}

struct Builder<'d> {
    file: FileId,
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    docs: Vec<Node>,
    diags: &'d mut Diagnostics,
}

type Stop = crate::diag::Diagnostic;

impl Builder<'_> {
    fn span(&self, s: YSpan) -> Span {
        Span {
            file: self.file,
            start: Pos {
                line: s.start.line() as u32,
                col: s.start.col() as u32 + 1,
            },
            end: Pos {
                line: s.end.line() as u32,
                col: s.end.col() as u32 + 1,
            },
        }
    }

    fn event(&mut self, ev: Event<'_>, yspan: YSpan) -> Result<(), Stop> {
        let span = self.span(yspan);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let (tag, core) = split_tag(
                    tag.as_deref()
                        .map(|t| (t.handle.as_str(), t.suffix.as_str())),
                );
                let value = match (style, core.as_deref()) {
                    (_, Some("str")) => Value::Scalar(text.into_owned(), Style::Quoted),
                    (_, Some("null")) => Value::Null,
                    (ScalarStyle::Plain, _) if is_null(&text) => Value::Null,
                    (ScalarStyle::Plain, _) => Value::Scalar(text.into_owned(), Style::Plain),
                    (ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted, _) => {
                        Value::Scalar(text.into_owned(), Style::Quoted)
                    }
                    _ => Value::Scalar(text.into_owned(), Style::Block),
                };
                let node = Node { value, span, tag };
                self.finish(node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_depth(span)?;
                let (tag, _) = split_tag(
                    tag.as_deref()
                        .map(|t| (t.handle.as_str(), t.suffix.as_str())),
                );
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    start: span,
                    anchor,
                    tag,
                });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.check_depth(span)?;
                let (tag, _) = split_tag(
                    tag.as_deref()
                        .map(|t| (t.handle.as_str(), t.suffix.as_str())),
                );
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    start: span,
                    anchor,
                    tag,
                });
                Ok(())
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq {
                    items,
                    start,
                    anchor,
                    tag,
                }) = self.stack.pop()
                else {
                    unreachable!("the parser balances sequence events")
                };
                let node = Node {
                    value: Value::Seq(items),
                    span: Span {
                        end: span.end,
                        ..start
                    },
                    tag,
                };
                self.finish(node, anchor)
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    entries,
                    start,
                    anchor,
                    tag,
                    ..
                }) = self.stack.pop()
                else {
                    unreachable!("the parser balances mapping events")
                };
                let map = self.build_map(entries);
                let node = Node {
                    value: Value::Map(map),
                    span: Span {
                        end: span.end,
                        ..start
                    },
                    tag,
                };
                self.finish(node, anchor)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Stop::error(
                        "E0101",
                        "alias to an unknown anchor",
                        Some(span),
                    ));
                };
                self.alias_nodes += target.size();
                if self.alias_nodes > self.limits.max_alias_nodes {
                    return Err(Stop::error(
                        "E0103",
                        format!(
                            "aliases expand to more than {} nodes (an alias bomb?)",
                            self.limits.max_alias_nodes
                        ),
                        Some(span),
                    )
                    .with_help(
                        "use `extends:` or `!reference` instead of nesting aliases of aliases",
                    ));
                }
                let node = target.clone();
                self.finish(node, 0)
            }
            Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => Ok(()),
        }
    }

    fn check_depth(&self, span: Span) -> Result<(), Stop> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Stop::error(
                "E0103",
                format!(
                    "the YAML is nested more than {} levels deep",
                    self.limits.max_depth
                ),
                Some(span),
            ));
        }
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), Stop> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn build_map(&mut self, raw: Vec<(Node, Node)>) -> Map {
        // Keys written explicitly in this mapping win over merged ones, wherever they stand.
        let explicit: Vec<String> = raw
            .iter()
            .filter(|(k, _)| !is_merge_key(k))
            .filter_map(|(k, _)| key_text(k))
            .collect();
        let mut map = Map::default();
        let mut seen_explicit: HashMap<String, Span> = HashMap::new();
        for (k, v) in raw {
            if is_merge_key(&k) {
                let sources: Vec<Node> = match v.value {
                    Value::Map(_) => vec![v],
                    Value::Seq(items) => items,
                    _ => {
                        self.diags.error(
                            "E0104",
                            "a merge key `<<` takes an alias to a map, or a list of them",
                            Some(v.span),
                        );
                        continue;
                    }
                };
                for src in sources {
                    let Value::Map(m) = src.value else {
                        self.diags.error(
                            "E0104",
                            "a merge key `<<` can only merge maps",
                            Some(src.span),
                        );
                        continue;
                    };
                    for e in m.entries {
                        if !explicit.contains(&e.key) && !map.contains(&e.key) {
                            map.entries.push(e);
                        }
                    }
                }
                continue;
            }
            let Some(key) = key_text(&k) else {
                self.diags.error_help(
                    "E0105",
                    format!("a mapping key must be a string, found a {}", k.kind()),
                    Some(k.span),
                    "quote the key",
                );
                continue;
            };
            if let Some(first) = seen_explicit.get(&key) {
                self.diags.warning(
                    "W0106",
                    format!(
                        "duplicate key '{key}' (first at line {}); the last one wins",
                        first.start.line
                    ),
                    Some(k.span),
                );
            }
            seen_explicit.insert(key.clone(), k.span);
            map.insert(key, k.span, v);
        }
        map
    }
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.value, Value::Scalar(s, Style::Plain) if s == "<<")
}

fn key_text(k: &Node) -> Option<String> {
    match &k.value {
        Value::Scalar(s, _) => Some(s.clone()),
        // `null:` and `~:` as keys read as the string "null" in GitLab's parser.
        Value::Null => Some("null".into()),
        _ => None,
    }
}

/// Psych reads an empty plain scalar, `~` and `null` in any letter case as null.
fn is_null(s: &str) -> bool {
    s.is_empty() || s == "~" || s.eq_ignore_ascii_case("null")
}

/// Splits a tag into a kept custom tag and an applied core-schema type.
fn split_tag(tag: Option<(&str, &str)>) -> (Option<String>, Option<String>) {
    match tag {
        None => (None, None),
        Some(("!!", suffix)) => (None, Some(suffix.to_string())),
        Some(("tag:yaml.org,2002:", suffix)) => (None, Some(suffix.to_string())),
        Some((handle, suffix)) => (Some(format!("{handle}{suffix}")), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> (Option<Node>, Diagnostics) {
        let mut sources = SourceMap::new();
        let f = sources.add("t.yml", src);
        let mut d = Diagnostics::new();
        let n = load(&sources, f, &mut d);
        (n, d)
    }

    #[test]
    fn keeps_positions() {
        let (n, d) = parse("a:\n  b: [x, y]\n");
        assert!(d.is_empty());
        let n = n.unwrap();
        let b = n
            .as_map()
            .unwrap()
            .get("a")
            .unwrap()
            .as_map()
            .unwrap()
            .entry("b")
            .unwrap();
        assert_eq!(b.key_span.start, Pos { line: 2, col: 3 });
        let y = &b.value.as_seq().unwrap()[1];
        assert_eq!(y.span.start, Pos { line: 2, col: 10 });
    }

    #[test]
    fn merge_keys_explicit_wins() {
        let (n, d) =
            parse(".a: &a {x: 1, y: 2}\n.b: &b {y: 3, z: 4}\nj:\n  x: 0\n  <<: [*a, *b]\n");
        assert!(d.is_empty(), "{d:?}");
        let n = n.unwrap();
        let j = n.as_map().unwrap().get("j").unwrap().as_map().unwrap();
        assert_eq!(j.get("x").unwrap().as_str(), Some("0"));
        assert_eq!(j.get("y").unwrap().as_str(), Some("2"));
        assert_eq!(j.get("z").unwrap().as_str(), Some("4"));
    }

    #[test]
    fn duplicate_key_warns_last_wins() {
        let (n, d) = parse("a: 1\na: 2\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d.iter().next().unwrap().code, "W0106");
        assert_eq!(
            n.unwrap().as_map().unwrap().get("a").unwrap().as_str(),
            Some("2")
        );
    }

    #[test]
    fn reference_tag_kept() {
        let (n, _) = parse("s: !reference [.setup, script]\n");
        let n = n.unwrap();
        let s = n.as_map().unwrap().get("s").unwrap();
        assert_eq!(s.tag.as_deref(), Some("!reference"));
    }

    #[test]
    fn alias_bomb_is_stopped() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            src.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let (n, d) = parse(&src);
        assert!(n.is_none());
        assert_eq!(d.iter().next().unwrap().code, "E0103");
    }

    #[test]
    fn deep_nesting_is_stopped() {
        let src = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let (n, d) = parse(&src);
        assert!(n.is_none());
        assert_eq!(d.iter().next().unwrap().code, "E0103");
    }

    #[test]
    fn crlf_files() {
        let (n, d) = parse("a:\r\n  script:\r\n    - echo hi\r\n");
        assert!(d.is_empty());
        let n = n.unwrap();
        let s = n
            .as_map()
            .unwrap()
            .get("a")
            .unwrap()
            .as_map()
            .unwrap()
            .get("script")
            .unwrap();
        assert_eq!(s.as_seq().unwrap()[0].as_str(), Some("echo hi"));
    }

    #[test]
    fn syntax_error_has_place() {
        let (n, d) = parse("a:\n  b: [x\nc: d\n");
        assert!(n.is_none());
        let e = d.iter().next().unwrap();
        assert_eq!(e.code, "E0101");
        assert!(e.span.is_some());
    }

    #[test]
    fn scalars_as_written() {
        let (n, _) = parse("a: 0755\nb: 'on'\nc: on\nd: ~\ne: !!str 12\n");
        let n = n.unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m.get("a").unwrap().as_int(), Some(493));
        assert_eq!(m.get("a").unwrap().as_str(), Some("0755"));
        assert_eq!(m.get("b").unwrap().as_bool(), None);
        assert_eq!(m.get("c").unwrap().as_bool(), Some(true));
        assert!(m.get("d").unwrap().is_null());
        assert_eq!(m.get("e").unwrap().as_int(), None);
    }

    #[test]
    fn two_documents_spec_header() {
        let mut sources = SourceMap::new();
        let f = sources.add(
            "t.yml",
            "spec:\n  inputs:\n    x:\n---\njob: {script: [a]}\n",
        );
        let mut d = Diagnostics::new();
        let docs = load_with_limits(&sources, f, &mut d, Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
    }
}
