//! Evaluation, modelled on GitLab's Ruby: every node yields a Ruby value (`nil`, a string, a
//! boolean or a regex), `&&`/`||` return one of their operands the way Ruby's do, and the
//! result counts as true when it is ActiveSupport-`present?`.

use std::borrow::Cow;

use super::parser::{BinOp, Node};
use super::pattern::Pattern;

/// A Ruby value.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Nil,
    Bool(bool),
    Str(Cow<'a, str>),
    Regex(Cow<'a, Pattern>),
}

/// An evaluation GitLab's Ruby does not survive (a `NoMethodError`, e.g. `/a/ == "a"`, which
/// calls `"a".source`, or `$A =~ ($B == $C)`, which calls `true.gsub`). GitLab fails the
/// pipeline; here the whole expression counts as false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crash;

impl Value<'_> {
    /// Ruby truthiness: only `nil` and `false` are false (an empty string is true).
    fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// ActiveSupport's `present?`: `nil`, `false`, and strings of only whitespace are blank.
    pub(crate) fn present(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Str(s) => !s.chars().all(char::is_whitespace),
            Value::Regex(_) => true,
        }
    }

    /// Ruby's `to_s`, as the left side of `=~` uses it.
    fn to_ruby_s(&self) -> Cow<'_, str> {
        match self {
            Value::Nil => Cow::Borrowed(""),
            Value::Bool(true) => Cow::Borrowed("true"),
            Value::Bool(false) => Cow::Borrowed("false"),
            Value::Str(s) => Cow::Borrowed(s),
            // `Object#to_s` (GitLab's output also has the object's address).
            Value::Regex(_) => Cow::Borrowed("#<Gitlab::UntrustedRegexp>"),
        }
    }

    /// Ruby's `==`.
    fn ruby_eq(&self, other: &Value<'_>) -> Result<bool, Crash> {
        Ok(match (self, other) {
            // `UntrustedRegexp#==` compares `source`, which nothing else has.
            (Value::Regex(a), Value::Regex(b)) => a.source() == b.source(),
            (Value::Regex(_), _) => return Err(Crash),
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        })
    }
}

/// Evaluates a node against the variables.
pub(crate) fn eval<'a>(
    node: &'a Node,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value<'a>, Crash> {
    match node {
        Node::Variable(name) => Ok(lookup(name).map_or(Value::Nil, |v| Value::Str(Cow::Owned(v)))),
        Node::Str(s) => Ok(Value::Str(Cow::Borrowed(s))),
        Node::Null => Ok(Value::Nil),
        Node::Pattern(p) => Ok(Value::Regex(Cow::Borrowed(p))),
        Node::Binary { op, lhs, rhs } => match op {
            BinOp::And => {
                let left = eval(lhs, lookup)?;
                if left.truthy() {
                    eval(rhs, lookup)
                } else {
                    Ok(left)
                }
            }
            BinOp::Or => {
                let left = eval(lhs, lookup)?;
                if left.truthy() {
                    Ok(left)
                } else {
                    eval(rhs, lookup)
                }
            }
            BinOp::Eq => {
                let (left, right) = (eval(lhs, lookup)?, eval(rhs, lookup)?);
                Ok(Value::Bool(left.ruby_eq(&right)?))
            }
            BinOp::Ne => {
                let (left, right) = (eval(lhs, lookup)?, eval(rhs, lookup)?);
                Ok(Value::Bool(!left.ruby_eq(&right)?))
            }
            BinOp::Match | BinOp::NotMatch => {
                let (left, right) = (eval(lhs, lookup)?, eval(rhs, lookup)?);
                let found = matches(&left, &right)?;
                Ok(Value::Bool(
                    found.unwrap_or(false) != (*op == BinOp::NotMatch),
                ))
            }
        },
    }
}

/// GitLab's `Matches`/`NotMatches`: whether `right` finds anything in `left`. `None` when
/// `right` is `nil` or `false`, where `=~` is false and `!~` is true without looking.
///
/// A string on the right is turned into a regex when it reads as `/pattern/flags` (that is how
/// variables hold patterns). Any other string (a quoted literal, an invalid regex) is searched
/// for the left side as a plain substring: the operands swap roles, so `"23" =~ "1234"` is true.
fn matches(left: &Value<'_>, right: &Value<'_>) -> Result<Option<bool>, Crash> {
    let text = left.to_ruby_s();
    match right {
        Value::Nil | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Err(Crash),
        Value::Regex(p) => Ok(Some(p.is_match(&text))),
        Value::Str(s) => Ok(Some(match Pattern::compile(s) {
            Ok(p) => p.is_match(&text),
            Err(_) => s.contains(text.as_ref()),
        })),
    }
}
