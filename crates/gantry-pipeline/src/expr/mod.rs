//! The CI/CD variable expression language of GitLab's `rules:if` and `only/except: variables`.
//!
//! [`parse`] turns an expression such as `$CI_COMMIT_BRANCH == "main" && $DEPLOY` into an
//! [`Expr`], or explains with an [`ExprError`] (byte span, message, hint) why GitLab would reject
//! it; [`Expr::evaluate`] decides it against a variable lookup, and [`Expr::variables`] lists the
//! variables it reads. The syntax is: `$NAME` variables (`[A-Za-z0-9_]+`), `"..."` and `'...'`
//! strings (no escape sequences, no line breaks), `null`, `/pattern/flags` regexes (RE2 syntax,
//! flags `i`, `m`, `s`, `U`, `\/` for a slash), the comparisons `==`, `!=`, `=~`, `!~`, then
//! `&&`, then `||` (all left-associative), and parentheses. GitLab's limit of 99 tokens applies.
//!
//! The semantics are GitLab's Ruby implementation (`Gitlab::Ci::Pipeline::Expression`), quirks
//! included, because a pipeline must select the same jobs here as on GitLab:
//!
//! - Every node yields a Ruby value. An undefined variable is `nil`, so `$UNSET == null` holds
//!   but `$UNSET == ""` does not, while `$EMPTY == ""` holds and `$EMPTY == null` does not.
//! - `&&` and `||` return an operand with Ruby truthiness, where only `nil` is false and `""` is
//!   true; the final value then counts only if it is `present?`: not `nil`, not `false`, and
//!   not a string of only whitespace. So `$EMPTY || $SET` is **false** (it yields `""`), and
//!   `$EMPTY && $SET` is true. A lone string counts when it is not blank; a lone regex counts.
//! - `=~` searches anywhere in the left side (unanchored) and `!~` is its negation. An undefined
//!   left side is searched as `""`, so `$UNSET =~ /^$/` is true. When the right side is `nil`,
//!   `=~` is false and `!~` true. A string on the right (a variable's value, or a literal) is
//!   used as a regex if it reads as `/pattern/flags`; otherwise the roles swap and the left side
//!   is looked for as a substring of it: `"23" =~ "1234"` is true.
//! - A regex literal needs at least two characters between its slashes and cannot end with a
//!   backslash (`/a/` is a syntax error; a variable holding `/a/` works). An invalid literal
//!   regex is a syntax error; an invalid one from a variable falls back to the substring rule.
//! - Cases where GitLab's Ruby raises instead (comparing a regex with `==`, or `=~` against a
//!   boolean) make the whole expression false.
//!
//! `${VAR}`, `%VAR%`, unexpanded `$[[ inputs.x ]]`, single `=`/`&`/`|`/`!` and bare words are
//! syntax errors with a hint.

mod eval;
mod lexer;
mod parser;
mod pattern;

pub(crate) use pattern::Pattern;

use std::fmt;
use std::str::FromStr;

use parser::Node;

/// The most tokens one expression may have. GitLab's lexer (`MAX_TOKENS = 100`) fails on the
/// 100th token.
pub const MAX_TOKENS: usize = 99;

/// The deepest parenthesis nesting accepted. With [`MAX_TOKENS`] it cannot be reached; it keeps
/// the recursive parser's stack bounded whatever the token limit.
pub const MAX_NESTING: usize = 64;

/// A parsed expression. Two expressions are equal when their syntax trees are (regexes compare
/// by their text); redundant parentheses and whitespace make no difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: Node,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset of the offending text in the expression.
    pub offset: usize,
    /// Byte length of the offending text (0 at the end of the expression).
    pub len: usize,
    /// What is wrong, e.g. "unterminated string literal".
    pub message: String,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    parser::parse_node(src, MAX_TOKENS).map(|root| Expr { root })
}

impl Expr {
    /// Evaluates the expression the way GitLab does (see the module documentation).
    ///
    /// `lookup` returns None when a variable is not defined.
    pub fn evaluate(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        eval::eval(&self.root, lookup).is_ok_and(|value| value.present())
    }

    /// The variable names the expression reads (for "why" traces), in order of appearance,
    /// deduplicated.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.root.collect_variables(&mut names);
        names
    }
}

impl fmt::Display for Expr {
    /// A normalized rendering: single spaces around operators, parentheses only where the
    /// structure needs them, double-quoted strings (single quotes when the text has a `"`),
    /// regexes as written. It parses back to an equal [`Expr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl FromStr for Expr {
    type Err = ExprError;

    fn from_str(src: &str) -> Result<Self, Self::Err> {
        parse(src)
    }
}

impl ExprError {
    pub(crate) fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            len,
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The source line with the offending span underlined, then the message and the help:
    ///
    /// ```text
    /// $A = "x"
    ///    ^ unknown operator `=`: did you mean `==`?
    /// help: `==` compares two values; `=~` matches a regex
    /// ```
    pub fn render(&self, src: &str) -> String {
        let offset = floor_char_boundary(src, self.offset);
        let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
        let line = &src[line_start..line_end];
        let column = src[line_start..offset].chars().count();
        let span_end = floor_char_boundary(src, offset.saturating_add(self.len)).min(line_end);
        let width = src[offset..span_end.max(offset)].chars().count().max(1);
        let mut out = format!(
            "{line}\n{}{} {}",
            " ".repeat(column),
            "^".repeat(width),
            self.message
        );
        if let Some(help) = &self.help {
            out.push_str("\nhelp: ");
            out.push_str(help);
        }
        out
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)?;
        if let Some(help) = &self.help {
            write!(f, "; help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

#[cfg(test)]
mod tests;
