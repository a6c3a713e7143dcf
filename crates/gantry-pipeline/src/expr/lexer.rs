//! Tokenizer, faithful to GitLab's `Expression::Lexer`: the same token shapes, the same
//! whitespace, the same regex-literal boundaries, and the same limit on the number of tokens.

use std::sync::LazyLock;

use regex::Regex;

use super::ExprError;
#[cfg(test)]
use super::MAX_TOKENS;
use super::pattern::Pattern;

/// GitLab's regex-literal token: a `/`, at least one character that is not `/` (or is an escaped
/// `\/`), one more character that is not a backslash, a `/`, then flags. The `regex` crate's
/// leftmost-first search picks the same match as Ruby's backtracking one. Consequences:
/// single-character bodies (`/a/`) and bodies ending in a backslash cannot be written, and
/// `/ab//` is one literal whose body is `ab/`.
static PATTERN_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^/(?:[^/]|\\/)+[^\\]/[ismU]*").expect("the pattern-token regex is valid")
});

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// `$NAME`, holding `NAME`.
    Variable(String),
    /// `"..."` or `'...'`, holding the text between the quotes.
    Str(String),
    /// `null`.
    Null,
    /// `/body/flags`.
    Pattern(Box<Pattern>),
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Match,
    /// `!~`
    NotMatch,
    /// `&&`
    And,
    /// `||`
    Or,
    /// `(`
    LParen,
    /// `)`
    RParen,
}

impl TokenKind {
    /// Whether the token is a value (an operand).
    pub(crate) fn is_value(&self) -> bool {
        matches!(
            self,
            TokenKind::Variable(_) | TokenKind::Str(_) | TokenKind::Null | TokenKind::Pattern(_)
        )
    }

    /// Whether the token is a binary operator.
    pub(crate) fn is_operator(&self) -> bool {
        matches!(
            self,
            TokenKind::Eq
                | TokenKind::Ne
                | TokenKind::Match
                | TokenKind::NotMatch
                | TokenKind::And
                | TokenKind::Or
        )
    }

    /// A short description for error messages: "variable", "operator", ...
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            TokenKind::Variable(_) => "variable",
            TokenKind::Str(_) => "string",
            TokenKind::Null => "`null`",
            TokenKind::Pattern(_) => "regex",
            TokenKind::LParen | TokenKind::RParen => "parenthesis",
            _ => "operator",
        }
    }
}

/// A token and where it is in the source (byte offsets).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// Ruby's `\s`: space, `\t`, `\n`, `\v`, `\f`, `\r`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Ruby's `\w`, which is ASCII-only.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `token` is a string literal whose text ends with a backslash, which suggests that
/// the quote after it was meant to be escaped.
fn ends_with_backslash(token: Option<&Token>) -> bool {
    matches!(token, Some(Token { kind: TokenKind::Str(s), .. }) if s.ends_with('\\'))
}

