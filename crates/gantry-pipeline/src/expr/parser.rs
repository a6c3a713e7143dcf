//! Recursive-descent parser and the syntax tree.
//!
//! Grammar (GitLab's precedences: the comparisons bind tightest, then `&&`, then `||`; every
//! operator is left-associative):
//!
//! ```text
//! or      := and ( "||" and )*
//! and     := compare ( "&&" compare )*
//! compare := primary ( ( "==" | "!=" | "=~" | "!~" ) primary )*
//! primary := VARIABLE | STRING | "null" | PATTERN | "(" or ")"
//! ```
//!
//! GitLab parses with a shunting-yard algorithm that does not check operator positions, so it
//! also takes a few malformed inputs (`== $A $B`, `$A $B ==`) as `$A == $B`; those are rejected
//! here.

use std::fmt;

use super::lexer::{Token, TokenKind, tokenize};
use super::pattern::Pattern;
use super::{ExprError, MAX_NESTING};

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Match,
    NotMatch,
    And,
    Or,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Match => "=~",
            BinOp::NotMatch => "!~",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength: lower binds tighter (GitLab uses Ruby's table: 10, 11, 12).
    fn rank(self) -> u8 {
        match self {
            BinOp::Eq | BinOp::Ne | BinOp::Match | BinOp::NotMatch => 1,
            BinOp::And => 2,
            BinOp::Or => 3,
        }
    }

    fn from_token(kind: &TokenKind) -> Option<BinOp> {
        Some(match kind {
            TokenKind::Eq => BinOp::Eq,
            TokenKind::Ne => BinOp::Ne,
            TokenKind::Match => BinOp::Match,
            TokenKind::NotMatch => BinOp::NotMatch,
            TokenKind::And => BinOp::And,
            TokenKind::Or => BinOp::Or,
            _ => return None,
        })
    }
}

/// A node of the syntax tree. Redundant parentheses leave no trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Variable(String),
    Str(String),
    Null,
    Pattern(Box<Pattern>),
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

impl Node {
    fn rank(&self) -> u8 {
        match self {
            Node::Binary { op, .. } => op.rank(),
            _ => 0,
        }
    }

    /// Adds the variables read, in order of appearance, skipping ones already listed.
    pub(crate) fn collect_variables(&self, out: &mut Vec<String>) {
        match self {
            Node::Variable(name) => {
                if !out.iter().any(|n| n == name) {
                    out.push(name.clone());
                }
            }
            Node::Binary { lhs, rhs, .. } => {
                lhs.collect_variables(out);
                rhs.collect_variables(out);
            }
            Node::Str(_) | Node::Null | Node::Pattern(_) => {}
        }
    }
}

impl fmt::Display for Node {
    /// Normalized form: single spaces around operators, parentheses only where needed,
    /// strings in double quotes unless they contain one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Variable(name) => write!(f, "${name}"),
            Node::Str(s) if s.contains('"') => write!(f, "'{s}'"),
            Node::Str(s) => write!(f, "\"{s}\""),
            Node::Null => f.write_str("null"),
            Node::Pattern(p) => f.write_str(p.raw()),
            Node::Binary { op, lhs, rhs } => {
                if lhs.rank() > op.rank() {
                    write!(f, "({lhs})")?;
                } else {
                    write!(f, "{lhs}")?;
                }
                write!(f, " {} ", op.symbol())?;
                // Left-associative: an equal-rank right operand needs parentheses.
                if rhs.rank() >= op.rank() {
                    write!(f, "({rhs})")
                } else {
                    write!(f, "{rhs}")
                }
            }
        }
    }
}

