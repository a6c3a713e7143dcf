//! [`Remote`]: where a mirror fetches from and with which credentials, and the URL forms
//! git accepts (a local path, `file://`, `http(s)://`, `ssh://`, scp-like `user@host:path`,
//! `git://`). Credentials written into an http(s) URL are moved out of it, so the URL can be
//! stored in the mirror's config and shown in messages.

use super::error::{GitError, redact_urls};
use std::fmt;

/// A project's repository and its credentials, as registered on the server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    /// For http(s). When only a password (token) is given the user name is `oauth2`.
    pub username: Option<String>,
    /// For http(s): a password or an access token.
    pub password: Option<String>,
    /// For ssh: a private key in OpenSSH or PEM form.
    pub ssh_key: Option<String>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("Remote")
            .field("url", &redact_urls(&self.url))
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("ssh_key", &set(&self.ssh_key))
            .finish()
    }
}

/// How git reaches a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A path or `file://` URL on this machine. A server should let only administrators
    /// register these: they can read any repository the server's user can.
    Local,
    Http,
    Ssh,
    /// `git://`: unauthenticated.
    Git,
}

impl Remote {
    pub fn new(url: impl Into<String>) -> Remote {
        Remote {
            url: url.into(),
            ..Remote::default()
        }
    }

    pub fn transport(&self) -> Transport {
        transport_of(&self.url)
    }

    /// The URL to store and show: user information of http(s) URLs moved into `username`
    /// and `password` (explicit fields win), relative local paths made absolute.
    pub(crate) fn normalized(&self) -> Result<Remote, GitError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(GitError::invalid(
                "remote URL",
                url,
                "it is empty; give the project's clone URL",
            ));
        }
        if url.starts_with('-') || url.chars().any(|c| c.is_control()) {
            return Err(GitError::invalid(
                "remote URL",
                url,
                "it starts with '-' or contains control characters",
            ));
        }
        if let Some((helper, _)) = url.split_once("::")
            && !helper.contains('/')
        {
            return Err(GitError::invalid(
                "remote URL",
                url,
                "remote helpers (<transport>::<address>) are not allowed",
            ));
        }
        let mut out = self.clone();
        match transport_of(url) {
            Transport::Local => {
                if let Some(rest) = url.strip_prefix("file://") {
                    out.url = format!("file://{rest}");
                } else {
                    let abs = std::path::absolute(url)
                        .map_err(|e| GitError::io(format!("cannot resolve the path {url}"), e))?;
                    out.url = abs.to_string_lossy().into_owned();
                }
            }
            Transport::Http | Transport::Ssh | Transport::Git => {
                let Some((scheme, rest)) = url.split_once("://") else {
                    // scp-like `user@host:path`: the user is ssh addressing, not a secret.
                    out.url = url.to_string();
                    return Ok(out);
                };
                let scheme = scheme.to_ascii_lowercase();
                if !matches!(
                    scheme.as_str(),
                    "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git"
                ) {
                    return Err(GitError::invalid(
                        "remote URL",
                        url,
                        "use a path, file://, http(s)://, ssh://, git:// or user@host:path",
                    ));
                }
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, path) = rest.split_at(end);
                let (userinfo, host) = match authority.rfind('@') {
                    Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
                    None => (None, authority),
                };
                if host.is_empty() {
                    return Err(GitError::invalid("remote URL", url, "it has no host name"));
                }
                let (user, pass) = match userinfo {
                    None => (None, None),
                    Some(u) => match u.split_once(':') {
                        Some((n, p)) => (Some(percent_decode(n)), Some(percent_decode(p))),
                        None => (Some(percent_decode(u)), None),
                    },
                };
                if scheme.starts_with("http") {
                    if out.username.is_none() {
                        out.username = user.filter(|u| !u.is_empty());
                    }
                    if out.password.is_none() {
                        out.password = pass.filter(|p| !p.is_empty());
                    }
                    out.url = format!("{scheme}://{host}{path}");
                } else {
                    // ssh users stay in the URL; a password in an ssh URL is never used.
                    let user = user.map(|u| format!("{}@", percent_encode(&u)));
                    out.url = format!("{scheme}://{}{host}{path}", user.unwrap_or_default());
                }
            }
        }
        Ok(out)
    }

    /// The secrets, for scrubbing messages.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        [&self.username, &self.password]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

fn transport_of(url: &str) -> Transport {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("file://") {
        return Transport::Local;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Transport::Http;
    }
    if lower.starts_with("git://") {
        return Transport::Git;
    }
    if lower.contains("://") {
        return Transport::Ssh;
    }
    // git's rule: a colon before any slash makes it scp-like ssh, else it is a path.
    match (url.find(':'), url.find('/')) {
        (Some(c), Some(s)) if c < s => Transport::Ssh,
        (Some(_), None) => Transport::Ssh,
        _ => Transport::Local,
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(Remote::new("/srv/repo.git").transport(), Transport::Local);
        assert_eq!(Remote::new("./rel/repo").transport(), Transport::Local);
        assert_eq!(Remote::new("file:///srv/r").transport(), Transport::Local);
        assert_eq!(Remote::new("HTTPS://h/r").transport(), Transport::Http);
        assert_eq!(Remote::new("ssh://git@h/r").transport(), Transport::Ssh);
        assert_eq!(Remote::new("git@h:g/r.git").transport(), Transport::Ssh);
        assert_eq!(Remote::new("git://h/r").transport(), Transport::Git);
    }

    #[test]
    fn http_credentials_leave_the_url() {
        let r = Remote::new("https://bob:p%40ss@git.example.com:8443/g/r.git")
            .normalized()
            .unwrap();
        assert_eq!(r.url, "https://git.example.com:8443/g/r.git");
        assert_eq!(r.username.as_deref(), Some("bob"));
        assert_eq!(r.password.as_deref(), Some("p@ss"));

        let explicit = Remote {
            password: Some("given".into()),
            ..Remote::new("https://bob:inurl@h/r")
        }
        .normalized()
        .unwrap();
        assert_eq!(explicit.password.as_deref(), Some("given"));
        assert_eq!(explicit.url, "https://h/r");
    }

    #[test]
    fn ssh_users_stay_and_passwords_go() {
        let r = Remote::new("ssh://git:pw@h:2222/r").normalized().unwrap();
        assert_eq!(r.url, "ssh://git@h:2222/r");
        assert_eq!(
            Remote::new("git@h:g/r.git").normalized().unwrap().url,
            "git@h:g/r.git"
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        for u in ["", "-uhack", "ext::sh -c x", "https:///nohost", "a\nb"] {
            assert!(Remote::new(u).normalized().is_err(), "{u}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let r = Remote {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ssh_key: Some("KEY".into()),
            ..Remote::new("https://x:y@h/r")
        };
        let d = format!("{r:?}");
        assert!(
            !d.contains("hunter2") && !d.contains("KEY") && !d.contains("x:y"),
            "{d}"
        );
    }

    #[test]
    fn percent_round_trip() {
        assert_eq!(percent_decode(&percent_encode("a b@c/d%")), "a b@c/d%");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
