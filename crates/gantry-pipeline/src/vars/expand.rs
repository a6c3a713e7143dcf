//! `$VAR` expansion as GitLab Runner does it (its "internal variable expansion mechanism", used
//! for `image`, `cache:key`, `artifacts:paths`, ... and for the final values of job variables),
//! with the server-side extras GitLab uses when it expands variables inside variables.
//!
//! The syntax, scanned left to right in one pass (the result is never scanned again):
//!
//! | written              | becomes                                                          |
//! |----------------------|------------------------------------------------------------------|
//! | `$$`                 | `$` (an escaped dollar; the `$` it yields starts nothing)        |
//! | `$NAME`              | the value of `NAME`, `""` when undefined; `NAME` is the longest run of `[A-Za-z0-9_]` after a letter or `_` |
//! | `${NAME}`            | the same, so `${A}B` is `A`'s value followed by `B`              |
//! | `$0`..`$9`, `$*`, `$#`, `$@`, `$!`, `$?`, `$-` | `""` (shell specials, which the runner blanks) |
//! | `${}`, `${not a name}`, an unclosed `${` | `""` (the runner's invalid syntax; an unclosed `${` loses only those two characters) |
//! | `$` before anything else, or at the end | itself                                        |
//! | `%NAME%`, `%%`       | only with [`ExpandOptions::percent`]: the value of `NAME` when defined, else kept as written; `%%` is kept |
//!
//! There is no `${NAME:-default}` or other shell operator: like the runner, such a reference
//! names no variable and expands to `""`.

/// A lexical piece of a string that may hold variable references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Text(&'a str),
    /// `$$`.
    Escape,
    /// `%%` (percent syntax only).
    PercentEscape,
    /// `$NAME` or `${NAME}`; `text` is the reference as written.
    Var {
        name: &'a str,
        text: &'a str,
    },
    /// `%NAME%` (percent syntax only).
    PercentVar {
        name: &'a str,
        text: &'a str,
    },
    /// `$1`, `$*`, `${}`, `${a-b}`, an unclosed `${`: expands to nothing.
    Invalid {
        text: &'a str,
    },
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && is_name_start(b[0]) && b[1..].iter().all(|&c| is_name_char(c))
}

/// Length of the name starting at `b[0]`, or 0.
fn name_len(b: &[u8]) -> usize {
    if b.first().is_some_and(|&c| is_name_start(c)) {
        b.iter().take_while(|&&c| is_name_char(c)).count()
    } else {
        0
    }
}

/// Splits `s` into tokens. Every byte the scanner looks at is ASCII, so the slices are always on
/// character boundaries.
pub(crate) fn tokenize(s: &str, percent: bool) -> Vec<Token<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < b.len() {
        let (token, width) = match b[i] {
            b'$' => dollar_token(s, i),
            b'%' if percent => percent_token(s, i),
            _ => (None, 1),
        };
        match token {
            Some(t) => {
                if text_start < i {
                    out.push(Token::Text(&s[text_start..i]));
                }
                out.push(t);
                i += width;
                text_start = i;
            }
            None => i += width,
        }
    }
    if text_start < b.len() {
        out.push(Token::Text(&s[text_start..]));
    }
    out
}

/// The token at `s[i] == '$'`, or `None` when the dollar is literal.
fn dollar_token(s: &str, i: usize) -> (Option<Token<'_>>, usize) {
    let b = s.as_bytes();
    let Some(&next) = b.get(i + 1) else {
        return (None, 1);
    };
    match next {
        b'$' => (Some(Token::Escape), 2),
        b'{' => match b[i + 2..].iter().position(|&c| c == b'}') {
            Some(len) => {
                let end = i + 2 + len + 1;
                let inner = &s[i + 2..end - 1];
                let text = &s[i..end];
                if is_name(inner) {
                    (Some(Token::Var { name: inner, text }), end - i)
                } else {
                    (Some(Token::Invalid { text }), end - i)
                }
            }
            None => (Some(Token::Invalid { text: &s[i..i + 2] }), 2),
        },
        b'*' | b'#' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9' => {
            (Some(Token::Invalid { text: &s[i..i + 2] }), 2)
        }
        _ => {
            let n = name_len(&b[i + 1..]);
            if n == 0 {
                (None, 1)
            } else {
                (
                    Some(Token::Var {
                        name: &s[i + 1..i + 1 + n],
                        text: &s[i..i + 1 + n],
                    }),
                    n + 1,
                )
            }
        }
    }
}