/// Parses an expression of at most `max_tokens` tokens into its tree.
pub(crate) fn parse_node(src: &str, max_tokens: usize) -> Result<Node, ExprError> {
    let tokens = tokenize(src, max_tokens)?;
    if tokens.is_empty() {
        return Err(ExprError::new(0, src.len(), "empty expression")
            .with_help("write a condition, e.g. `$CI_COMMIT_BRANCH == \"main\"`"));
    }
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    let node = parser.or()?;
    match parser.peek() {
        None => Ok(node),
        Some(t) if t.kind == TokenKind::RParen => {
            Err(ExprError::new(t.offset, t.len, "unmatched `)`")
                .with_help("remove it, or add a matching `(`"))
        }
        Some(t) => Err(parser.missing_operator(t)),
    }
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn text(&self, t: &Token) -> &str {
        self.src.get(t.offset..t.offset + t.len).unwrap_or("")
    }

    /// `or := and ( "||" and )*`
    fn or(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.and()?;
        while self.peek().is_some_and(|t| t.kind == TokenKind::Or) {
            self.pos += 1;
            let rhs = self.and()?;
            lhs = binary(BinOp::Or, lhs, rhs);
        }
        Ok(lhs)
    }

    /// `and := compare ( "&&" compare )*`
    fn and(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.compare()?;
        while self.peek().is_some_and(|t| t.kind == TokenKind::And) {
            self.pos += 1;
            let rhs = self.compare()?;
            lhs = binary(BinOp::And, lhs, rhs);
        }
        Ok(lhs)
    }

    /// `compare := primary ( op primary )*` with the four comparison operators.
    fn compare(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.primary()?;
        while let Some(op) = self
            .peek()
            .and_then(|t| BinOp::from_token(&t.kind))
            .filter(|op| op.rank() == 1)
        {
            self.pos += 1;
            let rhs = self.primary()?;
            lhs = binary(op, lhs, rhs);
        }
        Ok(lhs)
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err(self.unexpected_end());
        };
        self.pos += 1;
        match token.kind {
            TokenKind::Variable(name) => Ok(Node::Variable(name)),
            TokenKind::Str(s) => Ok(Node::Str(s)),
            TokenKind::Null => Ok(Node::Null),
            TokenKind::Pattern(p) => Ok(Node::Pattern(p)),
            TokenKind::LParen => {
                if self.depth >= MAX_NESTING {
                    return Err(ExprError::new(
                        token.offset,
                        token.len,
                        format!("parentheses are nested too deeply (the limit is {MAX_NESTING})"),
                    ));
                }
                self.depth += 1;
                let inner = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(t) if t.kind == TokenKind::RParen => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    None => Err(ExprError::new(token.offset, token.len, "unclosed `(`")
                        .with_help("add a matching `)`")),
                    Some(t) => Err(self.missing_operator(t)),
                }
            }
            TokenKind::RParen => {
                let message = match self.pos.checked_sub(2).and_then(|i| self.tokens.get(i)) {
                    Some(prev) if prev.kind == TokenKind::LParen => {
                        "empty parentheses `()`".to_string()
                    }
                    Some(prev) if prev.kind.is_operator() => {
                        format!("expected a value after `{}`, found `)`", self.text(prev))
                    }
                    _ => "unexpected `)`: expected a value".to_string(),
                };
                Err(ExprError::new(token.offset, token.len, message))
            }
            _ => {
                let text = self.text(&token).to_string();
                let prev = self.pos.checked_sub(2).and_then(|i| self.tokens.get(i));
                let err = match prev {
                    Some(p) if p.kind.is_operator() => ExprError::new(
                        token.offset,
                        token.len,
                        format!("expected a value after `{}`, found `{text}`", self.text(p)),
                    ),
                    Some(_) => ExprError::new(
                        token.offset,
                        token.len,
                        format!("expected a value after `(`, found `{text}`"),
                    ),
                    None => ExprError::new(
                        token.offset,
                        token.len,
                        format!("an expression cannot start with `{text}`"),
                    ),
                };
                Err(err.with_help(format!(
                    "`{text}` needs a value on each side, e.g. `$VAR {text} \"value\"`"
                )))
            }
        }
    }

    /// The expression stops where a value was expected.
    fn unexpected_end(&self) -> ExprError {
        match self.tokens.last() {
            Some(last) if last.kind == TokenKind::LParen => {
                ExprError::new(last.offset, last.len, "unclosed `(`")
                    .with_help("add a value and a matching `)`")
            }
            Some(last) => {
                let text = self.text(last);
                ExprError::new(
                    last.offset,
                    last.len,
                    format!("unexpected token `{text}` at end of expression"),
                )
                .with_help(format!("`{text}` needs a value on its right"))
            }
            None => ExprError::new(0, self.src.len(), "empty expression"),
        }
    }

    /// Two operands in a row, or a value where `)` was expected.
    fn missing_operator(&self, t: &Token) -> ExprError {
        let text = self.text(t);
        ExprError::new(
            t.offset,
            t.len,
            format!(
                "unexpected {} `{text}`: expected an operator",
                t.kind.describe()
            ),
        )
        .with_help("join values with `==`, `!=`, `=~`, `!~`, `&&` or `||`")
    }
}

fn binary(op: BinOp, lhs: Node, rhs: Node) -> Node {
    Node::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    }
}
