//! Diagnostics: every problem found in a pipeline file, with a code, a place and a hint.
//!
//! The loader, the resolver, the validator and the planner never stop at the first problem:
//! they push [`Diagnostic`]s into a [`Diagnostics`] list and carry on with what is usable.
//! The same values are rendered for a terminal by [`Diagnostics::render`], serialised as JSON
//! for `gantry lint --format json` and the API, and shown at their lines in the web UI.
//!
//! Codes are stable and grouped by phase:
//! `E01xx` YAML, `E02xx` structure and keywords, `E03xx` includes, `E04xx` extends and
//! `!reference`, `E05xx` expressions, `E06xx` inputs, `E07xx` plan (DAG) problems.
//! Warnings use the same numbers with a `W` prefix.

use crate::source::{SourceMap, Span};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code such as `E0203`.
    pub code: &'static str,
    pub message: String,
    /// Where the problem is; `None` for problems with no place (e.g. an empty pipeline).
    #[serde(skip)]
    pub span: Option<Span>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            code,
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// How many warnings of one code [`Diagnostics::render`] shows before it counts the rest.
pub const WARNINGS_SHOWN_PER_CODE: usize = 5;

/// An ordered collection of diagnostics.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

/// A diagnostic with its place resolved to file name, line and column, for JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct LocatedDiagnostic<'a> {
    #[serde(flatten)]
    pub diagnostic: &'a Diagnostic,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub end_line: Option<u32>,
    pub end_column: Option<u32>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(&mut self, code: &'static str, message: impl Into<String>, span: Option<Span>) {
        self.push(Diagnostic::error(code, message, span));
    }

    pub fn error_help(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        span: Option<Span>,
        help: impl Into<String>,
    ) {
        self.push(Diagnostic::error(code, message, span).with_help(help));
    }

    pub fn warning(&mut self, code: &'static str, message: impl Into<String>, span: Option<Span>) {
        self.push(Diagnostic::warning(code, message, span));
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Sorts by file, then position, errors before warnings at the same place, and drops
    /// exact duplicates (the same problem reached through two paths, e.g. an anchor used twice).
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| {
            let place = d.span.map(|s| (s.file.0, s.start.line, s.start.col));
            (place.is_none(), place, d.severity, d.code)
        });
        self.items.dedup();
    }

    pub fn located<'a>(&'a self, sources: &'a SourceMap) -> Vec<LocatedDiagnostic<'a>> {
        self.items
            .iter()
            .map(|d| LocatedDiagnostic {
                diagnostic: d,
                file: d.span.map(|s| sources.name(s.file)),
                line: d.span.map(|s| s.start.line),
                column: d.span.map(|s| s.start.col),
                end_line: d.span.map(|s| s.end.line),
                end_column: d.span.map(|s| s.end.col),
            })
            .collect()
    }

    /// Renders every diagnostic the way compilers do:
    ///
    /// ```text
    /// error[E0203]: job 'deploy' needs 'biuld', which is not defined
    ///   --> .gitlab-ci.yml:41:9
    ///    |
    /// 41 |   needs: [biuld]
    ///    |           ^^^^^
    ///    = help: did you mean 'build'?
    /// ```
    ///
    /// Errors are all shown. A warning repeated more than [`WARNINGS_SHOWN_PER_CODE`] times
    /// (one per job of a generated pipeline, say) is shown that many times, then counted.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        let mut shown: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for d in &self.items {
            if d.severity == Severity::Warning {
                let n = shown.entry(d.code).or_default();
                *n += 1;
                if *n > WARNINGS_SHOWN_PER_CODE {
                    continue;
                }
            }
            render_one(&mut out, d, sources);
            out.push('\n');
        }
        let mut hidden: Vec<(&str, usize)> = shown
            .into_iter()
            .filter(|(_, n)| *n > WARNINGS_SHOWN_PER_CODE)
            .map(|(c, n)| (c, n - WARNINGS_SHOWN_PER_CODE))
            .collect();
        hidden.sort();
        for (code, n) in hidden {
            let _ = writeln!(
                out,
                "warning[{code}]: … and {n} more like it (`--format json` lists them all)\n"
            );
        }
        out
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

fn render_one(out: &mut String, d: &Diagnostic, sources: &SourceMap) {
    let sev = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(out, "{sev}[{}]: {}", d.code, d.message);
    let Some(span) = d.span else {
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        return;
    };
    let file = sources.get(span.file);
    let line_no = span.start.line;
    let width = line_no.to_string().len();
    let pad = " ".repeat(width);
    let _ = writeln!(out, "{pad}--> {}:{}:{}", file.name, line_no, span.start.col);
    if let Some(text) = file.line(line_no) {
        let text = text.replace('\t', " ");
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line_no} | {text}");
        let start = (span.start.col.max(1) - 1) as usize;
        let line_chars = text.chars().count();
        let end = if span.end.line == line_no && span.end.col > span.start.col {
            (span.end.col - 1) as usize
        } else {
            line_chars.max(start + 1)
        };
        let len = end.saturating_sub(start).max(1);
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(start), "^".repeat(len));
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "{pad} = help: {help}");
    }
}

/// The candidate closest to `name` by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, c)| *d <= max && *c != name)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits plus adjacent transpositions ("biuld" → "build" is 1).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("biuld", ["build", "test", "deploy"]),
            Some("build")
        );
        assert_eq!(did_you_mean("scirpt", ["script", "stage"]), Some("script"));
        assert_eq!(did_you_mean("zzz", ["build", "test"]), None);
    }

    #[test]
    fn renders_caret_under_token() {
        let mut sources = SourceMap::new();
        let f = sources.add(".gitlab-ci.yml", "build:\n  needs: [biuld]\n");
        let mut d = Diagnostics::new();
        let span = Span {
            file: f,
            start: crate::source::Pos { line: 2, col: 11 },
            end: crate::source::Pos { line: 2, col: 16 },
        };
        d.push(
            Diagnostic::error("E0203", "needs 'biuld'", Some(span))
                .with_help("did you mean 'build'?"),
        );
        let text = d.render(&sources);
        assert!(text.contains("--> .gitlab-ci.yml:2:11"), "{text}");
        assert!(
            text.contains("2 |   needs: [biuld]\n  |           ^^^^^\n"),
            "{text}"
        );
        assert!(text.contains("= help: did you mean 'build'?"), "{text}");
    }
}
