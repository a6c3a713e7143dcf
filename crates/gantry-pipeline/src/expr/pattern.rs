//! Regular expressions in GitLab's Ruby syntax (`/body/flags`), compiled with RE2 semantics.
//!
//! GitLab turns a `/body/flags` string into a regex in three steps, and this file does the same:
//!
//! 1. every `\/` is replaced by `/`;
//! 2. the result must match `^/(.*)/([ismU]*)$` (Ruby line anchors, greedy body), which splits
//!    it into the body and the flags;
//! 3. RE2 compiles `(?flags)body` (or just `body` without flags).
//!
//! RE2 is emulated on top of the `regex` crate. The two dialects are close, but not the same, so
//! the RE2 source is rewritten first: RE2's `\d`, `\w`, `\s` and `\b` are ASCII-only where the
//! `regex` crate's are Unicode-aware; RE2 reads `[`, `&&`, `~~` inside a bracket class literally
//! where the `regex` crate nests classes and does set operations; RE2 accepts repeated flags,
//! `\Q..\E`, `\C` and octal escapes, and reads a `{` that does not start a repetition as a
//! literal; and RE2 rejects repetition counts above 1000.

use std::fmt;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// GitLab's `UntrustedRegexp::RubySyntax::PATTERN`, with Ruby's line-anchored `^`/`$`.
static RUBY_SYNTAX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^/(.*)/([ismU]*)$").expect("the Ruby-syntax regex is valid"));

/// RE2's limit on `{n,m}` repetition counts.
const RE2_MAX_REPEAT: u32 = 1000;

/// Upper bound on the compiled size of one pattern (RE2's default memory budget is 8 MiB).
const SIZE_LIMIT: usize = 8 << 20;

/// A compiled `/body/flags` regex.
#[derive(Clone)]
pub(crate) struct Pattern {
    /// The text it was built from: the literal as written, or the variable's value.
    raw: String,
    /// The RE2 source GitLab compiles: `(?flags)body`. Ruby's `==` on two regexes compares it.
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Builds a pattern the way GitLab's `Lexeme::Pattern.new` does. The error says why the
    /// text is not a usable regex.
    pub(crate) fn compile(raw: &str) -> Result<Pattern, String> {
        let unescaped = raw.replace("\\/", "/");
        let caps = RUBY_SYNTAX
            .captures(&unescaped)
            .ok_or_else(|| "it is not of the form `/pattern/flags`".to_string())?;
        let body = caps.get(1).map_or("", |m| m.as_str());
        let flags = caps.get(2).map_or("", |m| m.as_str());
        let source = if flags.is_empty() {
            body.to_string()
        } else {
            format!("(?{flags}){body}")
        };
        let translated = translate(&source)?;
        let regex = RegexBuilder::new(&translated)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| describe_regex_error(&e))?;
        Ok(Pattern {
            raw: raw.to_string(),
            source,
            regex,
        })
    }

    /// Whether the text has the `/pattern/flags` form at all (GitLab's `matches_syntax?`).
    pub(crate) fn is_ruby_syntax(raw: &str) -> bool {
        RUBY_SYNTAX.is_match(&raw.replace("\\/", "/"))
    }

    /// The text the pattern was built from.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// The RE2 source (`(?flags)body`), which Ruby compares in `regex == regex`.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Unanchored search, like RE2's `scan(..).present?`.
    pub(crate) fn is_match(&self, haystack: &str) -> bool {
        self.regex.is_match(haystack)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.raw).finish()
    }
}

/// The one-line reason from a `regex` crate error (its syntax errors span several lines).
fn describe_regex_error(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix("error:"))
            .map_or_else(|| text.trim().to_string(), |s| s.trim().to_string()),
        regex::Error::CompiledTooBig(_) => "the regular expression is too big".to_string(),
        other => other.to_string(),
    }
}

const ASCII_DIGIT: &str = "[0-9]";
const ASCII_NOT_DIGIT: &str = "[^0-9]";
const ASCII_WORD: &str = "[0-9A-Za-z_]";
const ASCII_NOT_WORD: &str = "[^0-9A-Za-z_]";
// RE2's `\s` is Perl's old set, without `\v`.
const ASCII_SPACE: &str = r"[\t\n\f\r ]";
const ASCII_NOT_SPACE: &str = r"[^\t\n\f\r ]";

/// The class an RE2 Perl escape (`\d`, `\W`, ...) stands for, as `regex` crate syntax.
fn perl_class(escape: char) -> Option<&'static str> {
    Some(match escape {
        'd' => ASCII_DIGIT,
        'D' => ASCII_NOT_DIGIT,
        'w' => ASCII_WORD,
        'W' => ASCII_NOT_WORD,
        's' => ASCII_SPACE,
        'S' => ASCII_NOT_SPACE,
        _ => return None,
    })
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