/// The token at `s[i] == '%'`, or `None` when the percent sign is literal.
fn percent_token(s: &str, i: usize) -> (Option<Token<'_>>, usize) {
    let b = s.as_bytes();
    if b.get(i + 1) == Some(&b'%') {
        return (Some(Token::PercentEscape), 2);
    }
    let n = name_len(&b[i + 1..]);
    if n > 0 && b.get(i + 1 + n) == Some(&b'%') {
        let text = &s[i..i + n + 2];
        (
            Some(Token::PercentVar {
                name: &s[i + 1..i + 1 + n],
                text,
            }),
            n + 2,
        )
    } else {
        (None, 1)
    }
}

/// Variations on [`expand`]. The default is exactly [`expand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpandOptions {
    /// Leave references to undefined variables (and invalid references such as `$1` or `${}`)
    /// as written instead of removing them, as GitLab does on the server before it hands
    /// variables to the runner.
    pub keep_undefined: bool,
    /// Leave `$$` as `$$` instead of turning it into `$` (again the server-side behaviour: the
    /// runner resolves the escape later).
    pub keep_escapes: bool,
    /// Also expand Windows-style `%NAME%` when `NAME` is defined, as GitLab's server-side
    /// variable-in-variable expansion does. Undefined `%NAME%` and `%%` are kept as written.
    pub percent: bool,
}

/// Expands `$VAR`, `${VAR}` and `$$` in `s` with GitLab Runner's rules (see the module
/// documentation): undefined variables become `""`, `$$` becomes `$`, and the values looked up are
/// inserted as they are, never expanded again.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    expand_with(s, lookup, ExpandOptions::default())
}

