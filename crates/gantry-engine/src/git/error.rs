//! [`GitError`] and the redaction every message goes through: errors name the mirror by its
//! URL with any `user:password@` removed, and git's own stderr is scrubbed of URLs' user
//! information and of the literal secrets before it is kept.

use std::time::Duration;

/// What went wrong with a mirror. Every message names the remote (credentials removed) and,
/// where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The remote refused the credentials, or asked for some and none were configured.
    #[error("authentication failed for {url}: {hint}")]
    Auth { url: String, hint: &'static str },
    /// The host key of an ssh remote differs from the one recorded at the first fetch.
    #[error(
        "the ssh host key of {url} changed since it was first seen: if the server's key was \
         rotated on purpose, delete {known_hosts} and fetch again"
    )]
    HostKey { url: String, known_hosts: String },
    /// The repository does not exist there (or is hidden from these credentials).
    #[error(
        "{url} is not a git repository or is not visible with the project's credentials \
         ({detail}): check the project's URL and its access rights"
    )]
    RepoNotFound { url: String, detail: String },
    /// The host could not be reached at all.
    #[error("cannot reach {url} ({detail}): check the URL and that the server can reach the host")]
    Unreachable { url: String, detail: String },
    /// A ref asked for by name is not on the remote.
    #[error("{url} has no ref '{refname}': it was deleted or never pushed")]
    RefNotFound { url: String, refname: String },
    /// A branch, tag or sha that the mirror does not have.
    #[error("the mirror of {url} has no commit '{rev}': fetch the project, or check the name")]
    UnknownRevision { url: String, rev: String },
    /// A file bigger than the caller accepts.
    #[error("'{path}' in {url} is {size} bytes, more than the {max} bytes allowed")]
    TooLarge {
        url: String,
        path: String,
        size: u64,
        max: u64,
    },
    /// A git command ran longer than its timeout and was killed with its children.
    #[error(
        "git {op} for {url} took longer than {}s and was stopped: check the remote's health, \
         or raise the mirror's timeout for very large repositories",
        .after.as_secs()
    )]
    Timeout {
        url: String,
        op: &'static str,
        after: Duration,
    },
    /// A git command failed for another reason; `stderr` is redacted and shortened.
    #[error("git {op} failed for {url}: {stderr}")]
    Command {
        url: String,
        op: &'static str,
        stderr: String,
    },
    /// An argument that cannot be passed to git safely (an option-like rev, a newline, …).
    #[error("invalid {what} '{value}': {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    /// The `git` program could not be started.
    #[error(
        "cannot run git ({source}): install git (2.36 or later) and put it on the server's PATH"
    )]
    Spawn { source: std::io::Error },
    /// A file-system or pipe error around a git command.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl GitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> GitError {
        GitError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, why: &'static str) -> GitError {
        GitError::Invalid {
            what,
            value: redact_urls(&value.chars().take(200).collect::<String>()),
            why,
        }
    }

    /// True for errors that say the remote or its credentials are wrong, as opposed to a
    /// problem of this server (for deciding whom to tell).
    pub fn is_remote_problem(&self) -> bool {
        matches!(
            self,
            GitError::Auth { .. }
                | GitError::HostKey { .. }
                | GitError::RepoNotFound { .. }
                | GitError::Unreachable { .. }
                | GitError::RefNotFound { .. }
        )
    }
}

/// Replaces the user information of every `scheme://user:pass@host` in `text` with `***`.
/// The user name goes too: tokens are often passed as user names.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '\'' | '"' | '<' | '>' | '`')
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Removes URL user information and each of `secrets` (as written and percent-encoded).
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut s = redact_urls(text);
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        s = s.replace(secret, "***");
        let enc = super::remote::percent_encode(secret);
        if enc != *secret {
            s = s.replace(&enc, "***");
        }
    }
    s
}

/// The last lines of git's stderr that say something, for a message.
pub(crate) fn summarize_stderr(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let start = lines.len().saturating_sub(4);
    let s = lines[start..].join("; ");
    if s.is_empty() {
        "git printed nothing".into()
    } else if s.len() > 600 {
        let mut cut = 600;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(
            redact_urls("fatal: unable to access 'https://bob:s3cret@host:8443/g/r.git/': x"),
            "fatal: unable to access 'https://***@host:8443/g/r.git/': x"
        );
        assert_eq!(
            redact_urls("http://tok@h/a and ssh://git@h2:22/b, file:///srv/x"),
            "http://***@h/a and ssh://***@h2:22/b, file:///srv/x"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("https://"), "https://");
    }

    #[test]
    fn secrets_are_removed_raw_and_encoded() {
        let s = redact("p@ss/word and p%40ss%2Fword", &["p@ss/word"]);
        assert_eq!(s, "*** and ***");
    }

    #[test]
    fn stderr_summary_keeps_the_last_lines() {
        let s = summarize_stderr("hint: x\n\na\nb\nc\nd\ne\n");
        assert_eq!(s, "b; c; d; e");
        assert_eq!(summarize_stderr(""), "git printed nothing");
    }
}