fn is_octal(c: Option<&char>) -> bool {
    matches!(c, Some('0'..='7'))
}

/// Rewrites RE2 syntax into equivalent `regex` crate syntax (see the file's doc).
fn translate(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 16);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("trailing `\\` at the end of the regular expression".into());
                };
                i += 2;
                match e {
                    'Q' => {
                        // Everything up to `\E` (or the end) is literal.
                        while let Some(&q) = chars.get(i) {
                            if q == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            push_literal(&mut out, q);
                            i += 1;
                        }
                    }
                    'E' => {}
                    'b' => out.push_str(r"(?-u:\b)"),
                    'B' => out.push_str(r"(?-u:\B)"),
                    'C' => out.push_str("(?s:.)"),
                    '0'..='7' => {
                        // RE2: `\0` plus up to two octal digits, or three octal digits; a
                        // lone `\1`..`\7` would be a backreference, which RE2 rejects.
                        let mut digits = String::from(e);
                        if e != '0' && !(is_octal(chars.get(i)) && is_octal(chars.get(i + 1))) {
                            return Err(format!("invalid escape sequence `\\{e}`"));
                        }
                        while digits.len() < 3 && is_octal(chars.get(i)) {
                            digits.push(chars[i]);
                            i += 1;
                        }
                        let code = u32::from_str_radix(&digits, 8).unwrap_or(0);
                        out.push_str(&format!("\\x{{{code:X}}}"));
                    }
                    _ => match perl_class(e) {
                        Some(class) => out.push_str(class),
                        None => {
                            out.push('\\');
                            out.push(e);
                        }
                    },
                }
            }
            '[' => i = translate_class(&chars, i, &mut out)?,
            '(' if chars.get(i + 1) == Some(&'?') => {
                i = translate_group_flags(&chars, i, &mut out)?
            }
            '{' => i = translate_brace(&chars, i, &mut out)?,
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `{`: a repetition `{n}`, `{n,}` or `{n,m}` is copied (RE2 caps counts at 1000); any other
/// `{` is a literal in RE2.
fn translate_brace(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let mut j = start + 1;
    let mut numbers: Vec<String> = vec![String::new()];
    let mut closed = false;
    while let Some(&c) = chars.get(j) {
        match c {
            '0'..='9' => {
                if let Some(n) = numbers.last_mut() {
                    n.push(c);
                }
            }
            ',' if numbers.len() == 1 && !numbers[0].is_empty() => numbers.push(String::new()),
            '}' => {
                closed = true;
                break;
            }
            _ => break,
        }
        j += 1;
    }
    if !closed || numbers[0].is_empty() {
        out.push_str(r"\{");
        return Ok(start + 1);
    }
    for n in &numbers {
        // Long digit strings overflow `u32`: they are over the limit too.
        if !n.is_empty() && !matches!(n.parse::<u32>(), Ok(v) if v <= RE2_MAX_REPEAT) {
            return Err(format!(
                "bad repetition operator: counts above {RE2_MAX_REPEAT}"
            ));
        }
    }
    out.extend(&chars[start..=j]);
    Ok(j + 1)
}

/// `(?flags)` and `(?flags:`: RE2 accepts repeated flags (the last mention wins) where the
/// `regex` crate rejects them, and knows only `i`, `m`, `s` and `U`. Other `(?` groups are
/// copied as they are.
fn translate_group_flags(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let mut j = start + 2;
    while chars
        .get(j)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == '-')
    {
        j += 1;
    }
    let run = &chars[start + 2..j];
    let terminator = chars.get(j).copied();
    if run.is_empty() || !matches!(terminator, Some(')' | ':')) {
        // `(?:`, `(?P<name>`, `(?<name>`, or something both dialects reject.
        out.push('(');
        return Ok(start + 1);
    }
    let mut state: Vec<(char, bool)> = Vec::new();
    let mut negated = false;
    let mut last_was_dash = false;
    for &c in run {
        match c {
            '-' if negated => return Err("invalid flag group: more than one `-`".into()),
            '-' => negated = true,
            'i' | 'm' | 's' | 'U' => match state.iter_mut().find(|(f, _)| *f == c) {
                Some(entry) => entry.1 = !negated,
                None => state.push((c, !negated)),
            },
            other => return Err(format!("invalid or unsupported flag `{other}`")),
        }
        last_was_dash = c == '-';
    }
    if last_was_dash {
        return Err("invalid flag group: `-` without a flag after it".into());
    }
    out.push_str("(?");
    out.extend(state.iter().filter(|(_, on)| *on).map(|(f, _)| *f));
    if state.iter().any(|(_, on)| !on) {
        out.push('-');
        out.extend(state.iter().filter(|(_, on)| !on).map(|(f, _)| *f));
    }
    if let Some(t) = terminator {
        out.push(t);
    }
    Ok(j + 1)
}