/// [`expand`] with [`ExpandOptions`].
pub fn expand_with(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    options: ExpandOptions,
) -> String {
    let may_reference = s.contains('$') || (options.percent && s.contains('%'));
    if !may_reference {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for token in tokenize(s, options.percent) {
        match token {
            Token::Text(t) => out.push_str(t),
            Token::Escape => out.push_str(if options.keep_escapes { "$$" } else { "$" }),
            Token::PercentEscape => out.push_str("%%"),
            Token::Var { name, text } => match lookup(name) {
                Some(v) => out.push_str(&v),
                None if options.keep_undefined => out.push_str(text),
                None => {}
            },
            Token::PercentVar { name, text } => match lookup(name) {
                Some(v) => out.push_str(&v),
                None => out.push_str(text),
            },
            Token::Invalid { text } => {
                if options.keep_undefined {
                    out.push_str(text);
                }
            }
        }
    }
    out
}

/// The names `s` references with `$NAME` or `${NAME}`, each once, in order of first appearance.
/// `$$NAME` references nothing.
pub fn references(s: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for token in tokenize(s, false) {
        if let Token::Var { name, .. } = token
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn ex(s: &str, pairs: &[(&str, &str)]) -> String {
        expand(s, &vars(pairs))
    }

    #[test]
    fn plain_and_braced_references() {
        let v = [("A", "x"), ("AB", "long"), ("HOME", "/root")];
        assert_eq!(ex("$A", &v), "x");
        assert_eq!(ex("${A}B", &v), "xB");
        assert_eq!(ex("$AB", &v), "long");
        assert_eq!(ex("pre-$A-post", &v), "pre-x-post");
        assert_eq!(ex("$HOME/bin:${A}", &v), "/root/bin:x");
        assert_eq!(ex("$A.$A", &v), "x.x");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let v = [("A", "x")];
        assert_eq!(ex("$$", &v), "$");
        assert_eq!(ex("$$A", &v), "$A");
        assert_eq!(ex("$${A}", &v), "${A}");
        assert_eq!(ex("$$$A", &v), "$x");
        assert_eq!(ex("$$$$", &v), "$$");
        assert_eq!(ex("price: 5$$", &v), "price: 5$");
    }

    #[test]
    fn undefined_variables_expand_to_empty() {
        assert_eq!(ex("a${NOPE}b$NOPE", &[]), "ab");
        assert_eq!(ex("$UNDEFINED", &[]), "");
    }

    #[test]
    fn empty_value_is_defined() {
        let v = [("E", "")];
        assert_eq!(ex("[$E]", &v), "[]");
        let keep = ExpandOptions {
            keep_undefined: true,
            ..ExpandOptions::default()
        };
        assert_eq!(expand_with("[$E]", &vars(&v), keep), "[]");
    }

    #[test]
    fn lone_and_trailing_dollars_are_literal() {
        assert_eq!(ex("$", &[]), "$");
        assert_eq!(ex("a $ b", &[]), "a $ b");
        assert_eq!(ex("cost$", &[]), "cost$");
        assert_eq!(ex("$/path", &[]), "$/path");
        assert_eq!(ex("$.x", &[]), "$.x");
    }

    #[test]
    fn shell_specials_and_invalid_braces_are_blanked() {
        let v = [("A", "x")];
        assert_eq!(ex("a$1b", &v), "ab");
        assert_eq!(ex("$10", &v), "0");
        assert_eq!(ex("$*$#$@$!$?$-", &v), "");
        assert_eq!(ex("a${}b", &v), "ab");
        assert_eq!(ex("${A:-default}", &v), "");
        assert_eq!(ex("${a-b}c", &v), "c");
        assert_eq!(ex("x${A", &v), "xA");
    }

    #[test]
    fn not_recursive() {
        let v = [("A", "$B"), ("B", "deep"), ("C", "$$")];
        assert_eq!(ex("$A", &v), "$B");
        assert_eq!(ex("${C}B", &v), "$$B");
    }

    #[test]
    fn names_stop_at_non_word_characters() {
        let v = [("A", "x"), ("A_1", "y")];
        assert_eq!(ex("$A-1", &v), "x-1");
        assert_eq!(ex("$A_1", &v), "y");
        assert_eq!(ex("$A:$A", &v), "x:x");
        assert_eq!(ex("$Aé", &v), "xé");
    }

    #[test]
    fn unicode_text_is_preserved() {
        let v = [("NAME", "wörld")];
        assert_eq!(ex("héllo ${NAME} ✓ $", &v), "héllo wörld ✓ $");
    }

    #[test]
    fn keep_undefined_and_keep_escapes() {
        let v = vars(&[("A", "x")]);
        let server = ExpandOptions {
            keep_undefined: true,
            keep_escapes: true,
            ..ExpandOptions::default()
        };
        assert_eq!(
            expand_with("$A $B ${C} $$D $1 ${}", &v, server),
            "x $B ${C} $$D $1 ${}"
        );
        let keep = ExpandOptions {
            keep_undefined: true,
            ..ExpandOptions::default()
        };
        assert_eq!(expand_with("$A $B $$", &v, keep), "x $B $");
    }

    #[test]
    fn percent_syntax() {
        let v = vars(&[("A", "x")]);
        let opts = ExpandOptions {
            percent: true,
            ..ExpandOptions::default()
        };
        assert_eq!(expand_with("%A%", &v, opts), "x");
        assert_eq!(expand_with("%B%", &v, opts), "%B%");
        assert_eq!(expand_with("%%A%%", &v, opts), "%%A%%");
        assert_eq!(expand_with("100%", &v, opts), "100%");
        assert_eq!(expand_with("%A%%", &v, opts), "x%");
        assert_eq!(expand_with("%A% and $A", &v, opts), "x and x");
        // Off by default.
        assert_eq!(expand("%A%", &v), "%A%");
    }

    #[test]
    fn no_reference_fast_path() {
        assert_eq!(ex("nothing to see", &[]), "nothing to see");
        assert_eq!(ex("", &[]), "");
    }

    #[test]
    fn references_lists_names_once() {
        assert_eq!(
            references("$A ${B} $A $$C $1 ${} %D%"),
            vec!["A".to_string(), "B".to_string()]
        );
        assert!(references("no refs").is_empty());
    }

    #[test]
    fn tokenize_shapes() {
        use Token::*;
        assert_eq!(
            tokenize("a$B${C}$$%D%%%", true),
            vec![
                Text("a"),
                Var {
                    name: "B",
                    text: "$B"
                },
                Var {
                    name: "C",
                    text: "${C}"
                },
                Escape,
                PercentVar {
                    name: "D",
                    text: "%D%"
                },
                PercentEscape,
            ]
        );
    }
}