/// Splits an expression into at most `max_tokens` tokens.
pub(crate) fn tokenize(src: &str, max_tokens: usize) -> Result<Vec<Token>, ExprError> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    let mut tokens: Vec<Token> = Vec::new();
    loop {
        while lexer.bytes.get(lexer.pos).copied().is_some_and(is_space) {
            lexer.pos += 1;
        }
        if lexer.pos >= lexer.bytes.len() {
            return Ok(tokens);
        }
        let token = lexer.next_token(tokens.last())?;
        if tokens.len() >= max_tokens {
            return Err(ExprError::new(
                token.offset,
                token.len,
                format!("too many tokens: GitLab accepts at most {max_tokens} in one expression"),
            )
            .with_help("split the condition across several rules, or simplify it"));
        }
        tokens.push(token);
    }
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }

    /// Byte length of the character at `at` (1 past the end).
    fn char_len(&self, at: usize) -> usize {
        self.src
            .get(at..)
            .and_then(|s| s.chars().next())
            .map_or(1, char::len_utf8)
    }

    /// End of the run of word characters starting at `from`.
    fn word_end(&self, from: usize) -> usize {
        let mut end = from;
        while self.byte(end).is_some_and(is_word) {
            end += 1;
        }
        end
    }

    fn text(&self, start: usize, end: usize) -> &str {
        self.src.get(start..end).unwrap_or("")
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token {
        self.pos = end;
        Token {
            kind,
            offset: start,
            len: end - start,
        }
    }

    fn next_token(&mut self, previous: Option<&Token>) -> Result<Token, ExprError> {
        let start = self.pos;
        let Some(b) = self.byte(start) else {
            return Err(ExprError::new(start, 0, "unexpected end of expression"));
        };
        let next = self.byte(start + 1);
        match b {
            b'(' => Ok(self.token(TokenKind::LParen, start, start + 1)),
            b')' => Ok(self.token(TokenKind::RParen, start, start + 1)),
            b'$' => self.variable(start),
            b'"' | b'\'' => self.string(start, b, previous),
            b'/' => self.pattern(start),
            b'=' => match next {
                Some(b'=') => Ok(self.token(TokenKind::Eq, start, start + 2)),
                Some(b'~') => Ok(self.token(TokenKind::Match, start, start + 2)),
                _ => Err(
                    ExprError::new(start, 1, "unknown operator `=`: did you mean `==`?")
                        .with_help("`==` compares two values; `=~` matches a regex"),
                ),
            },
            b'!' => match next {
                Some(b'=') => Ok(self.token(TokenKind::Ne, start, start + 2)),
                Some(b'~') => Ok(self.token(TokenKind::NotMatch, start, start + 2)),
                _ => Err(
                    ExprError::new(start, 1, "unknown operator `!`: did you mean `!=`?").with_help(
                        "there is no negation operator: use `!=` or `!~`, \
                         or a rule with `when: never`",
                    ),
                ),
            },
            b'&' if next == Some(b'&') => Ok(self.token(TokenKind::And, start, start + 2)),
            b'&' => Err(ExprError::new(
                start,
                1,
                "unknown operator `&`: did you mean `&&`?",
            )),
            b'|' if next == Some(b'|') => Ok(self.token(TokenKind::Or, start, start + 2)),
            b'|' => Err(ExprError::new(
                start,
                1,
                "unknown operator `|`: did you mean `||`?",
            )),
            b'~' => Err(ExprError::new(
                start,
                1,
                "unknown operator `~`: did you mean `=~`?",
            )),
            b'<' | b'>' => Err(ExprError::new(
                start,
                1,
                format!(
                    "unknown operator `{}`: there are no ordering comparisons",
                    b as char
                ),
            )
            .with_help("compare with `==` or `!=`, or match with `=~`")),
            b'%' => Err(self.percent_variable(start)),
            _ if is_word(b) => self.word(start, previous),
            _ => {
                let len = self.char_len(start);
                Err(ExprError::new(
                    start,
                    len,
                    format!("unexpected character `{}`", self.text(start, start + len)),
                ))
            }
        }
    }

    fn variable(&mut self, start: usize) -> Result<Token, ExprError> {
        let end = self.word_end(start + 1);
        if end > start + 1 {
            let name = self.text(start + 1, end).to_string();
            return Ok(self.token(TokenKind::Variable(name), start, end));
        }
        match self.byte(start + 1) {
            Some(b'{') => {
                let name_end = self.word_end(start + 2);
                if name_end > start + 2 && self.byte(name_end) == Some(b'}') {
                    let name = self.text(start + 2, name_end);
                    Err(ExprError::new(
                        start,
                        name_end + 1 - start,
                        format!("`${{{name}}}` is not allowed in an expression"),
                    )
                    .with_help(format!("write `${name}` instead")))
                } else {
                    Err(
                        ExprError::new(start, 2, "`${` is not allowed in an expression")
                            .with_help("write variables as `$NAME`"),
                    )
                }
            }
            Some(b'[') if self.byte(start + 2) == Some(b'[') => {
                let close = self
                    .src
                    .get(start..)
                    .and_then(|s| s.find("]]"))
                    .map_or(3, |i| i + 2);
                Err(ExprError::new(
                    start,
                    close,
                    format!(
                        "unexpanded input interpolation `{}`",
                        self.text(start, start + close)
                    ),
                )
                .with_help("inputs must be interpolated before the expression is evaluated"))
            }
            _ => Err(
                ExprError::new(start, 1, "expected a variable name after `$`")
                    .with_help("variable names are made of letters, digits and `_`"),
            ),
        }
    }

    fn string(
        &mut self,
        start: usize,
        quote: u8,
        previous: Option<&Token>,
    ) -> Result<Token, ExprError> {
        // Ruby's `.*?` between the quotes: the shortest run without a newline.
        let body = start + 1;
        let mut i = body;
        while let Some(b) = self.byte(i) {
            if b == quote {
                let text = self.text(body, i).to_string();
                return Ok(self.token(TokenKind::Str(text), start, i + 1));
            }
            if b == b'\n' {
                return Err(
                    ExprError::new(start, i - start, "string literal cannot span lines").with_help(
                        format!("close it with `{}` on the same line", quote as char),
                    ),
                );
            }
            i += 1;
        }
        let q = quote as char;
        let other = if q == '"' { '\'' } else { '"' };
        let mut err = ExprError::new(start, i - start, "unterminated string literal")
            .with_help(format!("close it with `{q}`"));
        if self.text(body, i).contains('\\') || ends_with_backslash(previous) {
            err = err.with_help(format!(
                "close it with `{q}`; string literals have no escape sequences, so to put \
                 a `{q}` inside one, quote it with `{other}` instead"
            ));
        }
        Err(err)
    }

    fn pattern(&mut self, start: usize) -> Result<Token, ExprError> {
        let rest = self.text(start, self.bytes.len());
        if let Some(m) = PATTERN_TOKEN.find(rest) {
            let end = start + m.end();
            let raw = m.as_str();
            let pattern = Pattern::compile(raw).map_err(|reason| {
                ExprError::new(
                    start,
                    m.end(),
                    format!("invalid regular expression `{raw}`: {reason}"),
                )
                .with_help("GitLab uses RE2 syntax: https://github.com/google/re2/wiki/Syntax")
            })?;
            if self.byte(end).is_some_and(is_word) {
                let flags_end = self.word_end(end);
                return Err(ExprError::new(
                    end,
                    flags_end - end,
                    format!("unknown regex flag(s) `{}`", self.text(end, flags_end)),
                )
                .with_help("the supported flags are `i`, `m`, `s` and `U`"));
            }
            return Ok(self.token(TokenKind::Pattern(Box::new(pattern)), start, end));
        }
        Err(self.pattern_error(start))
    }

    /// Why GitLab's lexer cannot read a regex literal at `start`.
    fn pattern_error(&self, start: usize) -> ExprError {
        // Find where a reader who knows only the `\/` escape would end the literal.
        let mut i = start + 1;
        let mut close = None;
        while let Some(b) = self.byte(i) {
            match b {
                b'\\' if self.byte(i + 1).is_some() => i += 2,
                b'/' => {
                    close = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let Some(close) = close else {
            return ExprError::new(
                start,
                self.bytes.len() - start,
                "unterminated regex literal",
            )
            .with_help("end the regular expression with `/`");
        };
        let body = self.text(start + 1, close);
        let literal = self.text(start, close + 1);
        if body.is_empty() {
            return ExprError::new(start, 2, "empty regex literal `//`")
                .with_help("write a pattern between the slashes, e.g. `/.+/`");
        }
        if body.chars().count() == 1 {
            return ExprError::new(
                start,
                close + 1 - start,
                format!("single-character regex literal `{literal}` is not supported"),
            )
            .with_help(format!(
                "GitLab rejects one-character patterns; write e.g. `/[{body}]/` or `/(?:{body})/`"
            ));
        }
        ExprError::new(
            start,
            close + 1 - start,
            format!("regex literal `{literal}` cannot end with a backslash"),
        )
        .with_help("GitLab's lexer cannot read a `\\` just before the closing `/`; use `\\x5c`")
    }

    fn percent_variable(&self, start: usize) -> ExprError {
        let end = self.word_end(start + 1);
        if end > start + 1 && self.byte(end) == Some(b'%') {
            let name = self.text(start + 1, end);
            ExprError::new(
                start,
                end + 1 - start,
                format!("`%{name}%` is not a variable reference in an expression"),
            )
            .with_help(format!("write `${name}` instead"))
        } else {
            ExprError::new(start, 1, "unexpected character `%`")
        }
    }

    fn word(&mut self, start: usize, previous: Option<&Token>) -> Result<Token, ExprError> {
        let end = self.word_end(start);
        let word = self.text(start, end);
        if word == "null" {
            return Ok(self.token(TokenKind::Null, start, end));
        }
        let after_value = previous.is_some_and(|t| t.kind.is_value());
        let help = match word {
            _ if ends_with_backslash(previous) => "string literals have no escape sequences: \
                                                   the `\\` did not escape the quote after it; \
                                                   quote the string with the other kind of quote"
                .to_string(),
            "and" | "AND" => "use `&&` to join conditions".to_string(),
            "or" | "OR" => "use `||` to join conditions".to_string(),
            "not" | "NOT" => "there is no negation operator: use `!=` or `!~`".to_string(),
            "NULL" | "Null" | "nil" | "None" | "undefined" => "write `null` in lowercase".into(),
            "true" | "false" => {
                format!("variables hold strings: compare with a string, e.g. `$VAR == \"{word}\"`")
            }
            "eq" | "is" => "compare with `==`".to_string(),
            "ne" => "compare with `!=`".to_string(),
            _ if after_value => "join values with an operator: `==`, `!=`, `=~`, `!~`, `&&` or \
                                 `||`"
                .to_string(),
            _ if word.bytes().all(|b| b.is_ascii_digit()) => {
                format!("numbers are not supported: quote it, e.g. \"{word}\"")
            }
            _ => format!(
                "quote string literals (\"{word}\"), and start variables with `$` (${word})"
            ),
        };
        Err(ExprError::new(start, end - start, format!("unknown word `{word}`")).with_help(help))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src, MAX_TOKENS)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    fn err(src: &str) -> ExprError {
        match tokenize(src, MAX_TOKENS) {
            Ok(t) => panic!("{src} lexed as {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn basic_tokens_and_spans() {
        let tokens = tokenize("\t$VAR == 'a b' ", MAX_TOKENS).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0].kind, TokenKind::Variable("VAR".into()));
        assert_eq!((tokens[0].offset, tokens[0].len), (1, 4));
        assert_eq!((tokens[1].offset, tokens[1].len), (6, 2));
        assert_eq!(tokens[2].kind, TokenKind::Str("a b".into()));
        assert_eq!((tokens[2].offset, tokens[2].len), (9, 5));
    }

    #[test]
    fn operators_without_spaces() {
        use TokenKind::*;
        assert_eq!(
            kinds("($A==$B)||$C!=null&&$D=~/ab/||$E!~/cd/"),
            vec![
                LParen,
                Variable("A".into()),
                Eq,
                Variable("B".into()),
                RParen,
                Or,
                Variable("C".into()),
                Ne,
                Null,
                And,
                Variable("D".into()),
                Match,
                Pattern(Box::new(super::Pattern::compile("/ab/").unwrap())),
                Or,
                Variable("E".into()),
                NotMatch,
                Pattern(Box::new(super::Pattern::compile("/cd/").unwrap())),
            ]
        );
    }

    #[test]
    fn strings_have_no_escapes() {
        assert_eq!(kinds(r#""a\""#), vec![TokenKind::Str("a\\".into())]);
        assert_eq!(
            kinds(r#"'say "hi"'"#),
            vec![TokenKind::Str("say \"hi\"".into())]
        );
        assert_eq!(kinds(r#""""#), vec![TokenKind::Str(String::new())]);
        assert_eq!(
            err("\"ab\ncd\"").message,
            "string literal cannot span lines"
        );
    }

    #[test]
    fn pattern_boundaries_follow_gitlab() {
        // Only the first token: the rest of some of these inputs does not lex.
        let raw = |src: &str| {
            let mut lexer = Lexer {
                src,
                bytes: src.as_bytes(),
                pos: 0,
            };
            match lexer.next_token(None).unwrap().kind {
                TokenKind::Pattern(p) => p.raw().to_string(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(raw("/some .* / pattern/"), "/some .* /");
        assert_eq!(raw(r"/some .* \/ pattern/"), r"/some .* \/ pattern/");
        assert_eq!(raw("/ab//"), "/ab//");
        assert_eq!(raw("/ab/ism"), "/ab/ism");
        assert!(err("/a/").message.contains("single-character"));
        assert!(err("//").message.contains("empty regex"));
        assert!(err(r"/a\\/").message.contains("backslash"));
        assert!(err("/abc").message.contains("unterminated regex"));
        assert!(err("/ab/x").message.contains("unknown regex flag"));
    }

    #[test]
    fn token_limit_is_gitlabs() {
        let ok = vec!["$A"; MAX_TOKENS].join(" ");
        assert_eq!(tokenize(&ok, MAX_TOKENS).unwrap().len(), MAX_TOKENS);
        let too_many = vec!["$A"; MAX_TOKENS + 1].join(" ");
        let e = err(&too_many);
        assert!(e.message.contains("too many tokens"));
        assert_eq!(e.offset, MAX_TOKENS * 3);
    }

    #[test]
    fn null_needs_no_word_boundary_but_longer_words_fail() {
        assert_eq!(kinds("null"), vec![TokenKind::Null]);
        assert_eq!(kinds("(null)").len(), 3);
        assert!(err("nullable").message.contains("unknown word"));
    }

    #[test]
    fn non_ascii_is_not_whitespace_or_word() {
        let e = err("$A ==\u{a0}\"x\"");
        assert_eq!((e.offset, e.len), (5, 2));
        assert!(err("$ÄB").message.contains("variable name"));
    }
}