/// A bracket class `[...]`, read with RE2's rules: `]` first is a literal, `[:name:]` is a
/// POSIX class, any other `[` and every `&` and `~` are literals.
fn translate_class(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    out.push('[');
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("missing closing `]` in a character class".into());
        };
        match c {
            ']' => {
                out.push(']');
                return Ok(i + 1);
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                let close = (i + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == ':' && chars[k + 1] == ']');
                match close {
                    Some(k) => {
                        out.extend(&chars[i..k + 2]);
                        i = k + 2;
                    }
                    None => {
                        out.push_str(r"\[");
                        i += 1;
                    }
                }
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("missing closing `]` in a character class".into());
                };
                match perl_class(e) {
                    // The `regex` crate unions a nested class into the outer one.
                    Some(class) => out.push_str(class),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, haystack: &str) -> bool {
        Pattern::compile(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(haystack)
    }

    #[test]
    fn splits_body_and_flags_like_ruby_syntax() {
        let p = Pattern::compile("/foo/i").unwrap();
        assert_eq!(p.source(), "(?i)foo");
        assert_eq!(p.raw(), "/foo/i");
        let p = Pattern::compile(r"/foo\/bar/").unwrap();
        assert_eq!(p.source(), "foo/bar");
        // The greedy body takes everything up to the last slash that is followed by flags.
        let p = Pattern::compile("/a/b/m").unwrap();
        assert_eq!(p.source(), "(?m)a/b");
        assert!(Pattern::compile("foo").is_err());
        assert!(Pattern::compile("/foo/x").is_err());
    }

    #[test]
    fn perl_classes_are_ascii_only_like_re2() {
        assert!(m(r"/^\d+$/", "123"));
        assert!(!m(r"/^\d+$/", "١٢٣")); // Arabic-Indic digits
        assert!(!m(r"/^\w+$/", "héllo"));
        assert!(m(r"/^\W$/", "é"));
        assert!(!m(r"/\s/", "\u{a0}"));
        assert!(!m(r"/\s/", "\u{0b}")); // RE2's \s has no vertical tab
        assert!(m(r"/[\d]/", "5"));
        assert!(m(r"/[^\d]/", "x"));
        assert!(m(r"/\bfoo\b/", "a foo b"));
        assert!(m(r"/\bfoo\b/", "éfooé")); // é is not an ASCII word character
    }

    #[test]
    fn re2_class_and_escape_quirks() {
        assert!(m("/[[]x/", "[x"));
        assert!(m("/[]a]b/", "]b"));
        assert!(m("/[a&&b]/", "&"));
        assert!(m("/[[:alpha:]]+/", "abc"));
        assert!(m(r"/\Qa.b\E/", "a.b"));
        assert!(!m(r"/\Qa.b\E/", "axb"));
        assert!(m(r"/a\101/", "aA"));
        assert!(m(r"/x\0/", "x\0"));
        assert!(Pattern::compile(r"/a\1/").is_err());
        assert!(m("/a{2}/", "aa"));
        assert!(m("/a{,2}/", "a{,2}"));
        assert!(m("/{x}/", "{x}"));
        assert!(Pattern::compile("/a{1001}/").is_err());
        assert!(Pattern::compile("/a{99999999999}/").is_err());
        assert!(m("/(?ii)abc/", "ABC"));
        assert!(!m("/(?i-i)abc/", "ABC"));
        assert!(Pattern::compile("/(?x)a b/").is_err());
        assert!(m("/(?P<n>ab)(?<m>c)(?:d)/", "abcd"));
        assert!(m(r"/a\Cb/", "axb"));
    }

    #[test]
    fn flags() {
        assert!(m("/MAIN/i", "main"));
        assert!(!m("/MAIN/", "main"));
        assert!(m("/^b$/m", "a\nb\nc"));
        assert!(!m("/^b$/", "a\nb\nc"));
        assert!(m("/a.b/s", "a\nb"));
        assert!(!m("/a.b/", "a\nb"));
        assert!(m("/a/ii", "A"));
    }

    #[test]
    fn equality_is_by_raw_text() {
        assert_eq!(
            Pattern::compile("/ab/").unwrap(),
            Pattern::compile("/ab/").unwrap()
        );
        assert_ne!(
            Pattern::compile("/ab/").unwrap(),
            Pattern::compile("/ab/i").unwrap()
        );
    }

    #[test]
    fn translate_never_panics_on_odd_input() {
        for src in [
            "\\", "[", "[^", "[]", "[[:", "[[:a", "(?", "(?-", "(?i-", "(?--i)", "{", "{1,",
            "a{1,2", "\\Q", "\\Qabc", "\\0", "\\07", "\\777", "[\\", "\\x{", "(?i", "é{2}",
            "[é-ü]",
        ] {
            let _ = translate(src);
            let _ = Pattern::compile(&format!("/{src}/"));
        }
    }
}
